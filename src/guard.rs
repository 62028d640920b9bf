//! `abmesh guard`: reads Envoy's `/stats/prometheus` text and judges every running
//! experiment: a sample-ratio-mismatch test of the split against the configured weights, and
//! per variant the 5xx ratio and mean latency against control — sequentially by default
//! (always valid however often guard runs), with Holm's adjustment over every decision of a
//! run, and a Bayesian summary beside the tests.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::bayes::{prob_mean_lower, prob_rate_lower};
use crate::config::{Config, Status};
use crate::metrics::{ASSIGNMENTS, CLASSES, DURATION, FORCED, RESPONSES};
use crate::sequential::{self, holm, srm_p_value, DEFAULT_MIXING};
use crate::stats::{chi_square, normal_sf, two_proportion, welch, Comparison, Moments};

/// SRM is flagged below this p-value.
pub const SRM_ALPHA: f64 = 0.001;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (comments and malformed lines are skipped).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some(Sample {
                name: n.into(),
                labels: BTreeMap::new(),
                value: v.trim().parse().ok()?,
            });
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.char_indices().peekable();
    let end;
    loop {
        while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
            chars.next();
        }
        if chars.peek().is_some_and(|(_, c)| *c == '}') {
            end = chars.next().map(|(i, _)| i);
            break;
        }
        let mut key = String::new();
        for (_, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        for (_, c) in chars.by_ref() {
            match (escaped, c) {
                (true, 'n') => (value.push('\n'), escaped = false).1,
                (true, c) => (value.push(c), escaped = false).1,
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
        chars.peek()?;
    }
    let value = rest
        .get(end? + 1..)?
        .trim()
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[derive(Debug, Clone, Default)]
struct VariantData {
    assigned: f64,
    forced: f64,
    responses: f64,
    errors_5xx: f64,
    duration: Option<Moments>,
}

/// How comparisons are tested.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Always-valid p-values and confidence sequences (`crate::sequential`): any number of
    /// looks keeps the false-alarm rate at or below alpha. The default.
    Sequential { mixing: f64 },
    /// Classic tests (two-proportion z, Welch t, chi-square) for one pre-planned look.
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
        }
    }
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
    /// P(this variant's 5xx ratio is below control's), Beta-Binomial posteriors.
    pub errors_better: Option<f64>,
    pub mean_ms: Option<f64>,
    pub latency: Option<Comparison>,
    pub latency_decision: Option<Decision>,
    /// P(this variant's mean latency is below control's), normal posteriors.
    pub latency_better: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Srm {
    /// Pearson's statistic and degrees of freedom (fixed-horizon mode).
    pub chi_square: Option<(f64, f64)>,
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

#[derive(Debug, Clone)]
pub struct Report {
    pub experiments: Vec<ExperimentReport>,
    pub options: Options,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.experiments.iter().all(|e| e.breaches.is_empty())
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

/// Judges every running experiment of `config` on the samples.
pub fn judge(config: &Config, samples: &[Sample], options: &Options) -> Report {
    let mut data: BTreeMap<(String, String), VariantData> = BTreeMap::new();
    let mut moments: BTreeMap<(String, String), [f64; 3]> = BTreeMap::new();
    let sum_name = format!("{DURATION}_sum");
    let count_name = format!("{DURATION}_count");
    let squares_name = format!("{DURATION}_sum_squares");
    for s in samples {
        let (Some(e), Some(v)) = (s.labels.get("experiment"), s.labels.get("variant")) else {
            continue;
        };
        let key = (e.clone(), v.clone());
        let d = data.entry(key.clone()).or_default();
        match s.name.as_str() {
            n if n == ASSIGNMENTS => d.assigned += s.value,
            n if n == FORCED => d.forced += s.value,
            n if n == RESPONSES => {
                if s.labels
                    .get("class")
                    .is_some_and(|c| CLASSES.contains(&c.as_str()))
                {
                    d.responses += s.value;
                }
                if s.labels.get("class").is_some_and(|c| c == "5xx") {
                    d.errors_5xx += s.value;
                }
            }
            n if n == sum_name => moments.entry(key).or_default()[0] += s.value,
            n if n == count_name => moments.entry(key).or_default()[1] += s.value,
            n if n == squares_name => moments.entry(key).or_default()[2] += s.value,
            _ => {}
        }
    }
    for (key, [sum, n, sum_squares]) in moments {
        if n > 0.0 {
            data.entry(key).or_default().duration = Some(Moments {
                n,
                sum,
                sum_squares,
            });
        }
    }

    let alpha = options.alpha;
    let mut experiments: Vec<ExperimentReport> = Vec::new();
    for e in config
        .experiments
        .iter()
        .filter(|e| e.status == Status::Running)
    {
        let get = |name: &str| {
            data.get(&(e.key.clone(), name.to_string()))
                .cloned()
                .unwrap_or_default()
        };
        // Forced assignments bypass the hash: they are not part of the split.
        let hashed: Vec<f64> = e
            .variants
            .iter()
            .map(|v| {
                let d = get(&v.name);
                (d.assigned - d.forced).max(0.0)
            })
            .collect();
        let shares: Vec<f64> = e
            .variants
            .iter()
            .map(|v| f64::from(v.range.1 - v.range.0))
            .collect();
        let share_total: f64 = shares.iter().sum();
        let hashed_total: f64 = hashed.iter().sum();
        let srm = match options.mode {
            Mode::Sequential { .. } => srm_p_value(&hashed, &shares).map(|p| Srm {
                chi_square: None,
                p_value: p,
                adjusted: p,
            }),
            Mode::FixedHorizon => chi_square(&hashed, &shares).map(|(stat, df, p)| Srm {
                chi_square: Some((stat, df)),
                p_value: p,
                adjusted: p,
            }),
        };
        let control = get(&e.variants[0].name);
        let variants =
            e.variants
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let d = get(&v.name);
                    let compared = i > 0;
                    let (errors, errors_p) = match (compared, options.mode) {
                        (false, _) => (None, None),
                        (true, Mode::Sequential { mixing }) => {
                            let s = sequential::proportions(
                                d.errors_5xx,
                                d.responses,
                                control.errors_5xx,
                                control.responses,
                                alpha,
                                mixing,
                            );
                            (
                                s.map(|s| s.comparison),
                                s.map(|s| s.p_above(options.max_error_increase)),
                            )
                        }
                        (true, Mode::FixedHorizon) => {
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
                                fixed_p_above(c.diff, se, options.max_error_increase)
                            });
                            (c, p)
                        }
                    };
                    let (latency, latency_p) = match (compared, d.duration, control.duration) {
                        (true, Some(a), Some(b)) => match options.mode {
                            Mode::Sequential { mixing } => {
                                let s = sequential::means(a, b, alpha, mixing);
                                (
                                    s.map(|s| s.comparison),
                                    s.and_then(|s| Some(s.p_above(options.max_latency_increase?))),
                                )
                            }
                            Mode::FixedHorizon => {
                                let c = welch(a, b);
                                let se = (a.variance() / a.n + b.variance() / b.n).sqrt();
                                let p = c.and_then(|c| {
                                    Some(fixed_p_above(c.diff, se, options.max_latency_increase?))
                                });
                                (c, p)
                            }
                        },
                        _ => (None, None),
                    };
                    VariantReport {
                        name: v.name.clone(),
                        assigned: d.assigned,
                        expected_share: if share_total > 0.0 {
                            shares[i] / share_total
                        } else {
                            0.0
                        },
                        observed_share: if hashed_total > 0.0 {
                            hashed[i] / hashed_total
                        } else {
                            0.0
                        },
                        responses: d.responses,
                        error_ratio: (d.responses > 0.0).then(|| d.errors_5xx / d.responses),
                        errors,
                        errors_decision: errors_p.map(|p| Decision {
                            p_value: p,
                            adjusted: p,
                        }),
                        errors_better: (compared && d.responses > 0.0 && control.responses > 0.0)
                            .then(|| {
                                prob_rate_lower(
                                    d.errors_5xx,
                                    d.responses,
                                    control.errors_5xx,
                                    control.responses,
                                )
                            }),
                        mean_ms: d.duration.map(|m| m.mean()),
                        latency,
                        latency_decision: latency_p.map(|p| Decision {
                            p_value: p,
                            adjusted: p,
                        }),
                        latency_better: match (compared, d.duration, control.duration) {
                            (true, Some(a), Some(b)) => prob_mean_lower(a, b),
                            _ => None,
                        },
                    }
                })
                .collect();
        experiments.push(ExperimentReport {
            key: e.key.clone(),
            srm,
            variants,
            breaches: Vec::new(),
        });
    }

    // Multiple testing: Holm over every guardrail decision of the run, and over every SRM test.
    let srm_p: Vec<f64> = experiments
        .iter()
        .filter_map(|e| e.srm.map(|s| s.p_value))
        .collect();
    let mut srm_adjusted = holm(&srm_p).into_iter();
    let mut decisions: Vec<f64> = Vec::new();
    for e in &experiments {
        for v in &e.variants {
            decisions.extend(v.errors_decision.map(|d| d.p_value));
            decisions.extend(v.latency_decision.map(|d| d.p_value));
        }
    }
    let mut adjusted = holm(&decisions).into_iter();
    let interval = interval_name(options);
    for e in &mut experiments {
        if let Some(srm) = &mut e.srm {
            srm.adjusted = srm_adjusted.next().unwrap_or(1.0);
            if srm.adjusted < SRM_ALPHA {
                let test = match srm.chi_square {
                    Some((stat, df)) => {
                        format!("chi-square {stat:.1} with {df} degrees of freedom, ")
                    }
                    None => "always-valid ".to_string(),
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
                        options.max_error_increase * 100.0,
                        d.p_value,
                        d.adjusted,
                    ));
                }
            }
            if let Some(d) = &mut v.latency_decision {
                d.adjusted = adjusted.next().unwrap_or(1.0);
                if let (true, Some(c), Some(limit)) =
                    (d.adjusted < alpha, v.latency, options.max_latency_increase)
                {
                    e.breaches.push(format!(
                        "variant {}: mean latency {:.2} ms against control {:.2} ms, +{:.2} ms ({interval} {:.2} to {:.2}), more than the allowed +{limit:.2} (p = {:.2e}, Holm-adjusted {:.2e} < {alpha})",
                        v.name, c.variant, c.control, c.diff, c.ci_low, c.ci_high, d.p_value, d.adjusted,
                    ));
                }
            }
        }
    }
    Report {
        experiments,
        options: *options,
    }
}

