//! Everything the filter does to one request, decided without the host: the headers to
//! remove and set, the response echo and the exposure record. The filter glue applies a
//! `Plan`; `abmesh assign` prints one, so the CLI shows exactly what the filter does.
//!
//! A plan borrows every configuration-derived string (header names, variants) from the
//! compiled configuration: the request path allocates only what the request itself decides.

use crate::assign::{evaluate, Evaluation};
use crate::config::Config;
use crate::exposure::{assignments_dictionary, exposure_line};
use crate::request::RequestView;

/// What the filter writes before an exposure record in its log line.
pub const LOG_PREFIX: &str = "abmesh.exposure ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'c> {
    /// Names of request headers present that must be removed (spoofing protection), as sent.
    pub remove: Vec<Vec<u8>>,
    /// `output.header`.
    pub header: &'c str,
    /// The assignments dictionary: the value of `output.header`, of the response echo and of
    /// the `wasm.abmesh_assignments` filter state. `None` when nothing is assigned.
    pub assignments: Option<String>,
    /// Route headers to set: `(x-exp-<key>, variant)`.
    pub route: Vec<(&'c str, &'c str)>,
    /// `output.response_header`, set to the dictionary on the response when there is one.
    pub response_header: Option<&'c str>,
    /// `abmesh.exposure <record>`, the log line, if the request has an exposure. The record
    /// is its tail ([`Plan::exposure`]): one buffer serves the log and the filter state.
    pub exposure_line: Option<String>,
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

impl<'c> Plan<'c> {
    pub fn new<'a>(
        config: &'c Config,
        req: &RequestView<'a>,
        now_ms: i64,
    ) -> (Plan<'c>, Evaluation<'a>) {
        let mut remove: Vec<Vec<u8>> = Vec::new();
        for name in req.header_names() {
            if is_spoofable(config, name) && !remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                remove.push(name.to_vec());
            }
        }
        let eval = evaluate(config, req, now_ms);
        let assignments = assignments_dictionary(config, &eval);
        let route = eval
            .assignments
            .iter()
            .filter_map(|a| {
                let e = &config.experiments[a.experiment];
                Some((
                    e.route_header.as_deref()?,
                    e.variants[a.variant].name.as_str(),
                ))
            })
            .collect();
        let response_header = config
            .output
            .response_header
            .as_deref()
            .filter(|_| assignments.is_some());
        let exposure_line = exposure_line(
            config,
            &eval,
            now_ms,
            req.header(b"x-request-id"),
            LOG_PREFIX,
        );
        let plan = Plan {
            remove,
            header: &config.output.header,
            assignments,
            route,
            response_header,
            exposure_line,
        };
        (plan, eval)
    }

    /// The request headers to set, in order: `output.header`, then the route headers.
    pub fn set(&self) -> Vec<(&str, &str)> {
        let mut set: Vec<(&str, &str)> = Vec::with_capacity(1 + self.route.len());
        if let Some(a) = &self.assignments {
            set.push((self.header, a));
        }
        set.extend(self.route.iter().copied());
        set
    }

    /// The exposure record (JSON), if the request has an exposure.
    pub fn exposure(&self) -> Option<&str> {
        self.exposure_line
            .as_deref()
            .and_then(|l| l.get(LOG_PREFIX.len()..))
    }

    /// The response header to set, if any.
    pub fn response(&self) -> Option<(&str, &str)> {
        Some((self.response_header?, self.assignments.as_deref()?))
    }
}
