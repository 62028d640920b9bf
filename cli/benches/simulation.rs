//! The large simulation study of `abmesh guard`'s statistics (`./build.sh simulate`): prints
//! the Markdown table the README shows. `tests/simulation.rs` runs a small version in CI.

use abmesh_cli::power::{sample_size, Effect, Input, Metric};
use abmesh_cli::simulate::clustered::{self, study, Population};
use abmesh_cli::simulate::{aa_means, aa_proportions, aa_srm, power_proportions};

fn main() {
    let runs: usize = std::env::var("SIM_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5_000);
    clustered_table(runs.min(2_000));
    let looks = 50;
    let alpha = 0.05;
    let se = |p: f64| (p * (1.0 - p) / runs as f64).sqrt();
    println!("{runs} simulated experiments per row, each examined at {looks} evenly spaced looks; alpha {alpha}; mixing 0.1.\n");
    println!("| A/A study (no true difference) | sequential false alarms | fixed-horizon false alarms (any of 50 looks) |");
    println!("|---|---|---|");
    let rows = [
        (
            "5xx-style rate 10%, 200 more per arm per look",
            aa_proportions(runs, looks, 200, 0.1, alpha, 0.1, 11),
        ),
        (
            "rate 1%, 1,000 more per arm per look",
            aa_proportions(runs, looks, 1_000, 0.01, alpha, 0.1, 12),
        ),
        (
            "mean (sd 20), 100 more per arm per look",
            aa_means(runs, looks, 100, alpha, 0.1, 13),
        ),
        (
            "split 50/50 (SRM), 400 more units per look",
            aa_srm(runs, looks, 400, alpha, 14),
        ),
    ];
    for (name, r) in rows {
        println!(
            "| {name} | {:.2}% ± {:.2} | {:.2}% ± {:.2} |",
            r.sequential * 100.0,
            se(r.sequential) * 100.0,
            r.fixed_horizon * 100.0,
            se(r.fixed_horizon) * 100.0
        );
    }
    println!("\n| true effect of the planned size | planned power | fixed-horizon n per arm | sequential n per arm (`abmesh plan`) | detected by sequential mode within that n |");
    println!("|---|---|---|---|---|");
    for (baseline, delta, power) in [(0.05, 0.02, 0.8), (0.10, 0.02, 0.9), (0.01, 0.005, 0.8)] {
        let input = Input {
            alpha,
            power,
            ..Input::new(Metric::Proportion { baseline }, Effect::Absolute(delta))
        };
        let fixed = sample_size(&input)
            .map(|p| p.per_variant_fixed())
            .unwrap_or(0);
        let (n, detected) = power_proportions(runs.min(2_000), looks, &input, 21);
        println!(
            "| {:.1}% → {:.1}% | {:.0}% | {fixed} | {n} | {:.1}% ± {:.1} |",
            baseline * 100.0,
            (baseline + delta) * 100.0,
            power * 100.0,
            detected * 100.0,
            (detected * (1.0 - detected) / runs.min(2_000) as f64).sqrt() * 100.0
        );
    }
}

/// The clustered study: A/A experiments on the population of issue 14, judged by guard
/// itself per unit (replicates) and per request, side by side.
fn clustered_table(runs: usize) {
    let looks = 20;
    let se = |p: f64| (p * (1.0 - p) / runs as f64).sqrt() * 100.0;
    let cell = |p: f64| format!("{:.1}% ± {:.1}", p * 100.0, se(p));
    let pop = Population::default();
    println!("Clustered traffic: {runs} A/A experiments of {} users each (requests per user log-normal, mean {}, log-sd {}; {}% of users fail {}% of their requests, the rest {}%; a log-normal latency level per user times per-request noise), {looks} looks as users arrive. Sequential: alarm at any look; fixed horizon: the last look only. SRM at p < 0.001, the others at p < 0.05; \"paused\": guard's defaults would pause it.\n",
        pop.units, pop.mean_requests, pop.requests_sigma, pop.bad_share * 100.0, pop.bad_rate * 100.0, pop.base_rate * 100.0);
    println!("| guard judges | replicates R | paused | SRM (traffic share) | 5xx p < 0.05 | latency p < 0.05 |");
    println!("|---|---|---|---|---|---|");
    let mut per_request: Option<clustered::Study> = None;
    for r in [16u16, 32, 64] {
        let s = study(
            runs,
            looks,
            &pop,
            clustered::Effect::default(),
            r,
            51 + u64::from(r),
        );
        for (name, a) in [
            ("per unit, sequential", s.replicates_sequential),
            ("per unit, fixed horizon", s.replicates_fixed),
        ] {
            println!(
                "| {name} | {r} | {} | {} | {} | {} |",
                cell(a.paused),
                cell(a.srm),
                cell(a.errors),
                cell(a.latency)
            );
        }
        if r == 32 {
            per_request = Some(s);
        }
    }
    if let Some(s) = per_request {
        for (name, a) in [
            (
                "per request (the old method), sequential",
                s.per_request_sequential,
            ),
            (
                "per request (the old method), fixed horizon",
                s.per_request_fixed,
            ),
        ] {
            println!(
                "| {name} | - | {} | {} | {} | {} |",
                cell(a.paused),
                cell(a.srm),
                cell(a.errors),
                cell(a.latency)
            );
        }
        println!("\nMeasured design effect of the 5xx ratio (replicate variance over binomial variance): {:.1}.\n", s.design_effect);
    }
    // Power at the planned size: the design effect guard measured on the A/A runs above, the
    // population's mean requests per user, and `abmesh plan` in units.
    if let Some(aa) = per_request {
        let m = clustered::mean_requests(&pop, 1_000_000, 61);
        let baseline = pop.bad_share * pop.bad_rate + (1.0 - pop.bad_share) * pop.base_rate;
        let delta = 0.003;
        let input = Input {
            per_request: Some(abmesh_cli::power::PerRequest {
                requests_per_unit: m,
                design_effect: aa.design_effect,
            }),
            ..Input::new(Metric::Proportion { baseline }, Effect::Absolute(delta))
        };
        if let Ok(p) = sample_size(&input) {
            let power_runs = runs.min(1_000);
            let at = |n: u64| Population {
                units: 2 * n as usize,
                ..pop
            };
            let effect = clustered::Effect {
                error_increase: delta,
            };
            let fixed = study(power_runs, 1, &at(p.per_variant_fixed()), effect, 32, 81);
            let seq = study(
                power_runs,
                looks,
                &at(p.per_variant_sequential()),
                effect,
                32,
                82,
            );
            let se = |p: f64| (p * (1.0 - p) / power_runs as f64).sqrt() * 100.0;
            println!("Power at the planned size ({power_runs} runs, R = 32): +0.3 points of 5xx for every treated user ({:.2}% → {:.2}%); `abmesh plan --baseline-rate {baseline:.5} --mde {delta} --requests-per-unit {m:.2} --design-effect {:.2}` (the design effect measured above) asks for {} users per variant at the fixed horizon and {} sequentially.\n", baseline * 100.0, (baseline + delta) * 100.0, aa.design_effect, p.per_variant_fixed(), p.per_variant_sequential());
            println!("| planned power | fixed horizon: detected at its size | sequential: detected within its size |");
            println!("|---|---|---|");
            println!(
                "| 80% | {:.1}% ± {:.1} | {:.1}% ± {:.1} |\n",
                fixed.replicates_fixed.errors * 100.0,
                se(fixed.replicates_fixed.errors),
                seq.replicates_sequential.errors * 100.0,
                se(seq.replicates_sequential.errors)
            );
        }
    }
    println!("| per-unit 5xx effect (+0.3 points for every treated user) | replicates R | detected, sequential (any look) | detected, fixed horizon |");
    println!("|---|---|---|---|");
    for r in [16u16, 32, 64] {
        let s = study(
            runs.min(1_000),
            looks,
            &pop,
            clustered::Effect {
                error_increase: 0.003,
            },
            r,
            71 + u64::from(r),
        );
        println!(
            "| 20,000 users | {r} | {} | {} |",
            cell(s.replicates_sequential.errors),
            cell(s.replicates_fixed.errors)
        );
    }
    println!();
}
