#!/usr/bin/env python3
"""What a configuration's series count costs Envoy: the measurement behind abmesh's series
budget (SECURITY.md, "Limits").

    bench/limits.py EXPERIMENTS VARIANTS [REPLICATES] [SECONDS]

Starts Envoy (--concurrency 2) with dist/abmesh.wasm and a generated configuration of
EXPERIMENTS experiments of VARIANTS equal variants each (keys and names at their longest),
sends requests from 4 concurrent clients for SECONDS (default 5), each with a new x-user-id,
so nearly every variant's series is published, waits for two more publications, then scrapes
/stats/prometheus. Prints one JSON object: the series the configuration may create (as
`abmesh check` counts them), the request latency quantiles and the slowest request, the
scrape's size, time and abmesh series, and Envoy's RSS before and after."""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from envoy_bench import ENVOY, ROOT, envoy_yaml, free_port, listener, wasm_filter  # noqa: E402


def generated(experiments, variants, replicates):
    """Keys of 64 characters and variant names of 64: the widest output per experiment."""
    def key(i):
        return ("e%05d-" % i).ljust(64, "k")

    def name(j):
        return ("v%03d-" % j).ljust(64, "n")

    return json.dumps({
        "units": {"user": [{"header": "x-user-id"}]},
        "metrics": {"replicates": replicates},
        "experiments": [
            {"key": key(i), "unit": "user",
             "variants": [{"name": name(j), "weight": 1} for j in range(variants)]}
            for i in range(experiments)
        ],
    })


def client(port, prefix, until, latencies, statuses):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = 0
    while time.monotonic() < until:
        uid = "%s-%d" % (prefix, i)
        i += 1
        t = time.monotonic()
        conn.request("GET", "/", headers={"x-user-id": uid})
        r = conn.getresponse()
        r.read()
        latencies.append(time.monotonic() - t)
        statuses[r.status] = statuses.get(r.status, 0) + 1


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def main():
    experiments, variants = int(sys.argv[1]), int(sys.argv[2])
    replicates = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 5
    config = generated(experiments, variants, replicates)
    work = tempfile.mkdtemp(prefix="abmesh-limits-")
    with open(os.path.join(work, "config.json"), "w") as f:
        f.write(config)
    check = subprocess.run([os.path.join(ROOT, "dist/abmesh"), "check", os.path.join(work, "config.json")],
                           capture_output=True, text=True)
    m = re.search(r"Envoy stats series: ([\d,]+)", check.stdout + check.stderr)
    admin, port = free_port(), free_port()
    yaml = envoy_yaml(admin, [listener("abmesh", port, wasm_filter(
        "abmesh", os.path.join(ROOT, "dist/abmesh.wasm"), config))])
    with open(os.path.join(work, "envoy.yaml"), "w") as f:
        f.write(yaml)
    log = open(os.path.join(work, "envoy.log"), "w")
    envoy = subprocess.Popen([ENVOY, "-c", os.path.join(work, "envoy.yaml"), "--concurrency", "2",
                              "--base-id", str(os.getpid() % 60000)], stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        rss_before = rss_kib(envoy.pid)
        latencies, statuses, threads = [], {}, []
        warmup = float(os.environ.get("LIMITS_WARMUP", "0"))
        if warmup:
            # Traffic first, not measured: every series defined before the measured period.
            until = time.monotonic() + warmup
            ws = [threading.Thread(target=client, args=(port, "warm-%d" % c, until, [], {})) for c in range(4)]
            for t in ws:
                t.start()
            for t in ws:
                t.join()
        until = time.monotonic() + seconds
        for c in range(4):
            t = threading.Thread(target=client, args=(port, "user-%d" % c, until, latencies, statuses))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        time.sleep(2.5)
        t = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
        conn.request("GET", "/stats/prometheus")
        body = conn.getresponse().read()
        scrape_s = time.monotonic() - t
        lines = [l for l in body.split(b"\n") if l.startswith(b"abmesh_")]
        latencies.sort()
        q = lambda p: round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)
        print(json.dumps({
            "experiments": experiments, "variants": variants, "replicates": replicates,
            "seconds": seconds,
            "config_bytes": len(config),
            "check_series": m.group(1) if m else None, "check_exit": check.returncode,
            "requests": len(latencies), "statuses": statuses,
            "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
            "scrape_bytes": len(body), "scrape_s": round(scrape_s, 3),
            "abmesh_series": len(lines),
            "rss_mib": {"before": round(rss_before / 1024, 1), "after": round(rss_kib(envoy.pid) / 1024, 1)},
        }))
    finally:
        envoy.terminate()
        envoy.wait()
        log.close()


if __name__ == "__main__":
    main()
