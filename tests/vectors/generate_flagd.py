#!/usr/bin/env python3
"""flagd `fractional` vectors from an independent implementation: the `mmh3` package (the
reference MurmurHash3_x86_32) and flagd's v2 bucketing, bucket = (hash * total) >> 32, the
variant whose cumulative weight first exceeds the bucket. Includes ids whose bucket lands
exactly on a boundary (the last bucket of a variant, the first of the next).

    pip install mmh3 && python3 tests/vectors/generate_flagd.py
"""
import json
import os
import random

import mmh3

HERE = os.path.dirname(os.path.abspath(__file__))


def choose(bucket_by: bytes, weights):
    total = sum(weights)
    h = mmh3.hash(bucket_by, 0, signed=False)
    b = (h * total) >> 32
    cumulative = 0
    for i, w in enumerate(weights):
        cumulative += w
        if b < cumulative:
            return i, b, h
    raise AssertionError


def main():
    rng = random.Random(7)
    flags = [("color-flag", None, [50, 50]), ("header-color", None, [25, 25, 25, 25]),
             ("rollout", "custom-seed", [10, 90]), ("weighted", None, [1, 2, 3, 4]), ("single", None, [0, 7, 0])]
    cases = []
    for key, seed, weights in flags:
        prefix = (seed or key).encode()
        total = sum(weights)
        boundaries = set()
        cumulative = 0
        for w in weights[:-1]:
            cumulative += w
            if w:
                boundaries.update({cumulative - 1, cumulative})
        found = {}
        ids = ["user-%d" % i for i in range(40)] + ["josé-%d" % i for i in range(5)] + ["u@example.com"]
        i = 0
        while len(found) < len(boundaries) and i < 200000:
            uid = "b-%d" % i
            _, b, _ = choose(prefix + uid.encode(), weights)
            if b in boundaries and b not in found:
                found[b] = uid
            i += 1
        ids += list(found.values())
        for uid in ids:
            v, b, h = choose(prefix + uid.encode(), weights)
            cases.append({"flag_key": key, "bucket_by_seed": seed, "weights": weights, "unit": uid,
                          "hash": h, "bucket": b, "variant": v, "boundary": uid in found.values()})
    with open(os.path.join(HERE, "flagd.json"), "w") as f:
        json.dump({"generator": "tests/vectors/generate_flagd.py (mmh3 %s)" % __import__("importlib.metadata").metadata.version("mmh3"),
                   "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
