#!/usr/bin/env python3
"""Recomputes, with SciPy and statsmodels, every reference value recorded in the Rust tests of
cli/src/power.rs, cli/src/sequential.rs and cli/src/bayes.rs, and checks it equals the recorded one (run by
`./build.sh test`; a recorded value that drifted from its source fails here).

The mSPRT and SRM values come from the formulas in cli/src/sequential.rs's module documentation
(Johari et al. 2022; Lindon and Malek 2022), written again here with NumPy/SciPy."""
import math
import sys

import numpy as np
from scipy import integrate
from scipy.special import gammaln
from scipy.stats import beta, norm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail as n_rates

from msprt import half_width, p_value

failures = []
checked = 0


def expect(what, got, recorded, tol):
    global checked
    checked += 1
    if not abs(got - recorded) <= tol * max(abs(recorded), 1e-300):
        failures.append(f"{what}: recomputed {got!r}, recorded {recorded!r}")


# cli/src/power.rs: fixed_horizon_sizes_match_statsmodels, variants_split_alpha...
for args, recorded in [((0.02, 0.05, 0.8, 0.05), 2212.204782367206),
                       ((0.01, 0.10, 0.9, 0.05), 19746.624475776527),
                       ((0.005, 0.02, 0.8, 0.025), 16722.814716941502),
                       ((-0.03, 0.30, 0.8, 0.05), 3553.055208438042),
                       ((0.02, 0.05, 0.8, 0.025), 2679.122574471982)]:
    d, p, power, alpha = args
    expect(f"samplesize_proportions_2indep_onetail{args}", n_rates(d, p, power, alpha=alpha), recorded, 1e-12)
for (es, alpha, power), recorded in [((0.2, 0.05, 0.8), 392.4430232577885),
                                     ((5 / 40, 0.025, 0.9), 1588.6344699758154)]:
    expect(f"NormalIndPower({es}, {alpha}, {power})",
           NormalIndPower().solve_power(effect_size=es, alpha=alpha, power=power, ratio=1), recorded, 1e-12)

# cli/src/sequential.rs
def rates(x1, n1, x0, n0, alpha, mixing):
    p1, p0 = x1 / n1, x0 / n0
    pooled = (x1 + x0) / (n1 + n0)
    s2 = pooled * (1 - pooled)
    tau2 = mixing**2 * s2
    v = p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0
    return p1 - p0, p_value(p1 - p0, s2 * (1 / n1 + 1 / n0), tau2), half_width(v, tau2, alpha), v, tau2


d, p, h, v, tau2 = rates(60, 1000, 40, 1000, 0.05, 0.1)
expect("mSPRT rates p", p, 0.4237946613613226, 1e-12)
expect("mSPRT rates half-width", h, 0.029754136600653833, 1e-12)
expect("mSPRT rates p above 0.005", p_value(d, v, tau2, 0.005), 0.9116372165472837, 1e-12)
d, p, h, v, tau2 = rates(600, 10000, 450, 10000, 0.05, 0.1)
expect("mSPRT rates p (n 10,000)", p, 1.0942010930684979e-4, 1e-12)
expect("mSPRT rates half-width (n 10,000)", h, 0.010029654200522441, 1e-12)
n1, m1, s1, n0, m0, s0 = 500, 52.0, 10.0, 480, 50.0, 9.0
pooled = ((n1 - 1) * s1**2 + (n0 - 1) * s0**2) / (n1 + n0 - 2)
v = s1**2 / n1 + s0**2 / n0
expect("mSPRT means p", p_value(m1 - m0, v, 0.01 * pooled), 0.039344845203293226, 1e-12)
expect("mSPRT means half-width", half_width(v, 0.01 * pooled, 0.05), 1.9368502931357812, 1e-12)


def srm(counts, shares):
    s = np.array(shares, float) / sum(shares)
    c = np.array(counts, float)
    a = 100.0
    ln_bf = gammaln(a) - gammaln(a + c.sum()) + np.sum(gammaln(a * s + c) - gammaln(a * s) - c * np.log(s))
    return min(1.0, math.exp(-max(ln_bf, 0.0)))


expect("SRM 5200/4800", srm([5200, 4800], [1, 1]), 0.0036478642786863472, 1e-12)
expect("SRM 5050/4950", srm([5050, 4950], [1, 1]), 1.0, 0)
expect("SRM 3000/1000/1100", srm([3000, 1000, 1100], [2, 1, 1]), 4.620671300381602e-34, 1e-9)
for got, recorded in zip(multipletests([0.01, 0.04, 0.03, 0.005, 0.5], method="holm")[1],
                         [0.04, 0.09, 0.09, 0.025, 0.5]):
    expect("Holm", got, recorded, 1e-12)

# cli/src/bayes.rs
for (xv, nv, xc, nc), recorded in [((40, 1000, 60, 1000), 0.9796772120528251),
                                   ((12, 500, 10, 500), 0.3370215299854856),
                                   ((0, 100, 3, 100), 0.9393609840236006),
                                   ((450, 10000, 600, 10000), 0.9999990360066807)]:
    f = lambda x: beta.pdf(x, 1 + xv, 1 + nv - xv) * beta.sf(x, 1 + xc, 1 + nc - xc)
    got = integrate.quad(f, 0, 1, epsabs=1e-13, epsrel=1e-12, limit=500, points=[xv / nv, xc / nc])[0]
    expect(f"P(rate lower) {xv}/{nv} vs {xc}/{nc}", got, recorded, 1e-9)
expect("P(mean lower)", norm.cdf((50 - 52) / math.sqrt(100 / 500 + 81 / 480)), 0.0004946574546382191, 1e-12)

for f in failures:
    print(f)
print(f"recorded_values: {checked - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
