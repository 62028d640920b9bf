//! The OpenFeature Remote Evaluation Protocol (OFREP, `openfeature/ofrep-openapi.yaml`)
//! answered from the configuration by the same evaluation as every request: an application
//! whose OpenFeature provider speaks OFREP to the mesh gets exactly the variant the mesh
//! assigns its unit.
//!
//! The evaluation context stands for a request: each attribute `ofrep.context` maps (by
//! default `targetingKey` → the first unit type's first source) becomes that header, cookie
//! or query parameter of a request `GET /` (a string as is, a number or boolean as its JSON
//! text; other values are left out). Pure: [`route`] tells whether a path is an OFREP
//! endpoint, [`answer`] gives the status, body and ETag; the filter sends them.

use serde_json::{json, Map, Value};

use crate::assign::{evaluate, Reason};
use crate::config::{Config, Ofrep, Source, Status};
use crate::hash::xxh3_hex;
use crate::request::RequestView;

/// The most bytes of request body an evaluation may carry.
pub const MAX_BODY_BYTES: usize = 65_536;

/// An OFREP endpoint under `ofrep.path_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `evaluate/flags/{key}`.
    Single(String),
    /// `evaluate/flags`.
    Bulk,
    /// Anything else under the prefix.
    Unknown,
}

/// The OFREP route of a request path (its query ignored), or `None` when the path is not
/// under the prefix: such a request is an ordinary one.
pub fn route(ofrep: &Ofrep, path: &[u8]) -> Option<Route> {
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let rest = path.strip_prefix(ofrep.path_prefix.as_bytes())?;
    Some(match rest.strip_prefix(b"evaluate/flags") {
        Some(b"") | Some(b"/") => Route::Bulk,
        Some(key) => match key.strip_prefix(b"/") {
            Some(k) if !k.is_empty() && !k.contains(&b'/') => {
                Route::Single(String::from_utf8_lossy(k).into_owned())
            }
            _ => Route::Unknown,
        },
        None => Route::Unknown,
    })
}

/// What the filter sends: status, JSON body (empty for 304) and the bulk response's ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (empty for 304).
    pub body: String,
    /// The bulk response's ETag, quoted.
    pub etag: Option<String>,
}

impl Answer {
    fn json(status: u16, body: &Value) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            etag: None,
        }
    }
}

