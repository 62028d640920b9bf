//! From access-log lines to per-variant sums over units, in two passes: the first finds each
//! unit's first exposure to each experiment (time and variant) in the exposure records, the
//! second attributes every request of an exposed unit — exposure or not, in any order of the
//! files — to its variant, after its first exposure, or to its activity before it.

use std::borrow::Cow;
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
    /// The start of the request that carried that record: the unit's later requests are the
    /// ones that start at or after it.
    first_start_ms: i64,
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

/// A JSON object of strings as its pairs, borrowed from the line where no escape forbids it:
/// the units of every line, read without building a map.
struct Pairs<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Pairs<'de>, M::Error> {
                let mut out = Vec::with_capacity(2);
                while let Some((k, v)) = m.next_entry::<Borrowed<'de>, Borrowed<'de>>()? {
                    out.push((k.0, v.0));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A string borrowed when it has no escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Borrowed<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Borrowed<'de>, E> {
                Ok(Borrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Borrowed<'de>, E> {
                Ok(Borrowed(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Borrowed<'de>, E> {
                Ok(Borrowed(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

fn units_of(text: &str) -> Option<Pairs<'_>> {
    serde_json::from_str(text).ok()
}

/// Whether a line can hold an exposure record: its `exposure` key has a string value. Pass 1
/// parses only these lines (pass 2 reads every line and counts what is wrong with it).
fn has_record(bytes: &[u8]) -> bool {
    let key = b"\"exposure\"";
    let mut rest = bytes;
    while let Some(i) = rest.windows(key.len()).position(|w| w == key) {
        let after = &rest[i + key.len()..];
        let after = after.trim_ascii_start();
        if let Some(value) = after.strip_prefix(b":") {
            return value.trim_ascii_start().starts_with(b"\"");
        }
        rest = after;
    }
    false
}

/// The parsed line and its start (ms), or the problem with it.
fn parse<'a>(bytes: &'a [u8]) -> Result<(Line<'a>, i64), Problem> {
    parse_as::<Line>(bytes, |l| {
        (l.time.as_deref(), l.method.is_some() && l.path.is_some())
    })
}

/// A line as the second pass reads it: the exposure record is not read again.
#[derive(serde::Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<super::input::Number>,
    #[serde(default)]
    duration_ms: Option<super::input::Number>,
    #[serde(borrow, default)]
    units: Option<Cow<'a, str>>,
}

fn parse_request(bytes: &[u8]) -> Result<(Request<'_>, i64), Problem> {
    parse_as::<Request>(bytes, |l| {
        (l.time.as_deref(), l.method.is_some() && l.path.is_some())
    })
}

fn parse_as<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    fields: impl Fn(&T) -> (Option<&str>, bool),
) -> Result<(T, i64), Problem> {
    let line: T = serde_json::from_slice(bytes).map_err(|_| {
        if bytes.trim_ascii_start().starts_with(b"{") {
            Problem::NotJson
        } else {
            Problem::OtherFormat
        }
    })?;
    let (Some(time), true) = fields(&line) else {
        return Err(Problem::OtherFormat);
    };
    let ms = abmesh::time::parse_rfc3339(time).ok_or(Problem::BadTime)?;
    Ok((line, ms))
}

fn present<'t>(text: &'t Option<std::borrow::Cow<'_, str>>) -> Option<&'t str> {
    text.as_deref().filter(|t| !t.is_empty() && *t != "-")
}

/// Pass 1 on one line: a unit's first exposures.
fn first_exposures(
    config: &Config,
    goals: usize,
    first: &mut [HashMap<String, Vec<Exposed>>],
    line: &Line,
    start_ms: i64,
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
        let Some(by_id) = first.get_mut(u) else {
            continue;
        };
        let slots = by_id.entry(id.clone()).or_default();
        match slots.iter_mut().find(|s| usize::from(s.experiment) == e) {
            Some(s) if usize::from(s.variant) == v => {
                if (r.ts_ms, start_ms) < (s.first_ms, s.first_start_ms) {
                    (s.first_ms, s.first_start_ms) = (r.ts_ms, start_ms);
                }
            }
            Some(s) => {
                tally.add(Problem::TwoVariants, at);
                // The earlier exposure is the unit's first: it decides its variant.
                if r.ts_ms < s.first_ms {
                    (s.variant, s.first_ms, s.first_start_ms) = (v as u16, r.ts_ms, start_ms);
                }
            }
            None => slots.push(Exposed {
                experiment: e as u16,
                variant: v as u16,
                first_ms: r.ts_ms,
                first_start_ms: start_ms,
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
    first: &mut [HashMap<String, Vec<Exposed>>],
    line: &Request,
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
    let method = line.method.as_deref().unwrap_or("");
    let path = line.path.as_deref().unwrap_or("");
    let status = line.code.as_ref().and_then(|c| c.value()).unwrap_or(0.0) as u16;
    let duration = line
        .duration_ms
        .as_ref()
        .and_then(|d| d.value())
        .unwrap_or(0.0);
    for (name, id) in units.0 {
        let Some(u) = config.unit_index(&name) else {
            continue;
        };
        let Some(slots) = first.get_mut(u).and_then(|m| m.get_mut(id.as_ref())) else {
            continue;
        };
        for s in slots {
            if start_ms < s.first_start_ms {
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
    let mut first: Vec<HashMap<String, Vec<Exposed>>> = vec![HashMap::new(); config.units.len()];
    let mut lines = 0u64;
    for (path, name) in inputs {
        // What cannot be read is counted once, in the second pass, which reads every line.
        let mut unread = Tally::default();
        each_line(path, name, &mut unread, |bytes, at, _| {
            if !has_record(bytes) {
                return;
            }
            if let Ok((line, start_ms)) = parse(bytes) {
                first_exposures(
                    config,
                    goals.len(),
                    &mut first,
                    &line,
                    start_ms,
                    at,
                    &mut tally,
                );
            }
        });
    }
    for (path, name) in inputs {
        let mut problems = Tally::default();
        each_line(path, name, &mut problems, |bytes, at, problems| {
            lines += 1;
            match parse_request(bytes) {
                Ok((line, start_ms)) => {
                    attribute(config, goals, &mut first, &line, start_ms, at, problems)
                }
                Err(p) => problems.add(p, at),
            }
        });
        tally.merge(problems);
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
    for s in first.iter().flat_map(HashMap::values).flatten() {
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
