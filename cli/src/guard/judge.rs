//! From samples to decisions: gathers each variant's series, checks that there is evidence,
//! tests the split and the guardrails, and adjusts every decision of the run (Holm).

use std::collections::BTreeMap;

use super::{
    Decision, ExperimentReport, Inference, Mode, Options, Report, Sample, Srm, SrmTest,
    VariantReport, SRM_ALPHA,
};
use crate::bayes::{prob_mean_lower, prob_rate_lower};
use crate::robust::{self, ratio, traffic_share, Test};
use crate::sequential::{self, holm, srm_p_value};
use crate::stats::{chi_square, normal_sf, two_proportion, welch, Comparison, Moments};
use abmesh::config::{Config, Experiment, Status};
use abmesh::metrics::{
    ASSIGNMENTS, CLASSES, DURATION, FORCED, REPLICATE_5XX, REPLICATE_ASSIGNMENTS,
    REPLICATE_DURATION_SUM, REPLICATE_METRICS, REPLICATE_RESPONSES, RESPONSES,
};

/// One variant's replicate totals, indexed by replicate.
#[derive(Debug, Clone, Default)]
struct Replicates {
    assigned: Vec<f64>,
    responses: Vec<f64>,
    errors: Vec<f64>,
    duration_sum: Vec<f64>,
}

#[derive(Debug, Clone, Default)]
struct VariantData {
    assigned: f64,
    forced: f64,
    responses: f64,
    errors_5xx: f64,
    moments: [f64; 3],
    replicates: Option<Replicates>,
}

impl VariantData {
    fn duration(&self) -> Option<Moments> {
        let [sum, n, sum_squares] = self.moments;
        (n > 0.0).then_some(Moments {
            n,
            sum,
            sum_squares,
        })
    }
}

/// The series of every (experiment, variant), and what is wrong with the source, if anything.
struct Gathered {
    data: BTreeMap<(String, String), VariantData>,
    abmesh_series: usize,
    replicate_series: usize,
    problems: Vec<String>,
}

