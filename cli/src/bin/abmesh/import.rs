//! `abmesh import`: a peer's definitions as an abmesh configuration.

use std::ffi::OsString;
use std::process::ExitCode;

use abmesh::Config;
use abmesh_cli::bounded::{read_at_most, MAX_IMPORT_BYTES};
use abmesh_cli::import::{FlagdOptions, Imported};

use crate::common::{out, usage_error};

/// A JSON file of at most 16 MiB, or the message to print.
fn read_json(path: &OsString) -> Result<serde_json::Value, String> {
    let name = path.to_string_lossy();
    let text = std::fs::File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| read_at_most(f, MAX_IMPORT_BYTES))
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{name}: invalid JSON at line {}, column {}",
            e.line(),
            e.column()
        )
    })
}

pub fn run(args: &[OsString]) -> ExitCode {
    let mut allow_partial = false;
    let (mut map, mut bucketing) = (None, None);
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--allow-partial") => allow_partial = true,
            Some("--map") => match it.next() {
                Some(p) => map = Some(p),
                None => return usage_error("--map needs a FILE"),
            },
            Some("--bucketing") => match it.next().and_then(|b| b.to_str()) {
                Some(b @ ("v2" | "v3")) => bucketing = Some(b),
                _ => return usage_error("--bucketing takes v2 or v3"),
            },
            _ => rest.push(a),
        }
    }
    let (Some(kind), Some(path), None) = (
        rest.first().and_then(|k| k.to_str()),
        rest.get(1),
        rest.get(2),
    ) else {
        return usage_error("import needs growthbook|flagd and a FILE");
    };
    if bucketing.is_some() && kind != "flagd" {
        return usage_error("--bucketing is for flagd files");
    }
    let loaded = read_json(path).and_then(|source| {
        let mapping = map.map(read_json).transpose()?;
        Ok((source, mapping))
    });
    let (source, mapping) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("abmesh: {e}");
            return ExitCode::from(1);
        }
    };
    let imported: Result<Imported, Vec<String>> = match kind {
        "growthbook" => abmesh_cli::import::growthbook(&source, mapping.as_ref()),
        "flagd" => abmesh_cli::import::flagd(
            &source,
            &FlagdOptions {
                bucketing,
                mapping: mapping.as_ref(),
            },
        ),
        other => return usage_error(&format!("import knows growthbook and flagd, not '{other}'")),
    };
    let imported = match imported {
        Ok(i) => i,
        Err(errors) => {
            for e in errors {
                eprintln!("abmesh: {e}");
            }
            return ExitCode::from(1);
        }
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
        eprintln!("abmesh: carry {u}");
    }
    for n in &imported.notes {
        eprintln!("abmesh: note: {n}");
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
