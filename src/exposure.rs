//! What an evaluation becomes on the wire: the assignments dictionary, route headers and the
//! exposure record.

use std::fmt::Write;

use crate::assign::Evaluation;
use crate::config::limits::MAX_REQUEST_ID_BYTES;
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
    let mut out = String::with_capacity(prefix.len() + 128 + 96 * eval.assignments.len());
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
    // A minted id is the visitor's first request: analyses can tell new visitors apart.
    let mut minted = eval.minted.iter().filter(|&&u| {
        eval.exposures()
            .any(|a| config.experiments[a.experiment].unit == u)
    });
    if let Some(&first) = minted.next() {
        out.push_str(",\"minted\":[");
        push_json_str(&mut out, &config.units[first].name);
        for &u in minted {
            out.push(',');
            push_json_str(&mut out, &config.units[u].name);
        }
        out.push(']');
    }
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
