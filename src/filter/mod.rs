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

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

mod fault;
mod host;

use host::HostError;

use crate::request::parse_header_map;

use crate::assign::{Evaluation, Reason};
use crate::baggage::Rewrite;
use crate::config::{Config, LogLevel as ExposureLevel};
use crate::metrics::{
    bucket_label, first_bucket, replicated, stat_name, status_class, ErrorKind, ReplicateSeries,
    ASSIGNMENTS, CLASSES, DURATION, DURATION_BOUNDS_MS, ERRORS, FORCED, NOT_ASSIGNED,
    REPLICATE_METRICS, RESPONSES,
};
use crate::plan::Plan;
use crate::summary::one_line;
use crate::RequestView;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

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

/// Which counter a pending count belongs to.
#[derive(Clone, Copy)]
enum Series {
    Assigned(usize, usize),
    Forced(usize, usize),
    NotAssigned(usize, usize),
    Error(usize),
    /// (experiment, variant, class index)
    Response(usize, usize, usize),
    /// (experiment, variant, bucket index)
    Bucket(usize, usize, usize),
    DurationSum(usize, usize),
    DurationCount(usize, usize),
    DurationSumSquares(usize, usize),
    /// (experiment, variant, replicate, series)
    Replicate(usize, usize, u16, ReplicateSeries),
}

/// One variant's service-level indicators.
#[derive(Clone, Copy, Default)]
struct Sli {
    responses: [Counter; CLASSES.len()],
    buckets: [Counter; DURATION_BOUNDS_MS.len() + 1],
    /// Requests per bucket since the last publication, not cumulative: a request adds one
    /// here, and publishing turns them into the cumulative `le` counts.
    recent: [u64; DURATION_BOUNDS_MS.len() + 1],
    sum: Counter,
    count: Counter,
    sum_squares: Counter,
}

/// A counter: the count not yet published, and its Envoy metric id once defined.
#[derive(Clone, Copy, Default)]
struct Counter {
    pending: u64,
    id: Option<u32>,
}

/// The VM's counters, shaped by the configuration. Request callbacks only add to `pending`
/// (no host call); `publish` hands the sums to Envoy.
struct Metrics {
    assigned: Vec<Vec<Counter>>,
    forced: Vec<Vec<Counter>>,
    not_assigned: Vec<[Counter; 7]>,
    errors: [Counter; ErrorKind::COUNT],
    slis: Vec<Vec<Sli>>,
    /// Per experiment and variant, the replicate series `[replicate][series]`; allocated on
    /// the variant's first replicated request, so idle variants cost nothing.
    replicates: Vec<Vec<Vec<[Counter; 4]>>>,
    replicate_count: u16,
    /// Counters with a pending count, so publishing never scans every series.
    touched: Vec<Series>,
    /// Variants with `recent` durations to fold into their buckets.
    recent: Vec<(usize, usize)>,
}

impl Metrics {
    fn for_config(config: &Config) -> Self {
        let per_variant = || {
            config
                .experiments
                .iter()
                .map(|e| vec![Counter::default(); e.variants.len()])
                .collect()
        };
        Metrics {
            assigned: per_variant(),
            forced: per_variant(),
            not_assigned: vec![[Counter::default(); 7]; config.experiments.len()],
            errors: [Counter::default(); ErrorKind::COUNT],
            slis: config
                .experiments
                .iter()
                .map(|e| vec![Sli::default(); e.variants.len()])
                .collect(),
            replicates: per_variant()
                .into_iter()
                .map(|v: Vec<Counter>| v.iter().map(|_| Vec::new()).collect())
                .collect(),
            replicate_count: config.replicates,
            touched: Vec::new(),
            recent: Vec::new(),
        }
    }

    fn counter(&mut self, s: Series) -> Option<&mut Counter> {
        match s {
            Series::Assigned(e, v) => self.assigned.get_mut(e)?.get_mut(v),
            Series::Forced(e, v) => self.forced.get_mut(e)?.get_mut(v),
            Series::NotAssigned(e, r) => self.not_assigned.get_mut(e)?.get_mut(r),
            Series::Error(k) => self.errors.get_mut(k),
            Series::Response(e, v, c) => self.sli(e, v)?.responses.get_mut(c),
            Series::Bucket(e, v, b) => self.sli(e, v)?.buckets.get_mut(b),
            Series::DurationSum(e, v) => Some(&mut self.sli(e, v)?.sum),
            Series::DurationCount(e, v) => Some(&mut self.sli(e, v)?.count),
            Series::DurationSumSquares(e, v) => Some(&mut self.sli(e, v)?.sum_squares),
            Series::Replicate(e, v, r, k) => {
                let count = usize::from(self.replicate_count);
                let series = self.replicates.get_mut(e)?.get_mut(v)?;
                if series.is_empty() {
                    series.resize(count, [Counter::default(); 4]);
                }
                series.get_mut(usize::from(r))?.get_mut(k as usize)
            }
        }
    }

