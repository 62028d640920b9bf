//! `abmesh analyze`: what an experiment did to its units, from the access log Envoy writes
//! with abmesh — each unit's first exposure from the exposure records, every later request
//! of the unit (`wasm.abmesh_units` on every line) attributed to its variant, goals reached,
//! errors and latency; then per experiment the exact unit-count SRM and per metric the effect
//! against control with always-valid intervals, Holm-adjusted over the run.
//!
//! ```
//! use abmesh_cli::analyze::goal::Goal;
//! let g = Goal::parse("purchase=POST /checkout/complete 2xx").unwrap();
//! assert!(g.matches("POST", "/checkout/complete", 200));
//! ```

pub mod collect;
mod flat;
pub mod goal;
mod html;
pub mod input;
pub mod line;
pub mod record;
mod render;
pub mod report;
pub mod sql;

pub use html::render_html;
pub use render::{render_json, render_text};

use std::path::PathBuf;

use abmesh::Config;

use collect::collect;
use goal::Goal;
use input::Tally;
use report::{judge, ExperimentResult, Metric, Options};

/// A run of `analyze`.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub options: Options,
    pub goals: Vec<Goal>,
    pub metrics: Vec<Metric>,
    pub experiments: Vec<ExperimentResult>,
    pub lines: u64,
    /// How often the inputs were read: 1, or 2 when requests came before their unit's first
    /// exposure (lines out of time order, files in another order), 0 for `--aggregates`.
    pub passes: u8,
    pub tally: Tally,
}

impl Analysis {
    /// Whether an experiment's split is off (SRM): its effects cannot be trusted.
    pub fn srm(&self) -> bool {
        self.experiments
            .iter()
            .any(|e| e.srm_p.is_some_and(|p| p < report::SRM_ALPHA))
    }
}

/// The statistics of sums a warehouse computed with [`sql`]'s query: one JSON object per line
/// (DuckDB `COPY … (FORMAT json)`, ClickHouse `JSONEachRow`, BigQuery's JSON export) with
/// `experiment`, `variant`, `units` and every `sum__`/`cross__` column. An error names the line
/// and what is wrong.
pub fn from_aggregates(
    config: &Config,
    goals: &[Goal],
    text: &str,
    options: Options,
) -> Result<Analysis, String> {
    let names = collect::value_names(goals);
    let k = names.len();
    let mut sums: Vec<Vec<collect::Sums>> = config
        .experiments
        .iter()
        .map(|e| vec![collect::Sums::new(k); e.variants.len()])
        .collect();
    let mut lines = 0u64;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let at = |why: String| format!("line {}: {why}", i + 1);
        let row: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let text_of = |c: &str| {
            row.get(c)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| at(format!("no text column {c}")))
        };
        let number = |c: &str| -> Result<f64, String> {
            match row.get(c) {
                Some(serde_json::Value::Number(n)) => {
                    n.as_f64().ok_or_else(|| at(format!("{c} is not a number")))
                }
                Some(serde_json::Value::String(s)) => {
                    s.parse().map_err(|_| at(format!("{c} is not a number")))
                }
                Some(serde_json::Value::Null) => Ok(0.0),
                _ => Err(at(format!("no column {c}"))),
            }
        };
        let (key, variant) = (text_of("experiment")?, text_of("variant")?);
        let e = config
            .experiment_index(key.as_bytes())
            .ok_or_else(|| at(format!("experiment \"{key}\" is not in the configuration")))?;
        let v = config.experiments[e]
            .variants
            .iter()
            .position(|x| x.name == variant)
            .ok_or_else(|| {
                at(format!(
                    "variant \"{variant}\" is not in experiment \"{key}\""
                ))
            })?;
        let units = number("units")?;
        if units < 0.0 || units.fract() != 0.0 {
            return Err(at(format!("units must be a whole number, found {units}")));
        }
        let s = &mut sums[e][v];
        s.units = units as u64;
        for (a, name) in names.iter().enumerate() {
            s.sum[a] = number(&sql::sum_column(name))?;
            for (b, other) in names.iter().enumerate().skip(a) {
                s.cross[a][b] = number(&sql::cross_column(name, other))?;
            }
        }
    }
    let daily = vec![std::collections::BTreeMap::new(); config.experiments.len()];
    let (metrics, experiments) = judge(config, goals, &sums, &daily, &options);
    Ok(Analysis {
        options,
        goals: goals.to_vec(),
        metrics,
        experiments,
        lines,
        passes: 0,
        tally: Tally::default(),
    })
}

/// Analyzes `inputs` (`(path, name in the report)`) under `config`.
pub fn analyze(
    config: &Config,
    goals: &[Goal],
    inputs: &[(PathBuf, String)],
    options: Options,
) -> Analysis {
    let c = collect(config, goals, inputs);
    let (metrics, experiments) = judge(config, goals, &c.sums, &c.daily, &options);
    Analysis {
        options,
        goals: goals.to_vec(),
        metrics,
        experiments,
        lines: c.lines,
        passes: c.passes,
        tally: c.tally,
    }
}
