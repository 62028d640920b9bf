//! The statistics of `abmesh analyze`, from per-variant sums over units ([`Sums`]): exact
//! unit-count SRM, and per metric and variant the difference against control and the relative
//! lift, each with its interval — always-valid (a confidence sequence, as guard's) by default,
//! or for one planned look — and Holm's adjustment over every metric and variant of the run.
//! Every variance is over units, the randomization unit: a heavy user is one observation.

use abmesh::Config;

use super::collect::Sums;
use super::goal::Goal;
use crate::sequential::{half_width, holm, p_value};
use crate::stats::{beta_inc, ln_gamma, normal_isf, normal_sf};

/// How intervals and p-values are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub alpha: f64,
    /// `None`: one planned look (fixed horizon); `Some(m)`: always-valid, mixing `m`.
    pub mixing: Option<f64>,
    /// Adjust per-unit means by each unit's requests before its first exposure (CUPED).
    pub cuped: bool,
}

/// What a metric is made of, in the sums' values.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// The mean over units of value `i`.
    Mean(usize),
    /// `Σ value i / Σ value j` over units (a per-request rate: the delta method's variance).
    Ratio(usize, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub kind: Kind,
    /// Shown in percent (a rate) rather than as a number.
    pub percent: bool,
}

/// The metrics of a run: per goal its conversion and its count per unit, then requests per
/// unit, the 5xx ratio and the mean duration per request.
pub fn metrics(goals: &[Goal]) -> Vec<Metric> {
    let g = goals.len();
    let mut out = Vec::new();
    for (i, goal) in goals.iter().enumerate() {
        out.push(Metric {
            name: format!("{} conversion", goal.name),
            kind: Kind::Mean(i),
            percent: true,
        });
        out.push(Metric {
            name: format!("{} per unit", goal.name),
            kind: Kind::Mean(g + i),
            percent: false,
        });
    }
    out.push(Metric {
        name: "requests per unit".into(),
        kind: Kind::Mean(2 * g),
        percent: false,
    });
    out.push(Metric {
        name: "5xx per request".into(),
        kind: Kind::Ratio(2 * g + 1, 2 * g),
        percent: true,
    });
    out.push(Metric {
        name: "duration per request (ms)".into(),
        kind: Kind::Ratio(2 * g + 2, 2 * g),
        percent: false,
    });
    out
}

/// One arm's estimate of a metric, its variance, and the per-unit variance behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub variance: f64,
    pub unit_variance: f64,
}

/// The estimate of `kind` from one arm's sums; `None` with fewer than two units (or no
/// denominator).
pub fn estimate(s: &Sums, kind: &Kind) -> Option<Estimate> {
    let n = s.units as f64;
    if s.units < 2 {
        return None;
    }
    let cov = |i: usize, j: usize| (s.product(i, j) - s.sum[i] * s.sum[j] / n) / (n - 1.0);
    match *kind {
        Kind::Mean(i) => {
            let var = cov(i, i).max(0.0);
            Some(Estimate {
                value: s.sum[i] / n,
                variance: var / n,
                unit_variance: var,
            })
        }
        Kind::Ratio(i, j) => {
            if s.sum[j] <= 0.0 {
                return None;
            }
            let r = s.sum[i] / s.sum[j];
            let mean_j = s.sum[j] / n;
            // Var(Y − R X) / x̄²: the ratio's linearisation per unit.
            let var = ((cov(i, i) - 2.0 * r * cov(i, j) + r * r * cov(j, j)) / (mean_j * mean_j))
                .max(0.0);
            Some(Estimate {
                value: r,
                variance: var / n,
                unit_variance: var,
            })
        }
    }
}

/// CUPED's coefficient for value `i` on covariate `x` over an experiment's arms — the pooled
/// within-arm slope, which is the ANCOVA coefficient — and the covariate's pooled mean. `None`
/// when the covariate does not vary (the log does not reach back before the exposures).
pub fn cuped_theta(arms: &[Sums], i: usize, x: usize) -> Option<(f64, f64)> {
    let (mut sxy, mut sxx, mut sx, mut n) = (0.0, 0.0, 0.0, 0.0);
    for s in arms.iter().filter(|s| s.units > 0) {
        let m = s.units as f64;
        sxy += s.product(i, x) - s.sum[i] * s.sum[x] / m;
        sxx += s.product(x, x) - s.sum[x] * s.sum[x] / m;
        sx += s.sum[x];
        n += m;
    }
    (sxx > 0.0).then(|| (sxy / sxx, sx / n))
}