    fn sli(&mut self, e: usize, v: usize) -> Option<&mut Sli> {
        self.slis.get_mut(e)?.get_mut(v)
    }

    fn add_n(&mut self, s: Series, n: u64) {
        let Some(c) = self.counter(s) else { return };
        let was_zero = c.pending == 0;
        c.pending = c.pending.saturating_add(n);
        if was_zero && n > 0 {
            self.touched.push(s);
        }
    }

    /// One finished request: its status class and duration, for each of its assignments and
    /// each of its replicated (hashed) assignments.
    fn record_response(
        &mut self,
        assigned: &[(usize, usize)],
        replicated: &[(usize, usize, u16)],
        class: usize,
        duration_ms: u64,
    ) {
        for &(e, v, r) in replicated {
            self.add(Series::Replicate(e, v, r, ReplicateSeries::Responses));
            if CLASSES.get(class) == Some(&"5xx") {
                self.add(Series::Replicate(e, v, r, ReplicateSeries::Errors5xx));
            }
            self.add_n(
                Series::Replicate(e, v, r, ReplicateSeries::DurationSum),
                duration_ms,
            );
        }
        let first = first_bucket(duration_ms);
        for &(e, v) in assigned {
            self.add(Series::Response(e, v, class));
            if let Some(sli) = self.sli(e, v) {
                let fresh = sli.recent.iter().all(|&n| n == 0);
                sli.recent[first] += 1;
                if fresh {
                    self.recent.push((e, v));
                }
            }
            self.add_n(Series::DurationSum(e, v), duration_ms);
            self.add(Series::DurationCount(e, v));
            self.add_n(
                Series::DurationSumSquares(e, v),
                duration_ms.saturating_mul(duration_ms),
            );
        }
    }

    fn add(&mut self, s: Series) {
        let Some(c) = self.counter(s) else { return };
        c.pending += 1;
        if c.pending == 1 {
            self.touched.push(s);
        }
    }

    fn count(&mut self, eval: &Evaluation, replicated: &[(usize, usize, u16)]) {
        for &(e, v, r) in replicated {
            self.add(Series::Replicate(e, v, r, ReplicateSeries::Assignments));
        }
        for a in &eval.assignments {
            self.add(Series::Assigned(a.experiment, a.variant));
            if a.forced {
                self.add(Series::Forced(a.experiment, a.variant));
            }
        }
        for &(e, reason) in &eval.not_assigned {
            if let Some(r) = Reason::ALL.iter().position(|x| *x == reason) {
                self.add(Series::NotAssigned(e, r));
            }
        }
    }

    /// Publishes pending counts: defines each metric on first use, then one increment per
    /// touched series.
    fn publish(&mut self, config: &Config) {
        let mut failed = Vec::new();
        for (e, v) in std::mem::take(&mut self.recent) {
            let Some(sli) = self.sli(e, v) else { continue };
            let recent = std::mem::take(&mut sli.recent);
            let mut cumulative = 0;
            for (b, n) in recent.iter().enumerate() {
                cumulative += n;
                self.add_n(Series::Bucket(e, v, b), cumulative);
            }
        }
        for s in std::mem::take(&mut self.touched) {
            let Some(c) = self.counter(s) else { continue };
            let pending = std::mem::take(&mut c.pending);
            if c.id.is_none() {
                c.id = host::define_counter(&series_name(config, s)).ok();
            }
            let published = match c.id {
                Some(id) => {
                    host::increment_counter(id, i64::try_from(pending).unwrap_or(i64::MAX)).is_ok()
                }
                None => false,
            };
            if !published {
                // Kept for the next publication (defining is retried), and counted.
                c.pending = c.pending.saturating_add(pending);
                failed.push(s);
            }
        }
        let failures = failed.len() as u64;
        self.touched.extend(failed);
        self.add_n(Series::Error(ErrorKind::Host as usize), failures);
    }
}

