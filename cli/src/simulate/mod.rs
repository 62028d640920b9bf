//! Monte-Carlo studies of `abmesh guard`'s statistics: simulated experiments examined at many
//! looks, with the same test functions guard uses. `cli/tests/simulation.rs` runs them small
//! enough for CI; `./build.sh simulate` runs them large and prints the table in the README.

pub mod clustered;

use crate::power::{sample_size, Input, Metric};
use crate::sequential::{self, srm_p_value};
use crate::stats::{chi_square, two_proportion, welch, Moments};

/// SplitMix64: small, fast, and the same sequence on every platform for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// The number of successes in `n` trials of probability `p`.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).map(|_| u64::from(self.uniform() < p)).sum()
    }
}

/// The share of simulated runs in which a test rejected at some look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rejections {
    pub sequential: f64,
    pub fixed_horizon: f64,
}

/// A/A experiments on a rate: both arms `rate`, `per_look` new units per arm between looks.
pub fn aa_proportions(
    runs: usize,
    looks: usize,
    per_look: u64,
    rate: f64,
    alpha: f64,
    mixing: f64,
    seed: u64,
) -> Rejections {
    let mut rng = Rng::new(seed);
    let (mut seq, mut fixed) = (0usize, 0usize);
    for _ in 0..runs {
        let (mut xa, mut xb, mut n) = (0.0, 0.0, 0.0);
        let (mut s, mut f) = (false, false);
        for _ in 0..looks {
            xa += rng.binomial(per_look, rate) as f64;
            xb += rng.binomial(per_look, rate) as f64;
            n += per_look as f64;
            s |= sequential::proportions(xb, n, xa, n, alpha, mixing)
                .is_some_and(|t| t.comparison.p_value < alpha);
            f |= two_proportion(xb, n, xa, n).is_some_and(|t| t.p_value < alpha);
        }
        seq += usize::from(s);
        fixed += usize::from(f);
    }
    Rejections {
        sequential: seq as f64 / runs as f64,
        fixed_horizon: fixed as f64 / runs as f64,
    }
}

/// A/A experiments on a mean: both arms normal with mean 100 and standard deviation 20.
pub fn aa_means(
    runs: usize,
    looks: usize,
    per_look: u64,
    alpha: f64,
    mixing: f64,
    seed: u64,
) -> Rejections {
    let mut rng = Rng::new(seed);
    let (mut seq, mut fixed) = (0usize, 0usize);
    let zero = Moments {
        n: 0.0,
        sum: 0.0,
        sum_squares: 0.0,
    };
    for _ in 0..runs {
        let (mut a, mut b) = (zero, zero);
        let (mut s, mut f) = (false, false);
        for _ in 0..looks {
            for m in [&mut a, &mut b] {
                for _ in 0..per_look {
                    let x = 100.0 + 20.0 * rng.normal();
                    m.n += 1.0;
                    m.sum += x;
                    m.sum_squares += x * x;
                }
            }
            s |= sequential::means(b, a, alpha, mixing)
                .is_some_and(|t| t.comparison.p_value < alpha);
            f |= welch(b, a).is_some_and(|t| t.p_value < alpha);
        }
        seq += usize::from(s);
        fixed += usize::from(f);
    }
    Rejections {
        sequential: seq as f64 / runs as f64,
        fixed_horizon: fixed as f64 / runs as f64,
    }
}

/// A correct 50/50 split, tested for sample ratio mismatch at every look.
pub fn aa_srm(runs: usize, looks: usize, per_look: u64, alpha: f64, seed: u64) -> Rejections {
    let mut rng = Rng::new(seed);
    let (mut seq, mut fixed) = (0usize, 0usize);
    for _ in 0..runs {
        let (mut a, mut n) = (0.0, 0.0);
        let (mut s, mut f) = (false, false);
        for _ in 0..looks {
            a += rng.binomial(per_look, 0.5) as f64;
            n += per_look as f64;
            let counts = [a, n - a];
            s |= srm_p_value(&counts, &[1.0, 1.0]).is_some_and(|p| p < alpha);
            f |= chi_square(&counts, &[1.0, 1.0]).is_some_and(|(_, _, p)| p < alpha);
        }
        seq += usize::from(s);
        fixed += usize::from(f);
    }
    Rejections {
        sequential: seq as f64 / runs as f64,
        fixed_horizon: fixed as f64 / runs as f64,
    }
}

/// A true effect of the planned size (`input`, a proportion metric with an absolute effect):
/// control at the baseline, treatment at baseline + effect, watched at `looks` evenly spaced
/// looks up to the sample size `abmesh plan` predicts for sequential monitoring. Returns that
/// size and the share of runs in which sequential mode detected the effect by then.
pub fn power_proportions(runs: usize, looks: usize, input: &Input, seed: u64) -> (u64, f64) {
    let (Metric::Proportion { baseline }, Ok(p)) = (input.metric, sample_size(input)) else {
        return (0, 0.0);
    };
    let (delta, alpha, mixing) = (p.delta, p.alpha_per_comparison, input.mixing);
    let n_total = p.per_variant_sequential();
    // Looks never go past the predicted size.
    let per_look = n_total / looks as u64;
    let mut rng = Rng::new(seed);
    let mut detected = 0usize;
    for _ in 0..runs {
        let (mut xa, mut xb, mut n) = (0.0, 0.0, 0.0);
        for _ in 0..looks {
            xa += rng.binomial(per_look, baseline) as f64;
            xb += rng.binomial(per_look, baseline + delta) as f64;
            n += per_look as f64;
            if sequential::proportions(xb, n, xa, n, alpha, mixing)
                .is_some_and(|t| t.comparison.p_value < alpha)
            {
                detected += 1;
                break;
            }
        }
    }
    (n_total, detected as f64 / runs as f64)
}
