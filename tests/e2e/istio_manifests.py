"""Validates the Kubernetes manifests of the repository against the CustomResourceDefinitions
of the controllers that read them — Istio's (tests/istio/crds.yaml, unchanged from istio/api),
Flagger's and Argo Rollouts' (tests/progressive-delivery/, unchanged from fluxcd/flagger and
argoproj/argo-rollouts): the OpenAPI v3 schema as the API server applies it (unknown fields
refused, as `kubectl apply` does with its default strict field validation) and the CEL rules
(x-kubernetes-validations), evaluated with cel-python. Then the rules Istio applies that no
schema can express, each citing where Istio decides it.

  istio_manifests.py ROOT CLI DIGEST                  every manifest in the repository
  istio_manifests.py ROOT CLI DIGEST --only FILE...   just these files (the tests' bad cases)

DIGEST is the image digest `./build.sh image` printed (sha256:<hex>). Prints one line per
manifest; on failure every problem, `path: [kind name] field: message`, and exit status 1."""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import celpy
import jsonschema
import yaml
from celpy import celtypes

ROOT, CLI, DIGEST = sys.argv[1:4]
ONLY = sys.argv[5:] if sys.argv[4:5] == ["--only"] else None
VERSION = re.search(r'^version = "([^"]+)"', open(f"{ROOT}/Cargo.toml").read(), re.M).group(1)
IMAGE = "registry.example.com/abmesh/abmesh"
GATEWAY_LABELS = {"ingressgateway", "egressgateway"}
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


# --- Istio's CRDs --------------------------------------------------------------------------

CRD_FILES = ["tests/istio/crds.yaml", "tests/progressive-delivery/flagger-crds.yaml",
             "tests/progressive-delivery/argo-rollouts-crds.yaml"]
# The API groups whose manifests must all pass their CRD.
GROUPS = r"(^|\.)istio\.io/|^flagger\.app/|^argoproj\.io/"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # Argo's CRDs are 3 MB

CRDS = {}
for crd_file in CRD_FILES:
    for crd in yaml.load_all(open(f"{ROOT}/{crd_file}"), Loader=LOADER):
        if not crd:
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                CRDS[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]


