#!/usr/bin/env python3
"""How fast `abmesh analyze` reads access logs, and how much memory it holds.

    bench/analyze_bench.py [USERS]

Writes an access log in the shipped format (tests/reference/analyze_check.py's users:
heavy-tailed activity, an exposure record on every request as the filter writes it, no
whitespace as Envoy's json_format writes it), runs `dist/abmesh analyze` on it three times
under GNU time, and prints one JSON object: lines, bytes, the fastest wall time, lines per
second, CPU seconds, how often the log was read (1: in time order), and the largest peak RSS
of the runs."""
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/reference"))
from analyze_check import CONFIG, simulate, write_inputs  # noqa: E402


def main():
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    lines, _ = simulate(np.random.default_rng(1), users=users)
    cfg, log = write_inputs("abmesh-analyze-bench-", CONFIG, lines)
    args = [os.path.join(ROOT, "dist/abmesh"), "analyze", "--config", cfg, "--access-log", log,
            "--goal", "buy=POST /buy 2xx", "--json"]
    count = len(lines)
    del lines
    runs, rss = [], 0
    for _ in range(3):
        t = time.monotonic()
        # GNU time's %M is the command's own peak RSS (a fork of this process would be counted
        # by getrusage); %U %S its CPU seconds.
        out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S"] + args, capture_output=True, text=True)
        wall = time.monotonic() - t
        if out.returncode not in (0, 3):
            raise SystemExit(out.stderr)
        kib, user, system = out.stderr.strip().splitlines()[-1].split()
        rss = max(rss, int(kib))
        runs.append((wall, float(user) + float(system)))
        passes = json.loads(out.stdout)["passes"]
    wall, cpu = min(runs)
    print(json.dumps({
        "users": users, "lines": count, "bytes": os.path.getsize(log),
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "lines_per_s": round(count / wall), "lines_per_cpu_s": round(count / cpu),
        "peak_rss_mib": round(rss / 1024, 1), "passes": passes,
    }))


if __name__ == "__main__":
    main()