/// "95% CS" (a confidence sequence, sequential mode) or "95% CI".
fn interval_name(options: &Options) -> String {
    let level = level(options);
    match options.mode {
        Mode::Sequential { .. } => format!("{level}% CS"),
        Mode::FixedHorizon => format!("{level}% CI"),
    }
}

/// The confidence level in percent: 95 for alpha 0.05.
fn level(options: &Options) -> f64 {
    ((1.0 - options.alpha) * 100.0 * 1e6).round() / 1e6
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn comparison_text(
    c: &Option<Comparison>,
    d: &Option<Decision>,
    better: Option<f64>,
    scale: f64,
    unit: &str,
) -> String {
    match c {
        None => "-".into(),
        Some(c) => format!(
            "{:+.2}{unit} [{:+.2}, {:+.2}] {}p={:.3}{}{}",
            c.diff * scale,
            c.ci_low * scale,
            c.ci_high * scale,
            c.relative
                .map_or("".into(), |r| format!("({:+.1}%) ", r * 100.0)),
            c.p_value,
            d.map_or(String::new(), |d| format!(
                " guardrail p={:.3} (Holm {:.3})",
                d.p_value, d.adjusted
            )),
            better.map_or(String::new(), |b| format!(" P(better)={:.1}%", b * 100.0)),
        ),
    }
}

/// The readable report.
pub fn render_text(report: &Report) -> String {
    let o = &report.options;
    let mut out = String::new();
    out.push_str(&match o.mode {
        Mode::Sequential { mixing } => format!(
            "mode: sequential (always-valid p-values, {}% confidence sequences \"CS\"; mixing {mixing}), Holm-adjusted at alpha {}\n",
            level(o), o.alpha
        ),
        Mode::FixedHorizon => format!(
            "mode: fixed horizon (one planned look; {}% confidence intervals \"CI\"), Holm-adjusted at alpha {}\n",
            level(o), o.alpha
        ),
    });
    for e in &report.experiments {
        let srm = match e.srm {
            Some(Srm {
                chi_square: Some((stat, df)),
                p_value,
                adjusted,
            }) => {
                format!("SRM chi-square {stat:.2}, df {df}, p = {p_value:.4} (Holm {adjusted:.4})")
            }
            Some(Srm {
                chi_square: None,
                p_value,
                adjusted,
            }) => {
                format!("SRM always-valid p = {p_value:.4} (Holm {adjusted:.4})")
            }
            None => "SRM: no assignments yet".into(),
        };
        let state = if e.breaches.is_empty() {
            "ok"
        } else {
            "BREACH"
        };
        out.push_str(&format!("{} [{state}]  {srm}\n", e.key));
        out.push_str(&format!(
            "  {:<14} {:>9} {:>8} {:>8} {:>9} {:>7} {:>9}\n",
            "variant", "assigned", "expected", "observed", "responses", "5xx", "mean ms"
        ));
        for v in &e.variants {
            out.push_str(&format!(
                "  {:<14} {:>9} {:>8} {:>8} {:>9} {:>7} {:>9}\n",
                v.name,
                v.assigned,
                pct(v.expected_share),
                pct(v.observed_share),
                v.responses,
                v.error_ratio.map_or("-".into(), pct),
                v.mean_ms.map_or("-".into(), |m| format!("{m:.2}")),
            ));
        }
        for v in e.variants.iter().skip(1) {
            out.push_str(&format!(
                "    {} 5xx vs control: {}\n",
                v.name,
                comparison_text(&v.errors, &v.errors_decision, v.errors_better, 100.0, "pt")
            ));
            out.push_str(&format!(
                "    {} latency vs control: {}\n",
                v.name,
                comparison_text(&v.latency, &v.latency_decision, v.latency_better, 1.0, "ms")
            ));
        }
        for b in &e.breaches {
            out.push_str(&format!("  breach: {b}\n"));
        }
    }
    out.push_str(if report.healthy() {
        "healthy\n"
    } else {
        "guardrail breached\n"
    });
    out
}

fn comparison_json(c: &Option<Comparison>, d: &Option<Decision>, better: Option<f64>) -> Value {
    match c {
        None => Value::Null,
        Some(c) => json!({
            "control": c.control, "variant": c.variant, "diff": c.diff,
            "interval": [c.ci_low, c.ci_high], "p_value": c.p_value, "relative": c.relative,
            "guardrail_p_value": d.map(|d| d.p_value), "holm_adjusted_p_value": d.map(|d| d.adjusted),
            "prob_better": better,
        }),
    }
}

/// The machine-readable report.
pub fn render_json(report: &Report) -> String {
    let o = &report.options;
    let experiments: Vec<Value> = report
        .experiments
        .iter()
        .map(|e| {
            json!({
                "experiment": e.key,
                "srm": e.srm.map(|s| json!({
                    "chi_square": s.chi_square.map(|c| c.0), "df": s.chi_square.map(|c| c.1),
                    "p_value": s.p_value, "holm_adjusted_p_value": s.adjusted, "flagged": s.adjusted < SRM_ALPHA,
                })),
                "variants": e.variants.iter().map(|v| json!({
                    "variant": v.name, "assigned": v.assigned, "expected_share": v.expected_share,
                    "observed_share": v.observed_share, "responses": v.responses, "error_ratio": v.error_ratio,
                    "errors_vs_control": comparison_json(&v.errors, &v.errors_decision, v.errors_better),
                    "mean_ms": v.mean_ms,
                    "latency_vs_control": comparison_json(&v.latency, &v.latency_decision, v.latency_better),
                })).collect::<Vec<_>>(),
                "breaches": e.breaches,
            })
        })
        .collect();
    let (mode, mixing) = match o.mode {
        Mode::Sequential { mixing } => ("sequential", Some(mixing)),
        Mode::FixedHorizon => ("fixed_horizon", None),
    };
    json!({
        "healthy": report.healthy(), "mode": mode, "mixing": mixing, "alpha": o.alpha,
        "multiple_testing": "holm", "interval": interval_name(o),
        "max_error_increase": o.max_error_increase, "max_latency_increase_ms": o.max_latency_increase,
        "srm_alpha": SRM_ALPHA, "experiments": experiments,
    })
    .to_string()
}

/// What `guard --write-config` does to an experiment that breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    /// `"status": "paused"`: nobody is assigned.
    Pause,
    /// `"status": "rolled_out"` with the control (first) variant as the winner: everybody
    /// gets control, and no exposure is recorded.
    Control,
}

