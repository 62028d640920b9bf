//! From access-log lines to per-variant sums over units, in two passes: the first finds each
//! unit's first exposure to each experiment (time and variant) in the exposure records, the
//! second attributes every request of an exposed unit — exposure or not, in any order of the
//! files — to its variant, after its first exposure, or to its activity before it.

use std::collections::{BTreeMap, HashMap};

use abmesh::Config;
use serde_json::Value;

use super::goal::Goal;
use super::input::{each_line, Line, Location, Problem, Tally};

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
    /// `[experiment]`: day (days since the epoch, UTC) → exposed units per variant.
    pub daily: Vec<BTreeMap<i64, Vec<u64>>>,
    pub lines: u64,
    pub tally: Tally,
}

/// One unit's first exposure to one experiment, and what it did.
#[derive(Debug, Clone)]
struct Exposed {
    experiment: u16,
    variant: u16,
    first_ms: i64,
    requests: u32,
    errors: u32,
    duration_ms: f64,
    pre_requests: u32,
    goals: Vec<u32>,
}

/// A parsed exposure record: its time, unit ids and hashed (not forced) assignments.
struct Record {
    ts_ms: i64,
    units: BTreeMap<String, String>,
    assignments: Vec<(String, String, String)>,
}

fn record(text: &str) -> Option<Record> {
    let v: Value = serde_json::from_str(text).ok()?;
    let ts_ms = v.get("ts_ms")?.as_i64()?;
    let units = v
        .get("units")?
        .as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect::<Option<BTreeMap<_, _>>>()?;
    let mut assignments = Vec::new();
    for a in v.get("assignments")?.as_array()? {
        let field = |k: &str| a.get(k).and_then(Value::as_str).map(String::from);
        // Forced (QA) assignments are not randomized: no part of the analysis.
        if a.get("forced").and_then(Value::as_bool) != Some(false) {
            continue;
        }
        assignments.push((field("experiment")?, field("variant")?, field("unit")?));
    }
    Some(Record {
        ts_ms,
        units,
        assignments,
    })
}

fn units_of(text: &str) -> Option<BTreeMap<String, String>> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// The parsed line, or the problem with it.
fn parse<'a>(bytes: &'a [u8]) -> Result<(Line<'a>, i64), Problem> {
    let line: Line = serde_json::from_slice(bytes).map_err(|_| {
        if bytes.trim_ascii_start().starts_with(b"{") {
            Problem::NotJson
        } else {
            Problem::OtherFormat
        }
    })?;
    let (Some(time), Some(_), Some(_)) = (&line.time, &line.method, &line.path) else {
        return Err(Problem::OtherFormat);
    };
    let ms = abmesh::time::parse_rfc3339(time).ok_or(Problem::BadTime)?;
    Ok((line, ms))
}

/// A line's time for attribution: an exposure record's own time (the instant the filter
/// assigned, so the exposing request counts as exposed), else the request's start.
fn time_of(line: &Line, start_ms: i64) -> i64 {
    line.exposure
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| v.get("ts_ms")?.as_i64())
        .unwrap_or(start_ms)
}

fn present<'t>(text: &'t Option<std::borrow::Cow<'_, str>>) -> Option<&'t str> {
    text.as_deref().filter(|t| !t.is_empty() && *t != "-")
}