fn series_name(config: &Config, s: Series) -> String {
    let exp = |e: usize| config.experiments.get(e);
    match s {
        Series::Assigned(e, v) | Series::Forced(e, v) => {
            let metric = if matches!(s, Series::Assigned(..)) {
                ASSIGNMENTS
            } else {
                FORCED
            };
            let (key, variant) = exp(e).map_or(("", ""), |x| {
                (
                    x.key.as_str(),
                    x.variants.get(v).map_or("", |v| v.name.as_str()),
                )
            });
            stat_name(metric, &[("experiment", key), ("variant", variant)])
        }
        Series::NotAssigned(e, r) => {
            let key = exp(e).map_or("", |x| x.key.as_str());
            let reason = Reason::ALL.get(r).map_or("", |r| r.as_str());
            stat_name(NOT_ASSIGNED, &[("experiment", key), ("reason", reason)])
        }
        Series::Error(k) => {
            let kind = ErrorKind::ALL.get(k).map_or("", |k| k.as_str());
            stat_name(ERRORS, &[("kind", kind)])
        }
        Series::Response(e, v, c) => {
            let (key, variant) = names(config, e, v);
            let class = CLASSES.get(c).copied().unwrap_or("");
            stat_name(
                RESPONSES,
                &[("experiment", key), ("variant", variant), ("class", class)],
            )
        }
        Series::Bucket(e, v, b) => {
            let (key, variant) = names(config, e, v);
            let name = format!("{DURATION}_bucket");
            stat_name(
                &name,
                &[
                    ("experiment", key),
                    ("variant", variant),
                    ("le", &bucket_label(b)),
                ],
            )
        }
        Series::Replicate(e, v, r, k) => {
            let (key, variant) = names(config, e, v);
            stat_name(
                REPLICATE_METRICS[k as usize],
                &[
                    ("experiment", key),
                    ("variant", variant),
                    ("replicate", &r.to_string()),
                ],
            )
        }
        Series::DurationSum(e, v)
        | Series::DurationCount(e, v)
        | Series::DurationSumSquares(e, v) => {
            let (key, variant) = names(config, e, v);
            let suffix = match s {
                Series::DurationSum(..) => "sum",
                Series::DurationCount(..) => "count",
                _ => "sum_squares",
            };
            stat_name(
                &format!("{DURATION}_{suffix}"),
                &[("experiment", key), ("variant", variant)],
            )
        }
    }
}

fn names(config: &Config, e: usize, v: usize) -> (&str, &str) {
    config.experiments.get(e).map_or(("", ""), |x| {
        (
            x.key.as_str(),
            x.variants.get(v).map_or("", |v| v.name.as_str()),
        )
    })
}

struct Compiled {
    config: Config,
    metrics: RefCell<Metrics>,
}

#[derive(Default)]
struct Root {
    compiled: Option<Rc<Compiled>>,
    /// Configurations replaced by a reload, kept until their last counts are published.
    retired: Vec<Rc<Compiled>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
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
                let metrics = RefCell::new(Metrics::for_config(&config));
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

