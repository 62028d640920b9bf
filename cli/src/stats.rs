//! The statistics `abmesh guard` needs: chi-square, normal and Student t tail probabilities,
//! and the tests built on them. Native-only in practice (the filter never calls these).

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; about 15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the approximation in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s: f64 = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// Keeps a continued-fraction term away from zero (Lentz's method).
fn not_tiny(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    if x.abs() < TINY {
        TINY
    } else {
        x
    }
}

/// One step of the modified Lentz method for a continued fraction with terms a/(b + …):
/// returns the new `(c, d)` and the factor by which the running value changes.
fn lentz_step(c: f64, d: f64, a: f64, b: f64) -> (f64, f64, f64) {
    let d = 1.0 / not_tiny(b + a * d);
    let c = not_tiny(b + a / c);
    (c, d, c * d)
}

/// The regularized upper incomplete gamma function Q(a, x).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let prefix = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut sum, mut term, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..100_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * prefix).max(0.0)
    } else {
        // Lentz's continued fraction.
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / not_tiny(0.0);
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            let delta;
            (c, d, delta) = lentz_step(c, d, an, b);
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        prefix * h
    }
}

/// P(X ≥ x) for a chi-square variable with `df` degrees of freedom.
pub fn chi_square_sf(x: f64, df: f64) -> f64 {
    gamma_q(df / 2.0, x / 2.0)
}

/// P(Z ≥ z) for a standard normal variable.
pub fn normal_sf(z: f64) -> f64 {
    // erfc(t) = Q(1/2, t²) for t ≥ 0.
    let t = z / std::f64::consts::SQRT_2;
    if z >= 0.0 {
        0.5 * gamma_q(0.5, t * t)
    } else {
        1.0 - 0.5 * gamma_q(0.5, t * t)
    }
}

/// z such that P(Z ≥ z) = p, for 0 < p < 1: the rational approximation of Abramowitz and
/// Stegun 26.2.23 (error below 4.5e-4), then Newton steps on [`normal_sf`] to full precision.
pub fn normal_isf(p: f64) -> f64 {
    if p.is_nan() || p <= 0.0 {
        return f64::INFINITY;
    }
    if p >= 1.0 {
        return f64::NEG_INFINITY;
    }
    let q = p.min(1.0 - p);
    let t = (-2.0 * q.ln()).sqrt();
    let upper = t
        - (2.515_517 + 0.802_853 * t + 0.010_328 * t * t)
            / (1.0 + 1.432_788 * t + 0.189_269 * t * t + 0.001_308 * t * t * t);
    let mut z = if p <= 0.5 { upper } else { -upper };
    for _ in 0..4 {
        let density = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        if density <= 0.0 {
            break;
        }
        let step = (normal_sf(z) - p) / density;
        z += step;
        if step.abs() <= 1e-15 * z.abs().max(1.0) {
            break;
        }
    }
    z
}

/// The regularized incomplete beta function I_x(a, b).
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2).
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = not_tiny(d);
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        let even;
        (c, d, even) = lentz_step(c, d, aa, 1.0);
        h *= even;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        let delta;
        (c, d, delta) = lentz_step(c, d, aa, 1.0);
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// P(T ≥ t) for a Student t variable with `df` degrees of freedom.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * beta_inc(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// The t value with `P(T ≥ t) = p` (bisection; p in (0, 0.5]).
pub fn student_t_isf(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1e4);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if student_t_sf(mid, df) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// z for a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A difference of a variant against control, with its two-sided p-value and 95 % CI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub control: f64,
    pub variant: f64,
    pub diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    /// `diff / control`, `None` when control is 0.
    pub relative: Option<f64>,
}

/// Two-proportion z-test (pooled standard error for the test, unpooled for the interval).
pub fn two_proportion(
    x_variant: f64,
    n_variant: f64,
    x_control: f64,
    n_control: f64,
) -> Option<Comparison> {
    if n_variant <= 0.0 || n_control <= 0.0 {
        return None;
    }
    let (p1, p0) = (x_variant / n_variant, x_control / n_control);
    let pooled = (x_variant + x_control) / (n_variant + n_control);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / n_variant + 1.0 / n_control)).sqrt();
    let diff = p1 - p0;
    let p_value = if se_pooled > 0.0 {
        2.0 * normal_sf((diff / se_pooled).abs())
    } else {
        1.0
    };
    let se = (p1 * (1.0 - p1) / n_variant + p0 * (1.0 - p0) / n_control).sqrt();
    Some(Comparison {
        control: p0,
        variant: p1,
        diff,
        ci_low: diff - Z_95 * se,
        ci_high: diff + Z_95 * se,
        p_value: p_value.min(1.0),
        relative: (p0 > 0.0).then(|| diff / p0),
    })
}

/// Summary statistics of one sample: count, sum and sum of squares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub sum: f64,
    pub sum_squares: f64,
}

impl Moments {
    pub fn mean(&self) -> f64 {
        self.sum / self.n
    }

    /// The unbiased sample variance.
    pub fn variance(&self) -> f64 {
        ((self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1.0)).max(0.0)
    }
}