/// The mean of value `i` adjusted by covariate `x`: `ȳ − θ (x̄ − x̄_pooled)`, with the variance
/// of `y − θ x` per unit.
pub fn adjusted_mean(s: &Sums, i: usize, x: usize, theta: f64, x_pooled: f64) -> Option<Estimate> {
    if s.units < 2 {
        return None;
    }
    let n = s.units as f64;
    let cov = |a: usize, b: usize| (s.product(a, b) - s.sum[a] * s.sum[b] / n) / (n - 1.0);
    let var = (cov(i, i) - 2.0 * theta * cov(i, x) + theta * theta * cov(x, x)).max(0.0);
    Some(Estimate {
        value: s.sum[i] / n - theta * (s.sum[x] / n - x_pooled),
        variance: var / n,
        unit_variance: var,
    })
}

/// A variant against control on one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    pub control: f64,
    pub variant: f64,
    pub diff: f64,
    pub diff_low: f64,
    pub diff_high: f64,
    /// `diff / control` and its interval; `None` when control is 0.
    pub lift: Option<(f64, f64, f64)>,
    pub p_value: f64,
    /// Holm-adjusted over every metric and variant of the run.
    pub adjusted: f64,
    /// CUPED's coefficient, when the comparison was adjusted.
    pub cuped_theta: Option<f64>,
}

/// `variant − control` with its interval and p-value.
pub fn effect(v: Estimate, c: Estimate, o: &Options, n_v: f64, n_c: f64) -> Effect {
    let diff = v.value - c.value;
    let var = v.variance + c.variance;
    let (half, p) = match o.mixing {
        Some(m) => {
            let pooled =
                ((n_v - 1.0) * v.unit_variance + (n_c - 1.0) * c.unit_variance) / (n_v + n_c - 2.0);
            let tau2 = m * m * pooled;
            (
                half_width(var, tau2, o.alpha),
                p_value(diff, var, tau2, 0.0),
            )
        }
        None => {
            let z = normal_isf(o.alpha / 2.0);
            let p = if var > 0.0 {
                (2.0 * normal_sf((diff / var.sqrt()).abs())).min(1.0)
            } else {
                f64::from(u8::from(diff == 0.0))
            };
            (z * var.sqrt(), p)
        }
    };
    // The lift's variance by the delta method; the same interval construction scaled by control.
    let lift = (c.value != 0.0).then(|| {
        let lift = diff / c.value;
        let var_l =
            v.variance / (c.value * c.value) + v.value * v.value * c.variance / c.value.powi(4);
        let half_l = match o.mixing {
            Some(m) => {
                let pooled = ((n_v - 1.0) * v.unit_variance + (n_c - 1.0) * c.unit_variance)
                    / (n_v + n_c - 2.0);
                half_width(var_l, m * m * pooled / (c.value * c.value), o.alpha)
            }
            None => normal_isf(o.alpha / 2.0) * var_l.sqrt(),
        };
        (lift, lift - half_l, lift + half_l)
    });
    Effect {
        control: c.value,
        variant: v.value,
        diff,
        diff_low: diff - half,
        diff_high: diff + half,
        lift,
        p_value: p,
        adjusted: p,
        cuped_theta: None,
    }
}

/// `P(X = k)` for `X ~ Binomial(n, p)`.
fn binom_pmf(k: f64, n: f64, p: f64) -> f64 {
    if p <= 0.0 {
        return f64::from(u8::from(k == 0.0));
    }
    if p >= 1.0 {
        return f64::from(u8::from(k == n));
    }
    (ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
        + k * p.ln()
        + (n - k) * (1.0 - p).ln())
    .exp()
}

/// `P(X ≤ k)`.
fn binom_cdf(k: f64, n: f64, p: f64) -> f64 {
    if k < 0.0 {
        return 0.0;
    }
    if k >= n {
        return 1.0;
    }
    beta_inc(n - k, k + 1.0, 1.0 - p)
}

/// `P(X > k)`.
fn binom_sf(k: f64, n: f64, p: f64) -> f64 {
    1.0 - binom_cdf(k, n, p)
}

