//! The readable and the machine-readable report.

use serde_json::{json, Value};

use super::{
    Decision, ExperimentReport, Inference, Mode, Options, Outcome, Report, Srm, SrmTest, SRM_ALPHA,
};
use crate::stats::Comparison;

/// "95% CS" (a confidence sequence, sequential mode) or "95% CI".
pub(super) fn interval_name(options: &Options) -> String {
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
    design_effect: Option<f64>,
    scale: f64,
    unit: &str,
) -> String {
    match c {
        None => "-".into(),
        Some(c) => format!(
            "{:+.2}{unit} [{:+.2}, {:+.2}] {}p={:.3}{}{}{}",
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
            design_effect.map_or(String::new(), |d| format!(" design effect {d:.1}")),
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
    out.push_str(&match &report.inference {
        Inference::Replicates(r) => format!(
            "inference: per unit (cluster-robust variances from {r} replicate series per variant)\n"
        ),
        Inference::PerRequest(why) => format!(
            "inference: per request ({why}): p-values assume independent requests, which heavy users and user-level failures break\n"
        ),
    });
    for (key, why) in &report.not_in_force {
        out.push_str(&format!("{key} [not in force]  not judged: {why}\n"));
    }
    for e in &report.experiments {
        let srm = match e.srm {
            Some(Srm {
                test: SrmTest::ChiSquare { statistic, df },
                p_value,
                adjusted,
            }) => format!(
                "SRM chi-square {statistic:.2}, df {df}, p = {p_value:.4} (Holm {adjusted:.4})"
            ),
            Some(Srm {
                test: SrmTest::DirichletMultinomial,
                p_value,
                adjusted,
            }) => format!("SRM always-valid p = {p_value:.4} (Holm {adjusted:.4})"),
            Some(Srm {
                test: SrmTest::TrafficShare { df, .. },
                p_value,
                adjusted,
            }) => format!(
                "SRM traffic share{} p = {p_value:.4} (Holm {adjusted:.4}), t with {df} df",
                if matches!(o.mode, Mode::Sequential { .. }) {
                    " always-valid"
                } else {
                    ""
                }
            ),
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
                comparison_text(
                    &v.errors,
                    &v.errors_decision,
                    v.errors_better,
                    v.errors_design_effect,
                    100.0,
                    "pt"
                )
            ));
            out.push_str(&format!(
                "    {} latency vs control: {}\n",
                v.name,
                comparison_text(
                    &v.latency,
                    &v.latency_decision,
                    v.latency_better,
                    v.latency_design_effect,
                    1.0,
                    "ms"
                )
            ));
        }
        for b in &e.breaches {
            out.push_str(&format!("  breach: {b}\n"));
        }
    }
    for why in &report.no_evidence {
        out.push_str(&format!("no evidence: {why}\n"));
    }
    out.push_str(match report.outcome() {
        Outcome::Healthy => "healthy\n",
        Outcome::Breached => "guardrail breached\n",
        Outcome::NoEvidence => "no evidence\n",
    });
    out
}

fn comparison_json(
    c: &Option<Comparison>,
    d: &Option<Decision>,
    better: Option<f64>,
    design_effect: Option<f64>,
) -> Value {
    match c {
        None => Value::Null,
        Some(c) => json!({
            "control": c.control, "variant": c.variant, "diff": c.diff,
            "interval": [c.ci_low, c.ci_high], "p_value": c.p_value, "relative": c.relative,
            "guardrail_p_value": d.map(|d| d.p_value), "holm_adjusted_p_value": d.map(|d| d.adjusted),
            "prob_better": better, "design_effect": design_effect,
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
                "srm": e.srm.map(|s| srm_json(&s, e)),
                "variants": e.variants.iter().map(|v| json!({
                    "variant": v.name, "assigned": v.assigned, "expected_share": v.expected_share,
                    "observed_share": v.observed_share, "responses": v.responses, "error_ratio": v.error_ratio,
                    "errors_vs_control": comparison_json(&v.errors, &v.errors_decision, v.errors_better, v.errors_design_effect),
                    "mean_ms": v.mean_ms,
                    "latency_vs_control": comparison_json(&v.latency, &v.latency_decision, v.latency_better, v.latency_design_effect),
                })).collect::<Vec<_>>(),
                "breaches": e.breaches,
            })
        })
        .collect();
    let outcome = match report.outcome() {
        Outcome::Healthy => "healthy",
        Outcome::Breached => "breached",
        Outcome::NoEvidence => "no_evidence",
    };
    let (inference, replicates, note) = match &report.inference {
        Inference::Replicates(r) => ("per_unit", Some(*r), None),
        Inference::PerRequest(why) => ("per_request", None, Some(why.as_str())),
    };
    let (mode, mixing) = match o.mode {
        Mode::Sequential { mixing } => ("sequential", Some(mixing)),
        Mode::FixedHorizon => ("fixed_horizon", None),
    };
    json!({
        "healthy": report.healthy(), "outcome": outcome,
        "inference": inference, "replicates": replicates, "inference_note": note,
        "no_evidence": report.no_evidence,
        "not_in_force": report.not_in_force.iter().map(|(k, why)| json!({"experiment": k, "why": why})).collect::<Vec<_>>(),
        "mode": mode, "mixing": mixing, "alpha": o.alpha,
        "multiple_testing": "holm", "interval": interval_name(o),
        "max_error_increase": o.max_error_increase, "max_latency_increase_ms": o.max_latency_increase,
        "srm_alpha": SRM_ALPHA, "experiments": experiments,
    })
    .to_string()
}

fn srm_json(s: &Srm, e: &ExperimentReport) -> Value {
    let flagged = s.adjusted < SRM_ALPHA;
    match s.test {
        SrmTest::ChiSquare { statistic, df } => json!({
            "test": "chi_square", "chi_square": statistic, "df": df,
            "p_value": s.p_value, "holm_adjusted_p_value": s.adjusted, "flagged": flagged,
        }),
        SrmTest::DirichletMultinomial => json!({
            "test": "dirichlet_multinomial", "chi_square": null, "df": null,
            "p_value": s.p_value, "holm_adjusted_p_value": s.adjusted, "flagged": flagged,
        }),
        SrmTest::TrafficShare {
            variant,
            observed,
            expected,
            df,
        } => json!({
            "test": "traffic_share", "chi_square": null, "df": df,
            "variant": e.variants.get(variant).map(|v| v.name.clone()),
            "observed_share": observed, "expected_share": expected,
            "p_value": s.p_value, "holm_adjusted_p_value": s.adjusted, "flagged": flagged,
        }),
    }
}
