//! The proxy-wasm glue: the only module that calls the host.
//!
//! Every host call goes through `host`, raw ABI bindings that return the status: the SDK's
//! context helpers `unwrap` every host status and its `hostcalls` wrappers `panic!` on an
//! unexpected one, either of which would crash the VM (a crashed VM answers 503 to every later
//! request on its worker). Every failure here is counted and the request continues
//! untouched: abmesh fails open.
//!
//! Host calls per request are few and do not depend on the number of experiments: read the
//! headers (1), read the clock (1), set `x-experiments` (1) and each assigned route header,
//! log the exposure (1), set the two filter-state values (2), echo on the response (0 or 1),
//! and remove headers only when a client sent spoofable ones. Counters are accumulated in
//! the VM during request callbacks and published by the VM's own timer (`on_tick`), so 100
//! experiments cost no more host calls than one.
//!
//! The ABI entry points and the contexts' bookkeeping are in `abi` (no SDK dispatcher).
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

mod abi;
mod fault;
mod host;
mod stage;

use host::{HostError, LogLevel, MapType};

use abmesh::request::parse_header_map;

use abmesh::config::{Config, LogLevel as ExposureLevel};
use abmesh::counts::{Counts, Series, Sink, SinkError};
use abmesh::metrics::{replicated, status_class, ErrorKind};
use abmesh::plan::{Effect, Plan, ResponseEffect};
use abmesh::summary::one_line;
use abmesh::Evaluation;
use abmesh::RequestView;
use stage::Stage;

/// Counts host calls made on behalf of a request (feature `count-host-calls`, used by
/// `./build.sh bench` to report the figure; compiled out otherwise).
macro_rules! host {
    ($call:expr) => {{
        #[cfg(feature = "count-host-calls")]
        HOST_CALLS.with(|c| c.set(c.get() + 1));
        $call
    }};
}

#[cfg(feature = "count-host-calls")]
thread_local! {
    static HOST_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Logs and resets the count of host calls of one callback (`abmesh.host_calls <callback> <n>`).
#[cfg(feature = "count-host-calls")]
fn report_host_calls(callback: &str) {
    let n = HOST_CALLS.with(|c| c.replace(0));
    log(LogLevel::Info, &format!("abmesh.host_calls {callback} {n}"));
}

/// How often a VM publishes the counts its requests accumulated.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

fn log(level: LogLevel, message: &str) {
    // Logging is best effort: there is nowhere to report a failed log call.
    let _ = host::log(level, message);
}

/// How long one publication may keep its worker from requests. A publication that defines
/// hundreds of series (each through Envoy's stats-tag rules) or adds to tens of thousands
/// stops here and the next one, a second later, goes on where it stopped.
const PUBLICATION_BUDGET_NS: u64 = 20_000_000;

/// Envoy's stats, through the status-returning host calls, until the publication's deadline.
struct HostSink {
    /// `None` when the clock could not be read: the publication then runs to its end.
    deadline_ns: Option<u64>,
}

impl HostSink {
    fn new() -> Self {
        HostSink {
            deadline_ns: host::current_time_ns()
                .ok()
                .map(|t| t.saturating_add(PUBLICATION_BUDGET_NS)),
        }
    }
}

impl Sink for HostSink {
    fn out_of_time(&mut self) -> bool {
        match (self.deadline_ns, host::current_time_ns()) {
            (Some(deadline), Ok(now)) => now >= deadline,
            _ => false,
        }
    }

    fn define(&mut self, name: &str) -> Result<u32, SinkError> {
        host::define_counter(name).map_err(|HostError| SinkError)
    }

    fn increment(&mut self, id: u32, n: u64) -> Result<(), SinkError> {
        host::increment_counter(id, i64::try_from(n).unwrap_or(i64::MAX))
            .map_err(|HostError| SinkError)
    }
}

struct Compiled {
    config: Config,
    metrics: RefCell<Counts>,
}

impl Compiled {
    /// A host call failed: the request goes on unchanged, the failure is counted.
    fn host_failed(&self) {
        self.metrics
            .borrow_mut()
            .add(Series::Error(ErrorKind::Host as usize));
    }
}

#[derive(Default)]
struct Root {
    compiled: Option<Rc<Compiled>>,
    /// Configurations replaced by a reload, kept until their last counts are published.
    retired: Vec<Rc<Compiled>>,
}

impl Root {
    /// Reads, compiles and swaps in the plugin configuration; false refuses it.
    fn configure(&mut self, size: usize) -> bool {
        let bytes = match host::plugin_configuration(size) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(HostError) => {
                log(
                    LogLevel::Error,
                    "abmesh: cannot read the plugin configuration (the host refused)",
                );
                return false;
            }
        };
        match Config::parse(&bytes) {
            Ok(config) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "abmesh {} configured: {}",
                        env!("CARGO_PKG_VERSION"),
                        one_line(&config)
                    ),
                );
                let metrics = RefCell::new(Counts::for_config(&config));
                // Swapped only on success: a bad push leaves the previous configuration serving.
                if let Some(old) = self.compiled.replace(Rc::new(Compiled { config, metrics })) {
                    self.retired.push(old);
                }
                let period = u32::try_from(PUBLISH_EVERY.as_millis()).unwrap_or(1000);
                if host::set_tick_period_ms(period).is_err() {
                    log(
                        LogLevel::Error,
                        "abmesh: the host refused a timer: counts will not be published",
                    );
                }
                true
            }
            Err(err) => {
                for e in &err.errors {
                    log(LogLevel::Error, &format!("abmesh: {e}"));
                }
                log(
                    LogLevel::Error,
                    &format!(
                        "abmesh: configuration refused ({} errors)",
                        err.errors.len()
                    ),
                );
                false
            }
        }
    }

    /// The VM's timer: publish what the requests counted.
    fn tick(&mut self) {
        #[cfg(feature = "fault-injection")]
        fault::begin_tick();
        let mut sink = HostSink::new();
        for c in self.retired.iter().chain(&self.compiled) {
            c.metrics.borrow_mut().publish(&c.config, &mut sink);
        }
        #[cfg(feature = "fault-injection")]
        fault::end();
        // A retired configuration still referenced by an in-flight request stays until the
        // request ends, so its counts are published by a later tick.
        self.retired.retain(|c| Rc::strong_count(c) > 1);
    }
}

