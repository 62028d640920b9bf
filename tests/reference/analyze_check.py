#!/usr/bin/env python3
"""Checks `abmesh analyze` against independent implementations: an access log is generated
here (the shipped Envoy format; users with heavy-tailed activity and user-level error and
conversion propensities), each unit's values are recomputed with NumPy from the simulation's
own records, and every figure of `dist/abmesh analyze --json` is compared:

- units per variant, and the exact binomial SRM (scipy.stats.binomtest);
- means per unit (conversion, goals, requests): difference, z interval and p-value with
  unequal variances (statsmodels CompareMeans.zconfint_diff / ztest_ind, usevar="unequal");
- per-request rates (5xx per request): the delta method written out here (Deng, Lu and Litz
  2017: Var(R) = Var(Y - R X) / (n mean(X)^2));
- relative lift: the delta method's variance, written out here;
- sequential (the default): the mSPRT confidence sequence and p-value of tests/reference/msprt.py;
- Holm over every comparison (statsmodels multipletests, method "holm");
- CUPED (`--cuped`): the adjusted difference equals the treatment coefficient of the OLS
  regression y ~ 1 + treatment + pre-exposure requests (statsmodels OLS), theta its slope, and
  the interval is the variance of y - theta x per arm, written out here.

Usage: python3 tests/reference/analyze_check.py dist/abmesh
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import msprt  # noqa: E402

ALPHA = 0.05
MIXING = 0.1
CONFIG = {
    "units": {"user": [{"header": "x-user-id"}]},
    "experiments": [{"key": "x", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}],
}
T0 = 1_795_000_000_000


def iso(ms):
    s, ms = divmod(ms, 1000)
    return "%s.%03dZ" % (np.datetime_as_string(np.datetime64(int(s), "s"), unit="s"), ms)


def simulate(rng, users=3000):
    """Log lines and, per user, (variant, converted, goals, requests, errors)."""
    lines, truth = [], []
    for u in range(users):
        uid = "u%d" % u
        variant = "treatment" if rng.random() < 0.5 else "control"
        n = 1 + int(rng.pareto(1.5) * 3)
        n = min(n, 300)
        err_rate = rng.beta(0.5, 20) * (1.3 if variant == "treatment" else 1.0)
        conv = rng.random() < (0.12 if variant == "treatment" else 0.10)
        start = T0 + int(rng.random() * 86_400_000)
        errors = 0
        goals = 0
        for r in range(n):
            ts = start + 1000 * r
            # The filter writes a record on every request it assigns; the first is the exposure.
            record = json.dumps({"ts_ms": ts, "request_id": "r", "units": {"user": uid},
                                 "assignments": [{"experiment": "x", "variant": variant, "unit": "user", "forced": False}]},
                                separators=(",", ":"))
            code = 503 if rng.random() < err_rate else 200
            errors += code >= 500
            lines.append({"time": iso(ts), "request_id": "r", "method": "GET", "path": "/p", "code": code,
                          "duration_ms": int(rng.integers(1, 50)), "assignments": "x=" + variant,
                          "exposure": record, "units": json.dumps({"user": uid}, separators=(",", ":"))})
        if conv:
            ts = start + 1000 * n
            goals = 1 + int(rng.random() < 0.3)
            for g in range(goals):
                record = json.dumps({"ts_ms": ts + g, "request_id": "r", "units": {"user": uid},
                                     "assignments": [{"experiment": "x", "variant": variant, "unit": "user", "forced": False}]},
                                    separators=(",", ":"))
                lines.append({"time": iso(ts + g), "request_id": "r", "method": "POST", "path": "/buy",
                              "code": 200, "duration_ms": 5, "assignments": "x=" + variant, "exposure": record,
                              "units": json.dumps({"user": uid}, separators=(",", ":"))})
            n += goals
        truth.append((variant, float(conv), float(goals), float(n), float(errors)))
    return lines, truth


def write_inputs(prefix, config, lines):
    """A fresh directory with config.json and access.log (one JSON line per entry of `lines`);
    returns their paths."""
    work = tempfile.mkdtemp(prefix=prefix)
    cfg, log = os.path.join(work, "config.json"), os.path.join(work, "access.log")
    with open(cfg, "w") as f:
        json.dump(config, f)
    with open(log, "w") as f:
        for line in lines:
            # Envoy's json_format writes no spaces between tokens.
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
    return cfg, log


def mean_arm(y):
    n = len(y)
    var = y.var(ddof=1)
    return y.mean(), var / n, var


def ratio_arm(num, den):
    n = len(den)
    r = num.sum() / den.sum()
    e = (num - r * den) / den.mean()
    var = e.var(ddof=1)
    return r, var / n, var


def compare(v, c, nv, nc, sequential):
    """(diff, low, high, p, lift, lift_low, lift_high) from two arms' (value, var, unit var)."""
    diff = v[0] - c[0]
    var = v[1] + c[1]
    lift = diff / c[0]
    var_l = v[1] / c[0] ** 2 + v[0] ** 2 * c[1] / c[0] ** 4
    if sequential:
        pooled = ((nv - 1) * v[2] + (nc - 1) * c[2]) / (nv + nc - 2)
        tau2 = MIXING ** 2 * pooled
        half = msprt.half_width(var, tau2, ALPHA)
        p = msprt.p_value(diff, var, tau2)
        half_l = msprt.half_width(var_l, tau2 / c[0] ** 2, ALPHA)
    else:
        z = stats.norm.isf(ALPHA / 2)
        half, half_l = z * math.sqrt(var), z * math.sqrt(var_l)
        p = 2 * stats.norm.sf(abs(diff) / math.sqrt(var))
    return diff, diff - half, diff + half, p, lift, lift - half_l, lift + half_l


