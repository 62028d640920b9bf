#!/usr/bin/env python3
"""Golden vectors of the replicate hash, from the text of the README (Metrics, replicates),
with the C reference xxHash (the `xxhash` package) rather than the Rust crate:

    replicate(id) = xxh3_64_with_seed(id_bytes, seed) mod R,
    seed = the ASCII bytes "abmesh/r" read as a big-endian integer.

Regenerate (only if the spec changes): pip install xxhash==3.* && python3 tests/vectors/generate_replicates.py
"""
import json
import os
import random

import xxhash

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = int.from_bytes(b"abmesh/r", "big")


def replicate(uid: bytes, r: int) -> int:
    return xxhash.xxh3_64_intdigest(uid, seed=SEED) % r


def main():
    rng = random.Random(20261201)
    ids = [b"", b"alice", b"bob", b"0", "José".encode(), "用户七".encode(), b"\xff\xfe\x00a", b"x" * 512]
    ids += [("user-%d" % rng.randrange(10**9)).encode() for _ in range(120)]
    ids += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(80)]
    cases = []
    for i, uid in enumerate(ids):
        r = [1, 2, 16, 32, 64, 100, 256][i % 7]
        case = {"replicates": r, "replicate": replicate(uid, r)}
        try:
            case["id"] = uid.decode("utf-8")
        except UnicodeDecodeError:
            case["id_hex"] = uid.hex()
        cases.append(case)
    doc = {
        "spec": "replicate(id) = xxh3_64_with_seed(id, seed = big-endian u64 of b'abmesh/r' = 0x%016x) mod R" % SEED,
        "generator": "tests/vectors/generate_replicates.py (Python xxhash %s)" % xxhash.VERSION,
        "cases": cases,
    }
    with open(os.path.join(HERE, "replicates.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
