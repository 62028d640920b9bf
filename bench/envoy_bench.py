#!/usr/bin/env python3
"""abmesh in Envoy: CPU per request against no filter, the no-op wasm floor, Envoy's native
header_mutation filter and a Lua peer, with a breakdown of abmesh's request path by stage.

Run by `./build.sh bench` (which builds dist/abmesh.wasm, dist/bench/noop.wasm,
dist/bench/abmesh-count.wasm and the dist/bench/abmesh-stop-<stage>.wasm variants first). One
Envoy process, --concurrency 1, at Envoy's default log level (info), one listener per
configuration, every route a direct response so only the filters cost:
  none      no filter
  noop      a proxy-wasm filter that does nothing (same toolchain and SDK as abmesh)
  header-mutation
            Envoy's own header_mutation filter setting one header: the native reference
  floor-20  the no-op module making exactly the host calls abmesh-20 makes for an exposed
            request (same payload sizes), with no computation: the platform's floor for the job
  abmesh-1, abmesh-20, abmesh-100
            abmesh with bench/configs/experiments-N.json (the defaults: filter state for the
            access log, no application log; metrics on)
  abmesh-20-log, abmesh-20-without-slis, abmesh-20-without-replicates, abmesh-20-opt-3
            one thing changed at 20 experiments: the exposure also logged; no per-variant SLIs;
            no replicate series; the module built at opt-level 3 throughout
  stop-<stage>-N
            abmesh built to stop after one stage of the request path (filter/src/stage.rs),
            at 1, 20 and 100 experiments: the breakdown; abmesh-N is the last stage
  lua-20    an Envoy Lua filter doing the same job for the 20 experiments: hash the unit, pick
            the variant by weight, set the header, log a line
Load: wrk (one thread, 8 connections) on loopback, a different x-user-id per request.
Figure: Envoy's CPU time per request from /proc/<pid>/stat (user + system, all threads), less
the idle CPU rate measured at the start of each round, median of ROUNDS interleaved rounds. Writes bench/results.json; bench/report.py makes
BENCHMARKS.md and the plot from it."""
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "2"))
CONNECTIONS = 8
IDLE_SECONDS = 3
TICK = os.sysconf("SC_CLK_TCK")
ENVOY = os.environ.get("ENVOY_BIN") or os.path.join(ROOT, ".venv/bin/envoy")
BUCKETS = 10000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_config(n):
    with open(os.path.join(ROOT, f"bench/configs/experiments-{n}.json")) as f:
        return f.read()


