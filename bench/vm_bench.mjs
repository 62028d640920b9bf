// abmesh's own work per request under V8, without Envoy: node (V8, as Envoy's wasm runtime)
// runs a proxy-wasm module with the host functions in JavaScript and calls it as Envoy does
// for each request (context create, request headers, response headers, done, log, delete),
// with the VM's timer once every TICK_EVERY requests. What the host does for a call costs
// next to nothing here, so the figure is the module's own time, with far less noise than
// Envoy's CPU per request (same machine, a quiet core: a few percent between runs).
//
// usage: node bench/vm_bench.mjs MODULE.wasm [CONFIG_FILE|-] [REQUESTS_PER_SAMPLE]
// prints one JSON object: {"ns_per_request": median, "samples": [...], "host_calls": {...}}
import { readFileSync } from "node:fs";

const [modulePath, configPath = "-", perSampleArg = "20000"] = process.argv.slice(2);
const PER_SAMPLE = Number(perSampleArg);
const SAMPLES = Number(process.env.VM_BENCH_SAMPLES || 9);
const TICK_EVERY = 5000;
const config = configPath === "-" ? new Uint8Array() : readFileSync(configPath);
const enc = new TextEncoder();

let exports;
let memory;
const calls = {};
const count = (name) => { calls[name] = (calls[name] || 0) + 1; };
const u8 = () => new Uint8Array(memory.buffer);
const dv = () => new DataView(memory.buffer);

// Hands bytes to the module the way a proxy-wasm host does: through the module's allocator.
function give(bytes, retPtr, retSize) {
  const ptr = exports.malloc(bytes.length);
  u8().set(bytes, ptr);
  dv().setUint32(retPtr, ptr, true);
  dv().setUint32(retSize, bytes.length, true);
}

function headerMap(pairs) {
  const parts = pairs.map(([n, v]) => [enc.encode(n), enc.encode(v)]);
  let size = 4 + parts.length * 8;
  for (const [n, v] of parts) size += n.length + v.length + 2;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, parts.length, true);
  let at = 4 + parts.length * 8;
  parts.forEach(([n, v], i) => {
    view.setUint32(4 + i * 8, n.length, true);
    view.setUint32(8 + i * 8, v.length, true);
    out.set(n, at); at += n.length + 1;
    out.set(v, at); at += v.length + 1;
  });
  return out;
}

// The request the Envoy benchmark's wrk script sends, as Envoy hands it to a filter.
function request(i) {
  return headerMap([
    [":authority", "127.0.0.1:10000"], [":path", "/checkout/cart?step=2"], [":method", "GET"],
    [":scheme", "http"], ["x-user-id", `user-${i}`], ["cookie", `theme=dark; did=device-${i % 5000}`],
    ["user-agent", "wrk"], ["x-forwarded-proto", "http"],
    ["x-request-id", `4a6f1c2e-9d1b-4f3e-8a7c-${String(i).padStart(12, "0")}`],
  ]);
}

let current = null;
let clock = 1_795_000_000_000_000_000n;
let metrics = 0;
const status = enc.encode("200");
const env = {
  proxy_log: () => { count("log"); return 0; },
  proxy_get_current_time_nanoseconds: (ret) => { count("clock"); clock += 1000n; dv().setBigUint64(ret, clock, true); return 0; },
  proxy_set_tick_period_milliseconds: () => 0,
  proxy_get_buffer_bytes: (type, start, len, retPtr, retSize) => { give(config.subarray(start, start + len), retPtr, retSize); return 0; },
  proxy_define_metric: (type, p, n, ret) => { dv().setUint32(ret, ++metrics, true); return 0; },
  proxy_increment_metric: () => { count("increment_metric"); return 0; },
  proxy_get_header_map_pairs: (map, retPtr, retSize) => { count("get_headers"); give(current, retPtr, retSize); return 0; },
  proxy_get_header_map_value: (map, k, kn, retPtr, retSize) => { count("get_header"); give(status, retPtr, retSize); return 0; },
  proxy_replace_header_map_value: () => { count("set_header"); return 0; },
  proxy_add_header_map_value: () => { count("add_header"); return 0; },
  proxy_remove_header_map_value: () => { count("remove_header"); return 0; },
  proxy_set_property: () => { count("set_property"); return 0; },
  proxy_get_property: () => 1, // NotFound
};
const imports = { env: new Proxy(env, {
  get: (t, name) => t[name] || (() => { throw new Error(`vm_bench: unexpected host call ${String(name)}`); }),
}) };

const { instance } = await WebAssembly.instantiate(readFileSync(modulePath), imports);
exports = instance.exports;
memory = exports.memory;
if (exports._initialize) exports._initialize();
const ROOT = 1;
exports.proxy_on_context_create(ROOT, 0);
if (!exports.proxy_on_vm_start(ROOT, 0)) throw new Error("vm_bench: proxy_on_vm_start refused");
if (!exports.proxy_on_configure(ROOT, config.length)) throw new Error("vm_bench: the configuration was refused");

const requests = Array.from({ length: 4096 }, (_, i) => request(i));
// As the host does (proxy-wasm-cpp-host), a callback the module does not export is skipped.
const skip = () => 1;
const cb = (name) => exports[name] || skip;
const [onCreate, onRequest, onResponse, onDone, onLog, onDelete] = ["proxy_on_context_create",
  "proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_done", "proxy_on_log",
  "proxy_on_delete"].map(cb);
let ctx = ROOT + 1;
let served = 0;
function one(i) {
  current = requests[i % requests.length];
  const id = ctx++;
  onCreate(id, ROOT);
  onRequest(id, 9, 1);
  onResponse(id, 2, 1);
  onDone(id);
  onLog(id);
  onDelete(id);
  if (++served % TICK_EVERY === 0) exports.proxy_on_tick(ROOT);
}

let i = 0;
for (let w = 0; w < Number(process.env.VM_BENCH_WARMUP || PER_SAMPLE * 3); w++) one(i++); // TurboFan tiers up the hot functions
for (const k of Object.keys(calls)) delete calls[k];
const samples = [];
for (let s = 0; s < SAMPLES; s++) {
  const t = process.hrtime.bigint();
  for (let r = 0; r < PER_SAMPLE; r++) one(i++);
  samples.push(Number(process.hrtime.bigint() - t) / PER_SAMPLE);
}
const sorted = [...samples].sort((a, b) => a - b);
const perRequest = Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, v / (SAMPLES * PER_SAMPLE)]));
console.log(JSON.stringify({
  ns_per_request: Math.round(sorted[SAMPLES >> 1]),
  min_ns_per_request: Math.round(sorted[0]),
  samples: samples.map(Math.round),
  host_calls_per_request: perRequest,
  memory_bytes: memory.buffer.byteLength,
}));
