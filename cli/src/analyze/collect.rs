//! From access-log lines to per-variant sums over units, in two passes: the first finds each
//! unit's first exposure to each experiment (time and variant) in the exposure records, the
//! second attributes every request of an exposed unit — exposure or not, in any order of the
//! files — to its variant, after its first exposure, or to its activity before it.

use std::collections::{BTreeMap, HashMap};

use abmesh::Config;

use super::flat::{self, Scalar};
use super::goal::Goal;
use super::input::{each_line, Location, Problem, Tally};
use super::line::{self, Fields, Text};
use super::record::{self, Record};

/// The per-unit values summed per variant, in this order: per goal whether the unit reached it
/// (0 or 1), then per goal how often, then requests, 5xx responses, the summed duration (ms)
/// and the requests before the unit's first exposure (the CUPED covariate).
pub fn value_names(goals: &[Goal]) -> Vec<String> {
    let mut names: Vec<String> = goals
        .iter()
        .map(|g| format!("converted:{}", g.name))
        .collect();
    names.extend(goals.iter().map(|g| format!("goals:{}", g.name)));
    names.extend(["requests", "errors_5xx", "duration_ms", "pre_requests"].map(String::from));
    names
}

/// Sums over a variant's exposed units: their number, each value's sum and every product
/// of two values' sum (`cross[i][j]`, i ≤ j), which every metric's mean, ratio and variance
/// — and CUPED — need, and which one SQL `GROUP BY` can compute in a warehouse.
#[derive(Debug, Clone, PartialEq)]
pub struct Sums {
    pub units: u64,
    pub sum: Vec<f64>,
    pub cross: Vec<Vec<f64>>,
}

impl Sums {
    pub fn new(k: usize) -> Sums {
        Sums {
            units: 0,
            sum: vec![0.0; k],
            cross: vec![vec![0.0; k]; k],
        }
    }

    fn add(&mut self, y: &[f64]) {
        self.units += 1;
        for i in 0..y.len() {
            self.sum[i] += y[i];
            for j in i..y.len() {
                self.cross[i][j] += y[i] * y[j];
            }
        }
    }

    /// Adds another set of units' sums.
    pub fn merge(&mut self, other: &Sums) {
        self.units += other.units;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (row, other) in self.cross.iter_mut().zip(&other.cross) {
            for (a, b) in row.iter_mut().zip(other) {
                *a += b;
            }
        }
    }

    /// `Σ y_i y_j` for any order of i and j.
    pub fn product(&self, i: usize, j: usize) -> f64 {
        self.cross[i.min(j)][i.max(j)]
    }
}

/// What the passes found: per experiment and variant the sums, per experiment the exposed
/// units by day of first exposure, and the bad input.
#[derive(Debug, Clone)]
pub struct Collected {
    /// `[experiment][variant]`
    pub sums: Vec<Vec<Sums>>,
    /// `[experiment]`: day of first exposure (days since the epoch, UTC) → per variant the
    /// sums over the units first exposed that day.
    pub daily: Vec<BTreeMap<i64, Vec<Sums>>>,
    pub lines: u64,
    /// 1, or 2 when the first pass could not place every request.
    pub passes: u8,
    pub tally: Tally,
}

/// One unit's first exposure to one experiment, and what it did.
#[derive(Debug, Clone)]
struct Exposed {
    experiment: u16,
    variant: u16,
    first_ms: i64,
    /// The start of the request that carried that record: the unit's later requests are the
    /// ones that start at or after it.
    first_start_ms: i64,
    requests: u32,
    errors: u32,
    duration_ms: f64,
    pre_requests: u32,
    goals: Vec<u32>,
    /// The latest start counted before the first exposure and the earliest counted after
    /// it: while a record moving the first exposure does not cross them, every count stands.
    last_pre_ms: i64,
    first_post_ms: i64,
}

/// A unit seen on some line: its requests so far, the latest start among them, and the
/// experiments it was exposed to.
#[derive(Debug, Clone, Default)]
struct Unit {
    seen: u32,
    last_ms: i64,
    exposed: Vec<Exposed>,
}

/// Calls `each(unit, id)` for the unit ids of a line's units value; `false` when the value
/// is not a JSON object of strings (then `each` was not called).
fn each_unit(text: &Text, buf: &mut String, mut each: impl FnMut(&str, &str)) -> bool {
    if let Text::Json(raw, true) = text {
        if record::each_unit_escaped(raw, &mut each).is_some() {
            return true;
        }
    }
    let Some(text) = text.get(buf) else {
        return true;
    };
    // The flat reader checks the whole object before any id is used, so that a value it
    // leaves to serde_json is not counted twice.
    let strings = |_: &str, v: Scalar| matches!(v, Scalar::Str(..)).then_some(());
    if flat::members(text, strings).is_some() {
        flat::members(text, |unit, id| {
            each(unit, &id.text()?);
            Some(())
        });
        return true;
    }
    match serde_json::from_str::<record::Pairs>(text) {
        Ok(pairs) => {
            for (unit, id) in &pairs.0 {
                each(unit, id);
            }
            true
        }
        Err(_) => false,
    }
}