/// One change `guard --write-config` made, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub experiment: String,
    /// `experiments[i]`.
    pub path: String,
    /// `status running -> paused`, or `status running -> rolled_out (winner control)`.
    pub what: String,
    pub why: Vec<String>,
}

/// The configuration document with every experiment that breached a guardrail (or shows a
/// sample ratio mismatch) paused or rolled back to control; every other field, healthy
/// experiments and their ramps included, is left as it was.
pub fn rollback(document: &Value, report: &Report, how: Rollback) -> (Value, Vec<Change>) {
    let mut out = document.clone();
    let mut changes = Vec::new();
    let Some(list) = out.get_mut("experiments").and_then(Value::as_array_mut) else {
        return (out, changes);
    };
    for e in report.experiments.iter().filter(|e| !e.breaches.is_empty()) {
        let Some((i, exp)) = list
            .iter_mut()
            .enumerate()
            .find(|(_, x)| x.get("key").and_then(Value::as_str) == Some(e.key.as_str()))
        else {
            continue;
        };
        let Some(obj) = exp.as_object_mut() else {
            continue;
        };
        let from = obj
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("running")
            .to_string();
        let what = match how {
            Rollback::Pause => {
                obj.insert("status".into(), json!("paused"));
                format!("status {from} -> paused")
            }
            Rollback::Control => {
                let Some(control) = e.variants.first().map(|v| v.name.clone()) else {
                    continue;
                };
                obj.insert("status".into(), json!("rolled_out"));
                obj.insert("winner".into(), json!(control));
                format!("status {from} -> rolled_out (winner {control})")
            }
        };
        changes.push(Change {
            experiment: e.key.clone(),
            path: format!("experiments[{i}]"),
            what,
            why: e.breaches.clone(),
        });
    }
    (out, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_prometheus_text() {
        let text = "# TYPE abmesh_assignments_total counter\n\
            abmesh_assignments_total{experiment=\"a\",variant=\"control\"} 12\n\
            abmesh_request_duration_milliseconds_bucket{experiment=\"a\",variant=\"x\",le=\"+Inf\"} 3\n\
            weird{k=\"v\\\"q\"} 1.5\n\
            plain_metric 7\n\
            broken{k=\"v\" 3\n";
        let s = parse_prometheus(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "abmesh_assignments_total");
        assert_eq!(s[0].labels["variant"], "control");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].labels["le"], "+Inf");
        assert_eq!(s[2].labels["k"], "v\"q");
        assert_eq!(s[3].value, 7.0);
    }
}
