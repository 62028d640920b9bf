//! Arbitrary bytes as an access log through `abmesh analyze`: the line reader, both passes
//! and the statistics never panic; every line is read or counted as bad input; the JSON
//! report is valid JSON; and the fast readers (the flat line reader, the in-place record
//! reader) agree with serde_json on every line they read.
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

/// What the flat reader reads of a line, serde_json reads alike.
fn readers_agree(line: &[u8]) {
    use abmesh_cli::analyze::line::{read_flat, read_serde};
    let Some(flat) = read_flat(line) else { return };
    let serde = read_serde(line, true).or_else(|_| read_serde(line, false));
    let (flat, serde) = match (flat, serde) {
        (Err(a), Err(b)) => return assert_eq!(a, b),
        (Ok(f), Ok(s)) => (f, s),
        (f, s) => panic!("the readers disagree: {f:?} {s:?}"),
    };
    assert_eq!((flat.start_ms, &flat.method, &flat.path, flat.status), (serde.start_ms, &serde.method, &serde.path, serde.status));
    assert_eq!(flat.duration_ms.to_bits(), serde.duration_ms.to_bits());
    let mut buf = String::new();
    if let Some(record) = &flat.record {
        let text = serde.exposure.as_ref().and_then(|e| e.get(&mut buf)).expect("a record read in place is a string");
        let reference: abmesh_cli::analyze::record::Record = serde_json::from_str(text).expect("serde_json reads the record");
        assert_eq!(record, &reference);
    }
}

fuzz_target!(|data: &[u8]| {
    data.split(|&b| b == b'\n').for_each(readers_agree);
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