    fn on_tick(&mut self) {
        #[cfg(feature = "fault-injection")]
        fault::begin_tick();
        for c in self.retired.iter().chain(&self.compiled) {
            c.metrics.borrow_mut().publish(&c.config);
        }
        #[cfg(feature = "fault-injection")]
        fault::end();
        // A retired configuration still referenced by an in-flight request stays until the
        // request ends, so its counts are published by a later tick.
        self.retired.retain(|c| Rc::strong_count(c) > 1);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            compiled: self.compiled.clone(),
            context_id,
            response: None,
            set_cookies: Vec::new(),
            assigned: Vec::new(),
            replicated: Vec::new(),
            start_ms: 0,
            status: None,
            #[cfg(feature = "fault-injection")]
            faults: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    compiled: Option<Rc<Compiled>>,
    context_id: u32,
    /// The assignments to echo on the response, copied during the request callback.
    response: Option<String>,
    /// `Set-Cookie` values for ids minted for this request.
    set_cookies: Vec<String>,
    /// What the response and log callbacks need, copied during the request callback (request
    /// data is never read after it): the `(experiment, variant)` assignments, the start time,
    /// and the response status once seen.
    assigned: Vec<(usize, usize)>,
    /// The hashed assignments with their replicate (`crate::metrics::replicated`).
    replicated: Vec<(usize, usize, u16)>,
    start_ms: i64,
    status: Option<u16>,
    /// The host calls this request asks to fail (test builds: `fault`).
    #[cfg(feature = "fault-injection")]
    faults: Vec<host::Call>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(compiled) = self.compiled.clone() else {
            // Unreachable in Envoy (a refused configuration creates no filter), but fail open.
            return Action::Continue;
        };
        #[cfg(feature = "fault-injection")]
        fault::begin(&[], true);
        if handle_request(&compiled, self).is_err() {
            compiled
                .metrics
                .borrow_mut()
                .add(Series::Error(ErrorKind::Host as usize));
        }
        #[cfg(feature = "fault-injection")]
        fault::end();
        #[cfg(feature = "count-host-calls")]
        report_host_calls("request");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(compiled) = self.compiled.clone() else {
            return Action::Continue;
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
        if let (Some(value), Some(name)) = (
            self.response.take(),
            &compiled.config.output.response_header,
        ) {
            ok &= host!(host::set_header(
                MapType::HttpResponseHeaders,
                name,
                value.as_bytes()
            ))
            .is_ok();
        }
        for value in std::mem::take(&mut self.set_cookies) {
            ok &= host!(host::add_header(
                MapType::HttpResponseHeaders,
                "set-cookie",
                value.as_bytes()
            ))
            .is_ok();
        }
        if !ok {
            compiled
                .metrics
                .borrow_mut()
                .add(Series::Error(ErrorKind::Host as usize));
        }
        #[cfg(feature = "fault-injection")]
        fault::end();
        #[cfg(feature = "count-host-calls")]
        report_host_calls("response");
        Action::Continue
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

fn handle_request(compiled: &Compiled, ctx: &mut Request) -> Result<(), HostError> {
    let config = &compiled.config;
    let buffer = host!(host::request_header_buffer())?;
    let req = RequestView::from_pairs(parse_header_map(&buffer).ok_or(HostError)?);
    #[cfg(feature = "trap-on-header")]
    if req.header(b"x-abmesh-trap").is_some() {
        // A deliberate VM trap, standing in for any bug that could crash the VM.
        core::arch::wasm32::unreachable();
    }
    #[cfg(feature = "fault-injection")]
    {
        ctx.faults = fault::requested(req.header(b"x-abmesh-fault"));
    }
    let now_ns = now_ns()?;
    let (plan, eval) = Plan::at(config, &req, now_ns, ctx.context_id);
    let replicated = replicated(config, &eval);
    let mut metrics = compiled.metrics.borrow_mut();
    metrics.count(&eval, &replicated);
    if plan.baggage_full {
        metrics.add(Series::Error(ErrorKind::Baggage as usize));
    }
    drop(metrics);
    ctx.start_ms = (now_ns / 1_000_000) as i64;
    ctx.set_cookies = plan.set_cookies.clone();
    ctx.replicated = replicated;
    ctx.assigned = eval
        .assignments
        .iter()
        .map(|a| (a.experiment, a.variant))
        .collect();

    let set = |name: &str, value: Option<&[u8]>| -> bool {
        match value {
            Some(v) => host!(host::set_header(MapType::HttpRequestHeaders, name, v)).is_ok(),
            None => host!(host::remove_header(MapType::HttpRequestHeaders, name)).is_ok(),
        }
    };
    let mut ok = true;
    for name in &plan.remove {
        ok &= set(&String::from_utf8_lossy(name), None);
    }
    if let Some(a) = &plan.assignments {
        ok &= set(plan.header, Some(a.as_bytes()));
    }
    for (name, variant) in &plan.route {
        ok &= set(name, Some(variant.as_bytes()));
    }
    if let Some(cookie) = &plan.cookie {
        ok &= set("cookie", Some(cookie));
    }
    match &plan.baggage {
        Rewrite::Unchanged => {}
        Rewrite::Remove => ok &= set("baggage", None),
        Rewrite::Set(value) => ok &= set("baggage", Some(value)),
    }
    if plan.response_header.is_some() {
        ctx.response.clone_from(&plan.assignments);
    }
    if let (Some(line), Some(record)) = (&plan.exposure_line, plan.exposure()) {
        if config.exposure.log {
            ok &= host!(host::log(log_level(config.exposure.log_level), line)).is_ok();
        }
        if config.exposure.filter_state {
            ok &= host!(host::set_property("abmesh_exposure", record.as_bytes())).is_ok();
        }
    }
    if let (Some(a), true) = (&plan.assignments, config.exposure.filter_state) {
        ok &= host!(host::set_property("abmesh_assignments", a.as_bytes())).is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(HostError)
    }
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
