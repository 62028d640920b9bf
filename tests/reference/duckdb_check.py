#!/usr/bin/env python3
"""The warehouse path equals the streaming path: DuckDB (its PyPI package) runs the SQL that
`abmesh analyze --sql duckdb` prints over the same JSON lines `abmesh analyze --access-log`
streams, and must return exactly the per-variant sums the streaming path computes; `abmesh
analyze --aggregates` on DuckDB's rows must then report exactly the same statistics.

The log: tests/reference/analyze_check.py's simulated users, plus what real logs hold —
requests before a unit's first exposure, forced (QA) exposures, lines without units, a second
experiment on another unit type, and a unit seen again from another file order.
Usage: python3 tests/reference/duckdb_check.py dist/abmesh
"""
import json
import os
import subprocess
import sys

import duckdb
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from analyze_check import iso, simulate, write_inputs, T0  # noqa: E402

CONFIG = {
    "units": {"user": [{"header": "x-user-id"}], "device": [{"cookie": "did"}]},
    "experiments": [
        {"key": "x", "unit": "user", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]},
        {"key": "y", "unit": "device", "variants": [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}]},
    ],
}
GOALS = ["buy=POST /buy 2xx", "look=/p*"]


def extra_lines(rng):
    out = []
    for u in range(0, 400, 3):
        uid, did = "u%d" % u, "d%d" % u
        units = json.dumps({"user": uid, "device": did}, separators=(",", ":"))
        # Before the user's exposure (the simulation's users start at T0 or later).
        out.append({"time": iso(T0 - 5000), "method": "GET", "path": "/p?x=1", "code": 200,
                    "duration_ms": 3, "assignments": None, "exposure": None, "units": units})
        # A device exposure to y, and a forced (QA) one to x that must not count.
        variant = "b" if rng.random() < 0.25 else "a"
        ts = T0 + 7 * u
        record = {"ts_ms": ts, "request_id": "q", "units": {"user": uid, "device": did},
                  "assignments": [{"experiment": "y", "variant": variant, "unit": "device", "forced": False},
                                  {"experiment": "x", "variant": "treatment", "unit": "user", "forced": True}]}
        out.append({"time": iso(ts), "method": "GET", "path": "/p", "code": 503 if u % 7 == 0 else 200,
                    "duration_ms": 9, "assignments": "y=" + variant, "exposure": json.dumps(record, separators=(",", ":")),
                    "units": units})
        out.append({"time": iso(ts + 50), "method": "POST", "path": "/buy", "code": 201, "duration_ms": 4,
                    "assignments": None, "exposure": None, "units": units})
    out.append({"time": iso(T0), "method": "GET", "path": "/health", "code": 200, "duration_ms": 1,
                "assignments": None, "exposure": None, "units": None})
    return out


def run(args):
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode not in (0, 3):
        raise SystemExit("duckdb_check: %s exited %d: %s" % (" ".join(args), out.returncode, out.stderr))
    return out.stdout


def main():
    binary = sys.argv[1]
    rng = np.random.default_rng(7)
    lines, _ = simulate(rng, users=1500)
    lines += extra_lines(rng)
    rng.shuffle(lines)  # any order: the analysis must not depend on it
    cfg, log = write_inputs("abmesh-duckdb-check-", CONFIG, lines)
    work = os.path.dirname(log)
    goal_args = [a for g in GOALS for a in ("--goal", g)]
    streamed = json.loads(run([binary, "analyze", "--config", cfg, "--access-log", log, "--json"] + goal_args))
    sql = run([binary, "analyze", "--config", cfg, "--sql", "duckdb"] + goal_args)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE VIEW access_log AS SELECT * FROM read_json('%s', format = 'newline_delimited', columns = {"
        "time: 'VARCHAR', request_id: 'VARCHAR', method: 'VARCHAR', path: 'VARCHAR', code: 'INTEGER',"
        "duration_ms: 'DOUBLE', assignments: 'VARCHAR', exposure: 'VARCHAR', units: 'VARCHAR'})"
        % log.replace("'", "''"))
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    compared = 0
    for e in streamed["experiments"]:
        for v in e["variants"]:
            row = next((r for r in rows if r["experiment"] == e["key"] and r["variant"] == v["name"]), None)
            if row is None:
                raise SystemExit("duckdb_check: DuckDB has no row for %s/%s" % (e["key"], v["name"]))
            for column, value in v["sums"].items():
                if float(row[column]) != float(value):
                    raise SystemExit("duckdb_check: %s/%s %s: streaming %r, DuckDB %r"
                                     % (e["key"], v["name"], column, value, row[column]))
                compared += 1
    if len(rows) != sum(len(e["variants"]) for e in streamed["experiments"]):
        raise SystemExit("duckdb_check: DuckDB returned %d rows" % len(rows))
    rows_path = os.path.join(work, "aggregates.jsonl")
    with open(rows_path, "w") as f:
        for r in rows:
            f.write(json.dumps({k: (float(v) if isinstance(v, (int, float)) and k != "units" else v) for k, v in r.items()}) + "\n")
    warehouse = json.loads(run([binary, "analyze", "--config", cfg, "--aggregates", rows_path, "--json"] + goal_args))
    for a, b in zip(streamed["experiments"], warehouse["experiments"]):
        for va, vb in zip(a["variants"], b["variants"]):
            if va["metrics"] != vb["metrics"] or va["units"] != vb["units"] or a["srm_p"] != b["srm_p"]:
                raise SystemExit("duckdb_check: %s/%s: --aggregates reports differently from the stream"
                                 % (a["key"], va["name"]))
    print("duckdb_check: DuckDB %s: %d sums over %d rows equal the streaming path's; --aggregates reports the same statistics"
          % (duckdb.__version__, compared, len(rows)))


if __name__ == "__main__":
    main()
