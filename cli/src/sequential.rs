//! Always-valid inference for guardrails that are looked at again and again.
//!
//! `abmesh guard` runs on a schedule: a fixed-horizon test looked at after every batch raises
//! false alarms far above its nominal rate. These tests keep their level however often, and
//! whenever, they are looked at:
//!
//! - **Differences of proportions and of means**: the mixture sequential probability ratio test
//!   (mSPRT) of Johari, Koomen, Pekelis and Walsh, "Always valid inference: continuous
//!   monitoring of A/B tests", Operations Research 70(3), 2022 — the normal approximation of
//!   the difference `θ̂` with variance `V`, and a normal mixture `θ ~ N(θ0, τ²)` over the
//!   alternative:
//!   `Λ = sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ0)² / (2 V (V + τ²)))`.
//!   The always-valid p-value is `min(1, 1/Λ)`; rejecting when it is below α keeps the
//!   probability of *ever* rejecting a true null, over every look, at most α. The matching
//!   confidence sequence is `θ̂ ± sqrt(V (V + τ²) / τ² · (2 ln(1/α) + ln((V + τ²) / V)))`.
//! - **Sample ratio mismatch**: the Dirichlet–multinomial mixture test of Lindon and Malek,
//!   "Anytime-valid inference for multinomial count data", NeurIPS 2022: the Bayes factor of
//!   a `Dirichlet(c · expected shares)` mixture against the expected shares is a test
//!   martingale, so `min(1, 1/BF)` is an always-valid p-value.
//!
//! The mixing parameter: `τ = mixing · σ`, with `σ` the per-observation standard deviation
//! (pooled over both arms), so `mixing` is the effect size, in standard deviations, the test
//! is most sensitive to (default [`DEFAULT_MIXING`]). A smaller value finds small effects
//! sooner and large ones later.

use crate::stats::{ln_gamma, Comparison, Moments};

/// `τ / σ`: tuned for regressions of about a tenth of a standard deviation — for a 1% error
/// rate (σ ≈ 0.1), about one percentage point.
pub const DEFAULT_MIXING: f64 = 0.1;

/// The Dirichlet concentration of the SRM test: prior pseudo-counts `c · share`.
pub const SRM_CONCENTRATION: f64 = 100.0;

/// ln Λ for an estimate `diff` of variance `v` against `theta0`, mixing variance `tau2`.
fn ln_lambda(diff: f64, v: f64, tau2: f64, theta0: f64) -> f64 {
    let d = diff - theta0;
    0.5 * (v / (v + tau2)).ln() + tau2 * d * d / (2.0 * v * (v + tau2))
}

/// The always-valid p-value of `θ = theta0`.
pub fn p_value(diff: f64, v: f64, tau2: f64, theta0: f64) -> f64 {
    if v <= 0.0 || tau2 <= 0.0 {
        return if diff == theta0 { 1.0 } else { 0.0 };
    }
    (-ln_lambda(diff, v, tau2, theta0).max(0.0)).exp()
}

/// The half-width of the (1 − alpha) confidence sequence.
pub fn half_width(v: f64, tau2: f64, alpha: f64) -> f64 {
    if v <= 0.0 || tau2 <= 0.0 {
        return 0.0;
    }
    (v * (v + tau2) / tau2 * (2.0 * (1.0 / alpha).ln() + ((v + tau2) / v).ln())).sqrt()
}

/// A sequential comparison: the difference, its confidence sequence, the always-valid
/// p-value of no difference, and the variance and mixing used (for the margin test).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sequential {
    pub comparison: Comparison,
    /// The variance of the difference (unpooled).
    pub variance: f64,
    pub tau2: f64,
}

impl Sequential {
    /// The always-valid p-value of `θ ≤ margin` (1 unless the estimate is above it).
    pub fn p_above(&self, margin: f64) -> f64 {
        if self.comparison.diff <= margin {
            return 1.0;
        }
        p_value(self.comparison.diff, self.variance, self.tau2, margin)
    }
}

/// Error (or conversion) rates: `x` events out of `n` in each arm.
pub fn proportions(
    x_variant: f64,
    n_variant: f64,
    x_control: f64,
    n_control: f64,
    alpha: f64,
    mixing: f64,
) -> Option<Sequential> {
    if n_variant <= 0.0 || n_control <= 0.0 {
        return None;
    }
    let (p1, p0) = (x_variant / n_variant, x_control / n_control);
    let pooled = (x_variant + x_control) / (n_variant + n_control);
    let sigma2 = pooled * (1.0 - pooled);
    let tau2 = mixing * mixing * sigma2;
    let diff = p1 - p0;
    // Under no difference both arms share the pooled rate: its variance is the test's.
    let v_null = sigma2 * (1.0 / n_variant + 1.0 / n_control);
    let v = p1 * (1.0 - p1) / n_variant + p0 * (1.0 - p0) / n_control;
    let half = half_width(v, tau2, alpha);
    Some(Sequential {
        comparison: Comparison {
            control: p0,
            variant: p1,
            diff,
            ci_low: diff - half,
            ci_high: diff + half,
            p_value: p_value(diff, v_null, tau2, 0.0),
            relative: (p0 > 0.0).then(|| diff / p0),
        },
        variance: v,
        tau2,
    })
}

