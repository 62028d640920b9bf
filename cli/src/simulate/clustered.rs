//! Traffic that looks like real traffic, for the simulation study of guard: units (users) with
//! heavy-tailed request counts, a few units that fail a large share of their requests, and a
//! latency level of their own. Units, not requests, are randomized — as the filter does — and
//! each lands in one replicate. Every look is judged by [`crate::guard::judge`] itself, on the
//! samples the filter would publish, with and without the replicate series.

use std::collections::BTreeMap;

use super::Rng;
use crate::guard::{judge, Mode, Options, Report, Sample};
use abmesh::config::Config;
use abmesh::metrics::{
    ASSIGNMENTS, DURATION, REPLICATE_5XX, REPLICATE_ASSIGNMENTS, REPLICATE_DURATION_SUM,
    REPLICATE_RESPONSES, RESPONSES,
};

/// The population of units an experiment sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Population {
    pub units: usize,
    /// Requests per unit: `max(1, round(lognormal))` with this mean and log-scale sd.
    pub mean_requests: f64,
    pub requests_sigma: f64,
    /// The share of units that hit a bug, and their 5xx rate; the others' 5xx rate.
    pub bad_share: f64,
    pub bad_rate: f64,
    pub base_rate: f64,
    /// Each unit's median latency is lognormal around this (ms), with this log-scale sd; each
    /// request multiplies it by lognormal noise of sd `latency_noise`.
    pub latency_ms: f64,
    pub latency_unit_sigma: f64,
    pub latency_noise: f64,
}

impl Default for Population {
    /// The population of the measurement in issue 14: 20,000 users, about 10 requests each
    /// with a heavy tail, 2% of users failing 30% of their requests and the others 0.2%.
    fn default() -> Self {
        Population {
            units: 20_000,
            mean_requests: 10.0,
            requests_sigma: 1.2,
            bad_share: 0.02,
            bad_rate: 0.30,
            base_rate: 0.002,
            latency_ms: 50.0,
            latency_unit_sigma: 0.5,
            latency_noise: 0.3,
        }
    }
}

/// What the treatment does to each of its units.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Effect {
    /// Added to the unit's 5xx rate.
    pub error_increase: f64,
}

/// One arm's totals: per replicate and in all.
#[derive(Debug, Clone, Default)]
struct Arm {
    assigned: Vec<f64>,
    responses: Vec<f64>,
    errors: Vec<f64>,
    duration_sum: Vec<f64>,
    sum_squares: f64,
}

/// The experiment of the study: `aa`, control and treatment 50/50, with `replicates`.
pub fn config(replicates: u16) -> Config {
    let json = format!(
        r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}},
            "metrics": {{"replicates": {replicates}}},
            "experiments": [{{"key": "aa", "variants": [{{"name": "control", "weight": 1}},
                                                        {{"name": "treatment", "weight": 1}}]}}]}}"#
    );
    match Config::parse(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => unreachable!("the study's configuration is valid: {e}"),
    }
}

fn sample(name: &str, variant: &str, extra: Option<(&str, String)>, value: f64) -> Sample {
    let mut labels = BTreeMap::new();
    labels.insert("experiment".to_string(), "aa".to_string());
    labels.insert("variant".to_string(), variant.to_string());
    if let Some((k, v)) = extra {
        labels.insert(k.to_string(), v);
    }
    Sample {
        name: name.to_string(),
        labels,
        value,
        line: 0,
    }
}

