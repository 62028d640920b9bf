//! Arbitrary stats text — what a misconfigured scrape, a truncated download or a hostile
//! endpoint may hand `abmesh guard` — through the Prometheus parser, the judgement (per unit
//! and per request, sequential and fixed horizon) and both renderers: nothing panics, and the
//! JSON report is valid JSON.
#![no_main]

use std::sync::OnceLock;

use abmesh_cli::guard::{judge, parse_prometheus, render_json, render_text, Mode, Options};
use abmesh::Config;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = include_str!("../seeds/fuzz-config.json");

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(CONFIG.as_bytes()).expect("the fuzz configuration is valid"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(samples) = parse_prometheus(&text) else {
        return;
    };
    let _ = abmesh_cli::guard::consistent(&samples);
    for (mode, use_replicates) in [
        (Mode::Sequential { mixing: 0.1 }, true),
        (Mode::FixedHorizon, true),
        (Mode::Sequential { mixing: 0.1 }, false),
    ] {
        let options = Options { mode, use_replicates, now_ms: 1_780_000_000_000, ..Options::default() };
        let report = judge(config(), &samples, &options);
        let _ = render_text(&report);
        let json: serde_json::Value = serde_json::from_str(&render_json(&report)).expect("the report is JSON");
        assert!(json["outcome"].is_string());
    }
});
