//! `abmesh guard`: reads Envoy's `/stats/prometheus` text and judges every running
//! experiment: a sample-ratio-mismatch test of the split against the configured weights, and
//! per variant the 5xx ratio and mean latency against control.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::{Config, Status};
use crate::metrics::{ASSIGNMENTS, CLASSES, DURATION, FORCED, RESPONSES};
use crate::stats::{chi_square, two_proportion, welch, Comparison, Moments};

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

#[derive(Debug, Clone)]
pub struct VariantReport {
    pub name: String,
    pub assigned: f64,
    pub expected_share: f64,
    pub observed_share: f64,
    pub responses: f64,
    pub error_ratio: Option<f64>,
    pub errors: Option<Comparison>,
    pub mean_ms: Option<f64>,
    pub latency: Option<Comparison>,
}

#[derive(Debug, Clone)]
pub struct ExperimentReport {
    pub key: String,
    /// (chi-square, degrees of freedom, p-value), when there are assignments to test.
    pub srm: Option<(f64, f64, f64)>,
    pub variants: Vec<VariantReport>,
    pub breaches: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub experiments: Vec<ExperimentReport>,
    pub max_error_increase: f64,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.experiments.iter().all(|e| e.breaches.is_empty())
    }
}

/// Judges every running experiment of `config` on the samples. `max_error_increase` is a
/// fraction (0.005 for 0.5 percentage points).
pub fn judge(config: &Config, samples: &[Sample], max_error_increase: f64) -> Report {
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

    let experiments = config
        .experiments
        .iter()
        .filter(|e| e.status == Status::Running)
        .map(|e| {
            let get = |name: &str| data.get(&(e.key.clone(), name.to_string())).cloned().unwrap_or_default();
            // Forced assignments bypass the hash: they are not part of the split.
            let hashed: Vec<f64> = e.variants.iter().map(|v| { let d = get(&v.name); (d.assigned - d.forced).max(0.0) }).collect();
            let shares: Vec<f64> = e.variants.iter().map(|v| f64::from(v.range.1 - v.range.0)).collect();
            let share_total: f64 = shares.iter().sum();
            let hashed_total: f64 = hashed.iter().sum();
            let srm = chi_square(&hashed, &shares);
            let mut breaches = Vec::new();
            if let Some((stat, df, p)) = srm {
                if p < SRM_ALPHA {
                    breaches.push(format!(
                        "sample ratio mismatch: chi-square {stat:.1} with {df} degrees of freedom, p = {p:.2e} < {SRM_ALPHA}"
                    ));
                }
            }
            let control = get(&e.variants[0].name);
            let variants = e
                .variants
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let d = get(&v.name);
                    let is_control = i == 0;
                    let errors = (!is_control)
                        .then(|| two_proportion(d.errors_5xx, d.responses, control.errors_5xx, control.responses))
                        .flatten();
                    let latency = match (is_control, d.duration, control.duration) {
                        (false, Some(a), Some(b)) => welch(a, b),
                        _ => None,
                    };
                    if let Some(c) = errors {
                        if c.p_value < 0.05 && c.ci_low > max_error_increase {
                            breaches.push(format!(
                                "variant {}: 5xx ratio {:.2}% against control {:.2}%, +{:.2} points (95% CI {:.2} to {:.2}), more than the allowed +{:.2}",
                                v.name,
                                c.variant * 100.0,
                                c.control * 100.0,
                                c.diff * 100.0,
                                c.ci_low * 100.0,
                                c.ci_high * 100.0,
                                max_error_increase * 100.0
                            ));
                        }
                    }
                    VariantReport {
                        name: v.name.clone(),
                        assigned: d.assigned,
                        expected_share: if share_total > 0.0 { shares[i] / share_total } else { 0.0 },
                        observed_share: if hashed_total > 0.0 { hashed[i] / hashed_total } else { 0.0 },
                        responses: d.responses,
                        error_ratio: (d.responses > 0.0).then(|| d.errors_5xx / d.responses),
                        errors,
                        mean_ms: d.duration.map(|m| m.mean()),
                        latency,
                    }
                })
                .collect();
            ExperimentReport { key: e.key.clone(), srm, variants, breaches }
        })
        .collect();
    Report {
        experiments,
        max_error_increase,
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn comparison_text(c: &Option<Comparison>, scale: f64, unit: &str) -> String {
    match c {
        None => "-".into(),
        Some(c) => format!(
            "{:+.2}{unit} [{:+.2}, {:+.2}] {} p={:.3}",
            c.diff * scale,
            c.ci_low * scale,
            c.ci_high * scale,
            c.relative
                .map_or("".into(), |r| format!("({:+.1}%)", r * 100.0)),
            c.p_value
        ),
    }
}

/// The readable table.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for e in &report.experiments {
        let srm = match e.srm {
            Some((stat, df, p)) => format!("SRM chi-square {stat:.2}, df {df}, p = {p:.4}"),
            None => "SRM: no assignments yet".into(),
        };
        let state = if e.breaches.is_empty() {
            "ok"
        } else {
            "BREACH"
        };
        out.push_str(&format!("{} [{state}]  {srm}\n", e.key));
        out.push_str(&format!(
            "  {:<14} {:>9} {:>8} {:>8} {:>9} {:>7}  {:<40} {:>9}  {}\n",
            "variant",
            "assigned",
            "expected",
            "observed",
            "responses",
            "5xx",
            "5xx vs control [95% CI]",
            "mean ms",
            "latency vs control [95% CI]"
        ));
        for v in &e.variants {
            out.push_str(&format!(
                "  {:<14} {:>9} {:>8} {:>8} {:>9} {:>7}  {:<40} {:>9}  {}\n",
                v.name,
                v.assigned,
                pct(v.expected_share),
                pct(v.observed_share),
                v.responses,
                v.error_ratio.map_or("-".into(), pct),
                comparison_text(&v.errors, 100.0, "pt"),
                v.mean_ms.map_or("-".into(), |m| format!("{m:.2}")),
                comparison_text(&v.latency, 1.0, "ms"),
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

fn comparison_json(c: &Option<Comparison>) -> Value {
    match c {
        None => Value::Null,
        Some(c) => json!({
            "control": c.control, "variant": c.variant, "diff": c.diff,
            "ci95": [c.ci_low, c.ci_high], "p_value": c.p_value, "relative": c.relative,
        }),
    }
}

/// The machine-readable report.
pub fn render_json(report: &Report) -> String {
    let experiments: Vec<Value> = report
        .experiments
        .iter()
        .map(|e| {
            json!({
                "experiment": e.key,
                "srm": e.srm.map(|(stat, df, p)| json!({"chi_square": stat, "df": df, "p_value": p, "flagged": p < SRM_ALPHA})),
                "variants": e.variants.iter().map(|v| json!({
                    "variant": v.name, "assigned": v.assigned, "expected_share": v.expected_share,
                    "observed_share": v.observed_share, "responses": v.responses, "error_ratio": v.error_ratio,
                    "errors_vs_control": comparison_json(&v.errors), "mean_ms": v.mean_ms,
                    "latency_vs_control": comparison_json(&v.latency),
                })).collect::<Vec<_>>(),
                "breaches": e.breaches,
            })
        })
        .collect();
    json!({"healthy": report.healthy(), "max_error_increase": report.max_error_increase, "experiments": experiments})
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