/// The exact two-sided binomial test of `k` successes in `n` at rate `p`: the probability of
/// every outcome no more likely than `k` (SciPy's `binomtest`, the same rule and tolerance).
pub fn binom_test(k: u64, n: u64, p: f64) -> f64 {
    let (kf, nf) = (k as f64, n as f64);
    if n == 0 {
        return 1.0;
    }
    let d = binom_pmf(kf, nf, p);
    let rerr = 1.0 + 1e-7;
    let mean = p * nf;
    if kf == mean {
        return 1.0;
    }
    // The last outcome on the other side of the mean whose probability is at most d.
    let search = |f: &dyn Fn(f64) -> f64, target: f64, mut lo: f64, mut hi: f64| -> f64 {
        let mut steps = 0;
        while lo < hi && steps < 200 {
            steps += 1;
            let mid = lo + ((hi - lo) / 2.0).floor();
            let v = f(mid);
            if v < target {
                lo = mid + 1.0;
            } else if v > target {
                hi = mid - 1.0;
            } else {
                return mid;
            }
        }
        if f(lo) <= target {
            lo
        } else {
            lo - 1.0
        }
    };
    let pval = if kf < mean {
        let ix = search(&|x| -binom_pmf(x, nf, p), -d * rerr, mean.ceil(), nf);
        let y = nf - ix + f64::from(u8::from(d * rerr == binom_pmf(ix, nf, p)));
        binom_cdf(kf, nf, p) + binom_sf(nf - y, nf, p)
    } else {
        let ix = search(&|x| binom_pmf(x, nf, p), d * rerr, 0.0, mean.floor());
        let y = ix + 1.0;
        binom_cdf(y - 1.0, nf, p) + binom_sf(kf - 1.0, nf, p)
    };
    pval.clamp(0.0, 1.0)
}

/// Unit-count SRM of one experiment: exact binomial tests of each variant's units against its
/// configured share (one test for two variants; with more, the smallest p-value times their
/// number, Bonferroni). `None` without units.
pub fn srm(units: &[u64], shares: &[f64]) -> Option<f64> {
    let n: u64 = units.iter().sum();
    if n == 0 {
        return None;
    }
    let tests: Vec<f64> = units
        .iter()
        .zip(shares)
        .map(|(&k, &s)| binom_test(k, n, s))
        .collect();
    if tests.len() == 2 {
        return Some(tests[0]);
    }
    let min = tests.iter().copied().fold(1.0, f64::min);
    Some((min * tests.len() as f64).min(1.0))
}

#[derive(Debug, Clone)]
pub struct VariantResult {
    pub name: String,
    /// The sums over the variant's units the figures come from.
    pub sums: Sums,
    pub units: u64,
    pub expected_share: f64,
    /// Per metric, against control (`None` for control itself or without enough units).
    pub effects: Vec<Option<Effect>>,
    /// Per metric, the variant's own estimate.
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone)]
pub struct ExperimentResult {
    pub key: String,
    pub unit: String,
    pub srm_p: Option<f64>,
    pub variants: Vec<VariantResult>,
    /// Per day of first exposure (UTC), cumulative: empty for `--aggregates`, which has no days.
    pub timeline: Vec<Point>,
}

/// The experiment as it stood at the end of a day: the units first exposed by then (each with
/// everything it did in the log), and per variant and metric the effect against control.
/// Sequential intervals are valid however often they are looked at; they are not adjusted
/// for the number of comparisons (the final report's p-values are).
#[derive(Debug, Clone)]
pub struct Point {
    /// Days since the epoch.
    pub day: i64,
    /// Units per variant.
    pub units: Vec<u64>,
    /// `[variant][metric]`, `None` for control.
    pub effects: Vec<Vec<Option<Effect>>>,
}

