//! The proxy-wasm glue: the only module that calls the host.
//!
//! It uses `proxy_wasm::hostcalls` directly rather than the context traits' helpers, because
//! those `unwrap` every host status and would crash the VM (a crashed VM answers 503 to every
//! later request on its worker). Every failure here is counted and the request continues
//! untouched: abmesh fails open.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use crate::assign::{Evaluation, Reason};
use crate::config::{Config, LogLevel as ExposureLevel};
use crate::metrics::{stat_name, ErrorKind, ASSIGNMENTS, ERRORS, FORCED, NOT_ASSIGNED};
use crate::plan::Plan;
use crate::summary::one_line;
use crate::RequestView;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(level: LogLevel, message: &str) {
    // Logging is best effort: there is nowhere to report a failed log call.
    let _ = hostcalls::log(level, message);
}

/// Metric ids, defined on first use in a request callback and cached for the VM's lifetime
/// (define_metric is idempotent in Envoy, but a host call per lookup is not free).
#[derive(Default)]
struct Metrics {
    assigned: Vec<Vec<Option<u32>>>,
    forced: Vec<Vec<Option<u32>>>,
    not_assigned: Vec<[Option<u32>; 7]>,
    errors: [Option<u32>; ErrorKind::COUNT],
}

impl Metrics {
    fn for_config(config: &Config) -> Self {
        Metrics {
            assigned: config
                .experiments
                .iter()
                .map(|e| vec![None; e.variants.len()])
                .collect(),
            forced: config
                .experiments
                .iter()
                .map(|e| vec![None; e.variants.len()])
                .collect(),
            not_assigned: vec![[None; 7]; config.experiments.len()],
            errors: [None; ErrorKind::COUNT],
        }
    }
}

fn increment(slot: Option<&mut Option<u32>>, name: impl FnOnce() -> String) {
    let Some(slot) = slot else { return };
    if slot.is_none() {
        *slot = hostcalls::define_metric(MetricType::Counter, &name()).ok();
    }
    if let Some(id) = *slot {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

fn count_error(metrics: &RefCell<Metrics>, kind: ErrorKind) {
    let mut m = metrics.borrow_mut();
    let i = kind as usize;
    increment(m.errors.get_mut(i), || {
        stat_name(ERRORS, &[("kind", kind.as_str())])
    });
}

struct Compiled {
    config: Config,
    metrics: RefCell<Metrics>,
}

#[derive(Default)]
struct Root {
    compiled: Option<Rc<Compiled>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("abmesh: cannot read the plugin configuration (status {status:?})"),
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
                self.compiled = Some(Rc::new(Compiled { config, metrics }));
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            compiled: self.compiled.clone(),
            response: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    compiled: Option<Rc<Compiled>>,
    /// The response echo, copied during the request callback.
    response: Option<(String, String)>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(compiled) = self.compiled.clone() else {
            // Unreachable in Envoy (a refused configuration creates no filter), but fail open.
            return Action::Continue;
        };
        if handle_request(&compiled, &mut self.response).is_err() {
            count_error(&compiled.metrics, ErrorKind::Host);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let (Some((name, value)), Some(compiled)) = (self.response.take(), &self.compiled) {
            if hostcalls::set_map_value_bytes(
                MapType::HttpResponseHeaders,
                &name,
                Some(value.as_bytes()),
            )
            .is_err()
            {
                count_error(&compiled.metrics, ErrorKind::Host);
            }
        }
        Action::Continue
    }
}

struct HostError;

fn now_ms() -> Result<i64, HostError> {
    let t = hostcalls::get_current_time().map_err(|_| HostError)?;
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| HostError)?;
    Ok(d.as_millis() as i64)
}

fn handle_request(
    compiled: &Compiled,
    response: &mut Option<(String, String)>,
) -> Result<(), HostError> {
    let config = &compiled.config;
    let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map_err(|_| HostError)?;
    let req = RequestView::new(&headers);
    let (plan, eval) = Plan::new(config, &req, now_ms()?);
    count(compiled, &eval);

    let mut failed = false;
    for name in &plan.remove {
        let name = String::from_utf8_lossy(name);
        failed |= hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, &name, None).is_err();
    }
    for (name, value) in &plan.set {
        failed |= hostcalls::set_map_value_bytes(
            MapType::HttpRequestHeaders,
            name,
            Some(value.as_bytes()),
        )
        .is_err();
    }
    *response = plan.response;
    if let Some(record) = &plan.exposure {
        if config.exposure.log {
            failed |= hostcalls::log(
                log_level(config.exposure.log_level),
                &format!("abmesh.exposure {record}"),
            )
            .is_err();
        }
        if config.exposure.filter_state {
            failed |=
                hostcalls::set_property(vec!["abmesh_exposure"], Some(record.as_bytes())).is_err();
        }
    }
    if let (Some(a), true) = (&plan.assignments, config.exposure.filter_state) {
        failed |= hostcalls::set_property(vec!["abmesh_assignments"], Some(a.as_bytes())).is_err();
    }
    if failed {
        Err(HostError)
    } else {
        Ok(())
    }
}

fn count(compiled: &Compiled, eval: &Evaluation) {
    let config = &compiled.config;
    let mut m = compiled.metrics.borrow_mut();
    for a in &eval.assignments {
        let e = &config.experiments[a.experiment];
        let name = |metric| {
            stat_name(
                metric,
                &[
                    ("experiment", &e.key),
                    ("variant", &e.variants[a.variant].name),
                ],
            )
        };
        increment(
            m.assigned
                .get_mut(a.experiment)
                .and_then(|v| v.get_mut(a.variant)),
            || name(ASSIGNMENTS),
        );
        if a.forced {
            increment(
                m.forced
                    .get_mut(a.experiment)
                    .and_then(|v| v.get_mut(a.variant)),
                || name(FORCED),
            );
        }
    }
    for &(i, reason) in &eval.not_assigned {
        let key = &config.experiments[i].key;
        let slot = Reason::ALL.iter().position(|r| *r == reason);
        increment(
            m.not_assigned
                .get_mut(i)
                .and_then(|r| slot.and_then(|s| r.get_mut(s))),
            || {
                stat_name(
                    NOT_ASSIGNED,
                    &[("experiment", key), ("reason", reason.as_str())],
                )
            },
        );
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