/// The answer to an OFREP request: `method`, its `body`, the `If-None-Match` value, at
/// `now_ms`.
pub fn answer(
    config: &Config,
    ofrep: &Ofrep,
    route: &Route,
    method: &[u8],
    body: &[u8],
    if_none_match: Option<&[u8]>,
    now_ms: i64,
) -> Answer {
    let key = match route {
        Route::Single(k) => Some(k.as_str()),
        Route::Bulk => None,
        Route::Unknown => {
            return Answer::json(
                404,
                &json!({"errorDetails": "no OFREP endpoint here: POST evaluate/flags or evaluate/flags/{key}"}),
            )
        }
    };
    if method != b"POST" {
        return Answer::json(
            405,
            &json!({"errorDetails": "OFREP evaluations are POST requests"}),
        );
    }
    let failure = |code: &str, details: String| failure(key, code, details);
    if body.len() > MAX_BODY_BYTES {
        return too_large(route, body.len());
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return failure(
                "PARSE_ERROR",
                format!(
                    "the request body is not JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        }
    };
    let Some(context) = request.get("context").and_then(Value::as_object) else {
        return failure(
            "INVALID_CONTEXT",
            "the request body has no \"context\" object".into(),
        );
    };
    if !context
        .get("targetingKey")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty())
    {
        return failure(
            "TARGETING_KEY_MISSING",
            "the context has no targetingKey string".into(),
        );
    }
    let headers = request_of(ofrep, context);
    let eval = evaluate(config, &RequestView::new(&headers), now_ms);
    let result = |i: usize| -> Value {
        let e = &config.experiments[i];
        if let Some(a) = eval.assignments.iter().find(|a| a.experiment == i) {
            let v = &e.variants[a.variant];
            let value = v
                .value
                .as_deref()
                .and_then(|j| serde_json::from_str::<Value>(j).ok())
                .unwrap_or_else(|| json!(v.name));
            let reason = match (a.rollout, e.when.is_empty()) {
                (false, _) => "SPLIT",
                (true, true) => "STATIC",
                (true, false) => "TARGETING_MATCH",
            };
            return json!({"key": e.key, "value": value, "reason": reason, "variant": v.name});
        }
        // Not assigned: the application's code default, with why.
        let why = eval
            .not_assigned
            .iter()
            .find(|(x, _)| *x == i)
            .map_or(Reason::Targeting, |(_, r)| *r);
        let reason = match why {
            Reason::Paused | Reason::Schedule => "DISABLED",
            Reason::Targeting => "TARGETING_MATCH",
            Reason::Traffic | Reason::Layer | Reason::Holdout => "SPLIT",
            Reason::NoUnit => "UNKNOWN",
        };
        let reason = if e.status == Status::Paused {
            "DISABLED"
        } else {
            reason
        };
        json!({"key": e.key, "reason": reason, "metadata": {"abmesh.not_assigned": why.as_str()}})
    };
    match key {
        Some(k) => match config.experiment_index(k.as_bytes()) {
            Some(i) => Answer::json(200, &result(i)),
            None => Answer::json(
                404,
                &json!({"key": k, "errorCode": "FLAG_NOT_FOUND",
                        "errorDetails": format!("no experiment \"{k}\" in the mesh's configuration")}),
            ),
        },
        None => {
            let flags: Vec<Value> = (0..config.experiments.len()).map(result).collect();
            let body = json!({"flags": flags}).to_string();
            let etag = format!("\"{}\"", xxh3_hex(body.as_bytes()));
            if if_none_match.is_some_and(|m| matches_etag(m, &etag)) {
                return Answer {
                    status: 304,
                    body: String::new(),
                    etag: Some(etag),
                };
            }
            Answer {
                status: 200,
                body,
                etag: Some(etag),
            }
        }
    }
}

/// A request error (400); the single endpoint's carry the flag key.
fn failure(key: Option<&str>, code: &str, details: String) -> Answer {
    let mut o = Map::new();
    if let Some(k) = key {
        o.insert("key".into(), json!(k));
    }
    o.insert("errorCode".into(), json!(code));
    o.insert("errorDetails".into(), json!(details));
    Answer::json(400, &Value::Object(o))
}

/// The answer to a request whose body has `size` bytes, more than [`MAX_BODY_BYTES`] (the
/// filter does not read such a body).
pub fn too_large(route: &Route, size: usize) -> Answer {
    let key = match route {
        Route::Single(k) => Some(k.as_str()),
        _ => None,
    };
    failure(
        key,
        "INVALID_CONTEXT",
        format!("the request body has {size} bytes, more than {MAX_BODY_BYTES}"),
    )
}

/// Whether an `If-None-Match` value names `etag` (`*`, a list, weak tags).
fn matches_etag(value: &[u8], etag: &str) -> bool {
    value.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        let t = t.strip_prefix(b"W/").unwrap_or(t);
        t == b"*" || t == etag.as_bytes()
    })
}

/// The request the context stands for: `GET /` with a header, cookie or query parameter per
/// mapped attribute.
fn request_of(ofrep: &Ofrep, context: &Map<String, Value>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (mut headers, mut cookies, mut query) = (Vec::new(), Vec::new(), Vec::new());
    for (attribute, source) in &ofrep.context {
        let value = match context.get(attribute) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        match source {
            Source::Header(name) => headers.push((name.as_bytes().to_vec(), value.into_bytes())),
            Source::Cookie(name) => cookies.push(format!("{name}={value}")),
            Source::Query(name) => query.push(format!("{}={}", encode(name), encode(&value))),
        }
    }
    let path = if query.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", query.join("&"))
    };
    headers.push((b":method".to_vec(), b"GET".to_vec()));
    headers.push((b":path".to_vec(), path.into_bytes()));
    if !cookies.is_empty() {
        headers.push((b"cookie".to_vec(), cookies.join("; ").into_bytes()));
    }
    headers
}

/// Percent-encodes all but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