/// An OFREP evaluation waiting for its body (`abmesh::ofrep`).
struct OfrepRequest {
    route: abmesh::ofrep::Route,
    method: Vec<u8>,
    if_none_match: Option<Vec<u8>>,
}

struct Request {
    compiled: Option<Rc<Compiled>>,
    context_id: u32,
    /// Set when the request is an OFREP evaluation: answered here, never forwarded.
    ofrep: Option<OfrepRequest>,
    /// What the plan does to the response (`Plan::response_effects`), copied during the
    /// request callback: `(add, name, value)`, `add` for a header beside the message's own.
    response: Vec<(bool, String, String)>,
    /// What the response and log callbacks need, copied during the request callback (request
    /// data is never read after it): the `(experiment, variant)` assignments, the start time,
    /// and the response status once seen.
    assigned: Vec<(usize, usize)>,
    /// The hashed assignments with their replicate (`abmesh::metrics::replicated`).
    replicated: Vec<(usize, usize, u16)>,
    start_ms: i64,
    status: Option<u16>,
    /// The host calls this request asks to fail (test builds: `fault`).
    #[cfg(feature = "fault-injection")]
    faults: Vec<host::Call>,
}

impl Request {
    fn new(compiled: Option<Rc<Compiled>>, context_id: u32) -> Self {
        Request {
            compiled,
            context_id,
            ofrep: None,
            response: Vec::new(),
            assigned: Vec::new(),
            replicated: Vec::new(),
            start_ms: 0,
            status: None,
            #[cfg(feature = "fault-injection")]
            faults: Vec::new(),
        }
    }

    /// True when the request was answered here (an OFREP evaluation with nothing to wait
    /// for): the host stops it.
    fn on_request_headers(&mut self, end_of_stream: bool) -> bool {
        let Some(compiled) = self.compiled.clone() else {
            // Unreachable in Envoy (a refused configuration creates no filter), but fail open.
            return false;
        };
        #[cfg(feature = "fault-injection")]
        fault::begin(&[], true);
        let waits = match handle_request(&compiled, self, end_of_stream) {
            Ok(waits) => waits,
            Err(HostError) => {
                compiled.host_failed();
                false
            }
        };
        #[cfg(feature = "fault-injection")]
        fault::end();
        #[cfg(feature = "count-host-calls")]
        report_host_calls("request");
        waits
    }

    /// A chunk of an OFREP evaluation's body arrived (`size`: all buffered so far): true to
    /// keep buffering; at the end of the stream the evaluation is answered.
    fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> bool {
        let (Some(compiled), true) = (self.compiled.clone(), self.ofrep.is_some()) else {
            return false;
        };
        #[cfg(feature = "fault-injection")]
        fault::begin(&self.faults, false);
        let held = self.answer_body(&compiled, size, end_of_stream);
        #[cfg(feature = "fault-injection")]
        fault::end();
        held
    }