def ranges(weights, traffic_bp):
    """Hash spec v1 variant ranges (the Lua peer uses the same split)."""
    total = sum(weights)
    edges, cum = [0], 0
    for w in weights:
        cum += w
        edges.append(BUCKETS * cum // total)
    return [(edges[k], edges[k] + (edges[k + 1] - edges[k]) * traffic_bp // BUCKETS) for k in range(len(weights))]


def lua_peer(config_json):
    """A Lua filter an operator would write for these experiments: FNV-1a of salt:unit,
    variant ranges by weight and traffic, one header, one log line."""
    config = json.loads(config_json)
    rows = []
    for e in config["experiments"]:
        rs = ranges([v["weight"] for v in e["variants"]], round(e.get("traffic_percent", 100) * 100))
        rows.append('{key="%s", salt="%s", lo={%s}, hi={%s}, names={%s}}' % (
            e["key"], e.get("salt", e["key"]),
            ",".join(str(a) for a, _ in rs), ",".join(str(b) for _, b in rs),
            ",".join('"%s"' % v["name"] for v in e["variants"])))
    return """
local bit = require("bit")
local EXPERIMENTS = {
  %s
}
local function fnv1a(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, string.byte(s, i))
    -- h * 16777619 mod 2^32, split so the double never loses bits
    h = bit.tobit(bit.lshift(h, 24) + h * 403)
  end
  return h %% 4294967296
end
function envoy_on_request(handle)
  local uid = handle:headers():get("x-user-id")
  if uid == nil or uid == "" then return end
  local parts = {}
  for _, e in ipairs(EXPERIMENTS) do
    local b = fnv1a(e.salt .. ":" .. uid) %% 10000
    for k = 1, #e.lo do
      if b >= e.lo[k] and b < e.hi[k] then
        parts[#parts + 1] = e.key .. "=" .. e.names[k]
        break
      end
    end
  end
  handle:headers():remove("x-experiments")
  if #parts > 0 then
    local value = table.concat(parts, ", ")
    handle:headers():replace("x-experiments", value)
    handle:logInfo("exposure " .. uid .. " " .. value)
  end
end
""" % ",\n  ".join(rows)


def indent(text, n):
    return "\n".join((" " * n + line) if line else line for line in text.splitlines())


def wasm_filter(name, path, config_json):
    cfg = ""
    if config_json is not None:
        cfg = """
          configuration:
            "@type": type.googleapis.com/google.protobuf.StringValue
            value: |
%s""" % indent(config_json, 14)
    return """
    - name: %s
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
        config:
          name: %s
          failure_policy: FAIL_OPEN
          vm_config:
            runtime: envoy.wasm.runtime.v8
            code: {local: {filename: %s}}%s""" % (name, name, path, cfg)


def lua_filter(source):
    return """
    - name: envoy.filters.http.lua
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
        default_source_code:
          inline_string: |
%s""" % indent(source, 12)


def listener(name, port, filters):
    return """
  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
          http_filters:%s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router""" % (
        name, port, name.replace("-", "_"), indent(filters, 6) if filters else "")


def envoy_yaml(admin, listeners):
    return """admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
stats_config:
  stats_tags:
  - {tag_name: experiment, regex: '(experiment=\\.=(.+?);\\.;)'}
  - {tag_name: variant, regex: '(variant=\\.=(.+?);\\.;)'}
  - {tag_name: replicate, regex: '(replicate=\\.=(.+?);\\.;)'}
  - {tag_name: reason, regex: '(reason=\\.=(.+?);\\.;)'}
  - {tag_name: kind, regex: '(kind=\\.=(.+?);\\.;)'}
  - {tag_name: class, regex: '(class=\\.=(.+?);\\.;)'}
  - {tag_name: le, regex: '(le=\\.=(.+?);\\.;)'}
static_resources:
  listeners:%s
""" % (admin, "".join(listeners))


STAGES = ["headers", "units", "evaluate", "render", "set-headers", "filter-state", "count"]
SIZES = (1, 20, 100)


def logged(config_json):
    """The same experiments with the exposure record also written to the application log."""
    c = json.loads(config_json)
    c["exposure"]["log"] = True
    return json.dumps(c, indent=1)


HEADER_MUTATION = """
    - name: envoy.filters.http.header_mutation
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
        mutations:
          request_mutations:
          - append:
              header: {key: x-experiments, value: "exp-0000=control"}
              append_action: OVERWRITE_IF_EXISTS_OR_ADD"""


def without_replicates(config_json):
    """The same experiments with no replicate series (`metrics.replicates` 0)."""
    c = json.loads(config_json)
    c["metrics"] = {"replicates": 0}
    return json.dumps(c, indent=1)


def payload(n, users=200):
    """What abmesh writes for the benchmark's requests at n experiments, from the native CLI
    (the same core): mean exposure record and dictionary sizes, and route headers set."""
    cli = os.path.join(ROOT, "dist/abmesh")
    config = os.path.join(ROOT, "bench/configs/experiments-%d.json" % n)
    lines, dicts, routes = [], [], []
    for i in range(1, users + 1):
        out = subprocess.run(
            [cli, "assign", config, "--path", "/checkout/cart", "--query", "step=2",
             "--header", "x-user-id=user-%d" % i, "--cookie", "theme=dark", "--cookie", "did=device-%d" % (i % 5000)],
            capture_output=True, text=True, check=True).stdout
        record = re.search(r"^exposure: (\{.*)$", out, re.M)
        lines.append(len(record.group(1)) if record else 0)
        d = re.search(r"^set request header: x-experiments: (.*)$", out, re.M)
        dicts.append(len(d.group(1)) if d else 0)
        routes.append(len(re.findall(r"^set request header: x-exp-", out, re.M)))
    return {"record": round(statistics.mean(lines)), "header": round(statistics.mean(dicts)),
            "route": round(statistics.mean(routes))}


def configurations(wasm, noop, floor_payload):
    p = floor_payload
    confs = {
        "none": "",
        "noop": wasm_filter("noop", noop, None),
        "header-mutation": HEADER_MUTATION,
        "floor-20": wasm_filter("floor", noop, "record=%d header=%d route=%d" % (p["record"], p["header"], p["route"])),
        "lua-20": lua_filter(lua_peer(load_config(20))),
        "abmesh-1": wasm_filter("abmesh", wasm, load_config(1)),
        "abmesh-20": wasm_filter("abmesh", wasm, load_config(20)),
        "abmesh-100": wasm_filter("abmesh", wasm, load_config(100)),
        "abmesh-20-log": wasm_filter("abmesh", wasm, logged(load_config(20))),
        "abmesh-20-without-slis": wasm_filter("abmesh", os.path.join(ROOT, "dist/bench/abmesh-without-slis.wasm"), load_config(20)),
        "abmesh-20-without-replicates": wasm_filter("abmesh", wasm, without_replicates(load_config(20))),
        "abmesh-20-opt-3": wasm_filter("abmesh", os.path.join(ROOT, "dist/bench/abmesh-opt-3.wasm"), load_config(20)),
    }
    for stage in STAGES:
        path = os.path.join(ROOT, "dist/bench/abmesh-stop-%s.wasm" % stage)
        for n in SIZES:
            confs["stop-%s-%d" % (stage, n)] = wasm_filter("abmesh", path, load_config(n))
    return confs


class Envoy:
    def __init__(self, work, filters, log_path=None, level="info"):
        # A real file, as an operator's Envoy writes: /dev/null would hide what a synchronous
        # application-log line costs (exposure.log).
        log_path = log_path or os.path.join(work, "envoy-%d.log" % len(os.listdir(work)))
        self.ports = {name: free_port() for name in filters}
        self.admin = free_port()
        yaml = envoy_yaml(self.admin, [listener(n, self.ports[n], f) for n, f in filters.items()])
        path = os.path.join(work, "envoy-%d.yaml" % self.admin)
        with open(path, "w") as f:
            f.write(yaml)
        self.proc = subprocess.Popen(
            [ENVOY, "-c", path, "--concurrency", "1", "--base-id", str(self.admin),
             "--log-path", log_path, "-l", level],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("bench: Envoy exited:\n" + self.proc.stderr.read().decode()[-3000:])
            try:
                if self.get("/ready").startswith("LIVE"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("bench: Envoy not ready within 60 s")

    def get(self, path):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        c.request("GET", path)
        return c.getresponse().read().decode()

    def cpu_seconds(self):
        """CPU time of every Envoy thread, in nanoseconds from the scheduler (schedstat) where
        the kernel has it; clock ticks (1/100 s) otherwise."""
        total, seen = 0, False
        for task in os.listdir("/proc/%d/task" % self.proc.pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (self.proc.pid, task)) as f:
                    total += int(f.read().split()[0])
                    seen = True
            except (OSError, ValueError, IndexError):
                pass
        if seen:
            return total / 1e9
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


WRK_SCRIPT = """
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/checkout/cart?step=2", {
    ["x-user-id"] = "user-" .. counter,
    ["cookie"] = "theme=dark; did=device-" .. (counter % 5000),
    ["user-agent"] = "wrk",
  })
end
"""


def wrk(port, seconds, script):
    out = subprocess.run(
        ["wrk", "-t1", "-c%d" % CONNECTIONS, "-d%ds" % seconds, "-s", script, "http://127.0.0.1:%d/" % port],
        capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return requests, int(bad.group(1)) if bad else 0, errors.group(1) if errors else ""


def host_calls(work, wasm_count):
    """Host calls per request callback, from the counting build at 1 and 100 experiments."""
    out = {}
    for n in (1, 100):
        log = os.path.join(work, "count-%d.log" % n)
        envoy = Envoy(work, {"abmesh": wasm_filter("abmesh", wasm_count, load_config(n))}, log_path=log)
        try:
            import http.client
            c = http.client.HTTPConnection("127.0.0.1", envoy.ports["abmesh"], timeout=5)
            for i in range(50):
                c.request("GET", "/checkout/cart", headers={"x-user-id": "count-%d" % i})
                c.getresponse().read()
            time.sleep(0.5)
        finally:
            envoy.stop()
        text = open(log).read()
        out[n] = {}
        for callback in ("request", "response", "log"):
            counts = [int(m.group(1)) for m in re.finditer(r"abmesh\.host_calls %s (\d+)" % callback, text)]
            if len(counts) != 50:
                raise SystemExit("bench: expected 50 %s host-call counts at %d experiments, got %d" % (callback, n, len(counts)))
            out[n][callback] = {"min": min(counts), "max": max(counts), "median": statistics.median(counts)}
    return out


def memory(work, wasm, noop):
    """Envoy RSS after start-up and 2,000 requests, with one listener of each kind."""
    import http.client
    out = {}
    for name, filters in (("none", ""), ("noop", wasm_filter("noop", noop, None)),
                          ("abmesh-1", wasm_filter("abmesh", wasm, load_config(1))),
                          ("abmesh-1-opt-3", wasm_filter("abmesh", os.path.join(ROOT, "dist/bench/abmesh-opt-3.wasm"), load_config(1))),
                          ("abmesh-100", wasm_filter("abmesh", wasm, load_config(100)))):
        envoy = Envoy(work, {name: filters})
        try:
            c = http.client.HTTPConnection("127.0.0.1", envoy.ports[name], timeout=5)
            for i in range(2000):
                c.request("GET", "/checkout", headers={"x-user-id": "mem-%d" % i})
                c.getresponse().read()
            time.sleep(1.5)
            out[name] = envoy.rss_kib()
        finally:
            envoy.stop()
    return out


VM_FLAGS = ["--no-liftoff", "--no-wasm-tier-up"]
VM_PASSES = int(os.environ.get("BENCH_VM_PASSES", "4"))


def vm_figures(work, wasm, noop, floor_payload):
    """abmesh's own work per request under V8, without Envoy (bench/vm_bench.mjs): node runs
    each module with TurboFan only, as proxy-wasm-cpp-host configures Envoy's V8 (Liftoff
    off), the host functions in JavaScript. Far less noise than Envoy's CPU per request, so
    it is the breakdown that tells where abmesh's own time goes."""
    floor = os.path.join(work, "floor.txt")
    with open(floor, "w") as f:
        f.write("record=%d header=%d route=%d" % (floor_payload["record"], floor_payload["header"], floor_payload["route"]))
    runs = {"noop": (noop, "-"), "floor-20": (noop, floor)}
    for n in SIZES:
        config = os.path.join(ROOT, "bench/configs/experiments-%d.json" % n)
        runs["abmesh-%d" % n] = (wasm, config)
        for stage in STAGES:
            runs["stop-%s-%d" % (stage, n)] = (os.path.join(ROOT, "dist/bench/abmesh-stop-%s.wasm" % stage), config)
    # Interleaved passes, the fastest sample of all: a slow spell of the machine (a shared VM)
    # then costs a module one pass, not its figure.
    out = {}
    for p in range(VM_PASSES):
        for name, (module, config) in runs.items():
            text = subprocess.run(["node"] + VM_FLAGS + [os.path.join(ROOT, "bench/vm_bench.mjs"), module, config, "4000"],
                                  capture_output=True, text=True, check=True).stdout
            run = json.loads(text)
            if name not in out or run["min_ns_per_request"] < out[name]["min_ns_per_request"]:
                out[name] = run
            print("bench: vm pass %d %-22s %7.2f us/request (min %.2f)" % (
                p + 1, name, run["ns_per_request"] / 1000, run["min_ns_per_request"] / 1000), file=sys.stderr)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    v8 = subprocess.run(["node", "-p", "process.versions.v8"], capture_output=True, text=True).stdout.strip()
    return {"node": node, "v8": v8, "flags": VM_FLAGS, "passes": VM_PASSES, "runs": out}


def machine():
    model = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    envoy_version = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "envoy": envoy_version.split("version: ")[-1], "wrk": wrk_version}


def main():
    wasm = os.path.join(ROOT, "dist/abmesh.wasm")
    noop = os.path.join(ROOT, "dist/bench/noop.wasm")
    wasm_count = os.path.join(ROOT, "dist/bench/abmesh-count.wasm")
    stops = [os.path.join(ROOT, "dist/bench/abmesh-stop-%s.wasm" % s) for s in STAGES]
    for p in [wasm, noop, wasm_count, os.path.join(ROOT, "dist/bench/abmesh-opt-3.wasm")] + stops:
        if not os.path.exists(p):
            raise SystemExit("bench: %s is missing: run ./build.sh bench" % p)
    work = tempfile.mkdtemp(prefix="abmesh-bench-")
    script = os.path.join(work, "wrk.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    payloads = {n: payload(n) for n in (1, 20, 100)}
    vm = vm_figures(work, wasm, noop, payloads[20])
    confs = configurations(wasm, noop, payloads[20])
    names = list(confs)
    envoy = Envoy(work, confs)
    samples = {n: [] for n in names}
    runs = []
    try:
        print("bench: warming up (V8 tiers up hot wasm functions)", file=sys.stderr)
        for n in names:
            wrk(envoy.ports[n], 2, script)
        idle = []
        for r in range(ROUNDS):
            # What Envoy burns with no request at all (every VM's timer, Envoy's own stats
            # flush): spread over whichever listener happens to be loaded, so it is measured
            # in each round and taken out of every figure of that round.
            before, t0 = envoy.cpu_seconds(), time.time()
            time.sleep(IDLE_SECONDS)
            idle_rate = (envoy.cpu_seconds() - before) / (time.time() - t0)
            idle.append(idle_rate)
            for n in names:
                before, t0 = envoy.cpu_seconds(), time.time()
                requests, bad, errors = wrk(envoy.ports[n], SECONDS, script)
                cpu = envoy.cpu_seconds() - before - idle_rate * (time.time() - t0)
                if bad:
                    raise SystemExit("bench: %s answered %d non-2xx responses" % (n, bad))
                us = cpu / requests * 1e6
                samples[n].append(us)
                runs.append({"round": r, "config": n, "requests": requests, "cpu_s": cpu,
                             "rps": requests / SECONDS, "us_per_request": us, "socket_errors": errors})
                print("bench: round %d %-28s %7d requests  %6.2f us/request" % (r + 1, n, requests, us),
                      file=sys.stderr)
        prom = envoy.get("/stats/prometheus")
    finally:
        envoy.stop()
    import envoy_count
    counted = envoy_count.count(ENVOY, sys.modules[__name__], [
        [(n, confs[n]) for n in ("noop", "header-mutation", "floor-20", "lua-20")],
        [(n, confs[n]) for n in ("abmesh-1", "abmesh-20", "abmesh-100", "stop-headers-20")],
        [(n, confs[n]) for n in ("stop-units-20", "stop-evaluate-20", "stop-render-20")],
        [(n, confs[n]) for n in ("stop-set-headers-20", "stop-filter-state-20", "stop-count-20")],
    ])
    median = {n: statistics.median(v) for n, v in samples.items()}
    # What a configuration adds is taken round by round against *none* in the same round, so a
    # slow spell of the machine (this is a shared VM) moves both sides of each difference.
    paired = {n: [x - y for x, y in zip(v, samples["none"])] for n, v in samples.items()}
    quartiles = {n: statistics.quantiles(v, n=4) if len(v) > 1 else [v[0], v[0], v[0]] for n, v in paired.items()}
    results = {
        "machine": machine(),
        "stages": STAGES,
        "opt_level": re.search(r'^opt-level = "?(\w+)"?', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1),
        "method": {"rounds": ROUNDS, "seconds": SECONDS, "connections": CONNECTIONS, "wrk_threads": 1,
                   "envoy_concurrency": 1, "clock_ticks_per_s": TICK},
        "median_us_per_request": median,
        "added_us_over_none": {n: statistics.median(paired[n]) for n in names},
        "added_quartiles": {n: [quartiles[n][0], quartiles[n][2]] for n in names},
        "samples": samples,
        "idle_cpu_per_s": idle,
        "runs": runs,
        "host_calls": host_calls(work, wasm_count),
        "memory_kib": memory(work, wasm, noop),
        "wasm_bytes": {"abmesh": os.path.getsize(wasm), "noop": os.path.getsize(noop),
                       "abmesh-opt-3": os.path.getsize(os.path.join(ROOT, "dist/bench/abmesh-opt-3.wasm"))},
        "payload_bytes": payloads,
        "vm": vm,
        "counted": counted,
        "abmesh_series": len([l for l in prom.splitlines() if l.startswith("abmesh_")]),
    }
    with open(os.path.join(ROOT, "bench/results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print("bench: wrote bench/results.json", file=sys.stderr)


if __name__ == "__main__":
    main()
