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
    /// Whether this publication has used its time: asked before each experiment (and each
    /// replicate block), so what is left waits for the next publication, none of it lost.
    fn out_of_time(&mut self) -> bool {
        false
    }
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

/// Duration buckets per variant (the `le` bounds and `+Inf`).
const BUCKETS: usize = DURATION_BOUNDS_MS.len() + 1;
/// Reasons per experiment.
const REASONS: usize = Reason::ALL.len();
/// Series per experiment besides its variants': one per reason.
pub const PER_EXPERIMENT: usize = REASONS;

// Where a variant's counters sit in its slot of `Counts::pending`.
const ASSIGNED_AT: usize = 0;
const FORCED_AT: usize = 1;
const RESPONSES_AT: usize = 2;
const BUCKETS_AT: usize = RESPONSES_AT + CLASSES.len();
const SUM_AT: usize = BUCKETS_AT + BUCKETS;
const COUNT_AT: usize = SUM_AT + 1;
const SUM_SQUARES_AT: usize = COUNT_AT + 1;
/// Counters (and series) per variant, replicate series aside.
pub const PER_VARIANT: usize = SUM_SQUARES_AT + 1;
/// Replicate series per replicate.
const PER_REPLICATE: usize = REPLICATE_METRICS.len();

/// The most metrics one publication defines. Envoy defines a stat on the worker thread that
/// publishes (its name through every `stats_tags` rule), and the worker's requests wait
/// meanwhile: the bound keeps a publication short however many series a configuration has
/// (SECURITY.md, "Limits", has the measurement).
pub const DEFINITIONS_PER_PUBLICATION: usize = 1_000;

/// How many definitions pass between two looks at the publication's clock.
const TIME_CHECK_EVERY: usize = 8;

/// A counter with no Envoy metric id yet.
const UNDEFINED: u32 = u32::MAX;
/// A variant with no replicate block yet.
const NO_BLOCK: u32 = u32::MAX;

/// Every series the filter may define for `config`: the error kinds, then per experiment its
/// reasons and per variant its [`PER_VARIANT`] series and 4 per replicate.
pub fn series_bound(config: &Config) -> u64 {
    let per_variant = (PER_VARIANT + PER_REPLICATE * usize::from(config.replicates)) as u64;
    let experiments = config
        .experiments
        .iter()
        .map(|e| PER_EXPERIMENT as u64 + per_variant * e.variants.len() as u64);
    ErrorKind::COUNT as u64 + experiments.sum::<u64>()
}

/// The VM's counters, shaped by the configuration: flat arrays indexed by offsets computed
/// once, so a request adds to a counter with one indexed add — the request path does no
/// lookup, allocation or bookkeeping beyond marking its experiments as having news.
///
/// Layout of `pending` (and of `ids`, the Envoy metric id of each counter): the error kinds,
/// then per experiment its reasons followed by, per variant, [`PER_VARIANT`] counters.
/// Replicate series live in blocks of `replicates × 4` counters, allocated on a variant's
/// first replicated request, so idle variants cost nothing.
pub struct Counts {
    pending: Vec<u64>,
    ids: Vec<u32>,
    /// Where each experiment's counters are.
    slots: Vec<Slot>,
    /// Per variant, requests per duration bucket since the last publication, not cumulative:
    /// publishing turns them into the cumulative `le` counts.
    recent: Vec<[u64; BUCKETS]>,
    /// Experiments with a pending count since the last publication.
    dirty: Vec<bool>,
    /// Per variant, its replicate block in `replicate_pending` (or [`NO_BLOCK`]).
    blocks: Vec<u32>,
    /// `(experiment, variant)` of each replicate block, in allocation order.
    block_owner: Vec<(usize, usize)>,
    replicate_pending: Vec<u64>,
    replicate_ids: Vec<u32>,
    replicate_count: u16,
    /// Where the next publication starts among the experiments and the replicate blocks, so
    /// that one cut short by time does not starve the ones after it.
    cursor: usize,
    block_cursor: usize,
}

