//! Stat names for Envoy. Labels are carried in the name in the `tag=.=value;.;` form that
//! Istio's `extraStatTags` and the shipped `envoy/envoy.yaml` `stats_tags` extract, so
//! `/stats/prometheus` shows `abmesh_assignments_total{experiment="…",variant="…"}`.
//! Envoy puts metrics defined by wasm under the `wasmcustom` namespace, which its Prometheus
//! output drops.

pub const ASSIGNMENTS: &str = "abmesh_assignments_total";
pub const FORCED: &str = "abmesh_forced_total";
pub const NOT_ASSIGNED: &str = "abmesh_not_assigned_total";
pub const ERRORS: &str = "abmesh_errors_total";

/// The tag names operators add to `extraStatTags` (Istio) or `stats_tags` (Envoy).
pub const TAGS: [&str; 4] = ["experiment", "variant", "reason", "kind"];

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
}

impl ErrorKind {
    pub const COUNT: usize = 1;
    pub const ALL: [ErrorKind; Self::COUNT] = [ErrorKind::Host];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Host => "host",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