def strict(schema):
    """The structural schema as JSON Schema: an object lists its fields, so any other field is
    refused unless the schema preserves unknown fields; `nullable` admits null."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


# Kubernetes' CEL library functions that Istio's rules use (k8s.io/apiserver/pkg/cel/library,
# urls.go: isURL and url parse with Go's url.ParseRequestURI): an absolute URI with a scheme,
# or an absolute path.
URI = re.compile(r"^(?:([A-Za-z][A-Za-z0-9+.-]*):[^\s]*|/[^\s]*)$")


def is_url(s):
    return celtypes.BoolType(bool(URI.match(str(s))))


def url(s):
    m = URI.match(str(s))
    if not m:
        raise ValueError(f"URL parse error: {s}")
    return celtypes.MapType({celtypes.StringType("scheme"): celtypes.StringType(m.group(1) or "")})


def get_scheme(u):
    return u[celtypes.StringType("scheme")]


CEL = celpy.Environment()
FUNCTIONS = {"isURL": is_url, "url": url, "getScheme": get_scheme}
COMPILED = {}


def cel_rules(schema, value, path, where):
    """Every x-kubernetes-validations rule on the schema nodes that `value` reaches."""
    if not isinstance(schema, dict):
        return
    for rule in schema.get("x-kubernetes-validations", []):
        if rule["rule"] not in COMPILED:
            COMPILED[rule["rule"]] = CEL.program(CEL.compile(rule["rule"]), functions=FUNCTIONS)
        try:
            ok = COMPILED[rule["rule"]].evaluate({"self": celpy.json_to_cel(value)})
        except Exception as e:  # an evaluation error is a refusal, as in the API server
            ok = False
            rule = {**rule, "message": f"{rule.get('message', rule['rule'])} ({e})"}
        if not bool(ok):
            problem(where, f"{path.lstrip('.') or '.'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for k, v in value.items():
            if k in schema.get("properties", {}):
                cel_rules(schema["properties"][k], v, f"{path}.{k}", where)
            elif isinstance(schema.get("additionalProperties"), dict):
                cel_rules(schema["additionalProperties"], v, f"{path}.{k}", where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            cel_rules(schema["items"], v, f"{path}[{i}]", where)


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate_schema(doc, where):
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = CRDS.get(key)
    if schema is None:
        return False
    meta = doc.get("metadata", {})
    if not DNS_SUBDOMAIN.match(meta.get("name", "")) or len(meta.get("name", "")) > 253:
        problem(where, f"metadata.name: must be a DNS-1123 subdomain, found {meta.get('name')!r}")
    if "namespace" in meta and not DNS_LABEL.match(meta["namespace"]):
        problem(where, f"metadata.namespace: must be a DNS-1123 label, found {meta['namespace']!r}")
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = jsonschema.Draft7Validator(strict(schema))
    for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        field = ".".join(str(p) for p in e.absolute_path) or "."
        problem(where, f"{field}: {e.message}")
    cel_rules(schema, body, "", where)
    return True


# --- rules no schema expresses ---------------------------------------------------------------

def abmesh_module(spec, kind):
    """The module settings of an abmesh WasmPlugin or TrafficExtension, if it is one."""
    module = spec.get("wasm", {}) if kind == "TrafficExtension" else spec
    return module if "abmesh" in str(module.get("url", "")) else None


def on_gateway(spec):
    labels = spec.get("selector", {}).get("matchLabels", {})
    refs = spec.get("targetRefs", [])
    return labels.get("istio") in GATEWAY_LABELS or any(r.get("kind") == "Gateway" for r in refs)


def check_rules(doc, where, texts):
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind not in ("WasmPlugin", "TrafficExtension"):
        return
    module = abmesh_module(spec, kind)
    if module is None:
        return
    modes = [m.get("mode", "UNDEFINED") for m in spec.get("match", [])]
    if on_gateway(spec):
        # pilot/pkg/model/extensions.go, workloadModeForListenerClass: a gateway's listeners
        # are CLIENT; matchMode attaches SERVER only to sidecar inbound listeners.
        if modes and not set(modes) & {"CLIENT", "CLIENT_AND_SERVER", "UNDEFINED"}:
            problem(where, f"match: on a gateway the mode must be CLIENT or CLIENT_AND_SERVER "
                           f"(Istio never attaches SERVER to a gateway listener), found {modes}")
    elif modes != ["SERVER"]:
        # A sidecar's inbound (SERVER) listeners carry the requests to this workload; CLIENT
        # would also run abmesh on every call it makes to other services.
        problem(where, f"match: on a sidecar abmesh runs on inbound requests only: "
                       f"[{{mode: SERVER}}], found {modes}")
    # pkg/wasm/cache.go: for oci:// the sha256 is the image manifest's digest.
    want = DIGEST.removeprefix("sha256:")
    if module.get("url") != f"oci://{IMAGE}:{VERSION}":
        problem(where, f"url: must be oci://{IMAGE}:{VERSION}, found {module.get('url')!r}")
    if module.get("sha256") != want:
        problem(where, f"sha256: must pin the image this tree builds, {want} (run ./build.sh pin), "
                       f"found {module.get('sha256')!r}")
    if module.get("imagePullPolicy") != "IfNotPresent":
        problem(where, "imagePullPolicy: IfNotPresent (a pinned digest never changes)")
    # pkg/wasm/convert.go: a module that cannot be fetched becomes a deny-all RBAC filter
    # unless the policy is FAIL_OPEN.
    if module.get("failStrategy") != "FAIL_OPEN":
        problem(where, f"failStrategy: FAIL_OPEN, the only strategy under which a fetch failure "
                       f"or a trap never refuses traffic, found {module.get('failStrategy')!r}")
    config = module.get("pluginConfig")
    if not isinstance(config, dict):
        problem(where, "pluginConfig: must be the abmesh configuration as a mapping")
        return
    if any(e.get("route_header") for e in config.get("experiments", [])) and spec.get("phase") != "AUTHN":
        problem(where, "phase: AUTHN, so route headers are set before the route is chosen")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    out = subprocess.run([CLI, "check", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    if out.returncode != 0:
        problem(where, f"pluginConfig: abmesh check refuses it: {out.stdout.strip()}")
    texts.append(where)


def stat_tags():
    """The label names abmesh's series carry, as envoy/envoy.yaml's stats_tags extract them
    (the e2e tests prove those against the filter)."""
    envoy = yaml.safe_load(open(f"{ROOT}/envoy/envoy.yaml"))
    return [t["tag_name"] for t in envoy["stats_config"]["stats_tags"]]


def check_mesh(doc, where):
    if doc.get("kind") != "IstioOperator":
        return
    tags = doc["spec"]["meshConfig"]["defaultConfig"].get("extraStatTags", [])
    if sorted(tags) != sorted(stat_tags()):
        problem(where, f"meshConfig.defaultConfig.extraStatTags: must name every label abmesh "
                       f"emits, {stat_tags()}, found {tags}")


# --- the manifests ---------------------------------------------------------------------------

def gateway_config():
    text = open(f"{ROOT}/examples/basic-ab.json").read()
    return json.dumps(json.loads(text))


def manifests():
    """(where, text) for every YAML file under examples/ and every ```yaml block in the
    README and docs/ that holds an Istio resource."""
    if ONLY:
        for path in ONLY:
            yield path, open(path).read()
        return
    files = sorted(glob.glob(f"{ROOT}/examples/**/*.y*ml", recursive=True))
    for path in files:
        yield os.path.relpath(path, ROOT), open(path).read()
    for path in [f"{ROOT}/README.md"] + sorted(glob.glob(f"{ROOT}/docs/*.md")):
        text = open(path).read()
        for n, m in enumerate(re.finditer(r"^```yaml\n(.*?)^```", text, re.M | re.S)):
            line = text[: m.start()].count("\n") + 1
            yield f"{os.path.relpath(path, ROOT)}:{line}", m.group(1)


validated, other, plugins = [], [], []
for where, text in manifests():
    # A CI template is validated as abmesh-guard.sh renders it.
    text = text.replace("ABMESH_PLUGIN_CONFIG", gateway_config())
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as e:
        problem(where, f"not YAML: {e}")
        continue
    for i, doc in enumerate(docs):
        api = str(doc.get("apiVersion", ""))
        if not re.search(GROUPS, api):
            continue
        name = f"{where}#{i} {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if validate_schema(doc, name):
            validated.append(name)
        else:
            other.append(name)
        check_rules(doc, name, plugins)
        check_mesh(doc, name)

for name in validated:
    print("checked against its CRD:", name)
for name in other:
    print("no CRD in %s (checked by its own rules):" % ", ".join(CRD_FILES), name)
for name in plugins:
    print("checked against abmesh's module rules:", name)
if problems:
    print("\n".join(problems))
    sys.exit(1)
if not ONLY and not plugins:
    sys.exit("istio_manifests: no abmesh WasmPlugin or TrafficExtension found")
print("ok")