fn gather(samples: &[Sample], replicates: u16) -> Gathered {
    let mut g = Gathered {
        data: BTreeMap::new(),
        abmesh_series: 0,
        replicate_series: 0,
        problems: Vec::new(),
    };
    let sum_name = format!("{DURATION}_sum");
    let count_name = format!("{DURATION}_count");
    let squares_name = format!("{DURATION}_sum_squares");
    // The first example of each problem: a source has thousands of series.
    let (mut unlabelled, mut unreplicated, mut out_of_range) = (None, None, None);
    for s in samples {
        // abmesh's own series; Envoy's `envoy_wasm_abmesh_vm_*` (the plugin's name) are not.
        let untagged = s.name.contains("___abmesh_");
        if !s.name.starts_with("abmesh_") && !untagged {
            continue;
        }
        g.abmesh_series += 1;
        // Without abmesh's stats tags Envoy keeps a label in the name, sanitized:
        // `experiment___a___variant___b___abmesh_assignments_total`, or, without the
        // replicate tag alone, `replicate___3___abmesh_replicate_assignments_total{…}`.
        if untagged {
            if s.name.contains("abmesh_replicate_") && s.labels.contains_key("experiment") {
                unreplicated.get_or_insert_with(|| s.name.clone());
            } else {
                unlabelled.get_or_insert_with(|| s.name.clone());
            }
            continue;
        }
        let per_variant = !s.name.starts_with("abmesh_errors_total")
            && !s.name.starts_with("abmesh_not_assigned_total");
        let (Some(e), Some(v)) = (s.labels.get("experiment"), s.labels.get("variant")) else {
            if per_variant {
                unlabelled.get_or_insert_with(|| s.name.clone());
            }
            continue;
        };
        let d = g.data.entry((e.clone(), v.clone())).or_default();
        let name = s.name.as_str();
        if REPLICATE_METRICS.contains(&name) {
            g.replicate_series += 1;
            let Some(label) = s.labels.get("replicate") else {
                unreplicated.get_or_insert_with(|| s.name.clone());
                continue;
            };
            let r = match label.parse::<u16>() {
                Ok(r) if r < replicates => usize::from(r),
                _ => {
                    out_of_range.get_or_insert_with(|| format!(
                        "{name}{{experiment=\"{e}\",variant=\"{v}\"}} has replicate \"{label}\", not below the configuration's {replicates} replicates (metrics.replicates): the stats come from another configuration"
                    ));
                    continue;
                }
            };
            let reps = d.replicates.get_or_insert_with(|| {
                let zeros = vec![0.0; usize::from(replicates)];
                Replicates {
                    assigned: zeros.clone(),
                    responses: zeros.clone(),
                    errors: zeros.clone(),
                    duration_sum: zeros,
                }
            });
            let slot = match name {
                n if n == REPLICATE_ASSIGNMENTS => &mut reps.assigned,
                n if n == REPLICATE_RESPONSES => &mut reps.responses,
                n if n == REPLICATE_5XX => &mut reps.errors,
                n if n == REPLICATE_DURATION_SUM => &mut reps.duration_sum,
                _ => continue,
            };
            slot[r] += s.value;
            continue;
        }
        match name {
            n if n == ASSIGNMENTS => d.assigned += s.value,
            n if n == FORCED => d.forced += s.value,
            n if n == RESPONSES => {
                let class = s.labels.get("class").map(String::as_str);
                if class.is_some_and(|c| CLASSES.contains(&c)) {
                    d.responses += s.value;
                }
                if class == Some("5xx") {
                    d.errors_5xx += s.value;
                }
            }
            n if n == sum_name => d.moments[0] += s.value,
            n if n == count_name => d.moments[1] += s.value,
            n if n == squares_name => d.moments[2] += s.value,
            _ => {}
        }
    }
    g.problems.extend(out_of_range);
    if let Some(name) = unlabelled {
        g.problems.push(format!(
            "the abmesh series carry no experiment and variant labels (for example {name}): add abmesh's stats tags (stats_tags in Envoy's bootstrap, extraStatTags in Istio; README, Metrics)"
        ));
    }
    if let Some(name) = unreplicated {
        g.problems.push(format!(
            "the replicate series carry no replicate label (for example {name}): add replicate to the stats tags (README, Metrics)"
        ));
    }
    g
}

/// Why a running experiment is not in force at `now_ms`, if it is not.
fn not_in_force(e: &Experiment, now_ms: i64) -> Option<String> {
    if e.start_ms.is_some_and(|s| now_ms < s) {
        return Some("its start is in the future".into());
    }
    if e.end_ms.is_some_and(|end| now_ms >= end) {
        return Some("its end has passed".into());
    }
    let traffic = if e.ramp.is_empty() {
        Some(e.traffic_bp)
    } else {
        abmesh::ramp::current(&e.ramp, now_ms).map(|s| s.traffic_bp)
    };
    match traffic {
        None => Some("its ramp has not begun".into()),
        Some(0) => Some("it takes 0% of the traffic".into()),
        Some(_) => None,
    }
}

/// The two-sided p-value that a difference is no more than `margin`, from an estimate with
/// standard error `se` (fixed-horizon mode; the normal approximation).
fn fixed_p_above(diff: f64, se: f64, margin: f64) -> f64 {
    if diff <= margin {
        1.0
    } else if se <= 0.0 {
        0.0
    } else {
        (2.0 * normal_sf((diff - margin) / se)).min(1.0)
    }
}

/// A comparison, the p-value of its guardrail (when it has one), P(better), and the design
/// effect (replicate mode: the variance of the difference over what independent requests
/// would give).
type Tested = (Option<Comparison>, Option<f64>, Option<f64>, Option<f64>);

const UNTESTED: Tested = (None, None, None, None);

