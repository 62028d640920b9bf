#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! The simulation study of guard's statistics, seeded and small enough for CI (the large one
//! is `./build.sh simulate`): 500 A/A experiments, each examined at 50 looks.
//! Sequential mode keeps its false-alarm rate at most alpha (within Monte-Carlo error), where
//! fixed-horizon tests looked at 50 times inflate theirs; and a true effect of the planned size
//! is found, within the sample size `abmesh plan` predicts, in at least the planned share.

use abmesh::power::{Effect, Input, Metric};
use abmesh::simulate::{aa_means, aa_proportions, aa_srm, power_proportions};

const RUNS: usize = 500;
const LOOKS: usize = 50;
const ALPHA: f64 = 0.05;

/// Three standard errors of a share estimated from `RUNS` runs, at `p`.
fn mc_error(p: f64) -> f64 {
    3.0 * (p * (1.0 - p) / RUNS as f64).sqrt()
}

#[test]
fn a_a_rates_looked_at_50_times_keep_sequential_false_alarms_under_alpha() {
    let r = aa_proportions(RUNS, LOOKS, 200, 0.1, ALPHA, 0.1, 1);
    eprintln!("A/A rate 10%, 50 looks of 200 per arm: {r:?}");
    assert!(r.sequential <= ALPHA + mc_error(ALPHA), "{r:?}");
    // The peeking problem, for the record: the classic test crosses 0.05 far more often.
    assert!(r.fixed_horizon > 2.0 * ALPHA, "{r:?}");
}

#[test]
fn a_a_means_looked_at_50_times_keep_sequential_false_alarms_under_alpha() {
    let r = aa_means(RUNS, LOOKS, 100, ALPHA, 0.1, 2);
    eprintln!("A/A mean (sd 20), 50 looks of 100 per arm: {r:?}");
    assert!(r.sequential <= ALPHA + mc_error(ALPHA), "{r:?}");
    assert!(r.fixed_horizon > 2.0 * ALPHA, "{r:?}");
}

#[test]
fn a_correct_split_looked_at_50_times_keeps_sequential_srm_alarms_under_alpha() {
    let r = aa_srm(RUNS, LOOKS, 400, ALPHA, 3);
    eprintln!("A/A split 50/50, 50 looks of 400 units: {r:?}");
    assert!(r.sequential <= ALPHA + mc_error(ALPHA), "{r:?}");
    assert!(r.fixed_horizon > 2.0 * ALPHA, "{r:?}");
}

#[test]
fn a_true_effect_of_the_planned_size_is_found_within_the_planned_sequential_sample() {
    let input = Input {
        metric: Metric::Proportion { baseline: 0.05 },
        effect: Effect::Absolute(0.02),
        alpha: ALPHA,
        power: 0.8,
        variants: 2,
        mixing: 0.1,
        daily_units: None,
        traffic_percent: 100.0,
    };
    let (n, detected) = power_proportions(RUNS, LOOKS, &input, 4);
    eprintln!("5% -> 7%, planned power 80%: {detected} detected within {n} per arm");
    assert!(
        detected >= 0.8,
        "{detected} of runs detected the effect within {n} per arm"
    );
}
