//! What an evaluation becomes on the wire: the assignments dictionary, route headers and the
//! exposure record.

use std::fmt::Write;

use crate::assign::Evaluation;
use crate::config::limits::MAX_REQUEST_ID_BYTES;
use crate::config::{Config, ExposureFormat, UnitIdMode};
use crate::hash::xxh3_hex;

/// The RFC 8941 dictionary of a request's assignments in configuration order, forced ones
/// carrying the parameter `;forced`: `new-checkout=treatment, search=v2;forced`.
/// `None` when there are no assignments.
pub fn assignments_dictionary(config: &Config, eval: &Evaluation) -> Option<String> {
    if eval.assignments.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(32 * eval.assignments.len());
    for (n, a) in eval.assignments.iter().enumerate() {
        // `, key=variant`, rendered once at configuration time; the first without `, `.
        let member = &config.experiments[a.experiment].variants[a.variant].member;
        out.push_str(if n > 0 {
            member
        } else {
            member.get(2..).unwrap_or_default()
        });
        if a.forced {
            out.push_str(";forced");
        }
    }
    Some(out)
}

/// The exposure record (one JSON object) of a request, or `None` when it has no assignment
/// that is an exposure (rollouts are not).
pub fn exposure_record(
    config: &Config,
    eval: &Evaluation,
    ts_ms: i64,
    request_id: Option<&[u8]>,
) -> Option<String> {
    exposure_line(config, eval, ts_ms, request_id, "")
}

/// The exposure record after `prefix`, in one buffer: the filter logs `abmesh.exposure <json>`
/// and stores the JSON alone, without copying the record twice.
pub fn exposure_line(
    config: &Config,
    eval: &Evaluation,
    ts_ms: i64,
    request_id: Option<&[u8]>,
    prefix: &str,
) -> Option<String> {
    let mut exposures = eval.exposures().peekable();
    exposures.peek()?;
    let per_entry = match config.exposure.format {
        ExposureFormat::Abmesh => 96,
        ExposureFormat::Otel => 224,
    };
    let mut out = String::with_capacity(prefix.len() + 128 + per_entry * eval.assignments.len());
    out.push_str(prefix);
    out.push_str("{\"ts_ms\":");
    let _ = write!(out, "{ts_ms}");
    out.push_str(",\"request_id\":");
    // A request id longer than any id generator writes is no id: it would only make the
    // record unbounded.
    match request_id.filter(|id| id.len() <= MAX_REQUEST_ID_BYTES) {
        Some(id) => push_json_bytes(&mut out, id),
        None => out.push_str("null"),
    }
    if config.exposure.format == ExposureFormat::Otel {
        push_minted(&mut out, config, eval);
        push_evaluations(&mut out, config, eval);
        return Some(out);
    }
    out.push_str(",\"units\":{");
    if config.exposure.unit_id != UnitIdMode::Omit {
        let mut first = true;
        for (u, unit) in config.units.iter().enumerate() {
            let Some(id) = &eval.units[u] else { continue };
            if !eval
                .exposures()
                .any(|a| config.experiments[a.experiment].unit == u)
            {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_json_str(&mut out, &unit.name);
            out.push(':');
            match config.exposure.unit_id {
                UnitIdMode::Xxh3 => push_json_str(&mut out, &xxh3_hex(id)),
                _ => push_json_bytes(&mut out, id),
            }
        }
    }
    out.push('}');
    push_minted(&mut out, config, eval);
    out.push_str(",\"assignments\":[");
    for (n, a) in exposures.enumerate() {
        // Rendered at configuration time: `,{"experiment":…,"variant":…,"unit":…,"forced":false}`
        // whole for a hashed assignment, the head alone for a forced one.
        let variant = &config.experiments[a.experiment].variants[a.variant];
        if a.forced {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&variant.exposure_head);
            out.push_str("true}");
        } else {
            out.push_str(if n > 0 {
                &variant.exposure_entry
            } else {
                variant.exposure_entry.get(1..).unwrap_or_default()
            });
        }
    }
    out.push_str("]}");
    Some(out)
}

