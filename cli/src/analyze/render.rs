//! `analyze`'s report as a table for people and as JSON for programs.

use std::fmt::Write;

use serde_json::{json, Value};

use super::report::{Effect, ExperimentResult, Point, SRM_ALPHA};
use super::Analysis;

use abmesh::config::limits::grouped;

pub(super) fn number(x: f64, percent: bool) -> String {
    if percent {
        format!("{:.2}%", 100.0 * x)
    } else {
        format!("{x:.3}")
    }
}

pub(super) fn signed(x: f64, percent: bool) -> String {
    if percent {
        format!("{:+.2}pt", 100.0 * x)
    } else {
        format!("{x:+.3}")
    }
}

pub(super) fn p(x: f64) -> String {
    if x < 0.0001 {
        "<0.0001".into()
    } else {
        format!("{x:.4}")
    }
}

/// The report as text.
pub fn render_text(a: &Analysis) -> String {
    let mut out = String::new();
    let interval = match a.options.mixing {
        Some(_) => "CS",
        None => "CI",
    };
    let level = format!("{:.0}%", 100.0 * (1.0 - a.options.alpha));
    let _ = writeln!(
        out,
        "{} lines read; {} experiments with exposed units; {}",
        grouped(a.lines),
        a.experiments.len(),
        match a.options.mixing {
            Some(m) => format!("always-valid {level} confidence sequences (mixing {m}), Holm over every comparison"),
            None => format!("fixed-horizon {level} intervals (one planned look), Holm over every comparison"),
        }
    );
    if a.tally.total() > 0 {
        let _ = writeln!(
            out,
            "bad input: {} lines or inputs not used",
            grouped(a.tally.total())
        );
        for (problem, (n, at)) in &a.tally.0 {
            let _ = writeln!(
                out,
                "  {} × {}: {}",
                grouped(*n),
                problem.describe(),
                at.join(", ")
            );
        }
    }
    for e in &a.experiments {
        let total: u64 = e.variants.iter().map(|v| v.units).sum();
        let _ = writeln!(
            out,
            "\n{} (unit {}): {} exposed units",
            e.key,
            e.unit,
            grouped(total)
        );
        match e.srm_p {
            Some(pv) if pv < SRM_ALPHA => {
                let _ = writeln!(out, "  SRM: p = {} < {SRM_ALPHA}: units are not split as configured; the effects below cannot be trusted", p(pv));
            }
            Some(pv) => {
                let _ = writeln!(
                    out,
                    "  SRM: p = {} (exact binomial, units against the configured shares): ok",
                    p(pv)
                );
            }
            None => {}
        }
        let _ = writeln!(
            out,
            "  {:<24} {:>12} {:>9} {:>9}",
            "variant", "units", "share", "expected"
        );
        for v in &e.variants {
            let share = if total > 0 {
                v.units as f64 / total as f64
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "  {:<24} {:>12} {:>8.2}% {:>8.2}%",
                v.name,
                grouped(v.units),
                100.0 * share,
                100.0 * v.expected_share
            );
        }
        for v in e.variants.iter().skip(1) {
            let control = &e.variants[0].name;
            let _ = writeln!(out, "  {} against {control}:", v.name);
            for (m, effect) in a.metrics.iter().zip(&v.effects) {
                let Some(x) = effect else {
                    let _ = writeln!(out, "    {:<30} not enough units", m.name);
                    continue;
                };
                let lift = x.lift.map_or("-".to_string(), |(l, lo, hi)| {
                    format!(
                        "{:+.1}% [{:+.1}%, {:+.1}%]",
                        100.0 * l,
                        100.0 * lo,
                        100.0 * hi
                    )
                });
                let _ = writeln!(
                    out,
                    "    {:<30} {} vs {}: {} [{}, {}] ({level} {interval}{}); lift {lift}; p {} (Holm {})",
                    m.name,
                    number(x.variant, m.percent),
                    number(x.control, m.percent),
                    signed(x.diff, m.percent),
                    signed(x.diff_low, m.percent),
                    signed(x.diff_high, m.percent),
                    x.cuped_theta.map_or(String::new(), |t| format!(", CUPED θ {t:.3}")),
                    p(x.p_value),
                    p(x.adjusted)
                );
            }
        }
    }
    out
}

