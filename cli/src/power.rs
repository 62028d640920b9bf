//! The sample size behind `abmesh plan`: how many units an experiment needs, and for how long.
//!
//! Fixed horizon (one planned look), per variant, for a two-sided test at `α'`:
//! - proportions: `n = ((z(α'/2) · sqrt(2 p̄ q̄) + z(β) · sqrt(p₁q₁ + p₀q₀)) / δ)²` with the
//!   pooled rate `p̄` under the null and the unpooled variance under the alternative (as
//!   statsmodels' `samplesize_proportions_2indep_onetail` and R's `power.prop.test`);
//! - means: `n = 2 ((z(α'/2) + z(β)) σ / δ)²`.
//!
//! Several variants are each compared with control: `α' = α / (variants − 1)` (Bonferroni,
//! conservative; `abmesh guard` adjusts with Holm, which is never less powerful).
//!
//! Sequential monitoring (`abmesh guard`'s default, always valid however often it looks) needs
//! more: the smallest `n` at which the mSPRT's rejection boundary (`crate::sequential`, with the
//! same mixing) is crossed with the planned power by the look at `n` alone — a conservative
//! figure, since earlier looks can only add detections.

use crate::sequential::half_width;
use crate::stats::{normal_isf, normal_sf};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A rate (conversion, error ratio) with its baseline.
    Proportion { baseline: f64 },
    /// A mean (latency, revenue) with the per-unit standard deviation.
    Mean { sd: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// In the metric's units (0.02 = two percentage points for a rate).
    Absolute(f64),
    /// A fraction of the baseline (0.1 = +10%); proportions only.
    Relative(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Input {
    pub metric: Metric,
    pub effect: Effect,
    pub alpha: f64,
    pub power: f64,
    pub variants: usize,
    pub mixing: f64,
    pub daily_units: Option<f64>,
    pub traffic_percent: f64,
    /// For a per-request metric (the 5xx ratio, mean latency): how many requests a unit sends
    /// and the design effect of their clustering. `None`: the metric is per unit (one
    /// observation a unit, such as a conversion).
    pub per_request: Option<PerRequest>,
}

impl Input {
    /// `effect` on `metric` with `abmesh plan`'s defaults: α 0.05, power 0.8, two variants,
    /// guard's mixing, all traffic, a per-unit metric, no duration.
    pub fn new(metric: Metric, effect: Effect) -> Input {
        Input {
            metric,
            effect,
            alpha: 0.05,
            power: 0.8,
            variants: 2,
            mixing: crate::sequential::DEFAULT_MIXING,
            daily_units: None,
            traffic_percent: 100.0,
            per_request: None,
        }
    }
}

/// A per-request metric of units that each send several requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerRequest {
    /// Mean requests per unit.
    pub requests_per_unit: f64,
    /// The variance of the metric's estimate over the variance it would have if requests were
    /// independent (1 + (m − 1) ρ for m requests of intra-unit correlation ρ); `abmesh guard`
    /// reports the one it measures from the replicates as `design_effect`.
    pub design_effect: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSize {
    /// The effect in the metric's units.
    pub delta: f64,
    pub comparisons: usize,
    pub alpha_per_comparison: f64,
    /// Units per variant, unrounded.
    pub n_fixed: f64,
    pub n_sequential: f64,
    /// Days until every variant has its units, if the daily units are known.
    pub days_fixed: Option<f64>,
    pub days_sequential: Option<f64>,
}

impl SampleSize {
    pub fn per_variant_fixed(&self) -> u64 {
        self.n_fixed.ceil() as u64
    }
    pub fn per_variant_sequential(&self) -> u64 {
        self.n_sequential.ceil() as u64
    }
    pub fn inflation(&self) -> f64 {
        self.n_sequential / self.n_fixed
    }
}

/// The variances the tests use at `n` units per variant: (under no difference, under the
/// effect), and the mixing variance τ².
fn variances(metric: Metric, delta: f64, mixing: f64, n: f64) -> (f64, f64, f64) {
    match metric {
        Metric::Proportion { baseline } => {
            let p1 = baseline + delta;
            let pooled = (baseline + p1) / 2.0;
            let sigma2 = pooled * (1.0 - pooled);
            (
                2.0 * sigma2 / n,
                (p1 * (1.0 - p1) + baseline * (1.0 - baseline)) / n,
                mixing * mixing * sigma2,
            )
        }
        Metric::Mean { sd } => (
            2.0 * sd * sd / n,
            2.0 * sd * sd / n,
            mixing * mixing * sd * sd,
        ),
    }
}

/// The probability that the mSPRT at level `alpha` rejects at the look with `n` per variant.
pub fn sequential_power(metric: Metric, delta: f64, alpha: f64, mixing: f64, n: f64) -> f64 {
    let (v0, v1, tau2) = variances(metric, delta, mixing, n);
    normal_sf((half_width(v0, tau2, alpha) - delta.abs()) / v1.sqrt())
}

/// A number as a message names it: as typed for ordinary magnitudes, in scientific notation
/// where the decimal form would run to hundreds of digits.
fn shown(x: f64) -> String {
    let plain = x.to_string();
    if plain.len() <= 24 {
        plain
    } else {
        format!("{x:e}")
    }
}

/// The largest float below which every whole number is exact (2^53).
const MAX_WHOLE: f64 = 9_007_199_254_740_992.0;

/// The minimum detectable effect in the metric's units, when every input is in its range and
/// they fit together; else what is wrong with them (a usage error: `plan` exits 2).
pub fn check_input(input: &Input) -> Result<f64, String> {
    let Input {
        metric,
        effect,
        alpha,
        power,
        variants,
        mixing,
        daily_units,
        traffic_percent,
        per_request,
    } = *input;
    if let Some(r) = per_request {
        if !(r.requests_per_unit >= 1.0 && r.requests_per_unit.is_finite()) {
            return Err(format!(
                "requests per unit must be at least 1, found {}",
                r.requests_per_unit
            ));
        }
        if !(r.design_effect >= 1.0 && r.design_effect.is_finite()) {
            return Err(format!(
                "the design effect must be at least 1, found {}",
                r.design_effect
            ));
        }
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(format!(
            "alpha must be between 0 and 1, found {}",
            shown(alpha)
        ));
    }
    if !(power > 0.0 && power < 1.0) {
        return Err(format!(
            "power must be between 0 and 1, found {}",
            shown(power)
        ));
    }
    if variants < 2 {
        return Err(format!(
            "an experiment needs at least 2 variants (control and one more), found {variants}"
        ));
    }
    if variants > abmesh::config::MAX_VARIANTS {
        return Err(format!(
            "an experiment has at most {} variants, found {variants}",
            abmesh::config::MAX_VARIANTS
        ));
    }
    // The mixing scale is in standard deviations of the effect: beyond 10 the confidence
    // sequence is wider than any effect worth planning for.
    if !(mixing > 0.0 && mixing <= 10.0) {
        return Err(format!(
            "mixing must be above 0 and at most 10 (standard deviations), found {}",
            shown(mixing)
        ));
    }
    if !(traffic_percent > 0.0 && traffic_percent <= 100.0) {
        return Err(format!(
            "traffic percent must be above 0 and at most 100, found {}",
            shown(traffic_percent)
        ));
    }
    if daily_units.is_some_and(|d| d.is_nan() || d <= 0.0) {
        return Err("daily units must be a positive number".into());
    }
    let delta = match (metric, effect) {
        (_, Effect::Absolute(d)) => d,
        (Metric::Proportion { baseline }, Effect::Relative(r)) => baseline * r,
        (Metric::Mean { .. }, Effect::Relative(_)) => {
            return Err(
                "a relative effect needs a baseline rate; give a mean's effect in its units".into(),
            )
        }
    };
    if delta == 0.0 || !delta.is_finite() {
        return Err("the minimum detectable effect must not be zero".into());
    }
    match metric {
        Metric::Proportion { baseline } => {
            if !(baseline > 0.0 && baseline < 1.0) {
                return Err(format!(
                    "the baseline rate must be between 0 and 1, found {}",
                    shown(baseline)
                ));
            }
            let p1 = baseline + delta;
            if !(p1 > 0.0 && p1 < 1.0) {
                return Err(format!(
                    "baseline {} plus the effect {} is {}, outside 0 to 1",
                    shown(baseline),
                    shown(delta),
                    shown(p1)
                ));
            }
        }
        Metric::Mean { sd } => {
            if !(sd > 0.0 && sd.is_finite()) {
                return Err(format!(
                    "the standard deviation must be positive, found {}",
                    shown(sd)
                ));
            }
            // One unit per arm detects an effect of a few standard deviations already; past
            // 100 the arithmetic, not the plan, would be what the answer measures.
            if delta.abs() / sd > 100.0 {
                return Err(format!(
                "the effect {} is more than 100 standard deviations ({}): no experiment is needed to see it"
                , shown(delta), shown(sd)));
            }
        }
    }
    Ok(delta)
}

/// The sample size of `input`: an error names a bad input ([`check_input`]) or a plan no
/// sample size can meet (an effect too small to plan for).
pub fn sample_size(input: &Input) -> Result<SampleSize, String> {
    let delta = check_input(input)?;
    let Input {
        metric,
        alpha,
        power,
        variants,
        mixing,
        daily_units,
        traffic_percent,
        per_request,
        ..
    } = *input;
    let comparisons = variants - 1;
    let a = alpha / comparisons as f64;
    let (z_a, z_b) = (normal_isf(a / 2.0), normal_isf(1.0 - power));
    let n_fixed = match metric {
        Metric::Proportion { baseline } => {
            let p1 = baseline + delta;
            let pooled = (baseline + p1) / 2.0;
            let std_null = (2.0 * pooled * (1.0 - pooled)).sqrt();
            let std_alt = (p1 * (1.0 - p1) + baseline * (1.0 - baseline)).sqrt();
            ((z_a * std_null + z_b * std_alt) / delta).powi(2)
        }
        Metric::Mean { sd } => 2.0 * ((z_a + z_b) * sd / delta).powi(2),
    };
    // Double until the look at n has the power, then bisect on whole units: the answer is the
    // smallest whole n whose look has the power (power grows with n).
    // Above 2^53 a float no longer holds every whole number, so the bisection below could not
    // narrow to one unit (it would spin for ever): such an effect is too small to plan for.
    let too_small = || {
        format!(
                "the effect {} is too small for this spread: the sample size would exceed 2^53 (9007199254740992) per variant"
        , shown(delta))
    };
    if n_fixed.is_nan() || n_fixed > MAX_WHOLE {
        return Err(too_small());
    }
    let reaches = |n: f64| sequential_power(metric, delta, a, mixing, n) >= power;
    let mut hi = n_fixed.max(2.0).ceil();
    let mut steps = 0;
    while !reaches(hi) {
        hi *= 2.0;
        steps += 1;
        if hi > MAX_WHOLE {
            return Err(too_small());
        }
        if steps > 60 {
            return Err("no sample size reaches that power".into());
        }
    }
    // A whole n known to fall short: the previous doubling, or just below the first guess.
    let mut lo = if steps == 0 { hi - 1.0 } else { hi / 2.0 };
    // Each step halves the gap, so 64 steps cover any gap below 2^53; the bound is a guard.
    for _ in 0..64 {
        if hi - lo <= 1.0 {
            break;
        }
        let mid = ((lo + hi) / 2.0).floor();
        if mid <= lo || mid >= hi {
            break;
        }
        if reaches(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let n_sequential = hi.max(n_fixed);
    // The sizes above count independent observations. Clustered requests are worth fewer:
    // a unit's m requests count as m / design effect, for the test's variance and for the
    // mixing alike (both scale with the per-request variance), so units = n · D / m.
    let (n_fixed, n_sequential) = match per_request {
        None => (n_fixed, n_sequential),
        Some(r) => {
            let to_units = |n: f64| (n * r.design_effect / r.requests_per_unit).ceil();
            (
                to_units(n_fixed),
                to_units(n_sequential).max(to_units(n_fixed)),
            )
        }
    };
    let days = |n: f64| {
        daily_units.map(|d| (n.ceil() * variants as f64 / (traffic_percent / 100.0) / d).ceil())
    };
    Ok(SampleSize {
        delta,
        comparisons,
        alpha_per_comparison: a,
        n_fixed,
        n_sequential,
        days_fixed: days(n_fixed),
        days_sequential: days(n_sequential),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(metric: Metric, effect: Effect, alpha: f64, power: f64) -> Input {
        Input {
            alpha,
            power,
            ..Input::new(metric, effect)
        }
    }

    // statsmodels 0.15.0, statsmodels.stats.proportion.samplesize_proportions_2indep_onetail(
    //   diff, prop2, power, alpha=alpha) and statsmodels.stats.power.NormalIndPower().solve_power(
    //   effect_size=delta/sd, alpha=alpha, power=power, ratio=1). Recomputed by
    //   tests/reference/recorded_values.py; tests/reference/plan_check.py compares the CLI
    //   with statsmodels over 180 more plans.
    #[test]
    fn fixed_horizon_sizes_match_statsmodels() {
        let p = |baseline, d, alpha, power| {
            sample_size(&input(
                Metric::Proportion { baseline },
                Effect::Absolute(d),
                alpha,
                power,
            ))
            .unwrap()
            .n_fixed
        };
        for (got, want) in [
            (p(0.05, 0.02, 0.05, 0.8), 2_212.204_782_367_206),
            (p(0.10, 0.01, 0.05, 0.9), 19_746.624_475_776_527),
            (p(0.02, 0.005, 0.025, 0.8), 16_722.814_716_941_502),
            (p(0.30, -0.03, 0.05, 0.8), 3_553.055_208_438_042),
        ] {
            assert!((got - want).abs() < 1e-6 * want, "{got} instead of {want}");
        }
        let m = |sd, d, alpha, power| {
            sample_size(&input(
                Metric::Mean { sd },
                Effect::Absolute(d),
                alpha,
                power,
            ))
            .unwrap()
            .n_fixed
        };
        // The closed form leaves out the far tail, which solve_power includes: < 0.001 units.
        assert!((m(10.0, 2.0, 0.05, 0.8) - 392.443_023_257_788_5).abs() < 0.01);
        assert!((m(40.0, 5.0, 0.025, 0.9) - 1_588.634_469_975_815_4).abs() < 0.01);
    }

    #[test]
    fn variants_split_alpha_and_duration_counts_every_variant_and_the_traffic() {
        let mut i = input(
            Metric::Proportion { baseline: 0.05 },
            Effect::Relative(0.4),
            0.05,
            0.8,
        );
        i.variants = 3;
        i.daily_units = Some(1_000.0);
        i.traffic_percent = 50.0;
        let p = sample_size(&i).unwrap();
        assert_eq!(p.comparisons, 2);
        assert!((p.alpha_per_comparison - 0.025).abs() < 1e-15);
        assert!((p.delta - 0.02).abs() < 1e-15);
        // statsmodels at alpha 0.025: samplesize_proportions_2indep_onetail(0.02, 0.05, 0.8,
        // alpha=0.025) = 2679.122574471982.
        assert!((p.n_fixed - 2_679.122_574_471_982).abs() < 1e-6);
        let n = p.per_variant_fixed() as f64;
        assert_eq!(p.days_fixed, Some((n * 3.0 / 0.5 / 1_000.0).ceil()));
        assert!(p.inflation() > 1.0 && p.days_sequential >= p.days_fixed);
        assert!(sequential_power(i.metric, p.delta, 0.025, 0.1, p.n_sequential) >= 0.8);
        assert!(sequential_power(i.metric, p.delta, 0.025, 0.1, p.n_sequential - 1.0) < 0.8);
    }

    #[test]
    fn a_size_past_two_to_the_53_is_refused_and_one_just_below_is_computed() {
        let mean = |sd: f64, delta: f64| {
            sample_size(&input(
                Metric::Mean { sd },
                Effect::Absolute(delta),
                0.05,
                0.8,
            ))
        };
        assert_eq!(
            mean(1.0, 1e-7).unwrap_err(),
            "the effect 0.0000001 is too small for this spread: the sample size would exceed 2^53 (9007199254740992) per variant"
        );
        // 2 (z_a + z_b)^2 sd^2 / delta^2 ≈ 15.7 / delta^2: about 1.6e13 at 1e-6, within range.
        let p = mean(1.0, 1e-7 * 10.0).unwrap();
        assert!(p.per_variant_fixed() > 1_000_000_000_000_000 / 1000);
        assert!(p.per_variant_sequential() >= p.per_variant_fixed());
    }

    #[test]
    fn impossible_plans_say_why() {
        let e = |i: Input| sample_size(&i).unwrap_err();
        assert_eq!(
            e(input(
                Metric::Proportion { baseline: 0.99 },
                Effect::Absolute(0.02),
                0.05,
                0.8
            )),
            "baseline 0.99 plus the effect 0.02 is 1.01, outside 0 to 1"
        );
        assert_eq!(
            e(input(
                Metric::Mean { sd: 10.0 },
                Effect::Relative(0.1),
                0.05,
                0.8
            )),
            "a relative effect needs a baseline rate; give a mean's effect in its units"
        );
        assert_eq!(
            e(input(
                Metric::Proportion { baseline: 0.1 },
                Effect::Absolute(0.0),
                0.05,
                0.8
            )),
            "the minimum detectable effect must not be zero"
        );
        assert_eq!(
            e(input(
                Metric::Proportion { baseline: 0.1 },
                Effect::Absolute(0.01),
                1.5,
                0.8
            )),
            "alpha must be between 0 and 1, found 1.5"
        );
    }
}
