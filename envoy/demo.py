#!/usr/bin/env python3
"""The abmesh demo (`./build.sh demo`): Envoy with envoy/envoy.yaml and the echo upstream on
free 127.0.0.1 ports, traffic for a few hundred users, and a report of what happened.
Every process it starts is stopped on exit, on Ctrl-C and on failure."""
import atexit
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = 300
PROCS = []


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    PROCS.clear()


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_block(yaml):
    """The plugin configuration embedded after `value: |` in envoy.yaml."""
    lines = yaml.splitlines()
    at = next(i for i, l in enumerate(lines) if l.rstrip().endswith("value: |"))
    indent = len(lines[at]) - len(lines[at].lstrip())
    block = []
    for l in lines[at + 1:]:
        if l.strip() and len(l) - len(l.lstrip()) <= indent:
            break
        block.append(l)
    return json.loads("\n".join(block))


def render(yaml, ports, access_log):
    subs = [
        ("port_value: 9901", f"port_value: {ports['admin']}"),
        ("port_value: 10000", f"port_value: {ports['listener']}"),
        ("port_value: 8081", f"port_value: {ports['control']}"),
        ("port_value: 8082", f"port_value: {ports['treatment']}"),
        ("filename: dist/abmesh.wasm", f"filename: {ROOT}/dist/abmesh.wasm"),
        ("path: /dev/stdout", f"path: {access_log}"),
    ]
    for old, new in subs:
        if yaml.count(old) != 1:
            raise SystemExit(f"demo: envoy/envoy.yaml should contain {old!r} exactly once")
        yaml = yaml.replace(old, new)
    return yaml


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read().decode()