/// Unit ids, hashed fast with a per-process seed (ids come from clients).
type ById = HashMap<Box<str>, Unit, foldhash::fast::RandomState>;

/// What is known of every unit, and whether each request was counted on the right side of
/// its unit's first exposure.
struct State<'c> {
    config: &'c Config,
    goals: &'c [Goal],
    units: Vec<ById>,
    /// Cleared when a first exposure turns out earlier (or later) than requests already
    /// counted after (or before) it, or a unit's first exposure comes after some of its
    /// requests that started later: then a second pass counts again, knowing every first
    /// exposure. A log in time order never needs it.
    exact: bool,
    /// Where a value with escapes is undone when it cannot be read in place.
    buf: String,
}

impl State<'_> {
    /// A line's exposure record: the first exposures it holds.
    fn expose(&mut self, line: &Fields, at: &Location, tally: &mut Tally) {
        if let Some(r) = &line.record {
            return self.first_exposures(r, line.start_ms, at, tally);
        }
        let Some(text) = line.exposure.as_ref().filter(|t| t.is_present()) else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        match text.get(&mut buf).and_then(record::read) {
            Some(r) => self.first_exposures(&r, line.start_ms, at, tally),
            None => tally.add(Problem::BadExposure, at),
        }
        self.buf = buf;
    }

    fn first_exposures(&mut self, r: &Record, start_ms: i64, at: &Location, tally: &mut Tally) {
        for a in r.assignments.iter().filter(|a| !a.forced) {
            let Some(e) = self.config.experiment_index(a.experiment.as_bytes()) else {
                tally.add(Problem::UnknownExperiment, at);
                continue;
            };
            let x = &self.config.experiments[e];
            let Some(v) = x.variants.iter().position(|v| v.name == a.variant) else {
                tally.add(Problem::UnknownVariant, at);
                continue;
            };
            let (Some(u), Some(id)) = (self.config.unit_index(&a.unit), r.units.get(&a.unit))
            else {
                tally.add(Problem::NoUnitId, at);
                continue;
            };
            let Some(by_id) = self.units.get_mut(u) else {
                continue;
            };
            let unit = match by_id.get_mut(id) {
                Some(unit) => unit,
                None => by_id.entry(id.into()).or_default(),
            };
            let (e, v) = (e as u16, v as u16);
            let (ts_ms, goals) = (r.ts_ms, self.goals.len());
            let exact = match unit.exposed.iter_mut().find(|s| s.experiment == e) {
                Some(s) if s.variant == v => {
                    (ts_ms, start_ms) >= (s.first_ms, s.first_start_ms)
                        || s.first_at(ts_ms, start_ms)
                }
                Some(s) => {
                    tally.add(Problem::TwoVariants, at);
                    // The earlier exposure is the unit's first: it decides its variant.
                    ts_ms >= s.first_ms || {
                        s.variant = v;
                        s.first_at(ts_ms, start_ms)
                    }
                }
                None => {
                    // Every request seen so far started before this one: all are before it.
                    let exact = unit.seen == 0 || unit.last_ms < start_ms;
                    unit.exposed.push(Exposed {
                        experiment: e,
                        variant: v,
                        first_ms: ts_ms,
                        first_start_ms: start_ms,
                        requests: 0,
                        errors: 0,
                        duration_ms: 0.0,
                        pre_requests: unit.seen,
                        goals: vec![0; goals],
                        last_pre_ms: if unit.seen == 0 {
                            i64::MIN
                        } else {
                            unit.last_ms
                        },
                        first_post_ms: i64::MAX,
                    });
                    exact
                }
            };
            self.exact &= exact;
        }
    }

    /// A line's request, counted for every experiment its units were exposed to (so far).
    fn attribute(&mut self, line: &Fields, at: &Location, tally: &mut Tally) {
        let (config, goals) = (self.config, self.goals);
        let all = &mut self.units;
        let mut count = |name: &str, id: &str| {
            let Some(by_id) = config.unit_index(name).and_then(|u| all.get_mut(u)) else {
                return;
            };
            let unit = match by_id.get_mut(id) {
                Some(unit) => unit,
                None => by_id.entry(id.into()).or_default(),
            };
            unit.last_ms = if unit.seen == 0 {
                line.start_ms
            } else {
                unit.last_ms.max(line.start_ms)
            };
            unit.seen += 1;
            for s in &mut unit.exposed {
                s.count(line, goals);
            }
        };
        let read = match (&line.unit_ids, &line.units) {
            (Some(ids), _) => {
                ids.0.iter().for_each(|(name, id)| count(name, id));
                true
            }
            (None, Some(units)) if units.is_present() => each_unit(units, &mut self.buf, count),
            _ => true,
        };
        if !read {
            tally.add(Problem::BadUnits, at);
        }
    }

    /// Every count back to zero, for a second pass that knows every first exposure.
    fn recount(&mut self) {
        for unit in self.units.iter_mut().flat_map(HashMap::values_mut) {
            unit.seen = 0;
            for s in &mut unit.exposed {
                (s.requests, s.errors, s.duration_ms, s.pre_requests) = (0, 0, 0.0, 0);
                s.goals.iter_mut().for_each(|g| *g = 0);
            }
        }
    }
}

