#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Scheduled ramps decided by the core: the traffic in force at each moment, and the
//! configuration errors.

use abmesh::time::parse_rfc3339;
use abmesh::{evaluate, Config, Reason, RequestView};

fn at(t: &str) -> i64 {
    parse_rfc3339(t).unwrap()
}

#[test]
fn the_share_assigned_follows_the_step_in_force() {
    let config = Config::parse(
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ramp.json"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let share = |t: &str| {
        let n = 20_000;
        let assigned = (0..n)
            .filter(|i| {
                let id = format!("user-{i}");
                let headers = [("x-user-id", id.as_str())];
                let eval = evaluate(&config, &RequestView::new(&headers), at(t));
                eval.assignments.iter().any(|a| a.experiment == 0)
            })
            .count();
        assigned as f64 / n as f64
    };
    // Before the first step nobody; then 1, 5, 25, 50 and 100% (binomial sd <= 0.36 points).
    assert_eq!(share("2026-10-31T23:59:59Z"), 0.0);
    for (t, want) in [
        ("2026-11-01T00:00:00Z", 0.01),
        ("2026-11-05T00:00:00Z", 0.05),
        ("2026-11-23T23:59:59Z", 0.25),
        ("2026-11-25T12:00:00Z", 0.50),
        ("2027-01-01T00:00:00Z", 1.0),
    ] {
        let got = share(t);
        assert!((got - want).abs() < 0.015, "{t}: {got} instead of {want}");
    }
    let headers = [("x-user-id", "user-1")];
    let eval = evaluate(
        &config,
        &RequestView::new(&headers),
        at("2026-10-01T00:00:00Z"),
    );
    assert_eq!(eval.not_assigned, [(0, Reason::Traffic)]);
}

#[test]
fn a_ramp_replaces_traffic_percent_and_belongs_to_hash_spec_v1() {
    let err = Config::parse(
        br#"{"units": {"u": [{"header": "x"}]}, "experiments": [
          {"key": "a", "traffic_percent": 10, "ramp": [{"at": "2026-11-01T00:00:00Z", "traffic_percent": 20}],
           "variants": [{"name": "c", "weight": 1}]},
          {"key": "b", "algorithm": "growthbook", "ramp": [{"at": "2026-11-01T00:00:00Z", "traffic_percent": 20}],
           "variants": [{"name": "c", "weight": 0.5}, {"name": "d", "weight": 0.5}]},
          {"key": "c", "algorithm": "flagd", "ramp": [],
           "variants": [{"name": "c", "weight": 1}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.errors,
        [
            "experiments[0].ramp: cannot be combined with traffic_percent (the ramp sets the traffic)",
            "experiments[1].ramp: is not used by algorithm \"growthbook\" (use coverage)",
            "experiments[2].ramp: is not used by algorithm \"flagd\" (flagd assigns every unit)",
        ]
    );
}
