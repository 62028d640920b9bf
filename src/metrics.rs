//! Stat names for Envoy. Labels are carried in the name in the `tag=.=value;.;` form that
//! Istio's `extraStatTags` and the shipped `envoy/envoy.yaml` `stats_tags` extract, so
//! `/stats/prometheus` shows `abmesh_assignments_total{experiment="…",variant="…"}`.
//! Envoy puts metrics defined by wasm under the `wasmcustom` namespace, which its Prometheus
//! output drops.

use crate::assign::Evaluation;
use crate::config::Config;
use crate::hash::replicate;

/// Assigned requests per experiment and variant (rollouts included).
pub const ASSIGNMENTS: &str = "abmesh_assignments_total";
/// Forced (QA) assignments.
pub const FORCED: &str = "abmesh_forced_total";
/// Requests an experiment gave no variant, by reason.
pub const NOT_ASSIGNED: &str = "abmesh_not_assigned_total";
/// Failed host calls and dropped baggage, by kind.
pub const ERRORS: &str = "abmesh_errors_total";
/// Responses of assigned requests, by status class.
pub const RESPONSES: &str = "abmesh_responses_total";
/// A Prometheus-style histogram made of counters (`_bucket` with `le`, `_sum`, `_count`) plus
/// `_sum_squares` for the variance `abmesh guard` needs. Counters, not an Envoy histogram, so a
/// VM can add up its requests and publish them once a second instead of one host call per
/// request and experiment.
pub const DURATION: &str = "abmesh_request_duration_milliseconds";

/// Replicate series: per experiment, variant and `replicate` label, the totals guard computes
/// its cluster-robust statistics from. Hashed assignments only: a forced (QA) assignment is not
/// randomized, and a rollout is no experiment.
pub const REPLICATE_ASSIGNMENTS: &str = "abmesh_replicate_assignments_total";
/// Responses (every class, `reset` included) of the replicate's assigned requests.
pub const REPLICATE_RESPONSES: &str = "abmesh_replicate_responses_total";
/// 5xx responses of the replicate's assigned requests.
pub const REPLICATE_5XX: &str = "abmesh_replicate_5xx_total";
/// The summed duration (ms) of the replicate's assigned requests.
pub const REPLICATE_DURATION_SUM: &str = "abmesh_replicate_duration_milliseconds_sum";
/// The replicate series, in the order of [`ReplicateSeries`].
pub const REPLICATE_METRICS: [&str; 4] = [
    REPLICATE_ASSIGNMENTS,
    REPLICATE_RESPONSES,
    REPLICATE_5XX,
    REPLICATE_DURATION_SUM,
];

/// Index into [`REPLICATE_METRICS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicateSeries {
    /// `abmesh_replicate_assignments_total`
    Assignments = 0,
    /// `abmesh_replicate_responses_total`
    Responses = 1,
    /// `abmesh_replicate_5xx_total`
    Errors5xx = 2,
    /// `abmesh_replicate_duration_milliseconds_sum`
    DurationSum = 3,
}

/// The hashed assignments of a request with their replicate: `(experiment, variant,
/// replicate)`. Empty when replicates are off. The replicate comes from the id of the
/// experiment's own unit type, computed once per unit type.
pub fn replicated(config: &Config, eval: &Evaluation) -> Vec<(usize, usize, u16)> {
    if config.replicates == 0 {
        return Vec::new();
    }
    let mut per_unit: Vec<Option<Option<u16>>> = vec![None; eval.units.len()];
    let mut out = Vec::new();
    for a in eval.assignments.iter().filter(|a| !a.forced && !a.rollout) {
        let Some(unit) = config.experiments.get(a.experiment).map(|e| e.unit) else {
            continue;
        };
        let Some(slot) = per_unit.get_mut(unit) else {
            continue;
        };
        let r = *slot.get_or_insert_with(|| {
            eval.units
                .get(unit)
                .and_then(|id| id.as_deref())
                .map(|id| replicate(id, config.replicates))
        });
        if let Some(r) = r {
            out.push((a.experiment, a.variant, r));
        }
    }
    out
}