impl Counts {
    /// Counters shaped by the configuration, all at zero.
    pub fn for_config(config: &Config) -> Self {
        let mut slots = Vec::with_capacity(config.experiments.len());
        let (mut counters, mut variants) = (ErrorKind::COUNT, 0);
        for e in &config.experiments {
            slots.push(Slot {
                counters,
                variants,
                variant_count: e.variants.len(),
            });
            counters += REASONS + PER_VARIANT * e.variants.len();
            variants += e.variants.len();
        }
        Counts {
            pending: vec![0; counters],
            ids: vec![UNDEFINED; counters],
            slots,
            recent: vec![[0; BUCKETS]; variants],
            dirty: vec![false; config.experiments.len()],
            blocks: vec![NO_BLOCK; variants],
            block_owner: Vec::new(),
            replicate_pending: Vec::new(),
            replicate_ids: Vec::new(),
            replicate_count: config.replicates,
            cursor: 0,
            block_cursor: 0,
        }
    }

    /// The index of a variant's first counter in `pending`; marks its experiment as having news.
    #[inline]
    fn variant_slot(&mut self, e: usize, v: usize) -> Option<usize> {
        let slot = self.slots.get(e)?;
        // A variant index past the experiment's last would read the next experiment's slot.
        if v >= slot.variant_count {
            return None;
        }
        let at = slot.counters + REASONS + PER_VARIANT * v;
        self.dirty[e] = true;
        Some(at)
    }

    /// The index of a replicate series in `replicate_pending`, allocating the variant's block
    /// on its first use.
    fn replicate_slot(&mut self, e: usize, v: usize, r: u16, k: ReplicateSeries) -> Option<usize> {
        if r >= self.replicate_count {
            return None;
        }
        self.variant_slot(e, v)?;
        let flat = self.slots[e].variants + v;
        let per_block = usize::from(self.replicate_count) * PER_REPLICATE;
        let block = match self.blocks[flat] {
            NO_BLOCK => {
                let block = self.block_owner.len();
                self.blocks[flat] = u32::try_from(block).ok()?;
                self.block_owner.push((e, v));
                self.replicate_pending
                    .resize(self.replicate_pending.len() + per_block, 0);
                self.replicate_ids
                    .resize(self.replicate_ids.len() + per_block, UNDEFINED);
                block
            }
            b => b as usize,
        };
        Some(block * per_block + usize::from(r) * PER_REPLICATE + k as usize)
    }

    /// Where a series' pending count lives: `(in the replicate blocks, index)`.
    fn slot(&mut self, s: Series) -> Option<(bool, usize)> {
        let variant = |c: &mut Self, e, v, at: usize| Some((false, c.variant_slot(e, v)? + at));
        match s {
            Series::Error(k) => (k < ErrorKind::COUNT).then_some((false, k)),
            Series::NotAssigned(e, r) if r < REASONS => {
                let at = self.slots.get(e)?.counters + r;
                self.dirty[e] = true;
                Some((false, at))
            }
            Series::NotAssigned(..) => None,
            Series::Assigned(e, v) => variant(self, e, v, ASSIGNED_AT),
            Series::Forced(e, v) => variant(self, e, v, FORCED_AT),
            Series::Response(e, v, c) if c < CLASSES.len() => variant(self, e, v, RESPONSES_AT + c),
            Series::Bucket(e, v, b) if b < BUCKETS => variant(self, e, v, BUCKETS_AT + b),
            Series::Response(..) | Series::Bucket(..) => None,
            Series::DurationSum(e, v) => variant(self, e, v, SUM_AT),
            Series::DurationCount(e, v) => variant(self, e, v, COUNT_AT),
            Series::DurationSumSquares(e, v) => variant(self, e, v, SUM_SQUARES_AT),
            Series::Replicate(e, v, r, k) => Some((true, self.replicate_slot(e, v, r, k)?)),
        }
    }

    /// Adds `n` to a series (no host call).
    pub fn add_n(&mut self, s: Series, n: u64) {
        let Some((replicate, i)) = self.slot(s) else {
            return;
        };
        let pending = if replicate {
            &mut self.replicate_pending[i]
        } else {
            &mut self.pending[i]
        };
        *pending = pending.saturating_add(n);
    }