/// The 5xx ratio and mean latency of `d` against `control`, per request.
fn per_request(d: &VariantData, control: &VariantData, o: &Options) -> (Tested, Tested) {
    let errors = match o.mode {
        Mode::Sequential { mixing } => {
            let s = sequential::proportions(
                d.errors_5xx,
                d.responses,
                control.errors_5xx,
                control.responses,
                o.alpha,
                mixing,
            );
            (
                s.map(|s| s.comparison),
                s.map(|s| s.p_above(o.max_error_increase)),
            )
        }
        Mode::FixedHorizon => {
            let c = two_proportion(
                d.errors_5xx,
                d.responses,
                control.errors_5xx,
                control.responses,
            );
            let p = c.map(|c| {
                let se = (c.variant * (1.0 - c.variant) / d.responses
                    + c.control * (1.0 - c.control) / control.responses)
                    .sqrt();
                fixed_p_above(c.diff, se, o.max_error_increase)
            });
            (c, p)
        }
    };
    let errors_better = (d.responses > 0.0 && control.responses > 0.0).then(|| {
        prob_rate_lower(
            d.errors_5xx,
            d.responses,
            control.errors_5xx,
            control.responses,
        )
    });
    let latency = match (d.duration(), control.duration()) {
        (Some(a), Some(b)) => {
            let (c, p) = match o.mode {
                Mode::Sequential { mixing } => {
                    let s = sequential::means(a, b, o.alpha, mixing);
                    (
                        s.map(|s| s.comparison),
                        s.and_then(|s| Some(s.p_above(o.max_latency_increase?))),
                    )
                }
                Mode::FixedHorizon => {
                    let c = welch(a, b);
                    let se = (a.variance() / a.n + b.variance() / b.n).sqrt();
                    let p =
                        c.and_then(|c| Some(fixed_p_above(c.diff, se, o.max_latency_increase?)));
                    (c, p)
                }
            };
            (c, p, prob_mean_lower(a, b), None)
        }
        _ => UNTESTED,
    };
    ((errors.0, errors.1, errors_better, None), latency)
}

/// The 5xx ratio and mean latency of `d` against `control`, from their replicate totals. The
/// mixing variance is `mixing²` times the per-request variance, as in per-request mode, so
/// `--mixing` means the same in both.
fn per_replicate(d: &VariantData, control: &VariantData, o: &Options) -> (Tested, Tested) {
    let (Some(a), Some(b)) = (&d.replicates, &control.replicates) else {
        return (UNTESTED, UNTESTED);
    };
    let test = |sigma2: f64| match o.mode {
        Mode::Sequential { mixing } => Test::Sequential {
            tau2: mixing * mixing * sigma2,
        },
        Mode::FixedHorizon => Test::FixedHorizon,
    };
    // `independent`: the variance of the difference if requests were independent.
    let run =
        |num_a: &[f64], num_b: &[f64], sigma2: f64, margin: Option<f64>, independent: f64| match (
            ratio(num_a, &a.responses),
            ratio(num_b, &b.responses),
        ) {
            (Some(x), Some(y)) => {
                let r = robust::compare(x, y, test(sigma2), o.alpha);
                (
                    Some(r.comparison),
                    margin.map(|m| r.p_above(m)),
                    Some(r.prob_lower()),
                    (independent > 0.0).then(|| r.difference.variance / independent),
                )
            }
            _ => UNTESTED,
        };
    let (ea, eb): (f64, f64) = (a.errors.iter().sum(), b.errors.iter().sum());
    let (na, nb): (f64, f64) = (a.responses.iter().sum(), b.responses.iter().sum());
    let pooled = if na + nb > 0.0 {
        (ea + eb) / (na + nb)
    } else {
        0.0
    };
    let binomial = |e: f64, n: f64| {
        if n > 0.0 {
            e / n * (1.0 - e / n) / n
        } else {
            0.0
        }
    };
    let errors = run(
        &a.errors,
        &b.errors,
        pooled * (1.0 - pooled),
        Some(o.max_error_increase),
        binomial(ea, na) + binomial(eb, nb),
    );
    // The per-request variance of latency needs the sums of squares of the plain series.
    let latency = match (d.duration(), control.duration()) {
        (Some(x), Some(y)) if x.n + y.n > 2.0 => {
            let pooled =
                ((x.n - 1.0) * x.variance() + (y.n - 1.0) * y.variance()) / (x.n + y.n - 2.0);
            run(
                &a.duration_sum,
                &b.duration_sum,
                pooled,
                o.max_latency_increase,
                x.variance() / x.n + y.variance() / y.n,
            )
        }
        _ => UNTESTED,
    };
    (errors, latency)
}

