//! The filter's counters, added up inside a VM: request callbacks only add to pending counts
//! (no host call), and [`Counts::publish`] hands the sums to the host through a [`Sink`] — once
//! a second in the filter, so 100 experiments cost no more host calls per request than one.
//! Pure: the filter implements the sink with host calls, the tests with a map.

use crate::assign::{Evaluation, Reason};
use crate::config::Config;
use crate::metrics::{
    bucket_label, first_bucket, stat_name, ErrorKind, ReplicateSeries, ASSIGNMENTS, CLASSES,
    DURATION, DURATION_BOUNDS_MS, ERRORS, FORCED, NOT_ASSIGNED, REPLICATE_METRICS, RESPONSES,
};

/// Where published counts go: Envoy's stats in the filter.
pub trait Sink {
    /// Defines the counter `name` (Istio's `tag=.=value;.;` form) and returns its id.
    fn define(&mut self, name: &str) -> Result<u32, SinkError>;
    /// Adds `n` to a defined counter.
    fn increment(&mut self, id: u32, n: u64) -> Result<(), SinkError>;
}

/// The sink refused a call (a host call failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkError;

/// Which counter a pending count belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// (experiment, variant)
    Assigned(usize, usize),
    /// (experiment, variant)
    Forced(usize, usize),
    /// (experiment, reason index)
    NotAssigned(usize, usize),
    /// `ErrorKind` index
    Error(usize),
    /// (experiment, variant, class index)
    Response(usize, usize, usize),
    /// (experiment, variant, bucket index)
    Bucket(usize, usize, usize),
    /// (experiment, variant)
    DurationSum(usize, usize),
    /// (experiment, variant)
    DurationCount(usize, usize),
    /// (experiment, variant)
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
pub struct Counts {
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

impl Counts {
    /// Counters shaped by the configuration, all at zero.
    pub fn for_config(config: &Config) -> Self {
        let per_variant = || {
            config
                .experiments
                .iter()
                .map(|e| vec![Counter::default(); e.variants.len()])
                .collect()
        };
        Counts {
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

    /// Adds `n` to a series (no host call).
    pub fn add_n(&mut self, s: Series, n: u64) {
        let Some(c) = self.counter(s) else { return };
        let was_zero = c.pending == 0;
        c.pending = c.pending.saturating_add(n);
        if was_zero && n > 0 {
            self.touched.push(s);
        }
    }

    /// One finished request: its status class and duration, for each of its assignments and
    /// each of its replicated (hashed) assignments.
    pub fn record_response(
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

    /// Adds one to a series (no host call).
    pub fn add(&mut self, s: Series) {
        let Some(c) = self.counter(s) else { return };
        c.pending += 1;
        if c.pending == 1 {
            self.touched.push(s);
        }
    }

    /// Counts a request's assignments, reasons and replicated assignments.
    pub fn count(&mut self, eval: &Evaluation, replicated: &[(usize, usize, u16)]) {
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
    pub fn publish(&mut self, config: &Config, sink: &mut impl Sink) {
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
                c.id = sink.define(&series_name(config, s)).ok();
            }
            let published = match c.id {
                Some(id) => sink.increment(id, pending).is_ok(),
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

/// The stat name of a series.
pub fn series_name(config: &Config, s: Series) -> String {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{evaluate, RequestView};

    /// Envoy's stats as a map from name to total; `fail` makes every call fail.
    #[derive(Default)]
    struct MapSink {
        names: Vec<String>,
        totals: BTreeMap<String, u64>,
        calls: usize,
        fail: bool,
    }

    impl Sink for MapSink {
        fn define(&mut self, name: &str) -> Result<u32, SinkError> {
            self.calls += 1;
            if self.fail {
                return Err(SinkError);
            }
            self.names.push(name.to_string());
            Ok(self.names.len() as u32 - 1)
        }

        fn increment(&mut self, id: u32, n: u64) -> Result<(), SinkError> {
            self.calls += 1;
            if self.fail {
                return Err(SinkError);
            }
            let name = self.names[id as usize].clone();
            *self.totals.entry(name).or_default() += n;
            Ok(())
        }
    }

    fn config() -> Config {
        Config::parse(
            br#"{"units": {"user": [{"header": "x-user-id"}]}, "metrics": {"replicates": 4},
                 "experiments": [{"key": "e", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}]}"#,
        )
        .unwrap()
    }

    fn total(sink: &MapSink, name: &str) -> u64 {
        sink.totals.get(name).copied().unwrap_or(0)
    }

    #[test]
    fn counts_wait_in_the_vm_and_one_publication_defines_and_adds_each_series_once() {
        let config = config();
        let mut counts = Counts::for_config(&config);
        let mut sink = MapSink::default();
        for i in 0..50 {
            let id = format!("u{i}");
            let headers = [(":path", "/"), ("x-user-id", id.as_str())];
            let eval = evaluate(&config, &RequestView::new(&headers), 0);
            counts.count(&eval, &crate::metrics::replicated(&config, &eval));
        }
        assert_eq!(sink.calls, 0, "nothing is published before the timer");
        counts.publish(&config, &mut sink);
        let a = total(
            &sink,
            "experiment=.=e;.;variant=.=a;.;abmesh_assignments_total",
        );
        let b = total(
            &sink,
            "experiment=.=e;.;variant=.=b;.;abmesh_assignments_total",
        );
        assert_eq!(a + b, 50);
        let replicas: u64 = (0..4)
            .flat_map(|r| {
                ["a", "b"].map(|v| {
                    total(
                        &sink,
                        &format!("experiment=.=e;.;variant=.={v};.;replicate=.={r};.;abmesh_replicate_assignments_total"),
                    )
                })
            })
            .sum();
        assert_eq!(replicas, 50, "every hashed assignment is in one replicate");
        // One define and one increment per series, and nothing more when nothing is new.
        assert_eq!(sink.calls, 2 * sink.names.len());
        let calls = sink.calls;
        counts.publish(&config, &mut sink);
        assert_eq!(sink.calls, calls);
    }

    #[test]
    fn duration_buckets_become_cumulative_at_publication() {
        let config = config();
        let mut counts = Counts::for_config(&config);
        let mut sink = MapSink::default();
        for d in [3, 30, 30, 20_000] {
            counts.record_response(&[(0, 1)], &[(0, 1, 2)], 1, d);
        }
        counts.record_response(&[(0, 1)], &[(0, 1, 2)], 4, 7);
        counts.publish(&config, &mut sink);
        let bucket = |sink: &MapSink, le: &str| {
            total(
                sink,
                &format!("experiment=.=e;.;variant=.=b;.;le=.={le};.;abmesh_request_duration_milliseconds_bucket"),
            )
        };
        assert_eq!(
            ["1", "5", "10", "50", "10000", "+Inf"].map(|le| bucket(&sink, le)),
            [0, 1, 2, 4, 4, 5]
        );
        assert_eq!(
            total(
                &sink,
                "experiment=.=e;.;variant=.=b;.;abmesh_request_duration_milliseconds_count"
            ),
            5
        );
        assert_eq!(
            total(
                &sink,
                "experiment=.=e;.;variant=.=b;.;abmesh_request_duration_milliseconds_sum"
            ),
            3 + 30 + 30 + 20_000 + 7
        );
        let rep = |m: &str| {
            total(
                &sink,
                &format!("experiment=.=e;.;variant=.=b;.;replicate=.=2;.;{m}"),
            )
        };
        assert_eq!(rep("abmesh_replicate_responses_total"), 5);
        assert_eq!(rep("abmesh_replicate_5xx_total"), 1);
        assert_eq!(rep("abmesh_replicate_duration_milliseconds_sum"), 20_070);
        // The next publication adds only what is new, still cumulatively.
        counts.record_response(&[(0, 1)], &[], 1, 4);
        counts.publish(&config, &mut sink);
        assert_eq!(["1", "5", "+Inf"].map(|le| bucket(&sink, le)), [0, 2, 6]);
    }

    #[test]
    fn a_refused_publication_keeps_its_counts_for_the_next_and_counts_the_failures() {
        let config = config();
        let mut counts = Counts::for_config(&config);
        counts.add(Series::Assigned(0, 0));
        counts.add(Series::Assigned(0, 0));
        let mut sink = MapSink {
            fail: true,
            ..MapSink::default()
        };
        counts.publish(&config, &mut sink);
        assert!(sink.totals.is_empty());
        sink.fail = false;
        counts.publish(&config, &mut sink);
        assert_eq!(
            total(
                &sink,
                "experiment=.=e;.;variant=.=a;.;abmesh_assignments_total"
            ),
            2,
            "nothing lost"
        );
        assert_eq!(total(&sink, "kind=.=host;.;abmesh_errors_total"), 1);
    }
}
