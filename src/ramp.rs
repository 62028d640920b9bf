//! Scheduled ramps: `"ramp": [{"at": RFC3339, "traffic_percent": N}, ...]`. The traffic of an
//! experiment is read from the host clock on each request, so every node computes the same
//! share at the same moment without any state. Steps only go up: raising traffic never moves
//! an included unit (hash spec v1), so a ramp never reshuffles anyone.

use serde_json::Value;

use crate::hash::variant_ranges;
use crate::reader::{index_path, list, percent_basis_points, Errors, Obj};

/// At most this many steps per ramp.
pub const MAX_STEPS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
/// One step of a ramp: from `at_ms` on, this traffic and these ranges.
pub struct RampStep {
    /// From this moment (Unix milliseconds) ...
    pub at_ms: i64,
    /// ... the experiment takes this traffic (basis points) ...
    pub traffic_bp: u32,
    /// ... and its variants cover these buckets.
    pub ranges: Vec<(u32, u32)>,
}

/// Reads and validates a ramp for variants of these `weights`.
pub fn compile(v: &Value, path: &str, weights: &[u64], errors: &mut Errors) -> Vec<RampStep> {
    let Some(steps) = list(v, path, errors) else {
        return Vec::new();
    };
    if steps.is_empty() || steps.len() > MAX_STEPS {
        errors.push(
            path,
            format!("must have 1 to {MAX_STEPS} steps, found {}", steps.len()),
        );
    }
    let mut out: Vec<RampStep> = Vec::new();
    let mut previous: Option<(i64, u32)> = None;
    for (i, s) in steps.iter().enumerate() {
        let spath = index_path(path, i);
        let Some(o) = Obj::new(s, &spath, &["at", "traffic_percent"], errors) else {
            previous = None;
            continue;
        };
        let at = o.required_time("at", errors);
        let traffic = match o.get("traffic_percent") {
            Some(t) => percent_basis_points(t, &o.path_of("traffic_percent"), errors),
            None => {
                errors.push(&o.path_of("traffic_percent"), "is required");
                None
            }
        };
        if let (Some((prev_at, prev_traffic)), Some(at)) = (previous, at) {
            if at <= prev_at {
                errors.push(
                    &o.path_of("at"),
                    format!("must be later than {}.at", index_path(path, i - 1)),
                );
            }
            if traffic.is_some_and(|t| t <= prev_traffic) {
                errors.push(
                    &o.path_of("traffic_percent"),
                    format!(
                        "must be higher than {}.traffic_percent (a ramp only goes up: lowering traffic would drop included units; pause the experiment instead)",
                        index_path(path, i - 1)
                    ),
                );
            }
        }
        previous = at.zip(traffic);
        if let (Some(at_ms), Some(traffic_bp)) = (at, traffic) {
            out.push(RampStep {
                at_ms,
                traffic_bp,
                ranges: variant_ranges(weights, traffic_bp),
            });
        }
    }
    out
}

/// The step in force at `now_ms`: the last one that has begun (`None` before the first).
pub fn current(ramp: &[RampStep], now_ms: i64) -> Option<&RampStep> {
    ramp.iter().take_while(|s| s.at_ms <= now_ms).last()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(json: &str) -> Result<Vec<RampStep>, Vec<String>> {
        let v: Value = serde_json::from_str(json).unwrap();
        let mut errors = Errors::default();
        let r = compile(&v, "experiments[0].ramp", &[1, 1], &mut errors);
        if errors.0.is_empty() {
            Ok(r)
        } else {
            Err(errors.0)
        }
    }

    #[test]
    fn the_step_in_force_is_the_last_that_has_begun() {
        let r = ramp(
            r#"[{"at": "2026-11-01T00:00:00Z", "traffic_percent": 5},
                {"at": "2026-11-08T00:00:00Z", "traffic_percent": 50}]"#,
        )
        .unwrap();
        let nov1 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
        assert_eq!(current(&r, nov1 - 1), None);
        assert_eq!(current(&r, nov1).map(|s| s.traffic_bp), Some(500));
        assert_eq!(
            current(&r, nov1 + 7 * 86_400_000).map(|s| s.ranges.clone()),
            Some(vec![(0, 2500), (5000, 7500)])
        );
    }

    #[test]
    fn a_ramp_must_go_forward_in_time_and_up_in_traffic() {
        assert_eq!(
            ramp(
                r#"[{"at": "2026-11-08T00:00:00Z", "traffic_percent": 50},
                    {"at": "2026-11-01T00:00:00Z", "traffic_percent": 50},
                    {"at": "soon", "traffic_percent": 101},
                    {"traffic_percent": 60, "when": 1}]"#
            )
            .unwrap_err(),
            [
                "experiments[0].ramp[1].at: must be later than experiments[0].ramp[0].at",
                "experiments[0].ramp[1].traffic_percent: must be higher than experiments[0].ramp[0].traffic_percent (a ramp only goes up: lowering traffic would drop included units; pause the experiment instead)",
                "experiments[0].ramp[2].at: must be an RFC 3339 time such as 2026-11-01T00:00:00Z, found \"soon\"",
                "experiments[0].ramp[2].traffic_percent: must be a number from 0 to 100, found 101",
                "experiments[0].ramp[3]: unknown field \"when\"; expected one of: at, traffic_percent",
                "experiments[0].ramp[3].at: is required",
            ]
        );
        assert_eq!(
            ramp("[]").unwrap_err(),
            ["experiments[0].ramp: must have 1 to 100 steps, found 0"]
        );
    }
}