    fn answer_body(&mut self, compiled: &Compiled, size: usize, end_of_stream: bool) -> bool {
        let Some(pending) = self.ofrep.as_ref() else {
            return false;
        };
        let answer = if size > abmesh::ofrep::MAX_BODY_BYTES {
            abmesh::ofrep::too_large(&pending.route, size)
        } else if !end_of_stream {
            return true;
        } else {
            match host::request_body(size) {
                Ok(body) => answer_ofrep(&compiled.config, pending, &body),
                Err(HostError) => {
                    compiled.host_failed();
                    abmesh::ofrep::Answer {
                        status: 500,
                        body: r#"{"errorDetails":"the request body could not be read"}"#.into(),
                        etag: None,
                    }
                }
            }
        };
        self.ofrep = None;
        // Unanswered, the request goes on to the route's own answer rather than hang.
        if send_answer(&answer).is_err() {
            compiled.host_failed();
            return false;
        }
        true
    }

    fn on_response_headers(&mut self) {
        let Some(compiled) = self.compiled.clone() else {
            return;
        };
        #[cfg(feature = "fault-injection")]
        fault::begin(&self.faults, false);
        let mut ok = true;
        if !self.assigned.is_empty() && !cfg!(feature = "bench-without-slis") {
            match host!(host::response_status()) {
                Ok(status) => self.status = status,
                Err(HostError) => ok = false,
            }
        }
        for (add, name, value) in std::mem::take(&mut self.response) {
            let map = MapType::HttpResponseHeaders;
            ok &= if add {
                host!(host::add_header(map, &name, value.as_bytes())).is_ok()
            } else {
                host!(host::set_header(map, &name, value.as_bytes())).is_ok()
            };
        }
        if !ok {
            compiled.host_failed();
        }
        #[cfg(feature = "fault-injection")]
        fault::end();
        #[cfg(feature = "count-host-calls")]
        report_host_calls("response");
    }

    /// The stream is over (answered, or reset): record the outcome of every assignment.
    fn on_log(&mut self) {
        let Some(compiled) = &self.compiled else {
            return;
        };
        if self.assigned.is_empty() || cfg!(feature = "bench-without-slis") {
            return;
        }
        #[cfg(feature = "fault-injection")]
        fault::begin(&self.faults, false);
        let mut metrics = compiled.metrics.borrow_mut();
        match now_ns() {
            Ok(now) => {
                let now = (now / 1_000_000) as i64;
                let duration = u64::try_from(now - self.start_ms).unwrap_or(0);
                metrics.record_response(
                    &self.assigned,
                    &self.replicated,
                    status_class(self.status),
                    duration,
                );
            }
            Err(HostError) => metrics.add(Series::Error(ErrorKind::Host as usize)),
        }
        drop(metrics);
        #[cfg(feature = "fault-injection")]
        fault::end();
        #[cfg(feature = "count-host-calls")]
        report_host_calls("log");
    }
}

fn now_ns() -> Result<u64, HostError> {
    host!(host::current_time_ns())
}

/// The answer to an OFREP evaluation, at the host's time (the epoch if the clock fails: the
/// answer is still the same unit's).
fn answer_ofrep(config: &Config, pending: &OfrepRequest, body: &[u8]) -> abmesh::ofrep::Answer {
    let now_ms = now_ns().map_or(0, |n| (n / 1_000_000) as i64);
    let Some(ofrep) = &config.ofrep else {
        return abmesh::ofrep::Answer {
            status: 404,
            body: r#"{"errorDetails":"OFREP is off"}"#.into(),
            etag: None,
        };
    };
    abmesh::ofrep::answer(
        config,
        ofrep,
        &pending.route,
        &pending.method,
        body,
        pending.if_none_match.as_deref(),
        now_ms,
    )
}

fn send_answer(answer: &abmesh::ofrep::Answer) -> Result<(), HostError> {
    let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
    if let Some(etag) = &answer.etag {
        headers.push(("etag", etag.as_bytes()));
    }
    if answer.status == 405 {
        headers.push(("allow", b"POST"));
    }
    host!(host::send_local_response(
        answer.status,
        &headers,
        answer.body.as_bytes()
    ))
}

/// An OFREP request under `ofrep.path_prefix`: answered at once when it has no body to wait
/// for (an unknown endpoint, not a POST, no body), else held for its body. True when held.
fn start_ofrep(
    config: &Config,
    ctx: &mut Request,
    req: &RequestView,
    end_of_stream: bool,
) -> Option<Result<bool, HostError>> {
    let route = abmesh::ofrep::route(config.ofrep.as_ref()?, req.path())?;
    #[cfg(feature = "fault-injection")]
    {
        ctx.faults = fault::requested(req.header(b"x-abmesh-fault"));
    }
    let pending = OfrepRequest {
        route,
        method: req.header(b":method").unwrap_or_default().to_vec(),
        if_none_match: req.header(b"if-none-match").map(<[u8]>::to_vec),
    };
    let waits = !end_of_stream
        && pending.method == b"POST"
        && pending.route != abmesh::ofrep::Route::Unknown;
    if waits {
        // The headers go on (proxy-wasm hosts turn a paused header callback into a stop of
        // the body too, so the body would never arrive here): the `buffer` filter after
        // abmesh holds them from the router until the body is complete, and the route's
        // direct response stands in if it is missing (envoy/envoy.yaml).
        ctx.ofrep = Some(pending);
        return Some(Ok(false));
    }
    // Unanswered (the host refused), the request goes on to the route's own answer.
    let answer = answer_ofrep(config, &pending, b"");
    Some(send_answer(&answer).map(|()| true))
}

