#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Hash spec v1 splits real ids as the weights say: 100,000 ids per weight set, tested with
//! the chi-square helper guard uses (itself checked against SciPy here).

use abmesh::hash::{bucket, variant_for_bucket, variant_ranges};

use abmesh_cli::stats::chi_square_sf as chi_square_p;

#[test]
fn the_chi_square_helper_matches_published_values() {
    // scipy.stats.chi2.sf(x, df), computed with SciPy 1.17.1.
    assert!((chi_square_p(3.841_458_820_694_124, 1.0) - 0.05).abs() < 1e-9);
    assert!((chi_square_p(16.266_236_196_238_13, 3.0) - 0.001).abs() < 1e-9);
    assert!((chi_square_p(10.0, 10.0) - 0.440_493_285_065_212_4).abs() < 1e-9);
    assert!((chi_square_p(150.0, 99.0) - 0.000_720_445_395_716_928).abs() < 1e-9);
}

#[test]
fn for_100k_ids_the_split_matches_the_weights() {
    for weights in [
        vec![50u64, 50],
        vec![1, 2, 7],
        vec![10, 20, 30, 40],
        vec![1; 20],
        vec![5, 0, 95],
    ] {
        let ranges = variant_ranges(&weights, 10_000);
        let mut counts = vec![0u64; weights.len()];
        let n = 100_000u64;
        for i in 0..n {
            let id = format!("user-{i}");
            if let Some(v) = variant_for_bucket(&ranges, bucket(b"split-test", id.as_bytes())) {
                counts[v] += 1;
            }
        }
        assert_eq!(
            counts.iter().sum::<u64>(),
            n,
            "everyone is assigned at 100 % traffic"
        );
        let total: u64 = weights.iter().sum();
        let mut chi2 = 0.0;
        let mut df = -1.0;
        for (w, c) in weights.iter().zip(&counts) {
            if *w == 0 {
                assert_eq!(*c, 0, "a zero-weight variant gets nobody");
                continue;
            }
            let expected = n as f64 * *w as f64 / total as f64;
            chi2 += (*c as f64 - expected).powi(2) / expected;
            df += 1.0;
        }
        let p = chi_square_p(chi2, df);
        assert!(
            p > 0.001,
            "weights {weights:?}: counts {counts:?}, chi2 {chi2}, p {p}"
        );
    }
}
