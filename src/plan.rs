//! Everything the filter does to one request, decided without the host: the headers to
//! remove and set, the response echo and the exposure record. The filter glue applies a
//! `Plan`; `abmesh assign` prints one, so the CLI shows exactly what the filter does.

use crate::assign::{evaluate, Evaluation};
use crate::config::Config;
use crate::exposure::{assignments_dictionary, exposure_record, route_headers};
use crate::request::RequestView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Names of request headers present that must be removed (spoofing protection), as sent.
    pub remove: Vec<Vec<u8>>,
    /// Request headers to set, in order.
    pub set: Vec<(String, String)>,
    /// The assignments dictionary, also the value of the response echo and of the
    /// `wasm.abmesh_assignments` filter state.
    pub assignments: Option<String>,
    /// Response header to set, if `output.response_header` is configured.
    pub response: Option<(String, String)>,
    /// The exposure record, if the request has an exposure.
    pub exposure: Option<String>,
}

/// Whether a request header must never reach the upstream as the client sent it.
pub fn is_spoofable(config: &Config, name: &[u8]) -> bool {
    let o = &config.output;
    name.eq_ignore_ascii_case(o.header.as_bytes())
        || name
            .get(..o.route_header_prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(o.route_header_prefix.as_bytes()))
        || name.eq_ignore_ascii_case(config.overrides.header.as_bytes())
        || name.eq_ignore_ascii_case(config.overrides.token_header.as_bytes())
}

impl Plan {
    pub fn new<'a>(config: &Config, req: &RequestView<'a>, now_ms: i64) -> (Plan, Evaluation<'a>) {
        let mut remove: Vec<Vec<u8>> = Vec::new();
        for name in req.header_names() {
            if is_spoofable(config, name) && !remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                remove.push(name.to_vec());
            }
        }
        let eval = evaluate(config, req, now_ms);
        let assignments = assignments_dictionary(config, &eval);
        let mut set = Vec::new();
        if let Some(a) = &assignments {
            set.push((config.output.header.clone(), a.clone()));
        }
        for (name, variant) in route_headers(config, &eval) {
            set.push((name.to_string(), variant.to_string()));
        }
        let response = match (&config.output.response_header, &assignments) {
            (Some(h), Some(a)) => Some((h.clone(), a.clone())),
            _ => None,
        };
        let exposure = exposure_record(config, &eval, now_ms, req.header(b"x-request-id"));
        (
            Plan {
                remove,
                set,
                assignments,
                response,
                exposure,
            },
            eval,
        )
    }
}
