#!/usr/bin/env python3
"""Generates abmesh's golden vectors from an independent implementation of the contract.

This is a second implementation of hash spec v1 and of the assignment rules in
design.md sections 2-3, written in Python from the text of the contract, using the
`xxhash` package (the C reference xxHash) rather than the Rust crate. The Rust core must
reproduce every vector natively and on wasm32 (tests/vectors.rs).

Regenerate (only when the contract changes, which re-randomizes every experiment):
    pip install xxhash==3.* && python3 tests/vectors/generate.py
"""
import hashlib
import json
import os
import random

import xxhash

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKETS = 10000


def bucket(salt: str, uid: bytes) -> int:
    return xxhash.xxh3_64_intdigest(salt.encode() + b":" + uid) % BUCKETS


def ranges(weights, traffic_bp):
    total = sum(weights)
    out, cum = [], 0
    edges = [0]
    for w in weights:
        cum += w
        edges.append(BUCKETS * cum // total)
    for k in range(len(weights)):
        width = edges[k + 1] - edges[k]
        out.append((edges[k], edges[k] + width * traffic_bp // BUCKETS))
    return out


# --- request parsing, from the contract and the README's reference --------------------------

def header(req, name):
    for n, v in req["headers"]:
        if n.lower() == name.encode():
            return v
    return None


def cookie(req, name):
    for n, v in req["headers"]:
        if n.lower() != b"cookie":
            continue
        for pair in v.split(b";"):
            pair = pair.strip()
            if b"=" not in pair:
                continue
            k, val = pair.split(b"=", 1)
            if k.strip() != name.encode():
                continue
            val = val.strip()
            if len(val) >= 2 and val[:1] == b'"' and val[-1:] == b'"':
                val = val[1:-1]
            return val
    return None


def form_decode(s: bytes) -> bytes:
    out, i = bytearray(), 0
    hexd = b"0123456789abcdefABCDEF"
    while i < len(s):
        c = s[i:i + 1]
        if c == b"+":
            out += b" "
        elif c == b"%" and i + 2 < len(s) and s[i + 1] in hexd and s[i + 2] in hexd:
            out.append(int(s[i + 1:i + 3], 16))
            i += 2
        else:
            out += c
        i += 1
    return bytes(out)


def split_path(req):
    p = req["path"]
    return p.split(b"?", 1) if b"?" in p else (p, b"")


def query(req, name):
    for pair in split_path(req)[1].split(b"&"):
        if not pair:
            continue
        n, v = pair.split(b"=", 1) if b"=" in pair else (pair, b"")
        if form_decode(n) == name.encode():
            return form_decode(v)
    return None


def host_without_port(req):
    h = req["host"]
    i = h.rfind(b":")
    if i >= 0 and b"]" not in h[i:] and all(c in b"0123456789" for c in h[i + 1:]):
        return h[:i]
    return h


def holds(cond, value):
    (op, arg), = cond.items()
    if op == "present":
        return (value is not None) == arg
    if value is None:
        return op == "not_in"
    if op == "in":
        return value in [a.encode() for a in arg]
    if op == "not_in":
        return value not in [a.encode() for a in arg]
    return value.startswith(arg.encode())


def matches(when, req):
    path = split_path(req)[0]
    if "path_prefix" in when and not any(path.startswith(p.encode()) for p in when["path_prefix"]):
        return False
    if "methods" in when and req["method"] not in [m.encode() for m in when["methods"]]:
        return False
    if "hosts" in when and host_without_port(req).lower() not in [h.lower().encode() for h in when["hosts"]]:
        return False
    for n, c in when.get("headers", {}).items():
        if not holds(c, header(req, n.lower())):
            return False
    for n, c in when.get("cookies", {}).items():
        if not holds(c, cookie(req, n)):
            return False
    for n, c in when.get("query", {}).items():
        if not holds(c, query(req, n)):
            return False
    return True


def unit_id(config, unit, req):
    for src in config["units"][unit]:
        (kind, name), = src.items()
        v = {"header": lambda: header(req, name.lower()), "cookie": lambda: cookie(req, name),
             "query": lambda: query(req, name)}[kind]()
        if v is not None and 0 < len(v) <= 512:
            return v
    return None


def overrides(config, req):
    o = config.get("overrides")
    if not o:
        return {}
    token = header(req, o.get("token_header", "x-abmesh-token"))
    force = header(req, o.get("header", "x-abmesh-force"))
    if token is None or force is None or hashlib.sha256(token).hexdigest() not in o["token_sha256"]:
        return {}
    out = {}
    for member in force.split(b","):
        member = member.strip(b" \t")
        if b"=" not in member:
            continue
        k, v = member.split(b"=", 1)
        v = v.split(b";", 1)[0]
        if len(v) >= 2 and v[:1] == b'"' and v[-1:] == b'"':
            v = v[1:-1]
        out.pop(k, None)
        out[k] = v
    return out


def default_unit(config, e):
    if "layer" in e:
        return config["layers"][e["layer"]["name"]].get("unit") or next(iter(config["units"]))
    return e.get("unit") or next(iter(config["units"]))


def evaluate(config, req, now_ms):
    forced = overrides(config, req)
    assignments, not_assigned = [], {}
    units_seen = {}
    for e in config["experiments"]:
        key, names = e["key"], [v["name"] for v in e["variants"]]
        status = e.get("status", "running")
        unit = default_unit(config, e)
        uid = unit_id(config, unit, req)
        if status == "paused":
            not_assigned[key] = "paused"
            continue
        fv = forced.get(key.encode())
        if fv is not None and fv.decode("latin-1") in names:
            assignments.append((key, fv.decode(), True, False, unit, uid))
            continue
        if status == "rolled_out":
            if matches(e.get("when", {}), req):
                assignments.append((key, e["winner"], False, True, unit, uid))
            else:
                not_assigned[key] = "targeting"
            continue
        start, end = e.get("start_ms"), e.get("end_ms")
        if (start is not None and now_ms < start) or (end is not None and now_ms >= end):
            not_assigned[key] = "schedule"
            continue
        if not matches(e.get("when", {}), req):
            not_assigned[key] = "targeting"
            continue
        if uid is None:
            not_assigned[key] = "no_unit"
            continue
        h = config.get("holdout")
        if h and h.get("unit", next(iter(config["units"]))) == unit and bucket(h["salt"], uid) < round(h["percent"] * 100):
            not_assigned[key] = "holdout"
            continue
        if "layer" in e:
            layer = config["layers"][e["layer"]["name"]]
            s, t = e["layer"]["buckets"]
            if not s <= bucket(layer.get("salt", e["layer"]["name"]), uid) < t:
                not_assigned[key] = "layer"
                continue
        b = bucket(e.get("salt", key), uid)
        tbp = round(e.get("traffic_percent", 100) * 100)
        weights = [v["weight"] for v in e["variants"]]
        for k, (lo, hi) in enumerate(ranges(weights, tbp)):
            if lo <= b < hi:
                assignments.append((key, names[k], False, False, unit, uid))
                break
        else:
            not_assigned[key] = "traffic"
    dictionary = ", ".join(f"{k}={v}" + (";forced" if f else "") for k, v, f, _, _, _ in assignments)
    route = {}
    for k, v, _, _, _, _ in assignments:
        e = next(x for x in config["experiments"] if x["key"] == k)
        if e.get("route_header"):
            route[config.get("output", {}).get("route_header_prefix", "x-exp-") + k] = v
    exposures = [{"experiment": k, "variant": v, "unit": u, "forced": f}
                 for k, v, f, r, u, _ in assignments if not r]
    units = {}
    for k, v, f, r, u, uid in assignments:
        if not r and uid is not None:
            units[u] = uid.decode("utf-8", "replace")
    return {
        "header": dictionary or None,
        "route_headers": route,
        "not_assigned": not_assigned,
        "exposure": {"units": units, "assignments": exposures} if exposures else None,
    }


# --- vectors -------------------------------------------------------------------------------

def id_field(uid: bytes):
    try:
        s = uid.decode("utf-8")
        return {"id": s}
    except UnicodeDecodeError:
        return {"id_hex": uid.hex()}


def bucket_vectors(rng):
    salts = ["", "new-checkout", "holdout-2026", "layer-checkout", "s", "über-salt ✓", "a:b", "x" * 200]
    ids = [b"", b"alice", b"bob", b"0", b"user-123456", "José".encode(), "用户七".encode(), "👩‍🚀".encode(),
           b"\xff", b"\xc3\x28", b"\x00\x01\x02", b"a" * 512, bytes(range(256)) * 2, b" ", b"a:b", b"%zz"]
    cases = []
    for s in salts:
        for i in ids:
            cases.append((s, i))
    while len(cases) < 400:
        n = rng.choice([1, 4, 8, 16, 36, 64, 128, 511, 512])
        kind = rng.random()
        if kind < 0.5:
            uid = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(n)).encode()
        elif kind < 0.75:
            uid = "".join(rng.choice("aéü中文𝄞ñ") for _ in range(max(1, n // 4))).encode()[:512]
        else:
            uid = bytes(rng.randrange(256) for _ in range(n))
        cases.append((rng.choice(salts + ["exp-%d" % rng.randrange(1000)]), uid))
    return [dict(salt=s, **id_field(i), bucket=bucket(s, i)) for s, i in cases]


QA_TOKEN = "qa-token-2026"
QA_SHA = hashlib.sha256(QA_TOKEN.encode()).hexdigest()

CONFIGS = {
    "traffic": {
        "units": {"user": [{"header": "x-user-id"}, {"cookie": "uid"}, {"query": "uid"}]},
        "experiments": [
            {"key": "ab", "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}]},
            {"key": "three-way", "salt": "three-way-v2", "traffic_percent": 37.5,
             "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}, {"name": "c", "weight": 7}],
             "route_header": True},
            {"key": "tiny", "traffic_percent": 0.25, "variants": [{"name": "on", "weight": 3}]},
            {"key": "zero-traffic", "traffic_percent": 0, "variants": [{"name": "on", "weight": 1}]},
        ],
    },
    "layers": {
        "units": {"user": [{"header": "x-user-id"}], "device": [{"cookie": "did"}, {"query": "did"}]},
        "holdout": {"unit": "user", "salt": "holdout-2026", "percent": 10},
        "layers": {"checkout": {"unit": "user", "salt": "layer-checkout"}, "search": {"unit": "device"}},
        "experiments": [
            {"key": "pay-button", "layer": {"name": "checkout", "buckets": [0, 5000]},
             "variants": [{"name": "blue", "weight": 1}, {"name": "green", "weight": 1}]},
            {"key": "one-page", "layer": {"name": "checkout", "buckets": [5000, 10000]},
             "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}], "route_header": True},
            {"key": "ranker", "unit": "device", "layer": {"name": "search", "buckets": [2500, 7500]},
             "variants": [{"name": "bm25", "weight": 1}, {"name": "neural", "weight": 1}]},
            {"key": "banner", "unit": "device", "variants": [{"name": "off", "weight": 9}, {"name": "on", "weight": 1}]},
        ],
    },
    "targeting": {
        "units": {"user": [{"header": "x-user-id"}]},
        "experiments": [
            {"key": "checkout-us", "when": {"path_prefix": ["/checkout", "/cart"], "methods": ["GET", "POST"],
                                            "headers": {"x-country": {"in": ["US", "CA"]}}},
             "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]},
            {"key": "mobile", "when": {"hosts": ["m.example.com"], "cookies": {"beta": {"present": True}},
                                       "query": {"src": {"not_in": ["ads"]}}},
             "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
            {"key": "agents", "when": {"headers": {"user-agent": {"prefix": "Mozilla/"}, "x-bot": {"present": False}}},
             "variants": [{"name": "x", "weight": 1}, {"name": "y", "weight": 3}]},
        ],
    },
    "schedule": {
        "units": {"user": [{"header": "x-user-id"}]},
        "experiments": [
            {"key": "november", "start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00+00:00",
             "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
            {"key": "from-dec", "start": "2026-12-01T01:00:00+01:00",
             "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
            {"key": "until-nov-15", "end": "2026-11-15T12:00:00.500Z",
             "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
        ],
    },
    "overrides": {
        "units": {"user": [{"header": "x-user-id"}]},
        "holdout": {"salt": "h", "percent": 50},
        "experiments": [
            {"key": "ab", "traffic_percent": 10, "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
             "route_header": True},
            {"key": "paused-one", "status": "paused", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
            {"key": "rollout", "status": "rolled_out", "winner": "new", "when": {"path_prefix": ["/app"]},
             "variants": [{"name": "old", "weight": 1}, {"name": "new", "weight": 1}]},
            {"key": "later", "start": "2030-01-01T00:00:00Z", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
        ],
        "output": {"route_header_prefix": "x-route-"},
        "overrides": {"token_sha256": [QA_SHA]},
    },
}


def parse_time(s):
    import datetime
    return int(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def enc(v: bytes):
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": v.hex()}


def random_user(rng):
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.choice([1, 8, 513])))
    if r < 0.15:
        return ("ü" * 300).encode()[: rng.choice([512, 513])]
    return ("user-%d" % rng.randrange(10**6)).encode()


def random_request(rng, name):
    headers = []
    path = rng.choice([b"/", b"/checkout", b"/checkout/pay", b"/cart", b"/app/home", b"/search"])
    qs = []
    uid = random_user(rng)
    where = rng.random()
    if uid is not None:
        if where < 0.6:
            headers.append((b"x-user-id", uid))
        elif where < 0.8:
            headers.append((b"cookie", b"uid=" + uid.replace(b";", b"")))
        else:
            qs.append(b"uid=" + uid.replace(b"&", b"%26").replace(b"#", b""))
    if rng.random() < 0.5:
        headers.append((b"cookie", b"did=dev-%d; beta=1" % rng.randrange(10**5)))
    if rng.random() < 0.3:
        qs.append(b"did=q%%2D%d" % rng.randrange(1000))
    if rng.random() < 0.3:
        qs.append(rng.choice([b"src=ads", b"src=mail", b"src", b"%zz=1"]))
    if rng.random() < 0.6:
        headers.append((b"x-country", rng.choice([b"US", b"CA", b"FR", b"us"])))
    if rng.random() < 0.5:
        headers.append((b"user-agent", rng.choice([b"Mozilla/5.0", b"curl/8", b"Mozilla"])))
    if rng.random() < 0.2:
        headers.append((b"x-bot", b"1"))
    if name == "overrides" and rng.random() < 0.6:
        token = rng.choice([QA_TOKEN.encode(), b"wrong", QA_TOKEN.encode()])
        headers.append((b"x-abmesh-token", token))
        headers.append((b"x-abmesh-force", rng.choice(
            [b"ab=treatment", b"ab=control, paused-one=b", b"rollout=old", b"later=b;x=1", b"ab=nope", b"ab=\"treatment\"",
             b"later=a, later=b", b"\xff=1, ab=control"])))
    if qs:
        path += b"?" + b"&".join(qs)
    return {
        "method": rng.choice([b"GET", b"GET", b"POST", b"DELETE"]),
        "path": path,
        "host": rng.choice([b"example.com", b"m.example.com:8443", b"M.EXAMPLE.COM"]),
        "headers": headers,
        "time": rng.choice(["2026-10-15T00:00:00Z", "2026-11-10T00:00:00Z", "2026-11-15T12:00:00.500Z",
                            "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"]),
    }


def assignment_vectors(rng):
    cases = []
    for name, config in CONFIGS.items():
        cfg = json.loads(json.dumps(config))
        for e in cfg["experiments"]:
            if "start" in e:
                e["start_ms"] = parse_time(e["start"])
            if "end" in e:
                e["end_ms"] = parse_time(e["end"])
        for _ in range(40):
            req = random_request(rng, name)
            expected = evaluate(cfg, req, parse_time(req["time"]))
            cases.append({
                "config": name,
                "request": {
                    "method": enc(req["method"]), "path": enc(req["path"]), "host": enc(req["host"]),
                    "headers": [[n.decode(), enc(v)] for n, v in req["headers"]], "time": req["time"],
                },
                "expected": expected,
            })
    return cases


def main():
    rng = random.Random(20261125)
    with open(os.path.join(HERE, "buckets.json"), "w") as f:
        json.dump({"spec": "abmesh hash spec v1: xxh3_64(utf8(salt) ++ ':' ++ id) mod 10000",
                   "generator": "tests/vectors/generate.py (Python xxhash %s)" % xxhash.VERSION,
                   "cases": bucket_vectors(rng)}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(HERE, "assignments.json"), "w") as f:
        json.dump({"generator": "tests/vectors/generate.py", "qa_token": QA_TOKEN, "configs": CONFIGS,
                   "cases": assignment_vectors(rng)}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
