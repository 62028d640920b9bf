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
pub mod goal;
pub mod input;
mod render;
pub mod report;

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
        tally: c.tally,
    }
}
