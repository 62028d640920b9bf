//! Everything the filter does to one request, decided without the host: the headers to
//! remove and set, the response echo and the exposure record. The filter glue applies a
//! `Plan`; `abmesh assign` prints one, so the CLI shows exactly what the filter does.
//!
//! A plan borrows every configuration-derived string (header names, variants) from the
//! compiled configuration: the request path allocates only what the request itself decides.

use std::borrow::Cow;

use crate::assign::{evaluate_units, has_valid_token, resolve_units, token_matters, Evaluation};
use crate::baggage::{self, Rewrite};
use crate::config::{is_valid_key, is_valid_variant, Config, Inbound, LogLevel};
use crate::exposure::{assignments_dictionary, exposure_line, units_object};
use crate::mint::{mint_id, set_cookie};
use crate::request::RequestView;
use crate::sfv::parse_members;

/// What the filter writes before an exposure record in its log line.
pub const LOG_PREFIX: &str = "abmesh.exposure ";

#[derive(Debug, Clone, PartialEq, Eq)]
/// Everything the filter does to one request, decided without the host.
pub struct Plan<'c> {
    /// Names of request headers present that must be removed (spoofing protection), as sent.
    pub remove: Vec<Vec<u8>>,
    /// `output.header`.
    pub header: &'c str,
    /// The assignments dictionary: the value of `output.header`, of the response echo and of
    /// the `wasm.abmesh_assignments` filter state. `None` when nothing is assigned. A trusting
    /// tier's starts with the assignments it received for experiments it does not define.
    pub assignments: Option<String>,
    /// Route headers to set: `(x-exp-<key>, variant)`.
    pub route: Vec<(&'c str, &'c str)>,
    /// `output.response_header`, set to the dictionary on the response when there is one.
    pub response_header: Option<&'c str>,
    /// `abmesh.exposure <record>`, the log line, if the request has an exposure. The record
    /// is its tail ([`Plan::exposure`]): one buffer serves the log and the filter state.
    pub exposure_line: Option<String>,
    /// The request's new `cookie` header when an id was minted, so the upstream (and any
    /// tier behind it) sees the visitor's id on the first request as on every later one.
    pub cookie: Option<Vec<u8>>,
    /// `Set-Cookie` values to add to the response: one per minted id.
    pub set_cookies: Vec<String>,
    /// What becomes of the request's `baggage` header.
    pub baggage: Rewrite,
    /// The assignments were left out of `baggage`: they would have made it exceed the W3C
    /// limit of 8,192 bytes.
    pub baggage_full: bool,
    /// `exposure.log`: the level the exposure line is logged at, `None` when it is not.
    pub log_level: Option<LogLevel>,
    /// `exposure.filter_state`: the record and the dictionary go to filter state.
    pub filter_state: bool,
    /// The request's unit ids (`wasm.abmesh_units`), on every request that has one.
    pub units: Option<String>,
}

