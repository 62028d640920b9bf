//! `guard --serve`: guard's verdict, evaluated on each request, in the forms rollout
//! controllers and monitoring read. Pure functions from a report (or the reason there is none)
//! to an HTTP status and body; the binary only listens and fetches.
//!
//! - **Flagger** webhooks (`/flagger`): 2xx advances the canary, any other status halts it;
//!   the body says why. No evidence halts too: healthy needs evidence.
//! - **Argo Rollouts** `web` metrics (`/argo`): always 200 with a JSON document whose `verdict`
//!   is `healthy`, `breached` or `no_evidence`, so that `successCondition: result.verdict ==
//!   "healthy"` with `failureCondition: result.verdict == "breached"` leaves no evidence
//!   inconclusive (the rollout pauses) rather than failed.
//! - **Prometheus** (`/metrics`): the verdicts as gauges for dashboards and alerts.

use serde_json::{json, Value};

use super::{Outcome, Report, SRM_ALPHA};

/// One experiment's verdict, or the run's when `experiment` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reasons: Vec<String>,
}

/// Why the source gives no evidence about `key`: reasons about the whole source, and those
/// about this experiment (judge names it first: `experiment <key> …`).
fn no_evidence_for<'r>(report: &'r Report, key: &str) -> Vec<&'r str> {
    let own = format!("experiment {key} ");
    report
        .no_evidence
        .iter()
        .filter(|why| !why.starts_with("experiment ") || why.starts_with(&own))
        .map(String::as_str)
        .collect()
}

/// The verdict on `experiment` (all when `None`); `Err` when it is not being judged.
pub fn verdict(report: &Report, experiment: Option<&str>) -> Result<Verdict, String> {
    let Some(key) = experiment else {
        let outcome = report.outcome();
        let reasons = match outcome {
            Outcome::Breached => report
                .experiments
                .iter()
                .flat_map(|e| e.breaches.iter().map(move |b| format!("{}: {b}", e.key)))
                .collect(),
            Outcome::NoEvidence => report.no_evidence.clone(),
            Outcome::Healthy => Vec::new(),
        };
        return Ok(Verdict { outcome, reasons });
    };
    let Some(e) = report.experiments.iter().find(|e| e.key == key) else {
        if let Some((_, why)) = report.not_in_force.iter().find(|(k, _)| k == key) {
            return Err(format!("experiment {key} is not judged: {why}"));
        }
        return Err(format!(
            "experiment {key} is not a running experiment of the configuration"
        ));
    };
    if !e.breaches.is_empty() {
        return Ok(Verdict {
            outcome: Outcome::Breached,
            reasons: e.breaches.clone(),
        });
    }
    let missing = no_evidence_for(report, key);
    if !missing.is_empty() {
        return Ok(Verdict {
            outcome: Outcome::NoEvidence,
            reasons: missing.into_iter().map(String::from).collect(),
        });
    }
    Ok(Verdict {
        outcome: Outcome::Healthy,
        reasons: Vec::new(),
    })
}

fn name(o: Outcome) -> &'static str {
    match o {
        Outcome::Healthy => "healthy",
        Outcome::Breached => "breached",
        Outcome::NoEvidence => "no_evidence",
    }
}

/// Flagger's webhook answer for `experiment`: 200 to advance; 412 breached, 503 no evidence
/// (or no report: the source could not be read), 404 an experiment guard does not judge.
pub fn flagger(report: Result<&Report, &str>, experiment: Option<&str>) -> (u16, String) {
    let report = match report {
        Ok(r) => r,
        Err(why) => {
            return (
                503,
                body(
                    "no_evidence",
                    experiment,
                    &[format!("the source could not be read: {why}")],
                ),
            )
        }
    };
    match verdict(report, experiment) {
        Ok(v) => {
            let status = match v.outcome {
                Outcome::Healthy => 200,
                Outcome::Breached => 412,
                Outcome::NoEvidence => 503,
            };
            (status, body(name(v.outcome), experiment, &v.reasons))
        }
        Err(why) => (404, body("unknown", experiment, &[why])),
    }
}

fn body(verdict: &str, experiment: Option<&str>, reasons: &[String]) -> String {
    json!({"verdict": verdict, "experiment": experiment, "reasons": reasons}).to_string() + "\n"
}

/// The document an Argo Rollouts `web` metric judges: 200 whenever guard could answer.
pub fn argo(report: Result<&Report, &str>, experiment: Option<&str>) -> (u16, String) {
    let report = match report {
        Ok(r) => r,
        Err(why) => {
            let doc = json!({"verdict": "no_evidence", "healthy": false, "experiment": experiment,
                "reasons": [format!("the source could not be read: {why}")], "experiments": {}});
            return (200, doc.to_string() + "\n");
        }
    };
    let overall = match verdict(report, experiment) {
        Ok(v) => v,
        Err(why) => return (404, body("unknown", experiment, &[why])),
    };
    let experiments: serde_json::Map<String, Value> = report
        .experiments
        .iter()
        .filter_map(|e| {
            let v = verdict(report, Some(&e.key)).ok()?;
            let srm = e.srm.map(|s| s.adjusted < SRM_ALPHA);
            Some((e.key.clone(), json!({"verdict": name(v.outcome), "healthy": v.outcome == Outcome::Healthy, "srm": srm, "reasons": v.reasons})))
        })
        .collect();
    let doc = json!({
        "verdict": name(overall.outcome), "healthy": overall.outcome == Outcome::Healthy,
        "experiment": experiment, "reasons": overall.reasons, "experiments": experiments,
    });
    (200, doc.to_string() + "\n")
}