    /// Adds one to a series (no host call).
    pub fn add(&mut self, s: Series) {
        self.add_n(s, 1);
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
        let is_5xx = u64::from(CLASSES.get(class) == Some(&"5xx"));
        for &(e, v, r) in replicated {
            let Some(i) = self.replicate_slot(e, v, r, ReplicateSeries::Assignments) else {
                continue;
            };
            let series = &mut self.replicate_pending[i..i + PER_REPLICATE];
            series[ReplicateSeries::Responses as usize] += 1;
            series[ReplicateSeries::Errors5xx as usize] += is_5xx;
            let sum = &mut series[ReplicateSeries::DurationSum as usize];
            *sum = sum.saturating_add(duration_ms);
        }
        let first = first_bucket(duration_ms);
        let square = duration_ms.saturating_mul(duration_ms);
        for &(e, v) in assigned {
            let Some(at) = self.variant_slot(e, v) else {
                continue;
            };
            let flat = self.slots[e].variants + v;
            self.recent[flat][first] += 1;
            let c = &mut self.pending[at..at + PER_VARIANT];
            if class < CLASSES.len() {
                c[RESPONSES_AT + class] += 1;
            }
            c[SUM_AT] = c[SUM_AT].saturating_add(duration_ms);
            c[COUNT_AT] += 1;
            c[SUM_SQUARES_AT] = c[SUM_SQUARES_AT].saturating_add(square);
        }
    }

    /// Counts a request's assignments, reasons and replicated assignments.
    pub fn count(&mut self, eval: &Evaluation, replicated: &[(usize, usize, u16)]) {
        for &(e, v, r) in replicated {
            if let Some(i) = self.replicate_slot(e, v, r, ReplicateSeries::Assignments) {
                self.replicate_pending[i] += 1;
            }
        }
        for a in &eval.assignments {
            let Some(at) = self.variant_slot(a.experiment, a.variant) else {
                continue;
            };
            self.pending[at + ASSIGNED_AT] += 1;
            self.pending[at + FORCED_AT] += u64::from(a.forced);
        }
        for &(e, reason) in &eval.not_assigned {
            let Some(at) = self.slots.get(e).map(|s| s.counters) else {
                continue;
            };
            self.dirty[e] = true;
            self.pending[at + reason as usize] += 1;
        }
    }

    /// Publishes pending counts: defines each metric on first use, then one increment per
    /// series with news. Only experiments with news are looked at. At most
    /// [`DEFINITIONS_PER_PUBLICATION`] metrics are defined per call, and the sink can end a
    /// publication early ([`Sink::out_of_time`]); a series past either keeps its count (and its
    /// experiment its mark) for the next publication, which starts where this one stopped.
    pub fn publish(&mut self, config: &Config, sink: &mut impl Sink) {
        let mut failures = 0u64;
        let mut budget = DEFINITIONS_PER_PUBLICATION;
        for k in 0..ErrorKind::COUNT {
            failures +=
                u64::from(!self.publish_one(config, sink, &mut budget, k, Series::Error(k)));
        }
        let experiments = self.dirty.len();
        for step in 0..experiments {
            let e = (self.cursor + step) % experiments;
            if !self.dirty[e] {
                continue;
            }
            if sink.out_of_time() {
                self.cursor = e;
                break;
            }
            self.dirty[e] = false;
            let at = self.slots[e].counters;
            for r in 0..REASONS {
                let s = Series::NotAssigned(e, r);
                failures += u64::from(!self.publish_one(config, sink, &mut budget, at + r, s));
            }
            let variants = config.experiments.get(e).map_or(0, |x| x.variants.len());
            for v in 0..variants {
                let at = at + REASONS + PER_VARIANT * v;
                let recent = std::mem::take(&mut self.recent[self.slots[e].variants + v]);
                let mut cumulative = 0u64;
                for (b, n) in recent.iter().enumerate() {
                    cumulative += n;
                    let c = &mut self.pending[at + BUCKETS_AT + b];
                    *c = c.saturating_add(cumulative);
                }
                for (i, s) in variant_series(e, v) {
                    failures += u64::from(!self.publish_one(config, sink, &mut budget, at + i, s));
                }
            }
        }
        let per_block = usize::from(self.replicate_count) * PER_REPLICATE;
        let blocks = self.block_owner.len();
        for step in 0..blocks {
            let block = (self.block_cursor + step) % blocks;
            if sink.out_of_time() {
                self.block_cursor = block;
                break;
            }
            let (e, v) = self.block_owner[block];
            for j in 0..per_block {
                let i = block * per_block + j;
                let pending = std::mem::take(&mut self.replicate_pending[i]);
                if pending == 0 {
                    continue;
                }
                let r = (j / PER_REPLICATE) as u16;
                let k = REPLICATE_SERIES[j % PER_REPLICATE];
                let s = Series::Replicate(e, v, r, k);
                let id = &mut self.replicate_ids[i];
                let outcome = publish(config, sink, &mut budget, id, s, pending);
                if outcome != Outcome::Published {
                    self.replicate_pending[i] = self.replicate_pending[i].saturating_add(pending);
                    self.dirty[e] = true;
                    failures += u64::from(outcome == Outcome::Failed);
                }
            }
        }
        if failures > 0 {
            self.pending[ErrorKind::Host as usize] += failures;
        }
    }

