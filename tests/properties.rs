#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! Property tests: the real range arithmetic against a naive exact-rational reference, and
//! the guarantees operators rely on (stickiness under ramp-up, exclusivity, fair splits).

use abmesh::hash::{bucket, variant_for_bucket, variant_ranges, BUCKETS};
use abmesh::{evaluate, Config, RequestView};
use proptest::prelude::*;

/// An exact non-negative rational, just enough for the spec's floors.
#[derive(Clone, Copy)]
struct Ratio {
    num: u128,
    den: u128,
}

impl Ratio {
    fn new(num: u128, den: u128) -> Self {
        Ratio { num, den }
    }
    fn floor(self) -> u128 {
        self.num / self.den
    }
}

/// The spec read literally, one bucket at a time with no running state: variant k covers
/// `[edge_k, edge_k + floor((edge_{k+1} − edge_k) × t / 10000))` where
/// `edge_k = floor(10000 × (w_0 + … + w_{k-1}) / W)`.
fn naive_variant(weights: &[u64], traffic_bp: u32, b: u32) -> Option<usize> {
    let total: u128 = weights.iter().map(|&w| w as u128).sum();
    let edge = |k: usize| -> u128 {
        let before: u128 = weights[..k].iter().map(|&w| w as u128).sum();
        Ratio::new(10_000 * before, total).floor()
    };
    let hits: Vec<usize> = (0..weights.len())
        .filter(|&k| {
            let (lo, hi) = (edge(k), edge(k + 1));
            let covered = Ratio::new((hi - lo) * traffic_bp as u128, 10_000).floor();
            lo <= b as u128 && (b as u128) < lo + covered
        })
        .collect();
    assert!(hits.len() <= 1, "bucket {b} in several variants: {hits:?}");
    hits.first().copied()
}