/// The split test of one experiment: requests per variant against the configured shares.
fn srm(e: &Experiment, data: &[VariantData], replicated: bool, o: &Options) -> Option<Srm> {
    let shares: Vec<f64> = e
        .variants
        .iter()
        .map(|v| f64::from(v.range.1 - v.range.0))
        .collect();
    if replicated {
        let counts: Vec<Vec<f64>> = data
            .iter()
            .map(|d| {
                d.replicates
                    .as_ref()
                    .map_or_else(Vec::new, |r| r.assigned.clone())
            })
            .collect();
        let sequential = matches!(o.mode, Mode::Sequential { .. });
        let (tests, p) = traffic_share(&counts, &shares, sequential)?;
        let (variant, worst) = tests
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (i, t)))
            .min_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value))?;
        return Some(Srm {
            test: SrmTest::TrafficShare {
                variant,
                observed: worst.observed,
                expected: worst.expected,
                df: worst.df,
            },
            p_value: p,
            adjusted: p,
        });
    }
    // Forced assignments bypass the hash: they are not part of the split.
    let hashed: Vec<f64> = data
        .iter()
        .map(|d| (d.assigned - d.forced).max(0.0))
        .collect();
    match o.mode {
        Mode::Sequential { .. } => srm_p_value(&hashed, &shares).map(|p| Srm {
            test: SrmTest::DirichletMultinomial,
            p_value: p,
            adjusted: p,
        }),
        Mode::FixedHorizon => chi_square(&hashed, &shares).map(|(statistic, df, p)| Srm {
            test: SrmTest::ChiSquare { statistic, df },
            p_value: p,
            adjusted: p,
        }),
    }
}