/// Per metric, variant `v` of `arms` against control (`arms[0]`); CUPED where asked for.
fn effects(
    arms: &[Sums],
    v: usize,
    metrics: &[Metric],
    covariate: usize,
    o: &Options,
) -> Vec<Option<Effect>> {
    let s = &arms[v];
    metrics
        .iter()
        .map(|m| {
            if v == 0 {
                return None;
            }
            let adjust = match m.kind {
                Kind::Mean(i) if o.cuped && i != covariate => {
                    cuped_theta(arms, i, covariate).map(|t| (i, t))
                }
                _ => None,
            };
            let (ev, ec) = match adjust {
                Some((i, (theta, x))) => (
                    adjusted_mean(s, i, covariate, theta, x)?,
                    adjusted_mean(&arms[0], i, covariate, theta, x)?,
                ),
                None => (estimate(s, &m.kind)?, estimate(&arms[0], &m.kind)?),
            };
            let mut x = effect(ev, ec, o, s.units as f64, arms[0].units as f64);
            x.cuped_theta = adjust.map(|(_, (theta, _))| theta);
            Some(x)
        })
        .collect()
}

/// SRM is flagged below this p-value, as guard flags it.
pub const SRM_ALPHA: f64 = 0.001;

/// Every experiment with exposed units, judged.
pub fn judge(
    config: &Config,
    goals: &[Goal],
    sums: &[Vec<Sums>],
    daily: &[std::collections::BTreeMap<i64, Vec<Sums>>],
    o: &Options,
) -> (Vec<Metric>, Vec<ExperimentResult>) {
    let metrics = metrics(goals);
    // The covariate: requests before the first exposure, the last of the per-unit values.
    let covariate = super::collect::value_names(goals).len() - 1;
    let mut out = Vec::new();
    for (e, x) in config.experiments.iter().enumerate() {
        let arms = &sums[e];
        if arms.iter().all(|s| s.units == 0) {
            continue;
        }
        let widths: Vec<f64> = x
            .variants
            .iter()
            .map(|v| f64::from(v.range.1 - v.range.0))
            .collect();
        let total: f64 = widths.iter().sum();
        let shares: Vec<f64> = widths
            .iter()
            .map(|w| if total > 0.0 { w / total } else { 0.0 })
            .collect();
        let units: Vec<u64> = arms.iter().map(|s| s.units).collect();
        let mut variants = Vec::new();
        for (v, s) in arms.iter().enumerate() {
            let values = metrics
                .iter()
                .map(|m| estimate(s, &m.kind).map(|x| x.value))
                .collect();
            variants.push(VariantResult {
                name: x.variants[v].name.clone(),
                sums: s.clone(),
                units: s.units,
                expected_share: shares[v],
                effects: effects(arms, v, &metrics, covariate, o),
                values,
            });
        }
        // Day by day, the units first exposed by the end of the day, each with all it did.
        let mut timeline = Vec::new();
        let mut cumulative: Vec<Sums> = arms.iter().map(|s| Sums::new(s.sum.len())).collect();
        for (day, arms_of_day) in &daily[e] {
            for (c, d) in cumulative.iter_mut().zip(arms_of_day) {
                c.merge(d);
            }
            timeline.push(Point {
                day: *day,
                units: cumulative.iter().map(|s| s.units).collect(),
                effects: (0..cumulative.len())
                    .map(|v| effects(&cumulative, v, &metrics, covariate, o))
                    .collect(),
            });
        }
        out.push(ExperimentResult {
            key: x.key.clone(),
            unit: config.units[x.unit].name.clone(),
            srm_p: srm(&units, &shares),
            variants,
            timeline,
        });
    }
    // Holm over every comparison of the run.
    let mut all: Vec<&mut Effect> = out
        .iter_mut()
        .flat_map(|e| e.variants.iter_mut())
        .flat_map(|v| v.effects.iter_mut().flatten())
        .collect();
    let adjusted = holm(&all.iter().map(|e| e.p_value).collect::<Vec<_>>());
    for (e, a) in all.iter_mut().zip(adjusted) {
        e.adjusted = a;
    }
    (metrics, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_binomial_test_agrees_with_scipy() {
        // scipy.stats.binomtest(k, n, p).pvalue, SciPy 1.17.
        for (k, n, p, want) in [
            (7u64, 20u64, 0.5, 0.26317596435546875),
            (480, 1000, 0.5, 0.2174482932041415),
            (0, 10, 0.3, 0.0388396033),
            (60, 100, 0.5, 0.05688793364098089),
            (4950, 10000, 0.5, 0.32217419979531087),
            (30, 100, 0.25, 0.24907145667188746),
            (2600, 5000, 0.5, 0.004883649737517494),
        ] {
            let got = binom_test(k, n, p);
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "{k}/{n} at {p}: {got} vs {want}"
            );
        }
    }
}
