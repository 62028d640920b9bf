#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! The simulation study of guard's statistics, seeded and small enough for CI (the large one
//! is `./build.sh simulate`): 500 A/A experiments, each examined at 50 looks.
//! Sequential mode keeps its false-alarm rate at most alpha (within Monte-Carlo error), where
//! fixed-horizon tests looked at 50 times inflate theirs; and a true effect of the planned size
//! is found, within the sample size `abmesh plan` predicts, in at least the planned share.

use abmesh_cli::power::{Effect, Input, Metric};
use abmesh_cli::simulate::{aa_means, aa_proportions, aa_srm, power_proportions};

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
        alpha: ALPHA,
        ..Input::new(
            Metric::Proportion { baseline: 0.05 },
            Effect::Absolute(0.02),
        )
    };
    let (n, detected) = power_proportions(RUNS, LOOKS, &input, 4);
    eprintln!("5% -> 7%, planned power 80%: {detected} detected within {n} per arm");
    assert!(
        detected >= 0.8,
        "{detected} of runs detected the effect within {n} per arm"
    );
}

// Clustered traffic, as real traffic is: heavy-tailed requests per user, 2% of users failing
// 30% of their requests, a latency level per user. Units are randomized; guard judges every
// look itself, with the replicate series and, for contrast, per request on the same data.

use abmesh_cli::power::{sample_size, PerRequest};
use abmesh_cli::simulate::clustered::{self, mean_requests, study, Population};

const CLUSTERED_RUNS: usize = 300;
const CLUSTERED_LOOKS: usize = 10;

fn mc_bound(p: f64, runs: usize) -> f64 {
    p + 3.0 * (p * (1.0 - p) / runs as f64).sqrt()
}

fn population(units: usize) -> Population {
    Population {
        units,
        ..Population::default()
    }
}

#[test]
fn clustered_a_a_traffic_judged_per_unit_keeps_false_alarms_at_alpha_where_per_request_fails() {
    let s = study(
        CLUSTERED_RUNS,
        CLUSTERED_LOOKS,
        &population(5_000),
        clustered::Effect::default(),
        32,
        31,
    );
    eprintln!("clustered A/A, 5,000 users, {CLUSTERED_LOOKS} looks: {s:#?}");
    let n = CLUSTERED_RUNS;
    for (name, a) in [
        ("sequential", s.replicates_sequential),
        ("fixed horizon", s.replicates_fixed),
    ] {
        assert!(a.srm <= mc_bound(0.001, n), "{name} traffic share: {a:?}");
        assert!(a.errors <= mc_bound(ALPHA, n), "{name} 5xx: {a:?}");
        assert!(a.latency <= mc_bound(ALPHA, n), "{name} latency: {a:?}");
        assert!(a.paused <= mc_bound(ALPHA, n), "{name} paused: {a:?}");
    }
    // The same runs judged per request: the false alarms the issue measured.
    for a in [s.per_request_sequential, s.per_request_fixed] {
        assert!(a.srm > 0.2, "{a:?}");
        assert!(a.errors > 0.2, "{a:?}");
        assert!(a.latency > 0.2, "{a:?}");
    }
    assert!(s.design_effect > 3.0, "{s:?}");
}

#[test]
fn a_per_unit_5xx_effect_is_found_with_the_units_plan_asks_for_given_the_measured_design_effect() {
    let pop = population(5_000);
    // What an operator does: read the design effect guard measured on an A/A (or the
    // pre-period), and ask plan for units.
    let pilot = study(40, 1, &pop, clustered::Effect::default(), 32, 41);
    let m = mean_requests(&pop, 200_000, 42);
    let baseline = pop.bad_share * pop.bad_rate + (1.0 - pop.bad_share) * pop.base_rate;
    let input = Input {
        alpha: ALPHA,
        per_request: Some(PerRequest {
            requests_per_unit: m,
            design_effect: pilot.design_effect,
        }),
        ..Input::new(Metric::Proportion { baseline }, Effect::Absolute(0.006))
    };
    let p = sample_size(&input).unwrap();
    let effect = clustered::Effect {
        error_increase: 0.006,
    };
    let runs = 200;
    let fixed = study(
        runs,
        1,
        &population(2 * p.per_variant_fixed() as usize),
        effect,
        32,
        43,
    );
    let sequential = study(
        runs,
        CLUSTERED_LOOKS,
        &population(2 * p.per_variant_sequential() as usize),
        effect,
        32,
        44,
    );
    eprintln!(
        "design effect {:.2}, {m:.2} requests per unit: fixed {} per arm -> {:?}; sequential {} per arm -> {:?}",
        pilot.design_effect,
        p.per_variant_fixed(),
        fixed.replicates_fixed,
        p.per_variant_sequential(),
        sequential.replicates_sequential
    );
    let floor = 0.8 - 3.0 * (0.8 * 0.2 / runs as f64).sqrt();
    assert!(fixed.replicates_fixed.errors >= floor, "{fixed:?}");
    assert!(
        sequential.replicates_sequential.errors >= floor,
        "{sequential:?}"
    );
}