/// `,"minted":[…]`: the unit types whose id abmesh minted on this request (the visitor's first
/// request: analyses can tell new visitors apart), when an exposure uses them.
fn push_minted(out: &mut String, config: &Config, eval: &Evaluation) {
    let mut minted = eval.minted.iter().filter(|&&u| {
        eval.exposures()
            .any(|a| config.experiments[a.experiment].unit == u)
    });
    if let Some(&first) = minted.next() {
        out.push_str(",\"minted\":[");
        push_json_str(out, &config.units[first].name);
        for &u in minted {
            out.push(',');
            push_json_str(out, &config.units[u].name);
        }
        out.push(']');
    }
}

/// `,"evaluations":[…]}`: per exposure, OpenTelemetry's feature-flag attributes (the map
/// rendered by [`otel_entries`]) and the unit id as `feature_flag.context.id`.
fn push_evaluations(out: &mut String, config: &Config, eval: &Evaluation) {
    out.push_str(",\"evaluations\":[");
    for (n, a) in eval.exposures().enumerate() {
        let experiment = &config.experiments[a.experiment];
        let variant = &experiment.variants[a.variant];
        if a.forced {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&variant.exposure_head);
        } else {
            out.push_str(if n > 0 {
                &variant.exposure_entry
            } else {
                variant.exposure_entry.get(1..).unwrap_or_default()
            });
        }
        let id = eval.units.get(experiment.unit).and_then(Option::as_deref);
        match (config.exposure.unit_id, id) {
            (UnitIdMode::Omit, _) | (_, None) => {}
            (mode, Some(id)) => {
                out.push_str(CONTEXT_ID);
                match mode {
                    UnitIdMode::Xxh3 => push_json_str(out, &xxh3_hex(id)),
                    _ => push_json_bytes(out, id),
                }
            }
        }
        out.push('}');
    }
    out.push_str("]}");
}

/// The member that carries an evaluation's unit id, after the rendered map.
pub(crate) const CONTEXT_ID: &str = ",\"feature_flag.context.id\":";

/// Renders each variant's evaluation map for `exposure.format` `otel`, once per
/// configuration: OpenTelemetry's feature-flag attributes (semantic conventions registry,
/// `feature_flag.*`) and `abmesh.unit`, open for the unit id. A hashed assignment's reason is
/// `split` (pseudorandom assignment), a QA override's `targeting_match` (a value chosen for
/// this unit by a rule).
pub(crate) fn otel_entries(config: &mut Config) {
    let Config {
        units, experiments, ..
    } = config;
    for e in experiments {
        let unit = units.get(e.unit).map_or("", |u| u.name.as_str());
        for v in &mut e.variants {
            // Keys, variant and unit names are validated to need no JSON escaping.
            let map = |reason: &str| {
                format!(
                    "{{\"feature_flag.key\":\"{}\",\"feature_flag.result.variant\":\"{}\",\
                     \"feature_flag.result.reason\":\"{reason}\",\
                     \"feature_flag.provider.name\":\"abmesh\",\"abmesh.unit\":\"{unit}\"",
                    e.key, v.name
                )
            };
            v.exposure_head = map("targeting_match");
            v.exposure_entry = format!(",{}", map("split"));
        }
    }
}

/// The request's unit ids as one JSON object, `{"user":"alice","device":"d-1"}`, in
/// configuration order and in `exposure.unit_id`'s form: on every request that has a unit, so
/// an access-log line can be attributed to its units whether or not it is an exposure (`abmesh
/// analyze`). `None` when the request has no unit or ids are omitted.
pub fn units_object(config: &Config, eval: &Evaluation) -> Option<String> {
    if config.exposure.unit_id == UnitIdMode::Omit {
        return None;
    }
    let mut out = String::new();
    for (unit, id) in config.units.iter().zip(&eval.units) {
        let Some(id) = id else { continue };
        out.push(if out.is_empty() { '{' } else { ',' });
        push_json_str(&mut out, &unit.name);
        out.push(':');
        match config.exposure.unit_id {
            UnitIdMode::Xxh3 => push_json_str(&mut out, &xxh3_hex(id)),
            _ => push_json_bytes(&mut out, id),
        }
    }
    if out.is_empty() {
        return None;
    }
    out.push('}');
    Some(out)
}

/// Bytes as a JSON string: UTF-8 as is (escaped), invalid sequences replaced by U+FFFD so the
/// record stays valid JSON whatever the client sent.
pub fn push_json_bytes(out: &mut String, bytes: &[u8]) {
    push_json_str(out, &String::from_utf8_lossy(bytes));
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Unit ids are nearly always plain: copy them whole.
    let plain = s
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f && b != 0xe2);
    if plain {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
