//! `abmesh guard`: reads abmesh's metrics (Envoy's `/stats/prometheus` text, or a Prometheus
//! server's query API through [`Sample`]s) and judges every running experiment: the traffic
//! share of each variant against the configured split, and per variant the 5xx ratio and mean
//! latency against control — sequentially by default (always valid however often guard runs),
//! with Holm's adjustment over every decision of a run, and a Bayesian summary beside the tests.
//!
//! Statistics are about the randomization unit: with the filter's replicate series (see
//! `crate::robust`) every variance is cluster-robust; without them guard falls back to
//! per-request tests and says so. A source without the evidence to judge an experiment is
//! never reported as healthy ([`Report::outcome`]).

mod judge;
mod parse;
mod render;
mod rewrite;
mod sanity;
pub mod serve;

pub use judge::judge;
pub use parse::{parse_prometheus, Sample};
pub use render::{render_json, render_text};
pub use rewrite::{rollback, Change, Rollback};
pub use sanity::consistent;

use crate::sequential::DEFAULT_MIXING;
use crate::stats::Comparison;

/// SRM (a traffic-share mismatch) is flagged below this p-value.
pub const SRM_ALPHA: f64 = 0.001;

/// How comparisons are tested.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Always-valid p-values and confidence sequences (`crate::sequential`): any number of
    /// looks keeps the false-alarm rate at or below alpha. The default.
    Sequential { mixing: f64 },
    /// Classic tests for one pre-planned look.
    FixedHorizon,
}

/// What `judge` tests, and at which levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub mode: Mode,
    /// The family-wise error rate of the guardrail decisions of one run (Holm).
    pub alpha: f64,
    /// The 5xx-ratio increase over control a variant may have (a fraction: 0.005 = 0.5 points).
    pub max_error_increase: f64,
    /// The mean-latency increase over control a variant may have (ms); `None`: latency is
    /// reported, not a guardrail.
    pub max_latency_increase: Option<f64>,
    /// The instant experiments are judged at (ms since the epoch): one outside its schedule
    /// window, or at 0% traffic in its ramp, is not in force and not judged.
    pub now_ms: i64,
    /// Use the replicate series when the source has them (the default). Off: per-request
    /// tests even then (for comparisons, such as the simulation study's).
    pub use_replicates: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Sequential {
                mixing: DEFAULT_MIXING,
            },
            alpha: 0.05,
            max_error_increase: 0.005,
            max_latency_increase: None,
            now_ms: 0,
            use_replicates: true,
        }
    }
}

/// What the variances of a run are computed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Inference {
    /// Cluster-robust, from this many replicate series per variant.
    Replicates(u16),
    /// Every request taken as an independent observation, and why.
    PerRequest(String),
}

/// A guardrail decision: the p-value of "no worse than allowed", and after Holm's adjustment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub p_value: f64,
    pub adjusted: f64,
}

#[derive(Debug, Clone)]
pub struct VariantReport {
    pub name: String,
    pub assigned: f64,
    pub expected_share: f64,
    pub observed_share: f64,
    pub responses: f64,
    pub error_ratio: Option<f64>,
    pub errors: Option<Comparison>,
    pub errors_decision: Option<Decision>,
    /// P(this variant's 5xx ratio is below control's).
    pub errors_better: Option<f64>,
    /// The replicate variance of the 5xx difference over the binomial one (replicate mode):
    /// what `abmesh plan --design-effect` takes.
    pub errors_design_effect: Option<f64>,
    pub mean_ms: Option<f64>,
    pub latency: Option<Comparison>,
    pub latency_decision: Option<Decision>,
    /// P(this variant's mean latency is below control's).
    pub latency_better: Option<f64>,
    /// As `errors_design_effect`, for the mean latency.
    pub latency_design_effect: Option<f64>,
}

/// How the split was tested.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SrmTest {
    /// Pearson's chi-square of requests (fixed horizon, per request).
    ChiSquare { statistic: f64, df: f64 },
    /// The Dirichlet–multinomial Bayes factor of requests (sequential, per request).
    DirichletMultinomial,
    /// Each variant's share of the requests against its configured share, with the variance
    /// between replicates (`crate::robust::traffic_share`). The variant furthest off is named.
    TrafficShare {
        variant: usize,
        observed: f64,
        expected: f64,
        df: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Srm {
    pub test: SrmTest,
    pub p_value: f64,
    /// Holm-adjusted over the experiments of the run.
    pub adjusted: f64,
}

#[derive(Debug, Clone)]
pub struct ExperimentReport {
    pub key: String,
    /// When there are assignments to test.
    pub srm: Option<Srm>,
    pub variants: Vec<VariantReport>,
    pub breaches: Vec<String>,
}

/// What a run of guard concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every running experiment was judged, and none breached (exit 0).
    Healthy,
    /// At least one experiment breached a guardrail or shows SRM (exit 3).
    Breached,
    /// Nothing breached, but the source lacks the evidence to judge (exit 4).
    NoEvidence,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub experiments: Vec<ExperimentReport>,
    pub options: Options,
    pub inference: Inference,
    /// Why the source is no evidence of health: about the source, or about one experiment.
    pub no_evidence: Vec<String>,
    /// Running experiments not in force at `now_ms`, and why (not judged).
    pub not_in_force: Vec<(String, String)>,
}

impl Report {
    /// Breaches first: an experiment that is hurting users is acted on even when another one
    /// has no evidence yet.
    pub fn outcome(&self) -> Outcome {
        if self.experiments.iter().any(|e| !e.breaches.is_empty()) {
            Outcome::Breached
        } else if !self.no_evidence.is_empty() {
            Outcome::NoEvidence
        } else {
            Outcome::Healthy
        }
    }

    pub fn healthy(&self) -> bool {
        self.outcome() == Outcome::Healthy
    }
}