/// Pass 1 on one line: a unit's first exposures.
fn first_exposures(
    config: &Config,
    goals: usize,
    first: &mut HashMap<(usize, String), Vec<Exposed>>,
    line: &Line,
    at: &Location,
    tally: &mut Tally,
) {
    let Some(text) = present(&line.exposure) else {
        return;
    };
    let Some(r) = record(text) else {
        return tally.add(Problem::BadExposure, at);
    };
    for (key, variant, unit) in &r.assignments {
        let Some(e) = config.experiment_index(key.as_bytes()) else {
            tally.add(Problem::UnknownExperiment, at);
            continue;
        };
        let x = &config.experiments[e];
        let Some(v) = x.variants.iter().position(|v| &v.name == variant) else {
            tally.add(Problem::UnknownVariant, at);
            continue;
        };
        let (Some(u), Some(id)) = (config.unit_index(unit), r.units.get(unit)) else {
            tally.add(Problem::NoUnitId, at);
            continue;
        };
        let slots = first.entry((u, id.clone())).or_default();
        match slots.iter_mut().find(|s| usize::from(s.experiment) == e) {
            Some(s) if usize::from(s.variant) == v => s.first_ms = s.first_ms.min(r.ts_ms),
            Some(s) => {
                tally.add(Problem::TwoVariants, at);
                // The earlier exposure is the unit's first: it decides its variant.
                if r.ts_ms < s.first_ms {
                    (s.variant, s.first_ms) = (v as u16, r.ts_ms);
                }
            }
            None => slots.push(Exposed {
                experiment: e as u16,
                variant: v as u16,
                first_ms: r.ts_ms,
                requests: 0,
                errors: 0,
                duration_ms: 0.0,
                pre_requests: 0,
                goals: vec![0; goals],
            }),
        }
    }
}

/// Pass 2 on one line: the request, attributed to every experiment its units were exposed to.
fn attribute(
    config: &Config,
    goals: &[Goal],
    first: &mut HashMap<(usize, String), Vec<Exposed>>,
    line: &Line,
    start_ms: i64,
    at: &Location,
    tally: &mut Tally,
) {
    let Some(text) = present(&line.units) else {
        return;
    };
    let Some(units) = units_of(text) else {
        return tally.add(Problem::BadUnits, at);
    };
    let t = time_of(line, start_ms);
    let method = line.method.as_deref().unwrap_or("");
    let path = line.path.as_deref().unwrap_or("");
    let status = line.code.as_ref().and_then(|c| c.value()).unwrap_or(0.0) as u16;
    let duration = line
        .duration_ms
        .as_ref()
        .and_then(|d| d.value())
        .unwrap_or(0.0);
    for (name, id) in units {
        let Some(u) = config.unit_index(&name) else {
            continue;
        };
        let Some(slots) = first.get_mut(&(u, id)) else {
            continue;
        };
        for s in slots {
            if t < s.first_ms {
                s.pre_requests += 1;
                continue;
            }
            s.requests += 1;
            s.errors += u32::from(status >= 500);
            s.duration_ms += duration;
            for (g, goal) in goals.iter().enumerate() {
                s.goals[g] += u32::from(goal.matches(method, path, status));
            }
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
    let mut first: HashMap<(usize, String), Vec<Exposed>> = HashMap::new();
    let mut lines = 0u64;
    for (path, name) in inputs {
        let mut problems = Tally::default();
        each_line(path, name, &mut problems, |bytes, at, problems| {
            lines += 1;
            match parse(bytes) {
                Ok((line, _)) => {
                    first_exposures(config, goals.len(), &mut first, &line, at, problems)
                }
                Err(p) => problems.add(p, at),
            }
        });
        tally.merge(problems);
    }
    for (path, name) in inputs {
        // The second pass meets the same malformed lines: they are counted once, above.
        let mut ignored = Tally::default();
        each_line(path, name, &mut ignored, |bytes, at, ignored| {
            if let Ok((line, start_ms)) = parse(bytes) {
                attribute(config, goals, &mut first, &line, start_ms, at, ignored);
            }
        });
        if let Some(bad_units) = ignored.0.remove(&Problem::BadUnits) {
            tally.0.insert(Problem::BadUnits, bad_units);
        }
    }
    let k = value_names(goals).len();
    let mut sums: Vec<Vec<Sums>> = config
        .experiments
        .iter()
        .map(|e| vec![Sums::new(k); e.variants.len()])
        .collect();
    let mut daily: Vec<BTreeMap<i64, Vec<u64>>> = vec![BTreeMap::new(); config.experiments.len()];
    let g = goals.len();
    let mut y = vec![0.0; k];
    for s in first.values().flatten() {
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
            .or_insert_with(|| vec![0; config.experiments[e].variants.len()])[v] += 1;
    }
    Collected {
        sums,
        daily,
        lines,
        tally,
    }
}
