"""Checks the YAML examples that neither Envoy nor the abmesh CLI reads directly.
Run by tests/e2e (every_example_and_shipped_envoy_config_is_valid) with PyYAML.
Prints one line per checked file; exits non-zero with a message on the first problem."""
import glob
import json
import os
import sys

import yaml

ROOT = sys.argv[1]
TAGS = ["experiment", "variant", "replicate", "reason", "kind", "class", "le"]


def fail(msg):
    sys.exit(f"check_yaml: {msg}")


docs = {}
for path in sorted(glob.glob(f"{ROOT}/examples/**/*.yaml", recursive=True) + glob.glob(f"{ROOT}/examples/**/*.yml", recursive=True) + glob.glob(f"{ROOT}/envoy/*.yaml")):
    try:
        docs[os.path.relpath(path, ROOT)] = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{path} is not valid YAML: {e}")
    print("parsed", os.path.relpath(path, ROOT))

plugin = docs["examples/istio/wasmplugin.yaml"][0]
if plugin["kind"] != "WasmPlugin" or plugin["spec"]["failStrategy"] != "FAIL_OPEN":
    fail("the WasmPlugin must use the recommended failStrategy FAIL_OPEN")
config = plugin["spec"]["pluginConfig"]
extracted = json.loads(sys.stdin.read())
if config != extracted:
    fail("the pluginConfig the tests check differs from what YAML reads")
prefix = config.get("output", {}).get("route_header_prefix", "x-exp-")
route_headers = {prefix + e["key"]: [v["name"] for v in e["variants"]]
                 for e in config["experiments"] if e.get("route_header")}
for doc in docs["examples/istio/virtualservice.yaml"]:
    if doc["kind"] != "VirtualService":
        continue
    for rule in doc["spec"]["http"]:
        for match in rule.get("match", []):
            for name, cond in match.get("headers", {}).items():
                if name not in route_headers or cond["exact"] not in route_headers[name]:
                    fail(f"VirtualService matches {name}: {cond}, which the WasmPlugin never sets")

# The TrafficExtension is the same gateway plugin in the newer API.
extension = docs["examples/istio/trafficextension.yaml"][0]
if extension["spec"]["wasm"]["pluginConfig"] != config or extension["spec"]["selector"] != plugin["spec"]["selector"]:
    fail("the TrafficExtension must deploy the WasmPlugin's configuration on the same gateway")
for field in ("url", "sha256", "failStrategy", "imagePullPolicy"):
    if extension["spec"]["wasm"][field] != plugin["spec"][field]:
        fail(f"the TrafficExtension's wasm.{field} differs from the WasmPlugin's {field}")

# The internal tier trusts, so it must be reachable only through the edge.
internal, policy = docs["examples/istio/wasmplugin-internal.yaml"]
if internal["spec"]["pluginConfig"].get("inbound") != "trust" or config.get("inbound", "strip") != "strip":
    fail("the gateway must strip and the internal tier must trust")
if policy["kind"] != "AuthorizationPolicy" or policy["spec"]["selector"] != internal["spec"]["selector"]:
    fail("the trusting tier needs an AuthorizationPolicy on the same workloads")
if policy["spec"]["action"] != "ALLOW" or [s["source"]["principals"] for r in policy["spec"]["rules"] for s in r["from"]] != [["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]]:
    fail("the trusting tier must admit the ingress gateway's identity only")
ours = {e["key"] for e in internal["spec"]["pluginConfig"]["experiments"]}
if ours & {e["key"] for e in config["experiments"]}:
    fail("the tiers must run different experiments")

# The CI example: the workflow runs the script with a template that has the placeholder.
workflow = docs["examples/ci/github-actions.yml"][0]
steps = workflow["jobs"]["guard"]["steps"]
guard_step = next(s for s in steps if s.get("id") == "guard")
if '"$ABMESH_GUARD" run' not in guard_step["run"] or guard_step["env"]["ABMESH_APPLY"] != "istio":
    fail("the workflow must run the released abmesh-guard.sh with ABMESH_APPLY=istio")
install = next(s for s in steps if s.get("id") == "install")
if "sha256sum -c -" not in install["run"] or "git clone" in install["run"] or "cargo build" in install["run"]:
    fail("the workflow must install a released CLI and check its sha256, not build from source")
if not os.access(f"{ROOT}/examples/ci/abmesh-guard.sh", os.X_OK):
    fail("examples/ci/abmesh-guard.sh must be executable")
template = docs["examples/ci/wasmplugin.template.yaml"][0]
if template["spec"]["pluginConfig"] != "ABMESH_PLUGIN_CONFIG" or template["spec"]["selector"] != plugin["spec"]["selector"]:
    fail("the CI template must deploy the gateway's WasmPlugin with the ABMESH_PLUGIN_CONFIG placeholder")

mesh = docs["examples/istio/istio-operator.yaml"][0]["spec"]["meshConfig"]
if mesh["defaultConfig"]["extraStatTags"] != TAGS:
    fail(f"extraStatTags must be {TAGS}")
labels = mesh["extensionProviders"][0]["envoyFileAccessLog"]["logFormat"]["labels"]
envoy = docs["envoy/envoy.yaml"][0]
hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
demo_format = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
for key in ("assignments", "exposure"):
    if labels[key] != demo_format[key]:
        fail(f"the Istio access log's {key} differs from envoy/envoy.yaml's (which the e2e tests prove)")
telemetry = docs["examples/istio/telemetry-access-log.yaml"][0]
if telemetry["spec"]["accessLogging"][0]["providers"][0]["name"] != mesh["extensionProviders"][0]["name"]:
    fail("the Telemetry resource names a provider the mesh config does not define")
envoy_tags = [t["tag_name"] for t in envoy["stats_config"]["stats_tags"]]
if envoy_tags != TAGS:
    fail(f"envoy/envoy.yaml stats_tags must be {TAGS}")
print("ok")