/// `class` label values of `abmesh_responses_total`: the status class, or `reset` for a
/// request that ended without response headers.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "reset"];

/// Upper bounds (`le`) of the duration buckets, in milliseconds; a last `+Inf` bucket follows.
pub const DURATION_BOUNDS_MS: [u64; 13] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// The `le` label of bucket `i` (`+Inf` for the last).
pub fn bucket_label(i: usize) -> String {
    DURATION_BOUNDS_MS
        .get(i)
        .map_or_else(|| "+Inf".to_string(), |b| b.to_string())
}

/// Index into [`CLASSES`] of a response status (`None`: no response headers).
pub fn status_class(status: Option<u16>) -> usize {
    match status {
        Some(100..=199) => 0,
        Some(200..=299) => 1,
        Some(300..=399) => 2,
        Some(400..=499) => 3,
        Some(_) => 4,
        None => 5,
    }
}

/// Index of the first bucket a duration falls in (every later bucket counts it too).
pub fn first_bucket(duration_ms: u64) -> usize {
    DURATION_BOUNDS_MS
        .iter()
        .position(|&b| duration_ms <= b)
        .unwrap_or(DURATION_BOUNDS_MS.len())
}

/// The tag names operators add to `extraStatTags` (Istio) or `stats_tags` (Envoy).
pub const TAGS: [&str; 7] = [
    "experiment",
    "variant",
    "replicate",
    "reason",
    "kind",
    "class",
    "le",
];

/// `experiment=.=new-checkout;.;variant=.=treatment;.;abmesh_assignments_total`
pub fn stat_name(metric: &str, tags: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(metric.len() + 32 * tags.len());
    for (name, value) in tags {
        out.push_str(name);
        out.push_str("=.=");
        out.push_str(value);
        out.push_str(";.;");
    }
    out.push_str(metric);
    out
}

/// The kinds of `abmesh_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A host call failed while reading or changing the request or its response.
    Host,
    /// The assignments were left out of `baggage`: adding them would have exceeded the W3C
    /// limit of 8,192 bytes (they still travel in `output.header`).
    Baggage,
}

impl ErrorKind {
    /// How many kinds there are.
    pub const COUNT: usize = 2;
    /// Every kind.
    pub const ALL: [ErrorKind; Self::COUNT] = [ErrorKind::Host, ErrorKind::Baggage];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Host => "host",
            ErrorKind::Baggage => "baggage_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_their_class_and_durations_in_their_bucket() {
        let classes: Vec<&str> = [
            Some(101),
            Some(200),
            Some(302),
            Some(404),
            Some(503),
            Some(999),
            None,
        ]
        .map(|s| CLASSES[status_class(s)])
        .to_vec();
        assert_eq!(classes, ["1xx", "2xx", "3xx", "4xx", "5xx", "5xx", "reset"]);
        assert_eq!(first_bucket(0), 0);
        assert_eq!(first_bucket(1), 0);
        assert_eq!(first_bucket(2), 1);
        assert_eq!(first_bucket(26), 5);
        assert_eq!(first_bucket(10_000), 12);
        assert_eq!(first_bucket(10_001), 13);
        assert_eq!(bucket_label(13), "+Inf");
        assert_eq!(bucket_label(4), "25");
    }

    #[test]
    fn stat_names_carry_labels_in_the_istio_form() {
        assert_eq!(
            stat_name(
                ASSIGNMENTS,
                &[("experiment", "new-checkout"), ("variant", "treatment")]
            ),
            "experiment=.=new-checkout;.;variant=.=treatment;.;abmesh_assignments_total"
        );
        assert_eq!(
            stat_name(ERRORS, &[("kind", "host")]),
            "kind=.=host;.;abmesh_errors_total"
        );
    }
}