    /// Publishes one counter of `pending`; false when the sink refused. A count not published
    /// (refused, or deferred for the definition budget) is kept and its experiment stays marked,
    /// for the next publication.
    fn publish_one(
        &mut self,
        config: &Config,
        sink: &mut impl Sink,
        budget: &mut usize,
        i: usize,
        s: Series,
    ) -> bool {
        let pending = std::mem::take(&mut self.pending[i]);
        if pending == 0 {
            return true;
        }
        let outcome = publish(config, sink, budget, &mut self.ids[i], s, pending);
        if outcome == Outcome::Published {
            return true;
        }
        self.pending[i] = self.pending[i].saturating_add(pending);
        if let Some(e) = experiment_of(s) {
            self.dirty[e] = true;
        }
        outcome != Outcome::Failed
    }
}

/// The experiment a series belongs to (`None` for the error kinds).
fn experiment_of(s: Series) -> Option<usize> {
    match s {
        Series::Error(_) => None,
        Series::Assigned(e, _)
        | Series::Forced(e, _)
        | Series::NotAssigned(e, _)
        | Series::Response(e, ..)
        | Series::Bucket(e, ..)
        | Series::DurationSum(e, _)
        | Series::DurationCount(e, _)
        | Series::DurationSumSquares(e, _)
        | Series::Replicate(e, ..) => Some(e),
    }
}

/// Where one experiment's counters sit.
#[derive(Clone, Copy)]
struct Slot {
    /// Index of its first counter (its reasons) in `Counts::pending`.
    counters: usize,
    /// Index of its first variant in `Counts::recent` and `Counts::blocks`.
    variants: usize,
    variant_count: usize,
}

/// The replicate series in the order of their offsets.
const REPLICATE_SERIES: [ReplicateSeries; PER_REPLICATE] = [
    ReplicateSeries::Assignments,
    ReplicateSeries::Responses,
    ReplicateSeries::Errors5xx,
    ReplicateSeries::DurationSum,
];

/// A variant's published series with their offsets in its slot.
fn variant_series(e: usize, v: usize) -> impl Iterator<Item = (usize, Series)> {
    let fixed = [
        (ASSIGNED_AT, Series::Assigned(e, v)),
        (FORCED_AT, Series::Forced(e, v)),
        (SUM_AT, Series::DurationSum(e, v)),
        (COUNT_AT, Series::DurationCount(e, v)),
        (SUM_SQUARES_AT, Series::DurationSumSquares(e, v)),
    ];
    let responses = (0..CLASSES.len()).map(move |c| (RESPONSES_AT + c, Series::Response(e, v, c)));
    let buckets = (0..BUCKETS).map(move |b| (BUCKETS_AT + b, Series::Bucket(e, v, b)));
    fixed.into_iter().chain(responses).chain(buckets)
}

