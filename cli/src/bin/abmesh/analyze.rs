//! `abmesh analyze`: per-unit results of the experiments from the access logs Envoy wrote.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use abmesh_cli::analyze::goal::Goal;
use abmesh_cli::analyze::input::{expand, spool_stdin};
use abmesh_cli::analyze::report::Options;
use abmesh_cli::analyze::sql::DIALECTS;
use abmesh_cli::bounded::{read_at_most, MAX_IMPORT_BYTES};

use crate::common::{out, read_config, usage_error};

pub fn run(args: &[OsString]) -> ExitCode {
    let (mut config, mut logs, mut goals) = (None, Vec::new(), Vec::new());
    let (mut json, mut strict) = (false, false);
    let mut html: Option<String> = None;
    let (mut sql, mut aggregates): (Option<String>, Option<String>) = (None, None);
    let mut options = Options {
        alpha: 0.05,
        mixing: Some(abmesh_cli::sequential::DEFAULT_MIXING),
        cuped: false,
    };
    let mut fixed = false;
    let mut rest = args.iter().peekable();
    while let Some(flag) = rest.next() {
        let value = |rest: &mut std::iter::Peekable<std::slice::Iter<OsString>>, f: &str| {
            rest.next()
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{f} needs a value"))
        };
        match flag.to_str() {
            Some("--json") => json = true,
            Some("--html") => match rest.next() {
                Some(f) => html = Some(f.to_string_lossy().into_owned()),
                None => return usage_error("--html needs a file to write"),
            },
            Some("--strict") => strict = true,
            Some("--fixed-horizon") => fixed = true,
            Some("--cuped") => options.cuped = true,
            Some("--config") => match rest.next() {
                Some(c) => config = Some(c.clone()),
                None => return usage_error("--config needs a value"),
            },
            Some("--access-log") => {
                // One or more files (or globs, or -) until the next option.
                let before = logs.len();
                while let Some(v) = rest.peek() {
                    if v.to_string_lossy().starts_with("--") {
                        break;
                    }
                    logs.push(v.to_string_lossy().into_owned());
                    rest.next();
                }
                if logs.len() == before {
                    return usage_error(
                        "--access-log needs at least one FILE (a glob, or - for standard input)",
                    );
                }
            }
            Some(f @ "--sql") => match value(&mut rest, f) {
                Ok(engine) if DIALECTS.contains(&engine.as_str()) => sql = Some(engine),
                Ok(engine) => {
                    return usage_error(&format!(
                        "--sql knows {}, not '{engine}'",
                        DIALECTS.join(", ")
                    ))
                }
                Err(e) => return usage_error(&e),
            },
            Some(f @ "--aggregates") => match value(&mut rest, f) {
                Ok(path) => aggregates = Some(path),
                Err(e) => return usage_error(&e),
            },
            Some(f @ "--goal") => match value(&mut rest, f).and_then(|g| Goal::parse(&g)) {
                Ok(g) => goals.push(g),
                Err(e) => return usage_error(&e),
            },
            Some(f @ "--goals") => {
                let path = match value(&mut rest, f) {
                    Ok(p) => p,
                    Err(e) => return usage_error(&e),
                };
                let text = std::fs::File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| read_at_most(f, MAX_IMPORT_BYTES));
                let text = match text {
                    Ok(t) => String::from_utf8_lossy(&t).into_owned(),
                    Err(e) => {
                        eprintln!("abmesh: cannot read --goals {path}: {e}");
                        return ExitCode::from(1);
                    }
                };
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    match Goal::parse(line) {
                        Ok(g) => goals.push(g),
                        Err(e) => {
                            return usage_error(&format!("--goals {path} line {}: {e}", i + 1))
                        }
                    }
                }
            }
            Some(f @ ("--alpha" | "--mixing")) => {
                let v = match value(&mut rest, f) {
                    Ok(v) => v,
                    Err(e) => return usage_error(&e),
                };
                match (f, v.parse::<f64>()) {
                    ("--alpha", Ok(a)) if a > 0.0 && a < 1.0 => options.alpha = a,
                    ("--mixing", Ok(m)) if m > 0.0 && m <= 10.0 => options.mixing = Some(m),
                    _ => {
                        return usage_error(&format!(
                            "{f} needs a number ({}), found '{v}'",
                            if f == "--alpha" {
                                "between 0 and 1"
                            } else {
                                "above 0, at most 10"
                            }
                        ))
                    }
                }
            }
            _ => return usage_error(&format!("unknown option {}", flag.to_string_lossy())),
        }
    }
    if fixed {
        options.mixing = None;
    }
    let Some(config_path) = config else {
        return usage_error("analyze needs --config CONFIG and --access-log FILE...");
    };
    let sources = usize::from(!logs.is_empty())
        + usize::from(sql.is_some())
        + usize::from(aggregates.is_some());
    if sources != 1 {
        return usage_error(
            "analyze needs exactly one of --access-log FILE..., --sql ENGINE or --aggregates FILE",
        );
    }
    if goals
        .iter()
        .enumerate()
        .any(|(i, g)| goals[..i].iter().any(|h| h.name == g.name))
    {
        return usage_error("two goals have the same name");
    }
    let config = match read_config(&config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if sql.is_some() {
        let dialect = sql.as_deref().unwrap_or_default();
        if let Some(q) = abmesh_cli::analyze::sql::query(dialect, &config, &goals) {
            out(&q);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(path) = aggregates {
        let text = std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| read_at_most(f, MAX_IMPORT_BYTES))
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let analysis =
            text.and_then(|t| abmesh_cli::analyze::from_aggregates(&config, &goals, &t, options));
        return match analysis {
            Ok(a) => report(&a, json, html.as_deref(), false),
            Err(e) => {
                eprintln!("abmesh: --aggregates {path}: {e}");
                ExitCode::from(1)
            }
        };
    }
    let names = match expand(&logs) {
        Ok(n) => n,
        Err(e) => return usage_error(&e),
    };
    let mut stdin = None;
    let mut inputs: Vec<(PathBuf, String)> = Vec::new();
    for n in names {
        if n == "-" {
            if stdin.is_none() {
                match spool_stdin() {
                    Ok(f) => stdin = Some(f),
                    Err(e) => {
                        eprintln!("abmesh: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            if let Some(f) = &stdin {
                inputs.push((f.path().to_path_buf(), "-".into()));
            }
        } else {
            inputs.push((PathBuf::from(&n), n));
        }
    }
    let analysis = abmesh_cli::analyze::analyze(&config, &goals, &inputs, options);
    report(&analysis, json, html.as_deref(), strict)
}

/// Prints the report (and writes the page); the exit code: 1 for unusable input (any, with
/// --strict) or a page that cannot be written, 3 for SRM.
fn report(
    analysis: &abmesh_cli::analyze::Analysis,
    json: bool,
    html: Option<&str>,
    strict: bool,
) -> ExitCode {
    if let Some(path) = html {
        if let Err(e) = std::fs::write(path, abmesh_cli::analyze::render_html(analysis)) {
            eprintln!("abmesh: --html {path}: {e}");
            return ExitCode::from(1);
        }
    }
    if json {
        out(&format!("{}\n", abmesh_cli::analyze::render_json(analysis)));
    } else {
        out(&abmesh_cli::analyze::render_text(analysis));
    }
    let bad = analysis.tally.total();
    let unreadable = analysis
        .tally
        .0
        .contains_key(&abmesh_cli::analyze::input::Problem::Unreadable);
    if unreadable || (strict && bad > 0) {
        eprintln!(
            "abmesh: {bad} lines or inputs could not be used{}",
            if strict { " (--strict)" } else { "" }
        );
        return ExitCode::from(1);
    }
    if analysis.srm() {
        eprintln!("abmesh: sample ratio mismatch: the units are not split as configured");
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
