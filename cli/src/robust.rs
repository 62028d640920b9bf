//! Cluster-robust statistics from replicate totals.
//!
//! The randomization unit is the unit (user, device…), not the request: one heavy user sends
//! thousands of requests, a user who hits a bug fails most of theirs. Requests of one unit are
//! correlated, so per-request variances are far too small. The filter therefore publishes
//! every series guard needs split by a `replicate` label, a hash of the unit id independent of
//! every assignment hash (`abmesh::hash::replicate`): all requests of a unit fall in one
//! replicate, so the `R` replicate totals of a variant are independent and identically
//! distributed, whatever the units do. Every variance here is estimated from them.
//!
//! - **Ratio metrics** (5xx per response, mean latency = duration sum per response, a
//!   variant's share of the requests): `θ̂ = Σ x_r / Σ y_r` over the replicates, with the
//!   delta-method (linearization) variance of Deng, Lu and Litz, "Trustworthy analysis of
//!   online A/B tests", WSDM 2017 — `V = R / (R − 1) · Σ (x_r − θ̂ y_r)² / (Σ y_r)²`, the
//!   cluster-robust variance with clusters = replicates.
//! - **Small samples**: `R` is small (16 to 64), so `(θ̂ − θ) / √V` is referred to Student's t,
//!   with Welch–Satterthwaite degrees of freedom for a difference of two arms.
//! - **Sequential**: the mSPRT of `crate::sequential` assumes a known variance. Here the
//!   t statistic is first mapped to the normal quantile of the same tail probability
//!   (`z = Φ⁻¹(F_ν(t))`), which gives the plug-in statistic the normal distribution the mSPRT
//!   is built on at every look; the confidence sequence is the same boundary mapped back.
//!
//! Replicates without any request are left out: they carry no information, and counting them
//! would overstate the degrees of freedom of a small experiment.

use crate::sequential;
use crate::stats::{normal_isf, normal_sf, student_t_isf, student_t_sf, Comparison};

/// A ratio estimate over replicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    pub estimate: f64,
    /// The delta-method variance of the estimate.
    pub variance: f64,
    /// Replicates with a non-zero denominator.
    pub replicates: usize,
}

/// `Σ num / Σ den` and its cluster-robust variance; `None` with fewer than two non-empty
/// replicates (no variance can be estimated).
///
/// ```
/// use abmesh_cli::robust::ratio;
/// let r = ratio(&[1.0, 3.0, 2.0], &[10.0, 10.0, 20.0]).unwrap();
/// assert_eq!(r.estimate, 0.15);
/// assert_eq!(r.replicates, 3);
/// ```
pub fn ratio(num: &[f64], den: &[f64]) -> Option<Ratio> {
    let kept = || num.iter().zip(den).filter(|(_, d)| **d > 0.0);
    let r = kept().count();
    if r < 2 {
        return None;
    }
    let (sx, sy) = kept().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let estimate = sx / sy;
    let ss: f64 = kept()
        .map(|(x, y)| {
            let d = x - estimate * y;
            d * d
        })
        .sum();
    let r_f = r as f64;
    Some(Ratio {
        estimate,
        variance: r_f / (r_f - 1.0) * ss / (sy * sy),
        replicates: r,
    })
}

/// A difference of two independent estimates with its variance and Welch–Satterthwaite
/// degrees of freedom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub variant: f64,
    pub control: f64,
    pub diff: f64,
    pub variance: f64,
    pub df: f64,
}

/// Variant minus control.
pub fn difference(variant: Ratio, control: Ratio) -> Difference {
    let (a, b) = (variant.variance, control.variance);
    let (da, db) = (
        variant.replicates as f64 - 1.0,
        control.replicates as f64 - 1.0,
    );
    let v = a + b;
    let df = if v > 0.0 {
        v * v / (a * a / da + b * b / db)
    } else {
        da + db
    };
    Difference {
        variant: variant.estimate,
        control: control.estimate,
        diff: variant.estimate - control.estimate,
        variance: v,
        df,
    }
}

/// The standard normal quantile with the same upper tail as `t` has under Student's t with
/// `df` degrees of freedom (for `t ≥ 0`).
pub fn normal_equivalent(t: f64, df: f64) -> f64 {
    let tail = student_t_sf(t.abs(), df);
    if tail <= 0.0 {
        return f64::INFINITY;
    }
    normal_isf(tail.min(0.5))
}