/// Judges every running experiment of `config` in force at `options.now_ms` on the samples.
pub fn judge(config: &Config, samples: &[Sample], options: &Options) -> Report {
    let g = gather(samples, config.replicates);
    let mut no_evidence = g.problems.clone();
    if samples.is_empty() {
        no_evidence.push("the source holds no Prometheus samples".into());
    } else if g.abmesh_series == 0 {
        no_evidence.push("the source holds no abmesh series: is the plugin attached, and does the source scrape Envoy's /stats/prometheus?".into());
    }
    let inference = if !options.use_replicates {
        Inference::PerRequest("replicates not used (--per-request)".into())
    } else if config.replicates == 0 {
        Inference::PerRequest("metrics.replicates is 0 in the configuration".into())
    } else if g.replicate_series == 0 {
        Inference::PerRequest(
            "the source holds no replicate series (a filter older than the configuration, or one deployed with metrics.replicates 0)".into(),
        )
    } else {
        Inference::Replicates(config.replicates)
    };
    let replicated = matches!(inference, Inference::Replicates(_));
    let source_problem = !no_evidence.is_empty();
    let o = options;
    let mut experiments: Vec<ExperimentReport> = Vec::new();
    let mut not_judged = Vec::new();
    for e in config
        .experiments
        .iter()
        .filter(|e| e.status == Status::Running)
    {
        if let Some(why) = not_in_force(e, o.now_ms) {
            not_judged.push((e.key.clone(), why));
            continue;
        }
        let data: Vec<VariantData> = e
            .variants
            .iter()
            .map(|v| {
                g.data
                    .get(&(e.key.clone(), v.name.clone()))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let hashed_total: f64 = data.iter().map(|d| (d.assigned - d.forced).max(0.0)).sum();
        // Every experiment without assignments is named, unless the source as a whole holds
        // nothing (then that is the one reason).
        if hashed_total <= 0.0 && !source_problem {
            no_evidence.push(format!(
                "experiment {} is running but the source holds no assignments for it",
                e.key
            ));
        }
        let share_total: f64 = e
            .variants
            .iter()
            .map(|v| f64::from(v.range.1 - v.range.0))
            .sum();
        // In replicate mode a variant's replicate series must hold its hashed assignments, up
        // to one publication's lag: a proxy publishes a new series on its first count (a large
        // configuration's over minutes), and a split judged on half-published replicates
        // would look like a sample ratio mismatch.
        let incomplete: Vec<&str> = if replicated {
            e.variants
                .iter()
                .zip(&data)
                .filter(|(_, d)| {
                    let hashed = (d.assigned - d.forced).max(0.0);
                    let in_replicates: f64 = d
                        .replicates
                        .as_ref()
                        .map_or(0.0, |r| r.assigned.iter().sum());
                    hashed > 0.0
                        && (in_replicates == 0.0
                            || hashed - in_replicates > super::sanity::lag_allowance(hashed))
                })
                .map(|(v, _)| v.name.as_str())
                .collect()
        } else {
            Vec::new()
        };
        for v in &incomplete {
            no_evidence.push(format!(
                "experiment {} variant {v}: its replicate series do not hold its assignments yet (a proxy publishes a new series on its first count, a large configuration's over minutes)",
                e.key
            ));
        }
        let control = &data[0];
        let variants = e
            .variants
            .iter()
            .zip(&data)
            .enumerate()
            .map(|(i, (v, d))| {
                let (
                    (errors, errors_p, errors_better, errors_deff),
                    (latency, latency_p, latency_better, latency_deff),
                ) = match (i, replicated) {
                    (0, _) => (UNTESTED, UNTESTED),
                    (_, true) => per_replicate(d, control, o),
                    (_, false) => per_request(d, control, o),
                };
                let decision = |p: Option<f64>| {
                    p.map(|p| Decision {
                        p_value: p,
                        adjusted: p,
                    })
                };
                VariantReport {
                    name: v.name.clone(),
                    assigned: d.assigned,
                    expected_share: if share_total > 0.0 {
                        f64::from(v.range.1 - v.range.0) / share_total
                    } else {
                        0.0
                    },
                    observed_share: if hashed_total > 0.0 {
                        (d.assigned - d.forced).max(0.0) / hashed_total
                    } else {
                        0.0
                    },
                    responses: d.responses,
                    error_ratio: (d.responses > 0.0).then(|| d.errors_5xx / d.responses),
                    errors,
                    errors_decision: decision(errors_p),
                    errors_better,
                    errors_design_effect: errors_deff,
                    mean_ms: d.duration().map(|m| m.mean()),
                    latency,
                    latency_decision: decision(latency_p),
                    latency_better,
                    latency_design_effect: latency_deff,
                }
            })
            .collect::<Vec<VariantReport>>();
        // A variant with responses but no comparison is not judged: in replicate mode its
        // replicate series are not (all) in the source yet — a proxy defines a series on its
        // first count, a large configuration's over minutes — and healthy needs evidence.
        if control.responses > 0.0 && incomplete.is_empty() {
            for v in variants.iter().skip(1) {
                if v.responses > 0.0 && v.errors.is_none() {
                    no_evidence.push(format!(
                        "experiment {} variant {}: {} responses but no comparison with control yet{}",
                        e.key,
                        v.name,
                        v.responses,
                        if replicated {
                            " (its replicate series are not all in the source: a proxy publishes a new series on its first count, a large configuration's over minutes)"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        experiments.push(ExperimentReport {
            key: e.key.clone(),
            srm: if incomplete.is_empty() {
                srm(e, &data, replicated, o)
            } else {
                None
            },
            variants,
            breaches: Vec::new(),
        });
    }
    adjust_and_decide(&mut experiments, o);
    Report {
        experiments,
        options: *options,
        inference,
        no_evidence,
        not_in_force: not_judged,
    }
}

/// Multiple testing: Holm over every guardrail decision of the run, and over every SRM test;
/// then the breaches, each with the figures that justify it.
fn adjust_and_decide(experiments: &mut [ExperimentReport], o: &Options) {
    let alpha = o.alpha;
    let srm_p: Vec<f64> = experiments
        .iter()
        .filter_map(|e| e.srm.map(|s| s.p_value))
        .collect();
    let mut srm_adjusted = holm(&srm_p).into_iter();
    let mut decisions: Vec<f64> = Vec::new();
    for e in experiments.iter() {
        for v in &e.variants {
            decisions.extend(v.errors_decision.map(|d| d.p_value));
            decisions.extend(v.latency_decision.map(|d| d.p_value));
        }
    }
    let mut adjusted = holm(&decisions).into_iter();
    let interval = super::render::interval_name(o);
    for e in experiments.iter_mut() {
        if let Some(srm) = &mut e.srm {
            srm.adjusted = srm_adjusted.next().unwrap_or(1.0);
            if srm.adjusted < SRM_ALPHA {
                let test = match srm.test {
                    SrmTest::ChiSquare { statistic, df } => {
                        format!("chi-square {statistic:.1} with {df} degrees of freedom, ")
                    }
                    SrmTest::DirichletMultinomial => "always-valid ".to_string(),
                    SrmTest::TrafficShare {
                        variant,
                        observed,
                        expected,
                        ..
                    } => format!(
                        "variant {} has {:.2}% of the requests against {:.2}% configured (between-replicate variance), {}",
                        e.variants.get(variant).map_or("?", |v| v.name.as_str()),
                        observed * 100.0,
                        expected * 100.0,
                        if matches!(o.mode, Mode::Sequential { .. }) { "always-valid " } else { "" },
                    ),
                };
                e.breaches.push(format!(
                    "sample ratio mismatch: {test}p = {:.2e} (Holm-adjusted {:.2e}) < {SRM_ALPHA}",
                    srm.p_value, srm.adjusted
                ));
            }
        }
        for v in &mut e.variants {
            if let Some(d) = &mut v.errors_decision {
                d.adjusted = adjusted.next().unwrap_or(1.0);
                if let (true, Some(c)) = (d.adjusted < alpha, v.errors) {
                    e.breaches.push(format!(
                        "variant {}: 5xx ratio {:.2}% against control {:.2}%, +{:.2} points ({interval} {:.2} to {:.2}), more than the allowed +{:.2} (p = {:.2e}, Holm-adjusted {:.2e} < {alpha})",
                        v.name,
                        c.variant * 100.0,
                        c.control * 100.0,
                        c.diff * 100.0,
                        c.ci_low * 100.0,
                        c.ci_high * 100.0,
                        o.max_error_increase * 100.0,
                        d.p_value,
                        d.adjusted,
                    ));
                }
            }
            if let Some(d) = &mut v.latency_decision {
                d.adjusted = adjusted.next().unwrap_or(1.0);
                if let (true, Some(c), Some(limit)) =
                    (d.adjusted < alpha, v.latency, o.max_latency_increase)
                {
                    e.breaches.push(format!(
                        "variant {}: mean latency {:.2} ms against control {:.2} ms, +{:.2} ms ({interval} {:.2} to {:.2}), more than the allowed +{limit:.2} (p = {:.2e}, Holm-adjusted {:.2e} < {alpha})",
                        v.name, c.variant, c.control, c.diff, c.ci_low, c.ci_high, d.p_value, d.adjusted,
                    ));
                }
            }
        }
    }
}