fn weights_strategy() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        prop::collection::vec(0u64..100, 1..12),
        prop::collection::vec(0u64..=u64::MAX / 128, 1..5),
        prop::collection::vec(1u64..3, 1..101),
    ]
    .prop_filter("weights must not all be zero", |w| w.iter().any(|&x| x > 0))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn real_ranges_agree_with_the_naive_reference(
        weights in weights_strategy(), traffic in 0u32..=10_000, buckets in prop::collection::vec(0u32..10_000, 32)
    ) {
        let ranges = variant_ranges(&weights, traffic);
        for b in buckets.into_iter().chain([0, 9_999]) {
            prop_assert_eq!(variant_for_bucket(&ranges, b), naive_variant(&weights, traffic, b), "bucket {}", b);
        }
    }

    #[test]
    fn a_unit_is_in_at_most_one_variant(weights in weights_strategy(), traffic in 0u32..=10_000) {
        let ranges = variant_ranges(&weights, traffic);
        let mut seen = vec![0u8; BUCKETS as usize];
        for (start, end) in ranges {
            prop_assert!(start <= end && end <= BUCKETS);
            for b in start..end {
                seen[b as usize] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&n| n <= 1));
    }

    #[test]
    fn raising_traffic_never_moves_or_drops_an_included_unit(
        weights in weights_strategy(), t1 in 0u32..=10_000, raise in 0u32..=10_000,
        ids in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 64)
    ) {
        let t2 = (t1 + raise).min(10_000);
        let (low, high) = (variant_ranges(&weights, t1), variant_ranges(&weights, t2));
        for id in ids {
            let b = bucket(b"ramp", &id);
            if let Some(v) = variant_for_bucket(&low, b) {
                prop_assert_eq!(variant_for_bucket(&high, b), Some(v));
            }
        }
    }

    #[test]
    fn along_any_ramp_a_unit_included_at_t1_keeps_its_variant_at_every_later_t2(
        weights in prop::collection::vec(0u64..20, 1..6)
            .prop_filter("weights must not all be zero", |w| w.iter().any(|&x| x > 0)),
        // Distinct step traffics (basis points, sorted below) and gaps between steps in hours.
        traffics in prop::collection::btree_set(1u32..=10_000, 1..6),
        gaps in prop::collection::vec(1i64..1000, 6),
        times in prop::collection::vec(0i64..6000, 2),
        ids in prop::collection::vec("[a-z0-9]{1,12}", 64),
    ) {
        let start = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
        let mut at = start;
        let steps: Vec<String> = traffics.iter().zip(&gaps).map(|(t, gap)| {
            at += gap * 3_600_000;
            format!(r#"{{"at": "{}", "traffic_percent": {}.{:02}}}"#,
                abmesh::time::format_rfc3339(at), t / 100, t % 100)
        }).collect();
        let variants: Vec<String> = weights.iter().enumerate()
            .map(|(i, w)| format!(r#"{{"name": "v{i}", "weight": {w}}}"#)).collect();
        let config = Config::parse(format!(
            r#"{{"units": {{"u": [{{"header": "x-id"}}]}},
                "experiments": [{{"key": "e", "ramp": [{}], "variants": [{}]}}]}}"#,
            steps.join(","), variants.join(",")).as_bytes()).unwrap();
        let (t1, t2) = (times[0].min(times[1]), times[0].max(times[1]));
        let (t1, t2) = (start + t1 * 3_600_000, start + t2 * 3_600_000 + 1);
        for id in &ids {
            let headers = [("x-id", id.as_str())];
            let req = RequestView::new(&headers);
            let before = evaluate(&config, &req, t1).assignments;
            let after = evaluate(&config, &req, t2).assignments;
            if let Some(a) = before.first() {
                prop_assert_eq!(after.first().map(|x| x.variant), Some(a.variant),
                    "unit {} moved between {} and {}", id, t1, t2);
            }
        }
    }

    #[test]
    fn disjoint_layer_ranges_never_share_a_unit(
        cuts in prop::collection::btree_set(1u32..10_000, 1..8),
        ids in prop::collection::vec("[a-z0-9]{1,20}", 200)
    ) {
        let mut edges: Vec<u32> = vec![0];
        edges.extend(cuts);
        edges.push(10_000);
        let experiments: Vec<String> = edges.windows(2).enumerate().map(|(i, w)| format!(
            r#"{{"key": "e{i}", "layer": {{"name": "l", "buckets": [{}, {}]}},
                "variants": [{{"name": "a", "weight": 1}}, {{"name": "b", "weight": 1}}]}}"#, w[0], w[1]
        )).collect();
        let config = Config::parse(format!(
            r#"{{"units": {{"user": [{{"header": "u"}}]}}, "layers": {{"l": {{"salt": "p"}}}},
                "experiments": [{}]}}"#, experiments.join(",")
        ).as_bytes()).unwrap();
        for id in ids {
            let headers = [("u", id.as_str())];
            let eval = evaluate(&config, &RequestView::new(&headers), 0);
            // The layer is fully partitioned at 100 % traffic: exactly one experiment each.
            prop_assert_eq!(eval.assignments.len(), 1, "id {}", id);
        }
    }
}

proptest! {
    #[test]
    fn the_dictionary_parser_keeps_the_last_of_each_key_in_order_as_the_naive_rule_does(
        members in prop::collection::vec(("[a-d]", "[xyz]{0,2}", any::<bool>(), any::<bool>()), 0..40)
    ) {
        let parts: Vec<String> = members
            .iter()
            .map(|(k, v, quoted, forced)| {
                let v = if *quoted { format!("\"{v}\"") } else { v.clone() };
                format!("{k}={v}{}", if *forced { ";forced" } else { "" })
            })
            .collect();
        let header = parts.join(", ");
        let fast: Vec<(Vec<u8>, Vec<u8>)> = abmesh::sfv::parse_dictionary(header.as_bytes())
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        // The rule read literally (quadratic, as the parser once was): each member, parsed on
        // its own, replaces an earlier one with its key and moves to the end.
        let mut reference: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for part in &parts {
            for (k, v) in abmesh::sfv::parse_dictionary(part.as_bytes()) {
                reference.retain(|(x, _)| x != k);
                reference.push((k.to_vec(), v.to_vec()));
            }
        }
        prop_assert_eq!(fast, reference);
    }
}