/// Counters kept across requests by the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub evaluations: u64,
    pub source_errors: u64,
}

/// The verdicts in Prometheus' text format, with what dashboards need beside them: every
/// experiment of `config` with its status, and per variant the configured and observed shares
/// and the increases guard measured against control.
pub fn metrics(
    config: &abmesh::Config,
    report: Result<&Report, &str>,
    counters: Counters,
    now_s: f64,
) -> String {
    let mut o = String::new();
    let mut gauge = |name: &str, help: &str, rows: &[(String, f64)]| {
        o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, v) in rows {
            o.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let quote = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let label = |k: &str| format!("{{experiment=\"{}\"}}", quote(k));
    let pair =
        |k: &str, v: &str| format!("{{experiment=\"{}\",variant=\"{}\"}}", quote(k), quote(v));
    let status: Vec<(String, f64)> = config
        .experiments
        .iter()
        .map(|e| {
            let labels = format!(
                "{{experiment=\"{}\",status=\"{}\"}}",
                quote(&e.key),
                e.status.as_str()
            );
            (labels, 1.0)
        })
        .collect();
    gauge(
        "abmesh_guard_experiment",
        "1 for every experiment of the configuration guard reads, by its status (running, paused, rolled_out).",
        &status,
    );
    match report {
        Ok(r) => {
            let verdicts: Vec<(String, Verdict)> = r
                .experiments
                .iter()
                .filter_map(|e| Some((e.key.clone(), verdict(r, Some(&e.key)).ok()?)))
                .collect();
            let rows = |f: &dyn Fn(&str, &Verdict) -> f64| -> Vec<(String, f64)> {
                verdicts.iter().map(|(k, v)| (label(k), f(k, v))).collect()
            };
            gauge(
                "abmesh_guard_healthy",
                "1 when guard judged the experiment healthy; 0 when breached or without evidence.",
                &rows(&|_, v| f64::from(u8::from(v.outcome == Outcome::Healthy))),
            );
            gauge(
                "abmesh_guard_no_evidence",
                "1 when the source holds no evidence to judge the experiment.",
                &rows(&|_, v| f64::from(u8::from(v.outcome == Outcome::NoEvidence))),
            );
            gauge(
                "abmesh_guard_breaches",
                "Guardrails the experiment breaches (error ratio, latency, sample ratio).",
                &rows(&|k, _| {
                    r.experiments
                        .iter()
                        .find(|e| e.key == k)
                        .map_or(0.0, |e| e.breaches.len() as f64)
                }),
            );
            gauge("abmesh_guard_srm", "1 when the experiment's split is a sample ratio mismatch (Holm-adjusted p below 0.001).", &rows(&|k, _| {
                let e = r.experiments.iter().find(|e| e.key == k);
                f64::from(u8::from(e.and_then(|e| e.srm).is_some_and(|s| s.adjusted < SRM_ALPHA)))
            }));
            let per_variant =
                |f: &dyn Fn(&super::VariantReport) -> Option<f64>| -> Vec<(String, f64)> {
                    r.experiments
                        .iter()
                        .flat_map(|e| {
                            e.variants
                                .iter()
                                .filter_map(|v| Some((pair(&e.key, &v.name), f(v)?)))
                                .collect::<Vec<_>>()
                        })
                        .collect()
                };
            gauge(
                "abmesh_guard_configured_share",
                "The variant's share of the experiment's units in the configuration.",
                &per_variant(&|v| Some(v.expected_share)),
            );
            gauge(
                "abmesh_guard_observed_share",
                "The variant's share of the experiment's hashed assignments in the source.",
                &per_variant(&|v| v.observed_share.is_finite().then_some(v.observed_share)),
            );
            gauge("abmesh_guard_error_ratio_increase", "The variant's 5xx ratio minus control's, as guard measured it (absent for control).", &per_variant(&|v| v.errors.map(|c| c.diff)));
            gauge("abmesh_guard_latency_increase_milliseconds", "The variant's mean duration minus control's, as guard measured it (absent for control).", &per_variant(&|v| v.latency.map(|c| c.diff)));
            gauge(
                "abmesh_guard_up",
                "1 when the last evaluation could read its source.",
                &[(String::new(), 1.0)],
            );
        }
        Err(_) => gauge(
            "abmesh_guard_up",
            "1 when the last evaluation could read its source.",
            &[(String::new(), 0.0)],
        ),
    }
    gauge(
        "abmesh_guard_last_evaluation_timestamp_seconds",
        "When guard last evaluated (Unix time).",
        &[(String::new(), now_s)],
    );
    o.push_str(&format!(
        "# HELP abmesh_guard_evaluations_total Evaluations since the server started.\n# TYPE abmesh_guard_evaluations_total counter\nabmesh_guard_evaluations_total {}\n# HELP abmesh_guard_source_errors_total Evaluations whose source could not be read.\n# TYPE abmesh_guard_source_errors_total counter\nabmesh_guard_source_errors_total {}\n",
        counters.evaluations, counters.source_errors
    ));
    o
}