def wait_ready(ports, envoy, log_path, deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end:
        if envoy.poll() is not None:
            raise SystemExit("demo: Envoy exited during start-up:\n" + open(log_path).read()[-4000:])
        try:
            if get(ports["admin"], "/ready")[0] == 200:
                socket.create_connection(("127.0.0.1", ports["control"]), timeout=1).close()
                socket.create_connection(("127.0.0.1", ports["treatment"]), timeout=1).close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("demo: Envoy not ready within 60 s:\n" + open(log_path).read()[-4000:])


def heading(title):
    print(f"\n\033[1m{title}\033[0m")


def main():
    envoy_bin = os.environ.get("ENVOY_BIN") or os.path.join(ROOT, ".venv/bin/envoy")
    atexit.register(stop_all)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    work = tempfile.mkdtemp(prefix="abmesh-demo-")
    ports = {k: free_port() for k in ("admin", "listener", "control", "treatment")}
    yaml = open(os.path.join(ROOT, "envoy/envoy.yaml")).read()
    config = config_block(yaml)
    access_log = os.path.join(work, "access.log")
    envoy_log = os.path.join(work, "envoy.log")
    with open(os.path.join(work, "envoy.yaml"), "w") as f:
        f.write(render(yaml, ports, access_log))

    PROCS.append(subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "envoy/echo.py"),
         f"checkout_control={ports['control']}", f"checkout_treatment={ports['treatment']}"],
        stdout=subprocess.DEVNULL))
    envoy = subprocess.Popen(
        [envoy_bin, "-c", os.path.join(work, "envoy.yaml"), "--concurrency", "2",
         "--base-id", str(os.getpid() % 60000 + 1000), "--log-path", envoy_log, "-l", "info",
         "--file-flush-interval-msec", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(envoy)
    print(f"Envoy on 127.0.0.1:{ports['listener']} (admin {ports['admin']}), echo upstreams on "
          f"{ports['control']} (checkout_control) and {ports['treatment']} (checkout_treatment); work dir {work}")
    wait_ready(ports, envoy, envoy_log)
    for line in open(envoy_log):
        if "abmesh" in line and "configured" in line:
            print("Envoy says:", line.split("wasm log")[-1].strip(" :\n"))
            break

    # Traffic: each user visits the checkout, the search page and the home page; a few
    # clients try to spoof their variant, which abmesh strips.
    conn = http.client.HTTPConnection("127.0.0.1", ports["listener"], timeout=10)
    per_user = {}
    spoofers = []
    requests = 0
    for i in range(USERS):
        user = f"user-{i:03d}"
        for path in ("/checkout", "/search?q=shoes", "/home"):
            headers = {"x-user-id": user}
            if i % 50 == 0:
                headers["x-exp-checkout-v2"] = "treatment"
                headers["x-experiments"] = "checkout-v2=treatment"
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = json.loads(r.read())
            requests += 1
            if r.status != 200:
                raise SystemExit(f"demo: {path} for {user} answered {r.status}")
            seen = dict(body["headers"])
            if path == "/checkout":
                per_user[user] = (seen.get("x-experiments", ""), body["upstream"])
                if i % 50 == 0:
                    spoofers.append((user, seen.get("x-experiments", "(none)"), body["upstream"]))

    heading(f"Sample of users ({USERS} users, {requests} requests): x-experiments seen upstream at /checkout")
    for user in list(per_user)[:12]:
        value, upstream = per_user[user]
        print(f"  {user}  {value or '(none: held out)':55} -> {upstream}")

    heading("Split per experiment (users at /checkout) against the configured weights")
    counts = defaultdict(Counter)
    for value, _ in per_user.values():
        for member in filter(None, value.split(", ")):
            key, variant = member.split("=", 1)
            counts[key][variant.split(";")[0]] += 1
    holdout = config.get("holdout", {}).get("percent", 0)
    for e in config["experiments"]:
        if e.get("status", "running") != "running":
            print(f"  {e['key']}: {e.get('status')} (winner {e.get('winner')}): not an experiment any more")
            continue
        total_w = sum(v["weight"] for v in e["variants"])
        traffic = e.get("traffic_percent", 100)
        print(f"  {e['key']} (traffic {traffic}%, holdout {holdout}%):")
        for v in e["variants"]:
            expected = USERS * (1 - holdout / 100) * traffic / 100 * v["weight"] / total_w
            got = counts[e["key"]][v["name"]]
            print(f"    {v['name']:10} {got:4} users  (expected ~{expected:.0f}, weight {v['weight']}/{total_w})")
        got_any = sum(counts[e["key"]].values())
        print(f"    {'not in it':10} {USERS - got_any:4} users  (holdout or outside traffic)")
    routed = Counter(up for value, up in per_user.values()
                     if "checkout-v2=treatment" in value)
    print(f"  route header: {routed.get('checkout_treatment', 0)} of "
          f"{sum(routed.values())} checkout-v2 treatment users reached checkout_treatment")
    heading("Spoofing: these clients sent x-exp-checkout-v2: treatment and x-experiments: checkout-v2=treatment")
    for user, value, upstream in spoofers:
        print(f"  {user}  upstream saw only abmesh's own: {value:45} -> {upstream}")

    # Envoy flushes logs asynchronously: wait (bounded) for them.
    end = time.time() + 10
    while time.time() < end:
        lines = open(access_log).read().splitlines()
        if len(lines) >= requests:
            break
        time.sleep(0.2)
    # The exposure pipeline is the access log: each exposed request's line carries its record
    # (filter state); "exposure": {"log": true} would also write it to Envoy's log.
    exposures = [json.loads(l)["exposure"] for l in lines if json.loads(l).get("exposure")]
    heading(f"Exposure records ({len(exposures)} in the access log; rollout-only requests have none); one of them")
    if exposures:
        print("  " + exposures[0])
    heading(f"Access log ({len(lines)} lines, one per request); one of them")
    exposed = [l for l in lines if '"exposure":"{' in l.replace(": ", ":")]
    print("  " + (exposed[0] if exposed else lines[0] if lines else "(none)"))
    heading("Prometheus (/stats/prometheus), abmesh series")
    # Each Envoy worker publishes its counts every second: wait (bounded) until the first
    # experiment accounts for every request.
    first = config["experiments"][0]["key"]
    end = time.time() + 10
    while True:
        _, prom = get(ports["admin"], "/stats/prometheus")
        counted = sum(int(l.rsplit(" ", 1)[1]) for l in prom.splitlines()
                      if l.startswith(("abmesh_assignments_total{", "abmesh_not_assigned_total{"))
                      and f'experiment="{first}"' in l)
        if counted >= requests or time.time() > end:
            break
        time.sleep(0.2)
    replicated = []
    for line in prom.splitlines():
        if line.startswith("abmesh_replicate_"):
            replicated.append(line)
        elif line.startswith("abmesh_"):
            print("  " + line)
    # The replicate series (what guard's per-unit statistics use) are many: summarized.
    names = sorted({l.split("{", 1)[0] for l in replicated})
    print(f"  ... and {len(replicated)} replicate series ({', '.join(names)}), "
          "split by a hash of the unit id: see README, Metrics")
    stop_all()
    print(f"\nDone: stopped Envoy and the echo upstream. Logs kept in {work}")


if __name__ == "__main__":
    main()