fn handle_request(
    compiled: &Compiled,
    ctx: &mut Request,
    end_of_stream: bool,
) -> Result<bool, HostError> {
    let config = &compiled.config;
    let buffer = host!(host::request_header_buffer())?;
    let req = RequestView::from_pairs(parse_header_map(&buffer).ok_or(HostError)?);
    if let Some(handled) = start_ofrep(config, ctx, &req, end_of_stream) {
        return handled;
    }
    handle_assignment(compiled, ctx, &req).map(|()| false)
}

fn handle_assignment(
    compiled: &Compiled,
    ctx: &mut Request,
    req: &RequestView,
) -> Result<(), HostError> {
    let config = &compiled.config;
    #[cfg(feature = "trap-on-header")]
    if req.header(b"x-abmesh-trap").is_some() {
        // A deliberate VM trap, standing in for any bug that could crash the VM.
        core::arch::wasm32::unreachable();
    }
    #[cfg(feature = "fault-injection")]
    {
        ctx.faults = fault::requested(req.header(b"x-abmesh-fault"));
    }
    // Benchmark builds stop here or at a later stage (`stage`); the release build runs on.
    if !stage::runs(Stage::Units) {
        return Ok(());
    }
    if !stage::runs(Stage::Evaluate) {
        core::hint::black_box(abmesh::assign::resolve_units(config, req));
        return Ok(());
    }
    let now_ns = now_ns()?;
    if !stage::runs(Stage::Render) {
        let now_ms = (now_ns / 1_000_000) as i64;
        core::hint::black_box(abmesh::evaluate(config, req, now_ms));
        return Ok(());
    }
    let (plan, eval) = Plan::at(config, req, now_ns, ctx.context_id);
    if !stage::runs(Stage::SetHeaders) {
        core::hint::black_box((&plan, &eval));
        return Ok(());
    }
    // Apply the plan: every effect is tried, a failed one counted, none skipped.
    let map = MapType::HttpRequestHeaders;
    let mut ok = true;
    for effect in plan.effects() {
        ok &= match effect {
            Effect::RemoveRequestHeader(name) => host!(host::remove_header(map, &name)).is_ok(),
            Effect::SetRequestHeader(name, value) => {
                host!(host::set_header(map, name, value)).is_ok()
            }
            Effect::Log(level, line) if stage::runs(Stage::FilterState) => {
                host!(host::log(log_level(level), line)).is_ok()
            }
            Effect::SetFilterState(name, value) if stage::runs(Stage::FilterState) => {
                host!(host::set_property(name, value.as_bytes())).is_ok()
            }
            Effect::Log(..) | Effect::SetFilterState(..) => true,
        };
    }
    if stage::runs(Stage::Count) {
        count(compiled, ctx, &plan, &eval, now_ns);
    }
    if ok {
        Ok(())
    } else {
        Err(HostError)
    }
}

/// Counts the request in the VM and keeps what the response and stream-end callbacks need.
fn count(compiled: &Compiled, ctx: &mut Request, plan: &Plan, eval: &Evaluation, now_ns: u64) {
    let replicated = replicated(&compiled.config, eval);
    let mut metrics = compiled.metrics.borrow_mut();
    metrics.count(eval, &replicated);
    if plan.baggage_full {
        metrics.add(Series::Error(ErrorKind::Baggage as usize));
    }
    drop(metrics);
    if !stage::runs(Stage::Full) {
        return;
    }
    ctx.start_ms = (now_ns / 1_000_000) as i64;
    ctx.replicated = replicated;
    ctx.assigned = eval
        .assignments
        .iter()
        .map(|a| (a.experiment, a.variant))
        .collect();
    ctx.response = plan
        .response_effects()
        .into_iter()
        .map(|r| match r {
            ResponseEffect::SetHeader(n, v) => (false, n.to_string(), v.to_string()),
            ResponseEffect::AddSetCookie(c) => (true, "set-cookie".to_string(), c.to_string()),
        })
        .collect();
}

fn log_level(level: ExposureLevel) -> LogLevel {
    match level {
        ExposureLevel::Trace => LogLevel::Trace,
        ExposureLevel::Debug => LogLevel::Debug,
        ExposureLevel::Info => LogLevel::Info,
        ExposureLevel::Warn => LogLevel::Warn,
        ExposureLevel::Error => LogLevel::Error,
        ExposureLevel::Critical => LogLevel::Critical,
    }
}