fn effect_json(x: &Effect) -> Value {
    json!({
        "control": x.control, "variant": x.variant,
        "diff": x.diff, "diff_low": x.diff_low, "diff_high": x.diff_high,
        "lift": x.lift.map(|l| l.0), "lift_low": x.lift.map(|l| l.1), "lift_high": x.lift.map(|l| l.2),
        "p_value": x.p_value, "p_holm": x.adjusted, "cuped_theta": x.cuped_theta,
    })
}

/// `YYYY-MM-DD` of a day since the epoch.
pub(super) fn day(d: i64) -> String {
    let t = abmesh::time::format_rfc3339(d * 86_400_000);
    t.get(..10).unwrap_or(&t).to_string()
}

/// Units first exposed per day and variant (the timeline's cumulative counts, differenced).
pub(super) fn daily_units(e: &ExperimentResult) -> Vec<(i64, Vec<u64>)> {
    let mut before = vec![0u64; e.variants.len()];
    e.timeline
        .iter()
        .map(|p| {
            let day: Vec<u64> = p.units.iter().zip(&before).map(|(n, b)| n - b).collect();
            before.clone_from(&p.units);
            (p.day, day)
        })
        .collect()
}

fn timeline_json(a: &Analysis, e: &ExperimentResult, p: &Point) -> Value {
    let variants: Vec<Value> = e
        .variants
        .iter()
        .zip(&p.effects)
        .skip(1)
        .map(|(v, effects)| {
            let metrics: serde_json::Map<String, Value> = a
                .metrics
                .iter()
                .zip(effects)
                .map(|(m, x)| (m.name.clone(), json!(x.as_ref().map(effect_json))))
                .collect();
            json!({"name": v.name, "against_control": metrics})
        })
        .collect();
    json!({"day": day(p.day), "units": p.units, "variants": variants})
}

/// A variant's sums under the column names of `analyze --sql`.
fn sums_json(a: &Analysis, s: &super::collect::Sums) -> Value {
    let names = super::collect::value_names(&a.goals);
    let mut out = serde_json::Map::new();
    out.insert("units".into(), json!(s.units));
    for (i, n) in names.iter().enumerate() {
        out.insert(super::sql::sum_column(n), json!(s.sum[i]));
    }
    for (i, x) in names.iter().enumerate() {
        for (j, y) in names.iter().enumerate().skip(i) {
            out.insert(super::sql::cross_column(x, y), json!(s.cross[i][j]));
        }
    }
    Value::Object(out)
}

/// The report as JSON.
pub fn render_json(a: &Analysis) -> String {
    let experiments: Vec<Value> = a
        .experiments
        .iter()
        .map(|e| {
            let variants: Vec<Value> = e
                .variants
                .iter()
                .map(|v| {
                    let metrics: serde_json::Map<String, Value> = a
                        .metrics
                        .iter()
                        .zip(v.values.iter().zip(&v.effects))
                        .map(|(m, (value, effect))| {
                            (m.name.clone(), json!({"value": value, "against_control": effect.as_ref().map(effect_json)}))
                        })
                        .collect();
                    json!({"name": v.name, "units": v.units, "expected_share": v.expected_share, "metrics": metrics, "sums": sums_json(a, &v.sums)})
                })
                .collect();
            json!({
                "key": e.key, "unit": e.unit,
                "units": e.variants.iter().map(|v| v.units).sum::<u64>(),
                "srm_p": e.srm_p, "srm": e.srm_p.is_some_and(|p| p < SRM_ALPHA),
                "variants": variants,
                "daily_exposed_units": daily_units(e).iter().map(|(d, n)| json!({"day": day(*d), "units": n})).collect::<Vec<_>>(),
                "timeline": e.timeline.iter().map(|p| timeline_json(a, e, p)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let bad: serde_json::Map<String, Value> = a
        .tally
        .0
        .iter()
        .map(|(p, (n, at))| {
            (
                p.key().to_string(),
                json!({"count": n, "first": at, "what": p.describe()}),
            )
        })
        .collect();
    json!({
        "lines": a.lines,
        "passes": a.passes,
        "bad_input": bad,
        "mode": if a.options.mixing.is_some() { "sequential" } else { "fixed_horizon" },
        "mixing": a.options.mixing,
        "alpha": a.options.alpha,
        "goals": a.goals.iter().map(|g| g.name.clone()).collect::<Vec<_>>(),
        "experiments": experiments,
    })
    .to_string()
}
