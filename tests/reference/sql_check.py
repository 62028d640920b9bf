#!/usr/bin/env python3
"""The warehouse paths equal the streaming path. Over the same JSON lines `abmesh analyze
--access-log` streams, each engine runs the SQL `abmesh analyze --sql <engine>` prints and must
return exactly the per-variant sums the streaming path computes; `abmesh analyze --aggregates`
on its rows must then report exactly the same statistics:
- DuckDB (its PyPI package) runs the DuckDB query;
- ClickHouse, as chDB (ClickHouse's engine in a PyPI package), runs the ClickHouse query over
  the log with every column typed as text (as a warehouse table of strings would hold it);
- BigQuery cannot run here: sqlglot parses the BigQuery query as GoogleSQL, strictly, and the
  query it transpiles to DuckDB (one rewrite: SAFE.PARSE_JSON, which sqlglot does not map, as
  a JSON cast) runs in DuckDB and must give the same sums — the query's logic checked by an
  independent translator, not by BigQuery itself.

The log: tests/reference/analyze_check.py's simulated users, plus what real logs hold —
requests before a unit's first exposure, forced (QA) exposures, lines without units, a second
experiment on another unit type, and a unit seen again from another file order.
Usage: python3 tests/reference/sql_check.py dist/abmesh
"""
import json
import os
import subprocess
import sys

import re

import chdb
import duckdb
import numpy as np
import sqlglot

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


COLUMNS = ("time", "request_id", "method", "path", "code", "duration_ms", "assignments", "exposure", "units")


def duckdb_rows(sql, log, types):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = ", ".join("%s: '%s'" % (c, types.get(c, "VARCHAR")) for c in COLUMNS)
    con.execute("CREATE VIEW access_log AS SELECT * FROM read_json('%s', format = 'newline_delimited', columns = {%s})"
                % (log.replace("'", "''"), columns))
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def clickhouse_rows(sql, log):
    from chdb import session
    s = session.Session()
    s.query("CREATE DATABASE IF NOT EXISTS abmesh")
    columns = ", ".join("%s Nullable(String)" % c for c in COLUMNS)
    s.query("CREATE VIEW abmesh.access_log AS SELECT * FROM file('%s', 'JSONEachRow', '%s')" % (log, columns))
    out = s.query(sql.replace("FROM access_log", "FROM abmesh.access_log"), "JSONEachRow")
    return [json.loads(line) for line in str(out).splitlines() if line.strip()]


def bigquery_rows(sql, log):
    tree = sqlglot.parse_one(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    duck = re.sub(r"SAFE\.JSON\((CAST\(\w+ AS TEXT\))\)", r"TRY_CAST(\1 AS JSON)", tree.sql(dialect="duckdb"))
    return duckdb_rows(duck, log, {})


def compare(engine, streamed, rows):
    compared = 0
    for e in streamed["experiments"]:
        for v in e["variants"]:
            row = next((r for r in rows if r["experiment"] == e["key"] and r["variant"] == v["name"]), None)
            if row is None:
                raise SystemExit("sql_check: %s has no row for %s/%s" % (engine, e["key"], v["name"]))
            for column, value in v["sums"].items():
                if float(row[column]) != float(value):
                    raise SystemExit("sql_check: %s: %s/%s %s: streaming %r, %s %r"
                                     % (engine, e["key"], v["name"], column, value, engine, row[column]))
                compared += 1
    if len(rows) != sum(len(e["variants"]) for e in streamed["experiments"]):
        raise SystemExit("sql_check: %s returned %d rows" % (engine, len(rows)))
    return compared


def main():
    binary = sys.argv[1]
    rng = np.random.default_rng(7)
    lines, _ = simulate(rng, users=1500)
    lines += extra_lines(rng)
    rng.shuffle(lines)  # any order: the analysis must not depend on it
    cfg, log = write_inputs("abmesh-sql-check-", CONFIG, lines)
    work = os.path.dirname(log)
    goal_args = [a for g in GOALS for a in ("--goal", g)]
    streamed = json.loads(run([binary, "analyze", "--config", cfg, "--access-log", log, "--json"] + goal_args))
    query = lambda engine: run([binary, "analyze", "--config", cfg, "--sql", engine] + goal_args)
    engines = [
        ("DuckDB %s" % duckdb.__version__,
         lambda: duckdb_rows(query("duckdb"), log, {"code": "INTEGER", "duration_ms": "DOUBLE"})),
        ("ClickHouse (chDB %s)" % chdb.__version__, lambda: clickhouse_rows(query("clickhouse"), log)),
        ("BigQuery SQL via sqlglot %s in DuckDB" % sqlglot.__version__, lambda: bigquery_rows(query("bigquery"), log)),
    ]
    for n, (engine, rows_of) in enumerate(engines):
        rows = rows_of()
        compared = compare(engine, streamed, rows)
        rows_path = os.path.join(work, "aggregates-%d.jsonl" % n)
        with open(rows_path, "w") as f:
            for r in rows:
                f.write(json.dumps({k: (float(v) if isinstance(v, (int, float)) and k != "units" else v) for k, v in r.items()}) + "\n")
        warehouse = json.loads(run([binary, "analyze", "--config", cfg, "--aggregates", rows_path, "--json"] + goal_args))
        for a, b in zip(streamed["experiments"], warehouse["experiments"]):
            for va, vb in zip(a["variants"], b["variants"]):
                if va["metrics"] != vb["metrics"] or va["units"] != vb["units"] or a["srm_p"] != b["srm_p"]:
                    raise SystemExit("sql_check: %s: %s/%s: --aggregates reports differently from the stream"
                                     % (engine, a["key"], va["name"]))
        print("sql_check: %s: %d sums over %d rows equal the streaming path's; --aggregates reports the same statistics"
              % (engine, compared, len(rows)))


if __name__ == "__main__":
    main()