impl Exposed {
    /// Moves the first exposure to `(ts_ms, start_ms)`; whether the counts still stand.
    fn first_at(&mut self, ts_ms: i64, start_ms: i64) -> bool {
        (self.first_ms, self.first_start_ms) = (ts_ms, start_ms);
        self.last_pre_ms < start_ms && start_ms <= self.first_post_ms
    }

    fn count(&mut self, line: &Fields, goals: &[Goal]) {
        if line.start_ms < self.first_start_ms {
            self.pre_requests += 1;
            self.last_pre_ms = self.last_pre_ms.max(line.start_ms);
            return;
        }
        self.first_post_ms = self.first_post_ms.min(line.start_ms);
        self.requests += 1;
        self.errors += u32::from(line.status >= 500);
        self.duration_ms += line.duration_ms;
        for (g, goal) in goals.iter().enumerate() {
            self.goals[g] += u32::from(goal.matches(&line.method, &line.path, line.status));
        }
    }
}

/// Collects exposures and per-unit activity from `inputs` (`(path, name)`: where to read,
/// what to call it in the report), reading each twice.
pub fn collect(
    config: &Config,
    goals: &[Goal],
    inputs: &[(std::path::PathBuf, String)],
) -> Collected {
    let mut tally = Tally::default();
    let mut state = State {
        config,
        goals,
        units: vec![ById::default(); config.units.len()],
        exact: true,
        buf: String::new(),
    };
    let mut lines = 0u64;
    for (path, name) in inputs {
        let mut problems = Tally::default();
        each_line(path, name, &mut problems, |bytes, at, problems| {
            lines += 1;
            let line = match line::read(bytes) {
                Ok(line) => line,
                Err(p) => return problems.add(p, at),
            };
            state.expose(&line, at, problems);
            state.attribute(&line, at, problems);
        });
        tally.merge(problems);
    }
    if !state.exact {
        // Bad input was counted in the first pass: the second counts requests only.
        state.recount();
        let mut again = Tally::default();
        for (path, name) in inputs {
            each_line(path, name, &mut again, |bytes, at, problems| {
                if let Ok(line) = line::read(bytes) {
                    state.attribute(&line, at, problems);
                }
            });
        }
    }
    let k = value_names(goals).len();
    let mut sums: Vec<Vec<Sums>> = config
        .experiments
        .iter()
        .map(|e| vec![Sums::new(k); e.variants.len()])
        .collect();
    let mut daily: Vec<BTreeMap<i64, Vec<Sums>>> = vec![BTreeMap::new(); config.experiments.len()];
    let g = goals.len();
    let mut y = vec![0.0; k];
    let exposed = state
        .units
        .iter()
        .flat_map(HashMap::values)
        .flat_map(|u| &u.exposed);
    for s in exposed {
        let (e, v) = (usize::from(s.experiment), usize::from(s.variant));
        for i in 0..g {
            y[i] = f64::from(u8::from(s.goals[i] > 0));
            y[g + i] = f64::from(s.goals[i]);
        }
        y[2 * g] = f64::from(s.requests);
        y[2 * g + 1] = f64::from(s.errors);
        y[2 * g + 2] = s.duration_ms;
        y[2 * g + 3] = f64::from(s.pre_requests);
        sums[e][v].add(&y);
        let day = s.first_ms.div_euclid(86_400_000);
        daily[e]
            .entry(day)
            .or_insert_with(|| vec![Sums::new(k); config.experiments[e].variants.len()])[v]
            .add(&y);
    }
    Collected {
        sums,
        daily,
        lines,
        passes: if state.exact { 1 } else { 2 },
        tally,
    }
}