def close(a, b, what, rel=1e-7):
    if a is None or b is None or not math.isclose(a, b, rel_tol=rel, abs_tol=1e-12):
        raise SystemExit("analyze_check: %s: abmesh %r, reference %r" % (what, a, b))


def check_cuped(binary):
    """Users with a rate of their own: requests before the first exposure predict those after."""
    import statsmodels.api as sm
    rng = np.random.default_rng(42)
    lines, rows = [], []
    for u in range(2500):
        uid = "c%d" % u
        treat = rng.random() < 0.5
        rate = rng.lognormal(1.0, 0.8)
        pre, post = rng.poisson(rate), 1 + rng.poisson(rate * (1.1 if treat else 1.0))
        variant = "treatment" if treat else "control"
        units = json.dumps({"user": uid}, separators=(",", ":"))
        start = T0 + 1000 * u
        for r in range(pre):
            lines.append({"time": iso(start - 100 * (r + 1)), "method": "GET", "path": "/p", "code": 200,
                          "duration_ms": 1, "assignments": None, "exposure": None, "units": units})
        record = json.dumps({"ts_ms": start, "request_id": "r", "units": {"user": uid},
                             "assignments": [{"experiment": "x", "variant": variant, "unit": "user", "forced": False}]},
                            separators=(",", ":"))
        for r in range(post):
            lines.append({"time": iso(start + 10 * r), "method": "GET", "path": "/p", "code": 200,
                          "duration_ms": 1, "assignments": "x=" + variant,
                          "exposure": record if r == 0 else None, "units": units})
        rows.append((float(treat), float(pre), float(post)))
    cfg, log = write_inputs("abmesh-analyze-cuped-", CONFIG, lines)
    out = subprocess.run([binary, "analyze", "--config", cfg, "--access-log", log, "--json", "--cuped",
                          "--fixed-horizon"], capture_output=True, text=True)
    got = json.loads(out.stdout)["experiments"][0]["variants"][1]["metrics"]["requests per unit"]["against_control"]
    d = np.array(rows)
    t, x, y = d[:, 0], d[:, 1], d[:, 2]
    fit = sm.OLS(y, sm.add_constant(np.column_stack([t, x]))).fit()
    close(got["diff"], fit.params[1], "CUPED difference (statsmodels OLS treatment coefficient)")
    close(got["cuped_theta"], fit.params[2], "CUPED theta (statsmodels OLS slope)")
    theta = fit.params[2]
    var = sum(np.var(y[t == g] - theta * x[t == g], ddof=1) / (t == g).sum() for g in (0.0, 1.0))
    z = stats.norm.isf(ALPHA / 2)
    close(got["diff_low"], fit.params[1] - z * math.sqrt(var), "CUPED interval low")
    close(got["diff_high"], fit.params[1] + z * math.sqrt(var), "CUPED interval high")
    return 4


