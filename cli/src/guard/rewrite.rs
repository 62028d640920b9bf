//! `guard --write-config`: the configuration with breached experiments paused or rolled back.

use serde_json::{json, Value};

use super::Report;
use abmesh::config::Status;

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
                obj.insert("status".into(), json!(Status::Paused.as_str()));
                format!("status {from} -> paused")
            }
            Rollback::Control => {
                let Some(control) = e.variants.first().map(|v| v.name.clone()) else {
                    continue;
                };
                obj.insert("status".into(), json!(Status::RolledOut.as_str()));
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
