//! `abmesh assign`: exactly what the filter would do to one request.

use std::ffi::OsString;
use std::process::ExitCode;

use abmesh::plan::Plan;
use abmesh::{Config, RequestView};

use crate::common::{now_ms, out, read_config, split_pair, usage_error};

pub fn run(args: &[OsString]) -> ExitCode {
    let Some(config_path) = args.first() else {
        return usage_error("assign needs a CONFIG file");
    };
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut cookies: Vec<Vec<u8>> = Vec::new();
    let (mut path, mut query, mut method, mut host, mut time) =
        (b"/".to_vec(), None, b"GET".to_vec(), None, None);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let Some(flag) = flag.to_str() else {
            return usage_error("arguments must be flags");
        };
        let Some(value) = rest.next() else {
            return usage_error(&format!("{flag} needs a value"));
        };
        match flag {
            "--header" => match split_pair(value) {
                Some((n, v)) => headers.push((n.to_ascii_lowercase(), v)),
                None => return usage_error("--header needs NAME=VALUE"),
            },
            "--cookie" => match split_pair(value) {
                Some((n, v)) => cookies.push([n, b"=".to_vec(), v].concat()),
                None => return usage_error("--cookie needs NAME=VALUE"),
            },
            "--query" => {
                query = Some(
                    value
                        .as_encoded_bytes()
                        .strip_prefix(b"?")
                        .unwrap_or(value.as_encoded_bytes())
                        .to_vec(),
                )
            }
            "--path" => path = value.as_encoded_bytes().to_vec(),
            "--method" => method = value.as_encoded_bytes().to_vec(),
            "--host" => host = Some(value.as_encoded_bytes().to_vec()),
            "--time" => match value.to_str().and_then(abmesh::time::parse_rfc3339) {
                Some(t) => time = Some(t),
                None => return usage_error(&format!("--time needs {}", abmesh::time::EXPECTED)),
            },
            other => return usage_error(&format!("unknown option {other}")),
        }
    }
    let config = match read_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(q) = query {
        path.push(b'?');
        path.extend_from_slice(&q);
    }
    let mut all: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b":method".to_vec(), method), (b":path".to_vec(), path)];
    if let Some(h) = host {
        all.push((b":authority".to_vec(), h));
    }
    all.extend(headers);
    if !cookies.is_empty() {
        all.push((b"cookie".to_vec(), cookies.join(&b"; "[..])));
    }
    let req = RequestView::new(&all);
    let (plan, eval) = Plan::new(&config, &req, time.unwrap_or_else(now_ms));
    out(&render(&config, &plan, &eval));
    ExitCode::SUCCESS
}

/// What `abmesh assign` prints: the plan's effects, in the order the filter applies them.
fn render(config: &Config, plan: &Plan, eval: &abmesh::Evaluation) -> String {
    use abmesh::plan::{Effect, ResponseEffect};
    let mut out = String::new();
    for effect in plan.effects() {
        out.push_str(&match effect {
            Effect::RemoveRequestHeader(n) => format!("remove request header: {n}\n"),
            Effect::SetRequestHeader(n, v) => {
                format!("set request header: {n}: {}\n", String::from_utf8_lossy(v))
            }
            Effect::Log(level, line) => format!("log ({}): {line}\n", level.as_str()),
            Effect::SetFilterState(n, v) => format!("set filter state: wasm.{n}: {v}\n"),
        });
    }
    if plan.set().is_empty() {
        out.push_str("set request header: none (no assignments)\n");
    }
    if plan.baggage_full {
        out.push_str("baggage: assignments left out (the header would exceed 8192 bytes)\n");
    }
    for effect in plan.response_effects() {
        out.push_str(&match effect {
            ResponseEffect::SetHeader(n, v) => format!("set response header: {n}: {v}\n"),
            ResponseEffect::AddSetCookie(c) => format!("add response header: set-cookie: {c}\n"),
        });
    }
    for (e, reason) in &eval.not_assigned {
        out.push_str(&format!(
            "not assigned: {} ({})\n",
            config.experiments[*e].key,
            reason.as_str()
        ));
    }
    match &plan.exposure() {
        Some(x) => out.push_str(&format!("exposure: {x}\n")),
        None => out.push_str("exposure: none\n"),
    }
    out
}
