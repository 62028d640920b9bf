//! The human-readable summary `abmesh check` prints for a valid configuration.

use std::fmt::Write;

use crate::config::{limits, Config, Inbound, Source, Status};
use crate::hash::BUCKETS;
use crate::reader::Keyword;
use crate::targeting::{Condition, When};
use crate::time::format_rfc3339;

fn percent(bp: u32) -> String {
    let s = format!("{}.{:02}", bp / 100, bp % 100);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `3 experiments (2 running), 2 unit types, 1 layers, holdout 5%`: what Envoy logs at start.
pub fn one_line(config: &Config) -> String {
    let running = config
        .experiments
        .iter()
        .filter(|e| e.status == Status::Running)
        .count();
    format!(
        "{} experiments ({running} running), {} unit types, {} layers, {}",
        config.experiments.len(),
        config.units.len(),
        config.layers.len(),
        config
            .holdout
            .as_ref()
            .map_or("no holdout".to_string(), |h| format!(
                "holdout {}",
                percent(h.threshold)
            ))
    )
}

/// What `abmesh check` prints, now.
pub fn describe(config: &Config) -> String {
    describe_at(config, None)
}

/// As [`describe`], also saying where each ramp stands at `now_ms`.
pub fn describe_at(config: &Config, now_ms: Option<i64>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ok: {}", one_line(config));
    if !config.units.is_empty() {
        out.push_str("units:\n");
        for u in &config.units {
            let sources: Vec<String> = u
                .sources
                .iter()
                .map(|s| match s {
                    Source::Header(n) => format!("header {n}"),
                    Source::Cookie(n) => format!("cookie {n}"),
                    Source::Query(n) => format!("query {n}"),
                })
                .collect();
            let _ = write!(out, "  {}: {}", u.name, sources.join(", then "));
            if let Some(m) = &u.mint {
                let _ = write!(
                    out,
                    "; else minted and set as cookie {}{}",
                    m.cookie, m.attributes
                );
            }
            out.push('\n');
        }
    }
    if let Some(h) = &config.holdout {
        let _ = writeln!(
            out,
            "holdout: {} of unit {} (salt \"{}\", buckets [0, {}))",
            percent(h.threshold),
            config.units[h.unit].name,
            h.salt,
            h.threshold
        );
    }
    if !config.layers.is_empty() {
        out.push_str("layers:\n");
        for (li, l) in config.layers.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {} (unit {}, salt \"{}\"):",
                l.name, config.units[l.unit].name, l.salt
            );
            let mut slots: Vec<(u32, u32, &str)> = config
                .experiments
                .iter()
                .filter_map(|e| {
                    e.layer
                        .filter(|s| s.layer == li)
                        .map(|s| (s.start, s.end, e.key.as_str()))
                })
                .collect();
            slots.sort();
            let mut at = 0;
            for (start, end, key) in slots {
                if start > at {
                    let _ = writeln!(out, "    [{at}, {start}) free");
                }
                let _ = writeln!(out, "    [{start}, {end}) {key}");
                at = end;
            }
            if at < BUCKETS {
                let _ = writeln!(out, "    [{at}, {BUCKETS}) free");
            }
        }
    }
    if !config.experiments.is_empty() {
        out.push_str("experiments:\n");
    }
    for e in &config.experiments {
        let _ = write!(
            out,
            "  {}: {}, unit {}, traffic {}{}",
            e.key,
            e.status.as_str(),
            config.units[e.unit].name,
            if e.ramp.is_empty() { "" } else { "ramped to " },
            percent(e.traffic_bp)
        );
        if e.salt != e.key {
            let _ = write!(out, ", salt \"{}\"", e.salt);
        }
        if let Some(s) = e.layer {
            let _ = write!(
                out,
                ", layer {} [{}, {})",
                config.layers[s.layer].name, s.start, s.end
            );
        }
        out.push('\n');
        for (vi, v) in e.variants.iter().enumerate() {
            let winner = if e.winner == Some(vi) {
                " (winner)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {}: weight {}, buckets [{}, {}){winner}",
                v.name, v.weight, v.range.0, v.range.1
            );
        }
        if !e.ramp.is_empty() {
            let steps: Vec<String> = e
                .ramp
                .iter()
                .map(|s| format!("{} from {}", percent(s.traffic_bp), format_rfc3339(s.at_ms)))
                .collect();
            let _ = writeln!(out, "    ramp: {} (0% before)", steps.join(", "));
            if let Some(now) = now_ms {
                let i = e.ramp.iter().take_while(|s| s.at_ms <= now).count();
                let current = match i {
                    0 => "0% (not started)".to_string(),
                    i => format!(
                        "{} (step {i} of {})",
                        percent(e.ramp[i - 1].traffic_bp),
                        e.ramp.len()
                    ),
                };
                let next = e
                    .ramp
                    .get(i)
                    .map_or("none (fully ramped)".to_string(), |s| {
                        format!("{} at {}", percent(s.traffic_bp), format_rfc3339(s.at_ms))
                    });
                let _ = writeln!(out, "    ramp now: {current}; next: {next}");
            }
        }
        if !e.when.is_empty() {
            let _ = writeln!(out, "    when: {}", describe_when(&e.when));
        }
        if e.start_ms.is_some() || e.end_ms.is_some() {
            let _ = writeln!(
                out,
                "    schedule: from {} until {}",
                e.start_ms.map_or("the beginning".into(), format_rfc3339),
                e.end_ms.map_or("no end".into(), format_rfc3339)
            );
        }
        if let Some(h) = &e.route_header {
            let _ = writeln!(out, "    route header: {h}");
        }
    }
    let _ = writeln!(
        out,
        "output: {} (route headers {}*{})",
        config.output.header,
        config.output.route_header_prefix,
        config
            .output
            .response_header
            .as_ref()
            .map_or(String::new(), |h| format!(", echoed on responses as {h}"))
    );
    if config.output.baggage {
        out.push_str("baggage: assignments also in the W3C baggage member \"abmesh\"\n");
    }
    let effect = match config.inbound {
        Inbound::Strip => "assignments sent by clients are removed",
        Inbound::Trust => "received assignments for experiments not defined here are kept",
    };
    let mode = config.inbound;
    let _ = writeln!(
        out,
        "inbound: {} ({}: {effect})",
        mode.as_str(),
        mode.gloss().unwrap_or("")
    );
    if let Some(o) = &config.ofrep {
        let context: Vec<String> = o
            .context
            .iter()
            .map(|(attribute, source)| {
                let (kind, name) = match source {
                    crate::config::Source::Header(n) => ("header", n),
                    crate::config::Source::Cookie(n) => ("cookie", n),
                    crate::config::Source::Query(n) => ("query", n),
                };
                format!("{attribute} as {kind} {name}")
            })
            .collect();
        let _ = writeln!(
            out,
            "ofrep: answered under {} (context: {})",
            o.path_prefix,
            context.join(", ")
        );
    }
    let b = limits::bounds(config);
    let _ = writeln!(
        out,
        "limits (worst cases):\n  Envoy stats series: {} (limit {})\n  headers added to a request: {} bytes (output.max_header_bytes {})\n  exposure record: {} bytes (exposure.max_record_bytes {})",
        limits::grouped(b.series),
        limits::grouped(limits::MAX_SERIES),
        limits::grouped(b.header_bytes as u64),
        limits::grouped(config.output.max_header_bytes as u64),
        limits::grouped(b.record_bytes as u64),
        limits::grouped(config.exposure.max_record_bytes as u64)
    );
    out
}