/// Welch's t-test of variant against control, with the 95 % CI of the difference of means.
pub fn welch(variant: Moments, control: Moments) -> Option<Comparison> {
    if variant.n < 2.0 || control.n < 2.0 {
        return None;
    }
    let (a, b) = (
        variant.variance() / variant.n,
        control.variance() / control.n,
    );
    let se = (a + b).sqrt();
    let diff = variant.mean() - control.mean();
    let (p_value, half) = if se > 0.0 {
        let df = (a + b).powi(2) / (a * a / (variant.n - 1.0) + b * b / (control.n - 1.0));
        (
            2.0 * student_t_sf((diff / se).abs(), df),
            student_t_isf(0.025, df) * se,
        )
    } else {
        (if diff == 0.0 { 1.0 } else { 0.0 }, 0.0)
    };
    Some(Comparison {
        control: control.mean(),
        variant: variant.mean(),
        diff,
        ci_low: diff - half,
        ci_high: diff + half,
        p_value: p_value.min(1.0),
        relative: (control.mean() != 0.0).then(|| diff / control.mean()),
    })
}

/// Pearson's chi-square goodness of fit: (statistic, degrees of freedom, p-value). Categories
/// with an expected share of zero are left out.
pub fn chi_square(observed: &[f64], expected_shares: &[f64]) -> Option<(f64, f64, f64)> {
    let total: f64 = observed.iter().sum();
    let share_total: f64 = expected_shares.iter().sum();
    if total <= 0.0 || share_total <= 0.0 {
        return None;
    }
    let mut stat = 0.0;
    let mut categories = 0.0;
    for (o, s) in observed.iter().zip(expected_shares) {
        if *s <= 0.0 {
            continue;
        }
        let e = total * s / share_total;
        stat += (o - e) * (o - e) / e;
        categories += 1.0;
    }
    let df = categories - 1.0;
    (df >= 1.0).then(|| (stat, df, chi_square_sf(stat, df)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    // Reference values computed with SciPy 1.17.1 (scipy.stats), the call given beside each.
    #[test]
    fn tail_probabilities_match_scipy() {
        assert!(close(
            chi_square_sf(10.0, 3.0),
            0.018_566_135_463_043_25,
            1e-9
        )); // chi2.sf(10, 3)
        assert!(close(normal_sf(1.5), 0.066_807_201_268_858_07, 1e-9)); // norm.sf(1.5)
        assert!(close(normal_sf(3.2), 0.000_687_137_937_915_847_1, 1e-9)); // norm.sf(3.2)
        assert!(close(normal_sf(-1.5), 1.0 - 0.066_807_201_268_858_07, 1e-9));
        assert!(close(normal_isf(0.025), 1.959_963_984_540_054_5, 1e-10)); // norm.isf(0.025)
        assert!(close(normal_isf(0.2), 0.841_621_233_572_914_2, 1e-10)); // norm.isf(0.2)
        assert!(close(normal_isf(1e-6), 4.753_424_308_822_899, 1e-10)); // norm.isf(1e-6)
        assert!(close(normal_isf(0.9), -1.281_551_565_544_600_4, 1e-10)); // norm.isf(0.9)
        assert!(close(
            student_t_sf(2.1, 7.5),
            0.035_618_535_729_039_044,
            1e-8
        )); // t.sf(2.1, 7.5)
        assert!(close(student_t_sf(0.4, 30.0), 0.345_995_258_257_096, 1e-8)); // t.sf(0.4, 30)
        assert!(close(
            student_t_sf(5.0, 3.0),
            0.007_696_219_036_651_147,
            1e-8
        )); // t.sf(5, 3)
        assert!(close(
            student_t_isf(0.025, 12.3),
            2.172_933_481_758_962,
            1e-7
        )); // t.ppf(0.975, 12.3)
        assert!(close(
            student_t_isf(0.025, 1000.0),
            1.962_339_080_826_408_3,
            1e-7
        )); // t.ppf(0.975, 1000)
    }

    #[test]
    fn tests_match_scipy() {
        // Pooled two-proportion z for 60/1000 against 40/1000: z = 2.0519567041703080,
        // p = 2 * norm.sf(z) = 0.04017387028851211.
        let c = two_proportion(60.0, 1000.0, 40.0, 1000.0).unwrap();
        assert!(close(c.p_value, 0.040_173_870_288_512_11, 1e-8), "{c:?}");
        assert!(close(c.diff, 0.02, 1e-12));
        assert!(close(c.relative.unwrap(), 0.5, 1e-12));
        // scipy.stats.ttest_ind_from_stats(12, 4, 50, 10, 3, 60, equal_var=False):
        // t = 2.917299829957891, p = 0.004464511106274792.
        let m = |n: f64, mean: f64, sd: f64| Moments {
            n,
            sum: n * mean,
            sum_squares: sd * sd * (n - 1.0) + n * mean * mean,
        };
        let w = welch(m(50.0, 12.0, 4.0), m(60.0, 10.0, 3.0)).unwrap();
        assert!(close(w.p_value, 0.004_464_511_106_274_792, 1e-7), "{w:?}");
        assert!(close(w.diff, 2.0, 1e-9));
        // scipy.stats.chisquare([5200, 4800], [5000, 5000]): statistic 16.0, p 6.334248366623988e-05.
        let (stat, df, p) = chi_square(&[5200.0, 4800.0], &[0.5, 0.5]).unwrap();
        assert!(close(stat, 16.0, 1e-12) && df == 1.0 && close(p, 6.334_248_366_623_988e-5, 1e-8));
    }
}
