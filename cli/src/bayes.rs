//! The Bayesian summary `abmesh guard` reports beside its tests (never used for alarms): the
//! probability that a variant beats control.
//!
//! - Rates (5xx ratio: lower is better): independent `Beta(1 + errors, 1 + successes)`
//!   posteriors — a uniform `Beta(1, 1)` prior — and `P(rate_variant < rate_control)`, exact
//!   (Evan Miller's closed form, "Formulas for Bayesian A/B testing") up to 100,000 variant
//!   errors, then the normal approximation of both posteriors.
//! - Means (latency: lower is better): flat priors, so each mean's posterior is approximately
//!   `N(sample mean, sample variance / n)`, and `P(mean_variant < mean_control)` follows.

use crate::stats::{ln_gamma, normal_sf, Moments};

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `P(rate_variant < rate_control)` for `x` errors out of `n` in each arm.
pub fn prob_rate_lower(x_variant: f64, n_variant: f64, x_control: f64, n_control: f64) -> f64 {
    let (av, bv) = (1.0 + x_variant, 1.0 + n_variant - x_variant);
    let (ac, bc) = (1.0 + x_control, 1.0 + n_control - x_control);
    if av > 100_000.0 || av.fract() != 0.0 {
        let mean = |a: f64, b: f64| a / (a + b);
        let var = |a: f64, b: f64| a * b / ((a + b) * (a + b) * (a + b + 1.0));
        let z = (mean(ac, bc) - mean(av, bv)) / (var(av, bv) + var(ac, bc)).sqrt();
        return 1.0 - normal_sf(z);
    }
    // P(rate_variant > rate_control) = Σ_{i < av} B(ac + i, bc + bv) / ((bv + i) B(1 + i, bv) B(ac, bc))
    let base = ln_beta(ac, bc);
    let higher: f64 = (0..av as u64)
        .map(|i| {
            let i = i as f64;
            (ln_beta(ac + i, bc + bv) - (bv + i).ln() - ln_beta(1.0 + i, bv) - base).exp()
        })
        .sum();
    (1.0 - higher).clamp(0.0, 1.0)
}

/// `P(mean_variant < mean_control)`.
pub fn prob_mean_lower(variant: Moments, control: Moments) -> Option<f64> {
    if variant.n < 2.0 || control.n < 2.0 {
        return None;
    }
    let se = (variant.variance() / variant.n + control.variance() / control.n).sqrt();
    if se == 0.0 {
        return None;
    }
    Some(normal_sf((variant.mean() - control.mean()) / se))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    // SciPy 1.17.1: integrate.quad(lambda x: beta.pdf(x, 1+xv, 1+nv-xv) * beta.sf(x, 1+xc, 1+nc-xc), ...)
    // (recomputed by tests/reference/recorded_values.py)
    #[test]
    fn rates_match_numerical_integration() {
        for (args, want) in [
            ((40.0, 1000.0, 60.0, 1000.0), 0.979_677_212_052_825_1),
            ((12.0, 500.0, 10.0, 500.0), 0.337_021_529_985_485_6),
            ((0.0, 100.0, 3.0, 100.0), 0.939_360_984_023_600_6),
            ((450.0, 10_000.0, 600.0, 10_000.0), 0.999_999_036_006_680_7),
        ] {
            let got = prob_rate_lower(args.0, args.1, args.2, args.3);
            assert!(close(got, want, 1e-9), "{args:?}: {got} instead of {want}");
        }
    }

    // SciPy 1.17.1: norm.cdf((50 - 52) / sqrt(100/500 + 81/480)) = 0.0004946574546382191
    #[test]
    fn means_match_the_normal_posterior() {
        let m = |n: f64, mean: f64, sd: f64| Moments {
            n,
            sum: n * mean,
            sum_squares: sd * sd * (n - 1.0) + n * mean * mean,
        };
        let p = prob_mean_lower(m(500.0, 52.0, 10.0), m(480.0, 50.0, 9.0)).unwrap();
        assert!(close(p, 0.000_494_657_454_638_219_1, 1e-10), "{p}");
    }
}
