#!/usr/bin/env python3
"""Writes the benchmark configurations bench/configs/experiments-N.json (N running
experiments), deterministic, used by the native and the Envoy benchmarks alike.

Each configuration is realistic rather than minimal: two unit types, a holdout, a layer
holding some experiments, targeting on a share of them, partial traffic, 2-4 variants, a
route header on the first experiment, the default exposure pipeline (filter state for the
access log; no application log) and metrics on."""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def config(n, rng):
    experiments = []
    layer_slots = 10  # up to 10 experiments share the layer, 1000 buckets each
    in_layer = 0
    for i in range(n):
        k = rng.choice([2, 2, 3, 4])
        e = {
            "key": f"exp-{i:04d}",
            "unit": "user",
            "variants": [{"name": "control" if j == 0 else f"v{j}", "weight": rng.choice([1, 1, 2, 5])}
                         for j in range(k)],
        }
        if i % 3 == 1:
            e["traffic_percent"] = rng.choice([10, 25, 50, 75.5])
        if i % 4 == 2:
            e["when"] = {"path_prefix": ["/checkout", "/cart"], "methods": ["GET", "POST"]}
        if i % 5 == 3 and in_layer < layer_slots:
            e["layer"] = {"name": "checkout", "buckets": [in_layer * 1000, in_layer * 1000 + 1000]}
            in_layer += 1
        if i % 10 == 9:
            e["unit"] = "device"
        experiments.append(e)
    if experiments:
        experiments[0]["route_header"] = True
    out = {
        "units": {"user": [{"header": "x-user-id"}, {"cookie": "uid"}],
                  "device": [{"cookie": "did"}, {"query": "did"}]},
        "holdout": {"unit": "user", "salt": "holdout-bench", "percent": 2},
        "layers": {"checkout": {"unit": "user", "salt": "layer-checkout"}},
        "experiments": experiments,
        "exposure": {"unit_id": "raw", "filter_state": True},
    }
    if n > 100:
        # Past the default limits (SECURITY.md, "Limits"): the compile benchmark only needs a
        # configuration abmesh accepts, so this one opts into the largest outputs it allows.
        out["metrics"] = {"replicates": 0}
        out["output"] = {"max_header_bytes": 61440}
        out["exposure"]["max_record_bytes"] = 131072
    return out


def main():
    os.makedirs(os.path.join(HERE, "configs"), exist_ok=True)
    for n in (1, 20, 100, 1000):
        with open(os.path.join(HERE, "configs", f"experiments-{n}.json"), "w") as f:
            json.dump(config(n, random.Random(n)), f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