/// How an estimate is tested: fixed horizon (one planned look) or sequentially (always valid).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    FixedHorizon,
    /// `tau2`: the variance of the normal mixture over the alternative (`crate::sequential`).
    Sequential {
        tau2: f64,
    },
}

impl Test {
    /// The two-sided p-value of `θ = theta0` for an estimate `est` of variance `v` with `df`
    /// degrees of freedom.
    pub fn p_value(self, est: f64, v: f64, df: f64, theta0: f64) -> f64 {
        if v <= 0.0 {
            return if est == theta0 { 1.0 } else { 0.0 };
        }
        let t = (est - theta0) / v.sqrt();
        match self {
            Test::FixedHorizon => (2.0 * student_t_sf(t.abs(), df)).min(1.0),
            Test::Sequential { tau2 } => {
                let z = normal_equivalent(t, df);
                if !z.is_finite() {
                    return 0.0;
                }
                sequential::p_value(z * v.sqrt() + theta0, v, tau2, theta0)
            }
        }
    }

    /// The half-width of the (1 − alpha) confidence interval (fixed horizon) or confidence
    /// sequence (sequential).
    pub fn half_width(self, v: f64, df: f64, alpha: f64) -> f64 {
        if v <= 0.0 {
            return 0.0;
        }
        let tail = match self {
            Test::FixedHorizon => alpha / 2.0,
            Test::Sequential { tau2 } => {
                normal_sf(sequential::half_width(v, tau2, alpha) / v.sqrt())
            }
        };
        student_t_isf(tail, df) * v.sqrt()
    }
}

/// A comparison of a variant with control from replicate totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Robust {
    pub comparison: Comparison,
    pub difference: Difference,
    pub test: Test,
}

impl Robust {
    /// The p-value of "no worse than `margin` above control" (1 unless the estimate is above).
    pub fn p_above(&self, margin: f64) -> f64 {
        let d = &self.difference;
        if d.diff <= margin {
            return 1.0;
        }
        self.test.p_value(d.diff, d.variance, d.df, margin)
    }

    /// P(the variant's value is below control's): the t posterior of the difference under a
    /// flat prior (reported, never decided on).
    pub fn prob_lower(&self) -> f64 {
        let d = &self.difference;
        if d.variance <= 0.0 {
            return if d.diff < 0.0 { 1.0 } else { 0.0 };
        }
        student_t_sf(d.diff / d.variance.sqrt(), d.df)
    }
}

/// Compares two ratio estimates with the given test at level `alpha`.
pub fn compare(variant: Ratio, control: Ratio, test: Test, alpha: f64) -> Robust {
    let d = difference(variant, control);
    let half = test.half_width(d.variance, d.df, alpha);
    Robust {
        comparison: Comparison {
            control: d.control,
            variant: d.variant,
            diff: d.diff,
            ci_low: d.diff - half,
            ci_high: d.diff + half,
            p_value: test.p_value(d.diff, d.variance, d.df, 0.0),
            relative: (d.control != 0.0).then(|| d.diff / d.control),
        },
        difference: d,
        test,
    }
}

/// The sequential traffic-share test is most sensitive to share deviations of this many
/// per-request standard deviations of the indicator `√(π (1 − π))`: 0.01 share points for an
/// even split.
pub const SHARE_MIXING: f64 = 0.02;

/// One variant's share of the requests against its configured share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    pub expected: f64,
    pub observed: f64,
    pub variance: f64,
    pub df: f64,
    pub p_value: f64,
}

