//! What an evaluation becomes on the wire: the assignments dictionary, route headers and the
//! exposure record.

use std::fmt::Write;

use crate::assign::Evaluation;
use crate::config::{Config, UnitIdMode};
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
        let e = &config.experiments[a.experiment];
        if n > 0 {
            out.push_str(", ");
        }
        out.push_str(&e.key);
        out.push('=');
        out.push_str(&e.variants[a.variant].name);
        if a.forced {
            out.push_str(";forced");
        }
    }
    Some(out)
}

/// `(header name, variant)` for each assignment of an experiment with `route_header: true`.
pub fn route_headers<'c>(config: &'c Config, eval: &Evaluation) -> Vec<(&'c str, &'c str)> {
    eval.assignments
        .iter()
        .filter_map(|a| {
            let e = &config.experiments[a.experiment];
            Some((
                e.route_header.as_deref()?,
                e.variants[a.variant].name.as_str(),
            ))
        })
        .collect()
}

/// The exposure record (one JSON object) of a request, or `None` when it has no assignment
/// that is an exposure (rollouts are not).
pub fn exposure_record(
    config: &Config,
    eval: &Evaluation,
    ts_ms: i64,
    request_id: Option<&[u8]>,
) -> Option<String> {
    let mut exposures = eval.exposures().peekable();
    exposures.peek()?;
    let mut out = String::with_capacity(160);
    let _ = write!(out, "{{\"ts_ms\":{ts_ms},\"request_id\":");
    match request_id {
        Some(id) => push_json_bytes(&mut out, id),
        None => out.push_str("null"),
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
    out.push_str("},\"assignments\":[");
    for (n, a) in exposures.enumerate() {
        let e = &config.experiments[a.experiment];
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"experiment\":");
        push_json_str(&mut out, &e.key);
        out.push_str(",\"variant\":");
        push_json_str(&mut out, &e.variants[a.variant].name);
        out.push_str(",\"unit\":");
        push_json_str(&mut out, &config.units[e.unit].name);
        let _ = write!(out, ",\"forced\":{}}}", a.forced);
    }
    out.push_str("]}");
    Some(out)
}

/// Bytes as a JSON string: UTF-8 as is (escaped), invalid sequences replaced by U+FFFD so the
/// record stays valid JSON whatever the client sent.
pub fn push_json_bytes(out: &mut String, bytes: &[u8]) {
    push_json_str(out, &String::from_utf8_lossy(bytes));
}

pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
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
