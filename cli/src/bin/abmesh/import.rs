//! `abmesh import`: a peer's definitions as an abmesh configuration.

use std::ffi::OsString;
use std::process::ExitCode;

use abmesh::Config;
use abmesh_cli::bounded::{read_at_most, MAX_IMPORT_BYTES};

use crate::common::{out, usage_error};

pub fn run(args: &[OsString]) -> ExitCode {
    let allow_partial = args.iter().any(|a| a == "--allow-partial");
    let rest: Vec<&OsString> = args.iter().filter(|a| *a != "--allow-partial").collect();
    let (Some(kind), Some(path), None) = (
        rest.first().and_then(|k| k.to_str()),
        rest.get(1),
        rest.get(2),
    ) else {
        return usage_error("import needs growthbook|flagd and a FILE");
    };
    let read = std::fs::File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| read_at_most(f, MAX_IMPORT_BYTES));
    let text = match read {
        Ok(t) => t,
        Err(e) => {
            eprintln!("abmesh: cannot read {}: {e}", path.to_string_lossy());
            return ExitCode::from(1);
        }
    };
    let source: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "abmesh: {}: invalid JSON at line {}, column {}",
                path.to_string_lossy(),
                e.line(),
                e.column()
            );
            return ExitCode::from(1);
        }
    };
    let imported = match kind {
        "growthbook" => abmesh_cli::import::growthbook(&source),
        "flagd" => abmesh_cli::import::flagd(&source),
        other => return usage_error(&format!("import knows growthbook and flagd, not '{other}'")),
    };
    let config = serde_json::to_string_pretty(&imported.config).unwrap_or_default();
    if let Err(err) = Config::parse(config.as_bytes()) {
        for e in &err.errors {
            eprintln!("abmesh: the imported configuration is invalid: {e}");
        }
        return ExitCode::from(1);
    }
    out(&format!("{config}\n"));
    for u in &imported.units {
        eprintln!("abmesh: carry the unit to the proxy as {u}");
    }
    for u in &imported.unsupported {
        eprintln!("abmesh: not imported: {u}");
    }
    if imported.unsupported.is_empty() || allow_partial {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "abmesh: {} item(s) not imported; use --allow-partial to accept",
            imported.unsupported.len()
        );
        ExitCode::from(1)
    }
}