/// One thing the filter does in the request callback, in the order it does it. The filter
/// applies these and decides nothing; `abmesh assign` prints the same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'p> {
    /// A request header the client sent that must not reach the upstream (as it was sent).
    RemoveRequestHeader(Cow<'p, str>),
    /// A request header and its new value.
    SetRequestHeader(&'p str, &'p [u8]),
    /// The exposure line, through the host log.
    Log(LogLevel, &'p str),
    /// Filter state `wasm.<name>`, for the access log.
    SetFilterState(&'static str, &'p str),
}

/// What the filter does to the response, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEffect<'p> {
    /// A response header and its value (the echo).
    SetHeader(&'p str, &'p str),
    /// A `Set-Cookie` beside the application's own.
    AddSetCookie(&'p str),
}

/// The filter-state names abmesh writes (`wasm.abmesh_exposure`, `wasm.abmesh_assignments`).
pub const FILTER_STATE_EXPOSURE: &str = "abmesh_exposure";
/// The filter-state name of the assignments dictionary.
pub const FILTER_STATE_ASSIGNMENTS: &str = "abmesh_assignments";
/// The request's unit ids as a JSON object (`wasm.abmesh_units`), for attributing every
/// access-log line to its units.
pub const FILTER_STATE_UNITS: &str = "abmesh_units";

/// Whether a request header must never reach the upstream as the client sent it (at an edge).
pub fn is_spoofable(config: &Config, name: &[u8]) -> bool {
    let o = &config.output;
    name.eq_ignore_ascii_case(o.header.as_bytes())
        || name
            .get(..o.route_header_prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(o.route_header_prefix.as_bytes()))
        || is_override_header(config, name)
}

fn is_override_header(config: &Config, name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(config.overrides.header.as_bytes())
        || name.eq_ignore_ascii_case(config.overrides.token_header.as_bytes())
}

/// At a trusting tier: the route header of one of this instance's experiments.
fn is_own_route_header(config: &Config, name: &[u8]) -> bool {
    let prefix = config.output.route_header_prefix.as_bytes();
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && config
            .experiments
            .iter()
            .any(|e| e.key.as_bytes().eq_ignore_ascii_case(&name[prefix.len()..]))
}

/// At a trusting tier: the received assignments for experiments this instance does not
/// define, as dictionary members (`key=variant` or `key=variant;forced`), from `output.header`
/// or else from the `abmesh` baggage member. Members that are not a valid key and variant
/// are dropped.
pub fn inherited(config: &Config, req: &RequestView) -> String {
    let mut received: Vec<u8> = Vec::new();
    for v in req.headers_all(config.output.header.as_bytes()) {
        if !received.is_empty() {
            received.push(b',');
        }
        received.extend_from_slice(v);
    }
    if received.is_empty() {
        let sent: Vec<&[u8]> = req.headers_all(b"baggage").collect();
        received = baggage::our_value(&sent).unwrap_or_default();
    }
    let mut out = String::new();
    for m in parse_members(&received) {
        let (Ok(key), Ok(variant)) = (std::str::from_utf8(m.key), std::str::from_utf8(m.value))
        else {
            continue;
        };
        if !is_valid_key(key)
            || !is_valid_variant(variant)
            || config.experiment_index(key.as_bytes()).is_some()
        {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(key);
        out.push('=');
        out.push_str(variant);
        if m.forced {
            out.push_str(";forced");
        }
    }
    out
}

impl<'c> Plan<'c> {
    /// The plan for a request at `now_ms` (Unix milliseconds); an id minted for it is derived
    /// from its `x-request-id` and that time.
    pub fn new<'a>(
        config: &'c Config,
        req: &RequestView<'a>,
        now_ms: i64,
    ) -> (Plan<'c>, Evaluation<'a>) {
        let now_ns = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1_000_000);
        Self::at(config, req, now_ns, 0)
    }

    /// The plan for a request at `now_ns` (Unix nanoseconds); `stream` (the filter's context
    /// id) separates ids minted for requests that have no `x-request-id`.
    pub fn at<'a>(
        config: &'c Config,
        req: &RequestView<'a>,
        now_ns: u64,
        stream: u32,
    ) -> (Plan<'c>, Evaluation<'a>) {
        let now_ms = i64::try_from(now_ns / 1_000_000).unwrap_or(i64::MAX);
        let trust = config.inbound == Inbound::Trust;
        // The token is checked once, and only when it matters.
        let token_ok = token_matters(config, req, trust) && has_valid_token(config, req);
        let inherited = if trust {
            inherited(config, req)
        } else {
            String::new()
        };

        let mut units = resolve_units(config, req);
        let mut minted = Vec::new();
        let mut set_cookies = Vec::new();
        let mut cookie: Option<Vec<u8>> = None;
        for (u, unit) in config.units.iter().enumerate() {
            let (None, Some(m)) = (&units[u], &unit.mint) else {
                continue;
            };
            let id = mint_id(req.header(b"x-request-id"), now_ns, &unit.name, stream);
            set_cookies.push(set_cookie(m, &id));
            let c = cookie.get_or_insert_with(|| {
                let sent: Vec<&[u8]> = req.headers_all(b"cookie").collect();
                sent.join(&b"; "[..])
            });
            if !c.is_empty() {
                c.extend_from_slice(b"; ");
            }
            c.extend_from_slice(m.cookie.as_bytes());
            c.push(b'=');
            c.extend_from_slice(id.as_bytes());
            units[u] = Some(Cow::Owned(id.into_bytes()));
            minted.push(u);
        }
        let mut eval = evaluate_units(config, req, units, now_ms, token_ok);
        eval.minted = minted;

        let own = assignments_dictionary(config, &eval);
        let assignments = match (inherited.is_empty(), own) {
            (true, own) => own,
            (false, None) => Some(inherited),
            (false, Some(own)) => Some(format!("{inherited}, {own}")),
        };

        let mut remove: Vec<Vec<u8>> = Vec::new();
        for name in req.header_names() {
            let drop = if trust {
                (name.eq_ignore_ascii_case(config.output.header.as_bytes())
                    && assignments.is_none())
                    || is_own_route_header(config, name)
                    || (is_override_header(config, name) && !token_ok)
            } else {
                is_spoofable(config, name)
            };
            if drop && !remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                remove.push(name.to_vec());
            }
        }

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
        let sent_baggage: Vec<&[u8]> = req.headers_all(b"baggage").collect();
        let (baggage, baggage_full) = match (config.output.baggage, trust) {
            (true, _) => baggage::rewrite(&sent_baggage, assignments.as_deref()),
            // A trusting tier that does not write baggage passes on what the edge wrote.
            (false, true) => (Rewrite::Unchanged, false),
            // An edge removes an `abmesh` member a client sent, whatever the configuration.
            (false, false) if sent_baggage.is_empty() => (Rewrite::Unchanged, false),
            (false, false) => baggage::rewrite(&sent_baggage, None),
        };
        let plan = Plan {
            remove,
            header: &config.output.header,
            assignments,
            route,
            response_header,
            exposure_line,
            cookie,
            set_cookies,
            baggage,
            baggage_full,
            log_level: config.exposure.log.then_some(config.exposure.log_level),
            filter_state: config.exposure.filter_state,
            units: if config.exposure.filter_state {
                units_object(config, &eval)
            } else {
                None
            },
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

    /// Everything the request callback does, in order: remove spoofable headers, set the
    /// assignments and route headers, the minted cookie and baggage, then log the exposure and
    /// write filter state.
    pub fn effects(&self) -> Vec<Effect<'_>> {
        let mut out: Vec<Effect<'_>> = self
            .remove
            .iter()
            .map(|n| Effect::RemoveRequestHeader(String::from_utf8_lossy(n)))
            .collect();
        for (n, v) in self.set() {
            out.push(Effect::SetRequestHeader(n, v.as_bytes()));
        }
        if let Some(c) = &self.cookie {
            out.push(Effect::SetRequestHeader("cookie", c));
        }
        match &self.baggage {
            Rewrite::Unchanged => {}
            Rewrite::Remove => out.push(Effect::RemoveRequestHeader(Cow::Borrowed("baggage"))),
            Rewrite::Set(v) => out.push(Effect::SetRequestHeader("baggage", v)),
        }
        if let (Some(line), Some(record)) = (&self.exposure_line, self.exposure()) {
            if let Some(level) = self.log_level {
                out.push(Effect::Log(level, line));
            }
            if self.filter_state {
                out.push(Effect::SetFilterState(FILTER_STATE_EXPOSURE, record));
            }
        }
        if let (Some(a), true) = (&self.assignments, self.filter_state) {
            out.push(Effect::SetFilterState(FILTER_STATE_ASSIGNMENTS, a));
        }
        if let (Some(u), true) = (&self.units, self.filter_state) {
            out.push(Effect::SetFilterState(FILTER_STATE_UNITS, u));
        }
        out
    }

    /// Everything the response callback does, in order: the echo, then minted cookies.
    pub fn response_effects(&self) -> Vec<ResponseEffect<'_>> {
        let mut out: Vec<ResponseEffect<'_>> = self
            .response()
            .map(|(n, v)| ResponseEffect::SetHeader(n, v))
            .into_iter()
            .collect();
        out.extend(
            self.set_cookies
                .iter()
                .map(|c| ResponseEffect::AddSetCookie(c)),
        );
        out
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