/// The samples the filter would publish for these totals.
fn samples(arms: &[Arm; 2], with_replicates: bool) -> Vec<Sample> {
    let mut out = Vec::new();
    for (arm, variant) in arms.iter().zip(["control", "treatment"]) {
        let total = |v: &[f64]| v.iter().sum::<f64>();
        let (n, errors) = (total(&arm.responses), total(&arm.errors));
        out.push(sample(ASSIGNMENTS, variant, None, total(&arm.assigned)));
        out.push(sample(
            RESPONSES,
            variant,
            Some(("class", "2xx".into())),
            n - errors,
        ));
        out.push(sample(
            RESPONSES,
            variant,
            Some(("class", "5xx".into())),
            errors,
        ));
        out.push(sample(
            &format!("{DURATION}_sum"),
            variant,
            None,
            total(&arm.duration_sum),
        ));
        out.push(sample(&format!("{DURATION}_count"), variant, None, n));
        out.push(sample(
            &format!("{DURATION}_sum_squares"),
            variant,
            None,
            arm.sum_squares,
        ));
        if with_replicates {
            for r in 0..arm.assigned.len() {
                let label = || Some(("replicate", r.to_string()));
                out.push(sample(
                    REPLICATE_ASSIGNMENTS,
                    variant,
                    label(),
                    arm.assigned[r],
                ));
                out.push(sample(
                    REPLICATE_RESPONSES,
                    variant,
                    label(),
                    arm.responses[r],
                ));
                out.push(sample(REPLICATE_5XX, variant, label(), arm.errors[r]));
                out.push(sample(
                    REPLICATE_DURATION_SUM,
                    variant,
                    label(),
                    arm.duration_sum[r],
                ));
            }
        }
    }
    out
}

/// How each run went, for one way of judging it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Alarms {
    /// Runs in which guard would pause the experiment (a breach at the defaults).
    pub paused: f64,
    pub srm: f64,
    /// Runs with a 5xx or latency comparison's p-value of no difference below alpha.
    pub errors: f64,
    pub latency: f64,
}

impl Alarms {
    fn add(&mut self, report: &Report, alpha: f64) {
        let e = report.experiments.first();
        let flag = |hit: bool| if hit { 1.0 } else { 0.0 };
        let v = e.and_then(|e| e.variants.get(1));
        self.paused = self
            .paused
            .max(flag(e.is_some_and(|e| !e.breaches.is_empty())));
        self.srm = self.srm.max(flag(
            e.and_then(|e| e.srm)
                .is_some_and(|s| s.adjusted < crate::guard::SRM_ALPHA),
        ));
        self.errors = self.errors.max(flag(
            v.and_then(|v| v.errors).is_some_and(|c| c.p_value < alpha),
        ));
        self.latency = self.latency.max(flag(
            v.and_then(|v| v.latency).is_some_and(|c| c.p_value < alpha),
        ));
    }

    fn accumulate(&mut self, run: Alarms) {
        self.paused += run.paused;
        self.srm += run.srm;
        self.errors += run.errors;
        self.latency += run.latency;
    }

    fn scaled(self, runs: usize) -> Alarms {
        let r = runs as f64;
        Alarms {
            paused: self.paused / r,
            srm: self.srm / r,
            errors: self.errors / r,
            latency: self.latency / r,
        }
    }
}

/// The false-alarm (or detection) rates of the four ways guard can judge the same runs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Study {
    pub replicates_sequential: Alarms,
    pub replicates_fixed: Alarms,
    pub per_request_sequential: Alarms,
    pub per_request_fixed: Alarms,
    /// The mean design effect of the 5xx ratio at the last look: the replicate variance of
    /// the difference over the binomial one (how many times more units than requests the
    /// per-request formula would think it needs).
    pub design_effect: f64,
}

