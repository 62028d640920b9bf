#!/usr/bin/env python3
"""Checks guard's cluster-robust statistics against an independent NumPy/SciPy implementation
of the published formulas (README, Statistics; cli/src/robust.rs):

- ratio metrics over R replicates: theta = sum x / sum y, delta-method variance
  V = R/(R-1) * sum (x_r - theta y_r)^2 / (sum y)^2 (Deng, Lu and Litz 2017), a difference's
  Welch-Satterthwaite degrees of freedom, Student t p-values and intervals (scipy.stats.t);
- the traffic-share test: a one-sample t-test of d_r = n_vr - pi_v N_r (scipy.stats.ttest_1samp);
- sequential: z = norm.isf(t.sf(|t|, df)), the mSPRT of Johari et al. with that z, and the
  confidence sequence mapped back through t.isf(norm.sf(c), df).

Random replicate data are written as Prometheus text, judged by `dist/abmesh guard --json`
(fixed horizon and sequential), and every reported figure is recomputed here, the design effect (the variance of a difference over the binomial or
per-request one) included.
Usage: python3 tests/reference/robust_check.py dist/abmesh
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy import stats

R = 32
MIXING = 0.1
ALPHA = 0.05
SHARE_MIXING = 0.02
CONFIG = json.dumps({
    "units": {"user": [{"header": "x-user-id"}]},
    "experiments": [{"key": "x", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}],
})


def ratio(x, y):
    keep = y > 0
    x, y = x[keep], y[keep]
    r = len(y)
    theta = x.sum() / y.sum()
    v = r / (r - 1) * ((x - theta * y) ** 2).sum() / y.sum() ** 2
    return theta, v, r


def difference(a, b):
    (ta, va, ra), (tb, vb, rb) = a, b
    v = va + vb
    df = v * v / (va * va / (ra - 1) + vb * vb / (rb - 1))
    return ta - tb, v, df


def seq_p(est, v, df, tau2, theta0=0.0):
    t = (est - theta0) / np.sqrt(v)
    z = stats.norm.isf(stats.t.sf(abs(t), df))
    ln_l = 0.5 * np.log(v / (v + tau2)) + tau2 * z * z / (2 * (v + tau2))
    return float(np.exp(-max(ln_l, 0.0)))


def seq_half(v, df, tau2, alpha=ALPHA):
    c = np.sqrt((v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))
    return float(stats.t.isf(stats.norm.sf(c), df) * np.sqrt(v))


def case(rng):
    """Per variant and replicate: requests, 5xx, duration sum; plus per-request sums of squares."""
    out = {}
    for v, skew in (("control", 1.0), ("treatment", rng.uniform(0.9, 1.15))):
        n = rng.lognormal(5, 0.8, R).round() + 1
        err = rng.binomial(n.astype(int), np.clip(rng.beta(1, 60, R) * skew, 0, 1)).astype(float)
        mean = rng.lognormal(3.5, 0.3, R) * skew
        dur = (n * mean).round()
        sq = float(round((dur ** 2 / n).sum() * 1.3))
        out[v] = (n, err, dur, sq)
    return out


def prometheus(data):
    lines = []
    for v, (n, err, dur, sq) in data.items():
        l = f'experiment="x",variant="{v}"'
        lines += [f"abmesh_assignments_total{{{l}}} {n.sum():.0f}",
                  f'abmesh_responses_total{{{l},class="2xx"}} {(n - err).sum():.0f}',
                  f'abmesh_responses_total{{{l},class="5xx"}} {err.sum():.0f}',
                  f"abmesh_request_duration_milliseconds_sum{{{l}}} {dur.sum():.0f}",
                  f"abmesh_request_duration_milliseconds_count{{{l}}} {n.sum():.0f}",
                  f"abmesh_request_duration_milliseconds_sum_squares{{{l}}} {sq:.0f}"]
        for r in range(R):
            rl = f'{l},replicate="{r}"'
            lines += [f"abmesh_replicate_assignments_total{{{rl}}} {n[r]:.0f}",
                      f"abmesh_replicate_responses_total{{{rl}}} {n[r]:.0f}",
                      f"abmesh_replicate_5xx_total{{{rl}}} {err[r]:.0f}",
                      f"abmesh_replicate_duration_milliseconds_sum{{{rl}}} {dur[r]:.0f}"]
    return "\n".join(lines) + "\n"


def close(a, b, tol, what):
    if not abs(a - b) <= tol * max(abs(b), 1e-12):
        sys.exit(f"robust_check: {what}: abmesh {a!r}, reference {b!r}")


def main():
    cli = sys.argv[1]
    rng = np.random.default_rng(20261201)
    checks = 0
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "config.json")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        for i in range(40):
            data = case(rng)
            path = os.path.join(d, f"stats-{i}.txt")
            with open(path, "w") as f:
                f.write(prometheus(data))
            (nc, ec, dc, sqc), (nt, et, dt, sqt) = data["control"], data["treatment"]
            e_diff, e_v, e_df = difference(ratio(et, nt), ratio(ec, nc))
            l_diff, l_v, l_df = difference(ratio(dt, nt), ratio(dc, nc))
            pooled = (ec.sum() + et.sum()) / (nc.sum() + nt.sum())
            tau2_e = MIXING ** 2 * pooled * (1 - pooled)
            var = lambda s, q, n: (q - s * s / n) / (n - 1)
            n1, n0 = nt.sum(), nc.sum()
            pooled_var = ((n1 - 1) * var(dt.sum(), sqt, n1) + (n0 - 1) * var(dc.sum(), sqc, n0)) / (n1 + n0 - 2)
            tau2_l = MIXING ** 2 * pooled_var
            total = nc + nt
            dr = nt - 0.5 * total
            share_t = stats.ttest_1samp(dr, 0.0)
            share_est = 0.5 + dr.mean() * R / total.sum()
            share_v = dr.var(ddof=1) * R / total.sum() ** 2
            tau_s = SHARE_MIXING * 0.5
            pt, pc = et.sum() / nt.sum(), ec.sum() / nc.sum()
            e_ind = pt * (1 - pt) / nt.sum() + pc * (1 - pc) / nc.sum()
            l_ind = var(dt.sum(), sqt, n1) / n1 + var(dc.sum(), sqc, n0) / n0
            for mode in ("fixed", "sequential"):
                args = [cli, "guard", "--config", cfg, "--stats", path, "--json"]
                if mode == "fixed":
                    args.append("--fixed-horizon")
                out = subprocess.run(args, capture_output=True, text=True)
                if out.returncode not in (0, 3):
                    sys.exit(f"robust_check: guard exited {out.returncode}: {out.stderr}")
                rep = json.loads(out.stdout)
                if rep["inference"] != "per_unit":
                    sys.exit("robust_check: guard did not use the replicates")
                exp = rep["experiments"][0]
                t = exp["variants"][1]
                for key, diff, v, df, tau2, ind in (
                        ("errors_vs_control", e_diff, e_v, e_df, tau2_e, e_ind),
                        ("latency_vs_control", l_diff, l_v, l_df, tau2_l, l_ind)):
                    c = t[key]
                    close(c["diff"], diff, 1e-9, f"case {i} {mode} {key} diff")
                    if mode == "fixed":
                        p = 2 * stats.t.sf(abs(diff) / np.sqrt(v), df)
                        half = stats.t.isf(ALPHA / 2, df) * np.sqrt(v)
                    else:
                        p = seq_p(diff, v, df, tau2)
                        half = seq_half(v, df, tau2)
                    close(c["p_value"], p, 1e-6, f"case {i} {mode} {key} p-value")
                    close(c["interval"][1] - c["diff"], half, 1e-6, f"case {i} {mode} {key} interval")
                    close(c["prob_better"], float(stats.t.cdf(-diff / np.sqrt(v), df)), 1e-6,
                          f"case {i} {mode} {key} P(better)")
                    close(c["design_effect"], v / ind, 1e-9, f"case {i} {mode} {key} design effect")
                    checks += 5
                srm = exp["srm"]
                if mode == "fixed":
                    close(srm["p_value"], float(share_t.pvalue), 1e-6, f"case {i} traffic share p-value")
                else:
                    close(srm["p_value"], seq_p(share_est, share_v, R - 1, tau_s ** 2, 0.5), 1e-6,
                          f"case {i} sequential traffic share p-value")
                checks += 1
    print(f"robust_check: {checks} figures of 80 guard runs equal the NumPy/SciPy reference")


if __name__ == "__main__":
    main()