fn describe_when(w: &When) -> String {
    let list = |l: &[Vec<u8>]| l.iter().map(|x| text(x)).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !w.path_prefix.is_empty() {
        parts.push(format!("path starts with {}", list(&w.path_prefix)));
    }
    if !w.methods.is_empty() {
        parts.push(format!("method {}", list(&w.methods)));
    }
    if !w.hosts.is_empty() {
        parts.push(format!("host {}", list(&w.hosts)));
    }
    for (kind, conds) in [
        ("header", &w.headers),
        ("cookie", &w.cookies),
        ("query", &w.query),
    ] {
        for (name, c) in conds {
            let c = match c {
                Condition::In(l) => format!("in [{}]", list(l)),
                Condition::NotIn(l) => format!("not in [{}]", list(l)),
                Condition::Present(true) => "present".into(),
                Condition::Present(false) => "absent".into(),
                Condition::Prefix(p) => format!("starts with {}", text(p)),
                Condition::Suffix(s) => format!("ends with {}", text(s)),
            };
            parts.push(format!("{kind} {} {c}", text(name)));
        }
    }
    if !w.any.is_empty() {
        let alternatives: Vec<String> = w
            .any
            .iter()
            .map(|a| format!("({})", describe_when(a)))
            .collect();
        parts.push(format!("any of {}", alternatives.join(" or ")));
    }
    parts.join("; ")
}
