//! Arbitrary bytes as an access log through `abmesh analyze`: the line reader, both passes
//! and the statistics never panic; every line is read or counted as bad input; the JSON
//! report is valid JSON.
#![no_main]

use std::sync::OnceLock;

use abmesh::Config;
use abmesh_cli::analyze::goal::Goal;
use abmesh_cli::analyze::report::Options;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = include_str!("../seeds/fuzz-config.json");

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(CONFIG.as_bytes()).expect("the fuzz configuration is valid"))
}

fn scratch() -> &'static std::path::Path {
    static P: OnceLock<std::path::PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("abmesh-fuzz-access-log-{}", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(scratch(), data).expect("the scratch file is writable");
    let goals = [Goal::parse("buy=POST /checkout/* 2xx").expect("a valid goal")];
    let inputs = [(scratch().to_path_buf(), "fuzz".to_string())];
    for (mixing, cuped) in [(Some(0.1), true), (None, false)] {
        let a = abmesh_cli::analyze::analyze(config(), &goals, &inputs, Options { alpha: 0.05, mixing, cuped });
        let _ = abmesh_cli::analyze::render_text(&a);
        let json: serde_json::Value =
            serde_json::from_str(&abmesh_cli::analyze::render_json(&a)).expect("the report is JSON");
        assert!(json["lines"].is_u64());
    }
});