/// `runs` experiments on `population`, each looked at `looks` times as its units arrive
/// (sequential modes: any look counts; fixed horizon: the last look only).
pub fn study(
    runs: usize,
    looks: usize,
    population: &Population,
    effect: Effect,
    replicates: u16,
    seed: u64,
) -> Study {
    let config = config(replicates);
    let mut rng = Rng::new(seed);
    let mut out = Study::default();
    let options = |mode: Mode, use_replicates: bool| Options {
        mode,
        use_replicates,
        ..Options::default()
    };
    let sequential = Mode::Sequential {
        mixing: crate::sequential::DEFAULT_MIXING,
    };
    let alpha = Options::default().alpha;
    let mut deff_sum = 0.0;
    for _ in 0..runs {
        let r = usize::from(replicates.max(1));
        let empty = Arm {
            assigned: vec![0.0; r],
            responses: vec![0.0; r],
            errors: vec![0.0; r],
            duration_sum: vec![0.0; r],
            sum_squares: 0.0,
        };
        let mut arms = [empty.clone(), empty];
        let mut run = [Alarms::default(); 4];
        for look in 1..=looks {
            let target = population.units * look / looks;
            let before = population.units * (look - 1) / looks;
            for _ in before..target {
                add_unit(&mut arms, population, effect, r, &mut rng);
            }
            let with = samples(&arms, true);
            run[0].add(&judge(&config, &with, &options(sequential, true)), alpha);
            run[2].add(&judge(&config, &with, &options(sequential, false)), alpha);
            if look == looks {
                let fixed = judge(&config, &with, &options(Mode::FixedHorizon, true));
                run[1].add(&fixed, alpha);
                run[3].add(
                    &judge(&config, &with, &options(Mode::FixedHorizon, false)),
                    alpha,
                );
                // What guard reports: the replicate variance of the 5xx difference over the
                // binomial one.
                deff_sum += fixed
                    .experiments
                    .first()
                    .and_then(|e| e.variants.get(1))
                    .and_then(|v| v.errors_design_effect)
                    .unwrap_or(1.0);
            }
        }
        out.replicates_sequential.accumulate(run[0]);
        out.replicates_fixed.accumulate(run[1]);
        out.per_request_sequential.accumulate(run[2]);
        out.per_request_fixed.accumulate(run[3]);
    }
    out.replicates_sequential = out.replicates_sequential.scaled(runs);
    out.replicates_fixed = out.replicates_fixed.scaled(runs);
    out.per_request_sequential = out.per_request_sequential.scaled(runs);
    out.per_request_fixed = out.per_request_fixed.scaled(runs);
    out.design_effect = deff_sum / runs as f64;
    out
}

/// The mean requests per unit of `population`, from `draws` draws of its distribution.
pub fn mean_requests(population: &Population, draws: usize, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let total: f64 = (0..draws)
        .map(|_| {
            lognormal(
                &mut rng,
                population.mean_requests,
                population.requests_sigma,
            )
            .round()
            .max(1.0)
        })
        .sum();
    total / draws as f64
}

fn lognormal(rng: &mut Rng, mean: f64, sigma: f64) -> f64 {
    (mean.ln() - sigma * sigma / 2.0 + sigma * rng.normal()).exp()
}

/// One unit: its arm (50/50) and replicate are independent uniform draws, as the two hashes
/// are; every one of its requests is drawn.
fn add_unit(arms: &mut [Arm; 2], p: &Population, effect: Effect, r: usize, rng: &mut Rng) {
    let arm = usize::from(rng.uniform() < 0.5);
    let replicate = ((rng.next_u64() >> 11) % r as u64) as usize;
    let requests = lognormal(rng, p.mean_requests, p.requests_sigma)
        .round()
        .max(1.0) as u64;
    let mut rate = if rng.uniform() < p.bad_share {
        p.bad_rate
    } else {
        p.base_rate
    };
    if arm == 1 {
        rate = (rate + effect.error_increase).min(1.0);
    }
    let level = lognormal(rng, p.latency_ms, p.latency_unit_sigma);
    let (mut errors, mut sum, mut squares) = (0.0, 0.0, 0.0);
    for _ in 0..requests {
        errors += f64::from(u8::from(rng.uniform() < rate));
        // Whole milliseconds, as the filter measures them.
        let d = (level * lognormal(rng, 1.0, p.latency_noise)).round();
        sum += d;
        squares += d * d;
    }
    let a = &mut arms[arm];
    a.assigned[replicate] += requests as f64;
    a.responses[replicate] += requests as f64;
    a.errors[replicate] += errors;
    a.duration_sum[replicate] += sum;
    a.sum_squares += squares;
}