/// The traffic-share test: `counts[v][r]` requests of variant `v` in replicate `r` against the
/// configured `shares` (variants with no share are left out). For each variant the one-sample
/// t statistic of `d_r = n_{v,r} − π_v N_r` (zero in expectation when the split is right),
/// with `R − 1` degrees of freedom; several variants are combined by Bonferroni (two
/// variants are one test). Returns the per-variant tests (in the order of `counts`, `None`
/// for those left out) and the combined p-value; `None` without two variants and two
/// non-empty replicates.
pub fn traffic_share(
    counts: &[Vec<f64>],
    shares: &[f64],
    sequential: bool,
) -> Option<(Vec<Option<Share>>, f64)> {
    let share_total: f64 = shares.iter().filter(|s| **s > 0.0).sum();
    let kept = shares.iter().filter(|s| **s > 0.0).count();
    let replicates = counts.iter().map(Vec::len).max().unwrap_or(0);
    let totals: Vec<f64> = (0..replicates)
        .map(|r| {
            counts
                .iter()
                .map(|c| c.get(r).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let live: Vec<usize> = (0..replicates).filter(|&r| totals[r] > 0.0).collect();
    if kept < 2 || live.len() < 2 || share_total <= 0.0 {
        return None;
    }
    let n_total: f64 = live.iter().map(|&r| totals[r]).sum();
    let r_f = live.len() as f64;
    let df = r_f - 1.0;
    let mut out = Vec::with_capacity(counts.len());
    let mut best: f64 = 1.0;
    for (c, s) in counts.iter().zip(shares) {
        if *s <= 0.0 {
            out.push(None);
            continue;
        }
        let pi = s / share_total;
        let d: Vec<f64> = live
            .iter()
            .map(|&r| c.get(r).copied().unwrap_or(0.0) - pi * totals[r])
            .collect();
        let mean = d.iter().sum::<f64>() / r_f;
        let s2 = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / df;
        let observed = pi + mean * r_f / n_total;
        // θ̂ = d̄ / N̄ and V = s² / (R N̄²): t = θ̂ / √V is the one-sample t of the d_r.
        let variance = s2 * r_f / (n_total * n_total);
        let test = if sequential {
            let tau = SHARE_MIXING * (pi * (1.0 - pi)).sqrt();
            Test::Sequential { tau2: tau * tau }
        } else {
            Test::FixedHorizon
        };
        let p = test.p_value(observed, variance, df, pi);
        best = best.min(p);
        out.push(Some(Share {
            expected: pi,
            observed,
            variance,
            df,
            p_value: p,
        }));
    }
    let combined = if kept == 2 {
        best
    } else {
        (best * kept as f64).min(1.0)
    };
    Some((out, combined))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn a_ratio_over_replicates_has_the_delta_method_variance() {
        // By hand: θ = 6/40 = 0.15, residuals -0.5, 1.5, -1: Σ² = 3.5;
        // V = 3/2 · 3.5 / 1600 = 0.00328125.
        let r = ratio(&[1.0, 3.0, 2.0], &[10.0, 10.0, 20.0]).unwrap();
        assert!(close(r.variance, 1.5 * 3.5 / 1600.0, 1e-12), "{r:?}");
        // An empty replicate is left out, and one replicate is not enough.
        assert_eq!(
            ratio(&[1.0, 3.0, 2.0, 0.0], &[10.0, 10.0, 20.0, 0.0]),
            Some(r)
        );
        assert_eq!(ratio(&[1.0, 0.0], &[10.0, 0.0]), None);
    }

    #[test]
    fn equal_arms_have_no_difference_and_a_p_value_of_one() {
        let a = ratio(&[1.0, 3.0, 2.0], &[10.0, 10.0, 20.0]).unwrap();
        for test in [Test::FixedHorizon, Test::Sequential { tau2: 1e-4 }] {
            let c = compare(a, a, test, 0.05);
            assert_eq!(c.comparison.diff, 0.0);
            assert_eq!(c.comparison.p_value, 1.0);
            assert_eq!(c.p_above(0.0), 1.0);
            assert!(c.comparison.ci_low < 0.0 && c.comparison.ci_high > 0.0);
        }
    }

    #[test]
    fn the_normal_equivalent_of_a_t_statistic_has_the_same_tail() {
        let z = normal_equivalent(2.5, 10.0);
        assert!(close(normal_sf(z), student_t_sf(2.5, 10.0), 1e-10));
        assert!(z < 2.5);
        assert!(close(normal_equivalent(2.5, 1e7), 2.5, 1e-5));
    }

    #[test]
    fn a_correct_split_of_heavy_users_is_no_mismatch_and_a_wrong_one_is() {
        // Replicate totals vary a lot (heavy users), but each variant holds half of each.
        let a = vec![500.0, 90.0, 2100.0, 40.0, 300.0, 800.0];
        let b = vec![480.0, 110.0, 1900.0, 70.0, 280.0, 850.0];
        let (_, p) = traffic_share(&[a.clone(), b.clone()], &[1.0, 1.0], false).unwrap();
        assert!(p > 0.5, "{p}");
        let b2: Vec<f64> = b.iter().map(|x| x * 1.3).collect();
        let (tests, p) = traffic_share(&[a, b2], &[1.0, 1.0], false).unwrap();
        assert!(p < 0.05, "{p} {tests:?}");
        assert!(close(
            tests[0].unwrap().p_value,
            tests[1].unwrap().p_value,
            1e-9
        ));
    }
}