def main():
    binary = sys.argv[1]
    rng = np.random.default_rng(20261202)
    lines, truth = simulate(rng)
    cfg, log = write_inputs("abmesh-analyze-check-", CONFIG, lines)
    arms = {}
    for name in ("control", "treatment"):
        rows = np.array([t[1:] for t in truth if t[0] == name])
        arms[name] = rows
    n = {k: len(v) for k, v in arms.items()}
    srm = stats.binomtest(n["control"], n["control"] + n["treatment"], 0.5).pvalue
    checked = 0
    for sequential in (False, True):
        args = [binary, "analyze", "--config", cfg, "--access-log", log, "--goal", "buy=POST /buy 2xx", "--json"]
        if not sequential:
            args.append("--fixed-horizon")
        out = subprocess.run(args, capture_output=True, text=True)
        if out.returncode not in (0, 3):
            raise SystemExit("analyze_check: abmesh analyze exited %d: %s" % (out.returncode, out.stderr))
        report = json.loads(out.stdout)
        e = report["experiments"][0]
        close(e["srm_p"], srm, "SRM p-value")
        vs = {v["name"]: v for v in e["variants"]}
        for name in arms:
            if vs[name]["units"] != n[name]:
                raise SystemExit("analyze_check: units of %s: %s vs %s" % (name, vs[name]["units"], n[name]))
        c, t = arms["control"], arms["treatment"]
        refs = {
            "buy conversion": (mean_arm(t[:, 0]), mean_arm(c[:, 0])),
            "buy per unit": (mean_arm(t[:, 1]), mean_arm(c[:, 1])),
            "requests per unit": (mean_arm(t[:, 2]), mean_arm(c[:, 2])),
            "5xx per request": (ratio_arm(t[:, 3], t[:, 2]), ratio_arm(c[:, 3], c[:, 2])),
        }
        if not sequential:
            # statsmodels for the means: z interval and test with unequal variances.
            for metric, col in (("buy conversion", 0), ("buy per unit", 1), ("requests per unit", 2)):
                cm = CompareMeans(DescrStatsW(t[:, col]), DescrStatsW(c[:, col]))
                low, high = cm.zconfint_diff(alpha=ALPHA, usevar="unequal")
                _, p = cm.ztest_ind(usevar="unequal")
                got = vs["treatment"]["metrics"][metric]["against_control"]
                close(got["diff_low"], low, metric + " low (statsmodels)")
                close(got["diff_high"], high, metric + " high (statsmodels)")
                close(got["p_value"], p, metric + " p (statsmodels)")
                checked += 3
        ps, gots = [], []
        for metric, (v, ctl) in refs.items():
            got = vs["treatment"]["metrics"][metric]["against_control"]
            want = compare(v, ctl, n["treatment"], n["control"], sequential)
            for key, w in zip(("diff", "diff_low", "diff_high", "p_value", "lift", "lift_low", "lift_high"), want):
                close(got[key], w, "%s %s (%s)" % (metric, key, "sequential" if sequential else "fixed"))
                checked += 1
            ps.append(want[3])
            gots.append(got)
        # The duration metric is in the run too: Holm over all five comparisons.
        dur = vs["treatment"]["metrics"]["duration per request (ms)"]["against_control"]
        all_p = [g["p_value"] for g in gots] + [dur["p_value"]]
        holm = multipletests(all_p, method="holm")[1]
        for g, h in zip(gots + [dur], holm):
            close(g["p_holm"], h, "Holm")
            checked += 1
    checked += check_cuped(binary)
    print("analyze_check: %d figures agree (units %d/%d, SRM p %.4f)" % (checked, n["control"], n["treatment"], srm))


if __name__ == "__main__":
    main()