/// Means, from each arm's count, sum and sum of squares.
pub fn means(variant: Moments, control: Moments, alpha: f64, mixing: f64) -> Option<Sequential> {
    if variant.n < 2.0 || control.n < 2.0 {
        return None;
    }
    let (s1, s0) = (variant.variance(), control.variance());
    let pooled = ((variant.n - 1.0) * s1 + (control.n - 1.0) * s0) / (variant.n + control.n - 2.0);
    let tau2 = mixing * mixing * pooled;
    let v = s1 / variant.n + s0 / control.n;
    let diff = variant.mean() - control.mean();
    let half = half_width(v, tau2, alpha);
    Some(Sequential {
        comparison: Comparison {
            control: control.mean(),
            variant: variant.mean(),
            diff,
            ci_low: diff - half,
            ci_high: diff + half,
            p_value: p_value(diff, v, tau2, 0.0),
            relative: (control.mean() != 0.0).then(|| diff / control.mean()),
        },
        variance: v,
        tau2,
    })
}

/// The always-valid p-value that `counts` follow `shares` (sample ratio mismatch), from the
/// Dirichlet–multinomial Bayes factor; `None` without counts. Categories with no share are
/// left out (nothing can be assigned there).
pub fn srm_p_value(counts: &[f64], shares: &[f64]) -> Option<f64> {
    let share_total: f64 = shares.iter().filter(|s| **s > 0.0).sum();
    let kept: Vec<(f64, f64)> = counts
        .iter()
        .zip(shares)
        .filter(|(_, s)| **s > 0.0)
        .map(|(c, s)| (*c, s / share_total))
        .collect();
    let n: f64 = kept.iter().map(|(c, _)| c).sum();
    if kept.len() < 2 || n <= 0.0 {
        return None;
    }
    let a: f64 = SRM_CONCENTRATION;
    let mut ln_bf = ln_gamma(a) - ln_gamma(a + n);
    for (x, p) in &kept {
        let alpha = a * p;
        ln_bf += ln_gamma(alpha + x) - ln_gamma(alpha) - x * p.ln();
    }
    Some((-ln_bf.max(0.0)).exp())
}

/// Holm's step-down adjustment: adjusted p-values in the input order. Rejecting those below
/// α controls the family-wise error rate at α, under any dependence between the tests.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    // Reference values: an independent NumPy/SciPy 1.17.1 implementation of the formulas in
    // the module documentation (scipy.special.gammaln for the Bayes factor), recorded here and
    // recomputed by tests/reference/recorded_values.py in ./build.sh test.
    #[test]
    fn msprt_p_values_and_confidence_sequences_match_the_reference() {
        let s = proportions(60.0, 1000.0, 40.0, 1000.0, 0.05, 0.1).unwrap();
        assert!(
            close(s.comparison.p_value, 0.423_794_661_361_322_6, 1e-9),
            "{s:?}"
        );
        assert!(close(
            s.comparison.diff + 0.029_754_136_600_653_833,
            s.comparison.ci_high,
            1e-9
        ));
        assert!(close(s.p_above(0.005), 0.911_637_216_547_283_7, 1e-9));
        let s = proportions(600.0, 10_000.0, 450.0, 10_000.0, 0.05, 0.1).unwrap();
        assert!(
            close(s.comparison.p_value, 1.094_201_093_068_497_9e-4, 1e-8),
            "{s:?}"
        );
        assert!(close(
            s.comparison.ci_high - s.comparison.diff,
            0.010_029_654_200_522_441,
            1e-9
        ));
        let m = |n: f64, mean: f64, sd: f64| Moments {
            n,
            sum: n * mean,
            sum_squares: sd * sd * (n - 1.0) + n * mean * mean,
        };
        let s = means(m(500.0, 52.0, 10.0), m(480.0, 50.0, 9.0), 0.05, 0.1).unwrap();
        assert!(
            close(s.comparison.p_value, 0.039_344_845_203_293_226, 1e-8),
            "{s:?}"
        );
        assert!(close(
            s.comparison.ci_high - 2.0,
            1.936_850_293_135_781_2,
            1e-8
        ));
    }

    #[test]
    fn the_sequential_srm_test_matches_the_reference() {
        assert!(close(
            srm_p_value(&[5200.0, 4800.0], &[1.0, 1.0]).unwrap(),
            0.003_647_864_278_686_347_2,
            1e-7
        ));
        assert_eq!(srm_p_value(&[5050.0, 4950.0], &[1.0, 1.0]), Some(1.0));
        assert!(close(
            srm_p_value(&[3000.0, 1000.0, 1100.0], &[2.0, 1.0, 1.0]).unwrap(),
            4.620_671_300_381_602e-34,
            1e-6
        ));
        assert_eq!(srm_p_value(&[0.0, 0.0], &[1.0, 1.0]), None);
        assert_eq!(srm_p_value(&[10.0, 0.0], &[1.0, 0.0]), None);
    }

    #[test]
    fn holm_matches_statsmodels() {
        // statsmodels 0.15.0: multipletests([0.01, 0.04, 0.03, 0.005, 0.5], method="holm")[1]
        // = [0.04, 0.09, 0.09, 0.025, 0.5]
        let adj = holm(&[0.01, 0.04, 0.03, 0.005, 0.5]);
        for (a, b) in adj.iter().zip([0.04, 0.09, 0.09, 0.025, 0.5]) {
            assert!(close(*a, b, 1e-12), "{adj:?}");
        }
        assert!(holm(&[]).is_empty());
    }
}
