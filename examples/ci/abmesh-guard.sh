#!/usr/bin/env bash
# abmesh-guard.sh — one progressive-delivery step, from any CI: judge the running experiments
# on their guardrails, and when one breaches, write a configuration that pauses it (or rolls it
# back to control), render the deployment manifest with it and apply it.
#
#   abmesh-guard.sh run                    judge, roll back, render, apply (settings below)
#   abmesh-guard.sh render CONFIG TEMPLATE print TEMPLATE with CONFIG put in its placeholder
#
# Settings (environment):
#   ABMESH            the abmesh CLI (default: abmesh on PATH)
#   ABMESH_CONFIG     the configuration now deployed (JSON). After a change is applied it is
#                     replaced by the new one, so the next run starts from what is deployed:
#                     commit it (the GitHub Actions example does).
#   ABMESH_PROMETHEUS a Prometheus server (http(s)://prometheus:9090): guard queries its API
#                     and sums every proxy's series; ABMESH_WINDOW (e.g. 1h) judges only the
#                     counts of that recent window. Or instead:
#   ABMESH_STATS      Envoy's /stats/prometheus, a Prometheus federation URL
#                     (http://prometheus:9090/federate?match%5B%5D=%7B__name__%3D~%22abmesh_.%2A%22%7D),
#                     or a file.
#   ABMESH_AUTH_ENV   the name of a variable holding the Authorization value or a bearer
#                     token for the source (never printed); ABMESH_CACERT a PEM of private CAs.
#   ABMESH_TEMPLATE   the manifest to deploy, with a placeholder for the configuration:
#                     ABMESH_PLUGIN_CONFIG (the JSON as a YAML flow mapping: Istio's
#                     WasmPlugin pluginConfig) or ABMESH_PLUGIN_CONFIG_STRING (the JSON as a
#                     quoted string: Envoy's StringValue configuration).
#   ABMESH_APPLY      istio      kubectl apply -f the rendered manifest (KUBECTL, default kubectl)
#                     file:PATH  atomically replace PATH (an Envoy watching an LDS file)
#   ABMESH_ROLLBACK   paused (default) or control
#   ABMESH_MAX_ERROR_INCREASE  allowed 5xx increase over control, percentage points (default 0.5)
#   ABMESH_OUT_DIR    where the report, configuration and manifest are written (default
#                     ./abmesh-guard-out)
#
# Exit: 0 healthy (nothing applied), 3 a change was applied, 4 no evidence (the source holds
# no abmesh series, their labels, or any assignment of a running experiment: nothing applied,
# and the pipeline should alert — the pause loop is blind), 1 an error (nothing applied).
set -euo pipefail

die() { echo "abmesh-guard: $*" >&2; exit 1; }

render() {
  local config=$1 template=$2
  [ -f "$config" ] || die "no configuration file $config"
  [ -f "$template" ] || die "no template file $template"
  python3 - "$config" "$template" <<'PY'
import json, sys
config = json.dumps(json.load(open(sys.argv[1])), separators=(",", ":"), sort_keys=True)
lines = open(sys.argv[2]).read().splitlines(keepends=True)
# Comment lines may name the placeholder; only the value is replaced.
is_value = [not l.lstrip().startswith("#") and "ABMESH_PLUGIN_CONFIG" in l for l in lines]
if not any(is_value):
    sys.exit("abmesh-guard: the template has no ABMESH_PLUGIN_CONFIG placeholder")
sys.stdout.write("".join(
    l.replace("ABMESH_PLUGIN_CONFIG_STRING", json.dumps(config)).replace("ABMESH_PLUGIN_CONFIG", config)
    if v else l
    for l, v in zip(lines, is_value)))
PY
}

apply() {
  local manifest=$1
  case "$ABMESH_APPLY" in
    istio)
      "${KUBECTL:-kubectl}" apply -f "$manifest" \
        || die "kubectl apply failed; nothing applied, $ABMESH_CONFIG unchanged" ;;
    file:*)
      local target=${ABMESH_APPLY#file:}
      # Envoy's file watcher reacts to a file moved into place: never a half-written file.
      { cp "$manifest" "$target.abmesh-tmp" && mv -f "$target.abmesh-tmp" "$target"; } \
        || die "could not replace $target; nothing applied, $ABMESH_CONFIG unchanged" ;;
    *)
      die "ABMESH_APPLY must be istio or file:PATH, found '$ABMESH_APPLY'" ;;
  esac
}

run() {
  : "${ABMESH_CONFIG:?set ABMESH_CONFIG}"
  : "${ABMESH_TEMPLATE:?set ABMESH_TEMPLATE}" "${ABMESH_APPLY:?set ABMESH_APPLY}"
  local abmesh=${ABMESH:-abmesh} out=${ABMESH_OUT_DIR:-abmesh-guard-out}
  mkdir -p "$out"
  local source=()
  if [[ -n ${ABMESH_PROMETHEUS:-} ]]; then
    source=(--prometheus "$ABMESH_PROMETHEUS")
    if [[ -n ${ABMESH_WINDOW:-} ]]; then source+=(--window "$ABMESH_WINDOW"); fi
  elif [[ -n ${ABMESH_STATS:-} ]]; then
    source=(--stats "$ABMESH_STATS")
  else
    die "set ABMESH_PROMETHEUS (a Prometheus server) or ABMESH_STATS (Envoy's stats, a URL or a file)"
  fi
  if [[ -n ${ABMESH_AUTH_ENV:-} ]]; then source+=(--auth-env "$ABMESH_AUTH_ENV"); fi
  if [[ -n ${ABMESH_CACERT:-} ]]; then source+=(--cacert "$ABMESH_CACERT"); fi
  local code=0
  "$abmesh" guard --config "$ABMESH_CONFIG" "${source[@]}" \
    --max-error-increase "${ABMESH_MAX_ERROR_INCREASE:-0.5}" \
    --rollback-to "${ABMESH_ROLLBACK:-paused}" \
    --write-config "$out/config.json" >"$out/report.txt" || code=$?
  cat "$out/report.txt"
  case $code in
    0) echo "abmesh-guard: healthy; nothing to apply" ;;
    3)
      render "$out/config.json" "$ABMESH_TEMPLATE" >"$out/manifest.yaml"
      apply "$out/manifest.yaml"
      cp "$out/config.json" "$ABMESH_CONFIG"
      echo "abmesh-guard: applied $out/manifest.yaml ($ABMESH_APPLY); $ABMESH_CONFIG updated" ;;
    4) echo "abmesh-guard: no evidence; nothing applied" >&2 ;;
    *) die "abmesh guard failed (exit $code); nothing applied" ;;
  esac
  return "$code"
}

case "${1:-}" in
  run) run ;;
  render) [ $# -eq 3 ] || die "usage: $0 render CONFIG TEMPLATE"; render "$2" "$3" ;;
  *) die "usage: $0 run | render CONFIG TEMPLATE (settings: see the top of this file)" ;;
esac