/// What became of one series' pending count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Published,
    /// Not defined yet and this publication's definition budget is spent.
    Deferred,
    /// The sink refused a call.
    Failed,
}

/// Defines the counter on first use (while `budget` lasts) and adds `n`.
fn publish(
    config: &Config,
    sink: &mut impl Sink,
    budget: &mut usize,
    id: &mut u32,
    s: Series,
    n: u64,
) -> Outcome {
    if *id == UNDEFINED {
        // Defining a stat can take Envoy a tenth of a millisecond and more (its name through
        // every stats-tag rule, the shared stat store's lock): the clock is asked every few
        // definitions, so a publication stops defining once its time is up.
        if *budget == 0 || (*budget % TIME_CHECK_EVERY == 0 && sink.out_of_time()) {
            *budget = 0;
            return Outcome::Deferred;
        }
        *budget -= 1;
        match sink.define(&series_name(config, s)) {
            Ok(defined) if defined != UNDEFINED => *id = defined,
            _ => return Outcome::Failed,
        }
    }
    match sink.increment(*id, n) {
        Ok(()) => Outcome::Published,
        Err(SinkError) => Outcome::Failed,
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
    fn reasons_are_counted_at_their_position_in_the_label_list() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }

    #[test]
    fn counts_of_an_unknown_experiment_variant_or_label_are_ignored() {
        let config = config();
        let mut counts = Counts::for_config(&config);
        let mut sink = MapSink::default();
        counts.add(Series::Assigned(0, 2));
        counts.add(Series::Assigned(1, 0));
        counts.add(Series::NotAssigned(0, 7));
        counts.add(Series::Response(0, 0, 6));
        counts.add(Series::Bucket(0, 0, 14));
        counts.add(Series::Replicate(0, 0, 4, ReplicateSeries::Assignments));
        counts.add(Series::Error(2));
        counts.record_response(&[(0, 2), (3, 0)], &[(0, 0, 9)], 1, 5);
        counts.record_response(&[], &[], 6, 5);
        counts.publish(&config, &mut sink);
        assert_eq!(sink.calls, 0, "{:?}", sink.names);
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

    /// Every series of `config` with a count of one: the error kinds, every reason, every
    /// variant's series and every replicate's.
    fn count_every_series(config: &Config, counts: &mut Counts) {
        for k in 0..ErrorKind::COUNT {
            counts.add(Series::Error(k));
        }
        for (e, x) in config.experiments.iter().enumerate() {
            for r in 0..REASONS {
                counts.add(Series::NotAssigned(e, r));
            }
            for v in 0..x.variants.len() {
                for (_, s) in variant_series(e, v) {
                    counts.add(s);
                }
                for r in 0..config.replicates {
                    for k in REPLICATE_SERIES {
                        counts.add(Series::Replicate(e, v, r, k));
                    }
                }
            }
        }
    }

    #[test]
    fn the_series_bound_is_exactly_the_series_a_configuration_can_define() {
        let config = Config::parse(
            br#"{"units": {"user": [{"header": "x-user-id"}]}, "metrics": {"replicates": 3},
                 "experiments": [
                   {"key": "e", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
                   {"key": "f", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}, {"name": "c", "weight": 1}]}]}"#,
        )
        .unwrap();
        let mut counts = Counts::for_config(&config);
        let mut sink = MapSink::default();
        count_every_series(&config, &mut counts);
        counts.publish(&config, &mut sink);
        assert_eq!(sink.names.len() as u64, series_bound(&config));
        assert_eq!(series_bound(&config), 2 + 2 * 7 + 5 * (25 + 4 * 3));
    }

    #[test]
    fn a_publication_defines_at_most_its_budget_and_later_ones_define_the_rest_losing_no_count() {
        // 1 experiment of 100 variants with 8 replicates: 2 + 7 + 100 × 57 = 5,709 series.
        let variants: Vec<String> = (0..100)
            .map(|j| format!(r#"{{"name": "v{j}", "weight": 1}}"#))
            .collect();
        let json = format!(
            r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}}, "metrics": {{"replicates": 8}},
                "experiments": [{{"key": "wide", "variants": [{}]}}]}}"#,
            variants.join(",")
        );
        let config = Config::parse(json.as_bytes()).unwrap();
        let mut counts = Counts::for_config(&config);
        let mut sink = MapSink::default();
        count_every_series(&config, &mut counts);
        let mut defined = Vec::new();
        for _ in 0..7 {
            counts.publish(&config, &mut sink);
            defined.push(sink.names.len());
        }
        assert_eq!(defined, [1000, 2000, 3000, 4000, 5000, 5709, 5709]);
        assert!(
            sink.totals.values().all(|&n| n == 1),
            "every series got its one count, once"
        );
        assert_eq!(sink.totals.len(), 5709);
        // The host error series holds the one count the test gave it: no deferral was a failure.
        assert_eq!(total(&sink, "kind=.=host;.;abmesh_errors_total"), 1);
    }

    /// A sink whose publications may look at `checks` experiments before their time is up.
    struct HurriedSink {
        inner: MapSink,
        checks: usize,
        left: usize,
    }

    impl Sink for HurriedSink {
        fn define(&mut self, name: &str) -> Result<u32, SinkError> {
            self.inner.define(name)
        }
        fn increment(&mut self, id: u32, n: u64) -> Result<(), SinkError> {
            self.inner.increment(id, n)
        }
        fn out_of_time(&mut self) -> bool {
            if self.left == usize::MAX {
                return false;
            }
            if self.left == 0 {
                return true;
            }
            self.left -= 1;
            false
        }
    }

    #[test]
    fn a_publication_out_of_time_stops_and_the_next_goes_on_where_it_stopped() {
        let keys: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"key": "e{i}", "variants": [{{"name": "a", "weight": 1}}]}}"#))
            .collect();
        let json = format!(
            r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}}, "metrics": {{"replicates": 0}},
                "experiments": [{}]}}"#,
            keys.join(",")
        );
        let config = Config::parse(json.as_bytes()).unwrap();
        let mut counts = Counts::for_config(&config);
        let mut sink = HurriedSink {
            inner: MapSink::default(),
            checks: 2,
            left: usize::MAX,
        };
        let assigned = |sink: &HurriedSink, e: usize| {
            total(
                &sink.inner,
                &format!("experiment=.=e{e};.;variant=.=a;.;abmesh_assignments_total"),
            )
        };
        // A first publication with time to spare defines the series (a definition looks at the
        // clock too); from then on only the experiments do.
        for e in 0..5 {
            counts.add(Series::Assigned(e, 0));
        }
        counts.publish(&config, &mut sink);
        for e in 0..5 {
            counts.add(Series::Assigned(e, 0));
        }
        sink.left = sink.checks;
        counts.publish(&config, &mut sink);
        assert_eq!(
            (0..5).map(|e| assigned(&sink, e)).collect::<Vec<_>>(),
            [2, 2, 1, 1, 1]
        );
        // New counts for e0 wait their turn: the next publication starts at e2.
        counts.add(Series::Assigned(0, 0));
        sink.left = sink.checks;
        counts.publish(&config, &mut sink);
        assert_eq!(
            (0..5).map(|e| assigned(&sink, e)).collect::<Vec<_>>(),
            [2, 2, 2, 2, 1]
        );
        sink.left = sink.checks;
        counts.publish(&config, &mut sink);
        assert_eq!(
            (0..5).map(|e| assigned(&sink, e)).collect::<Vec<_>>(),
            [3, 2, 2, 2, 2]
        );
    }

    #[test]
    fn a_publication_out_of_time_defines_nothing_more_and_loses_no_count() {
        let config = config();
        let mut counts = Counts::for_config(&config);
        let mut sink = HurriedSink {
            inner: MapSink::default(),
            checks: 0,
            left: 0,
        };
        counts.add(Series::Assigned(0, 0));
        counts.publish(&config, &mut sink);
        assert!(sink.inner.names.is_empty());
        sink.left = usize::MAX;
        counts.publish(&config, &mut sink);
        assert_eq!(
            total(
                &sink.inner,
                "experiment=.=e;.;variant=.=a;.;abmesh_assignments_total"
            ),
            1
        );
    }
}
