#!/usr/bin/env python3
"""Validates OFREP responses against the OFREP OpenAPI document (tests/openfeature, unchanged).

Usage: ofrep_openapi.py OPENAPI.yaml RESPONSES.jsonl — each line {"path", "status", "body"} of
a POST to evaluate/flags or evaluate/flags/{key}. Each body is validated (JSON Schema 2020-12,
jsonschema + referencing) against the schema the document gives that endpoint and status.

One defect of the document is worked around, and checked to still be there: evaluationSuccess
is `allOf: [{key, reason, ...}, {oneOf: [booleanFlag, stringFlag, integerFlag, floatFlag,
objectFlag, codeDefaultFlag]}]`, and codeDefaultFlag (an object with no required property)
matches every response, while every integer value is also a floatFlag: no response with a
value can match exactly one branch. That `oneOf` is read as `anyOf`, and a response with a
value must in addition match the typed schema of its value.
"""
import copy
import json
import sys

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def registry(doc):
    return Registry().with_resource("urn:ofrep", Resource.from_contents(doc, default_specification=DRAFT202012))


def validator(reg, name):
    return jsonschema.Draft202012Validator({"$ref": f"urn:ofrep#/components/schemas/{name}"}, registry=reg)


def main():
    doc = yaml.safe_load(open(sys.argv[1]))
    branch = doc["components"]["schemas"]["evaluationSuccess"]["allOf"][1]
    flag_types = [b["$ref"].rsplit("/", 1)[1] for b in branch["oneOf"]]
    fixed = copy.deepcopy(doc)
    fixed_branch = fixed["components"]["schemas"]["evaluationSuccess"]["allOf"][1]
    fixed_branch["anyOf"] = fixed_branch.pop("oneOf")
    strict, reg = registry(doc), registry(fixed)
    typed = {
        bool: "booleanFlag", str: "stringFlag", int: "integerFlag", float: "floatFlag", dict: "objectFlag",
    }
    schema_for = {
        ("single", 200): "serverEvaluationSuccess",
        ("single", 400): "evaluationFailure",
        ("single", 404): "flagNotFound",
        ("bulk", 200): "bulkEvaluationSuccess",
        ("bulk", 400): "bulkEvaluationFailure",
        ("single", 500): "generalErrorResponse",
        ("bulk", 500): "generalErrorResponse",
    }
    valid, defect_seen, failures = 0, 0, []
    for n, line in enumerate(open(sys.argv[2]), 1):
        r = json.loads(line)
        path = r["path"].rstrip("/")
        endpoint = "bulk" if path.endswith("/evaluate/flags") else "single"
        if r["status"] == 304:
            ok = endpoint == "bulk" and r["body"] == ""
            valid += ok
            if not ok:
                failures.append(f"line {n}: 304 from {path} with body {r['body']!r}")
            continue
        name = schema_for.get((endpoint, r["status"]))
        if name is None:
            failures.append(f"line {n}: status {r['status']} from {path} is not in the document")
            continue
        body = json.loads(r["body"])
        errors = [e.message for e in validator(reg, name).iter_errors(body)]
        successes = body.get("flags", []) if endpoint == "bulk" else [body] if r["status"] == 200 else []
        for s in successes:
            if "value" in s:
                errors += [e.message for e in validator(reg, typed[type(s["value"])]).iter_errors(s)]
                # The document itself, unmodified, refuses the response only for the defect.
                literal = list(validator(strict, "evaluationSuccess").iter_errors(s))
                if literal and all("is valid under each of" in e.message for e in literal):
                    defect_seen += 1
                elif literal:
                    errors += [e.message for e in literal]
        if errors:
            failures.append(f"line {n}: {r['status']} {path} {r['body'][:200]}: {errors[:3]}")
        else:
            valid += 1
    if failures:
        print("\n".join(failures[:20]))
        print(f"{len(failures)} invalid of {valid + len(failures)}")
        sys.exit(1)
    assert flag_types[-1] == "codeDefaultFlag", flag_types
    print(f"{valid} responses valid ({defect_seen} evaluations with a value refused by the document's "
          f"oneOf only, as every one must be: its codeDefaultFlag matches any object)")


if __name__ == "__main__":
    main()
