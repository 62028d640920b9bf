#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! End-to-end tests: the built `dist/abmesh.wasm` in a real Envoy (V8), with the shipped
//! `envoy/envoy.yaml`. Run by `./build.sh test` (`cargo test --features e2e --test e2e`).

mod analyze;
mod assignment;
mod dashboards;
mod failure;
mod faults;
mod guardrails;
mod harness;
mod hostile;
mod http;
mod istio;
mod limits;
mod load;
mod ofrep;
mod otel;
mod progressive;
mod records;
mod reload;
mod shipped;
mod spoofing;
mod tiers;
mod units;
