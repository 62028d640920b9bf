//! `abmesh guard`: judge the running experiments from their metrics; optionally write the
//! configuration with the breached ones paused or rolled back.

use std::ffi::OsString;
use std::process::ExitCode;

use abmesh::Config;
use abmesh_cli::guard::Rollback;

use crate::common::usage_error;
use crate::common::{now_ms, out, read_config_bytes};

pub fn run(args: &[OsString]) -> ExitCode {
    use abmesh_cli::guard::Outcome;
    use abmesh_cli::source::{self, Http};
    let (mut config, mut stats, mut json, mut max_points) = (None, None, false, 0.5f64);
    let (mut prometheus, mut window) = (None, None);
    let (mut write_config, mut how) = (None, Rollback::Pause);
    let mut http = Http::default();
    let mut options = abmesh_cli::guard::Options::default();
    let mut fixed = false;
    let mut mixing = abmesh_cli::sequential::DEFAULT_MIXING;
    let mut serve = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        match flag.to_str() {
            Some("--json") => json = true,
            Some("--fixed-horizon") => fixed = true,
            Some("--per-request") => options.use_replicates = false,
            Some(f @ ("--alpha" | "--mixing" | "--max-latency-increase")) => {
                let Some(value) = rest.next() else {
                    return usage_error(&format!("{f} needs a value"));
                };
                let v = value.to_str().and_then(|v| v.parse::<f64>().ok());
                match (f, v) {
                    ("--alpha", Some(a)) if a > 0.0 && a < 1.0 => options.alpha = a,
                    ("--alpha", _) => return usage_error("--alpha needs a number between 0 and 1"),
                    ("--mixing", Some(m)) if m > 0.0 && m.is_finite() => mixing = m,
                    ("--mixing", _) => return usage_error("--mixing needs a positive number"),
                    (_, Some(ms)) if ms >= 0.0 && ms.is_finite() => {
                        options.max_latency_increase = Some(ms)
                    }
                    _ => {
                        return usage_error("--max-latency-increase needs milliseconds, 0 or more")
                    }
                }
            }
            Some(
                f @ ("--config"
                | "--stats"
                | "--prometheus"
                | "--window"
                | "--auth-env"
                | "--auth-file"
                | "--cacert"
                | "--max-error-increase"
                | "--timeout"
                | "--write-config"
                | "--rollback-to"
                | "--serve"),
            ) => {
                let Some(value) = rest.next() else {
                    return usage_error(&format!("{f} needs a value"));
                };
                match f {
                    "--config" => config = Some(value.clone()),
                    "--stats" => stats = Some(value.to_string_lossy().into_owned()),
                    "--prometheus" => prometheus = Some(value.to_string_lossy().into_owned()),
                    "--window" => match value.to_str().filter(|w| source::is_duration(w)) {
                        Some(w) => window = Some(w.to_string()),
                        None => {
                            return usage_error(
                                "--window needs a Prometheus duration such as 1h, 30m or 1h30m",
                            )
                        }
                    },
                    "--auth-env" => {
                        let name = value.to_string_lossy();
                        match std::env::var(&*name)
                            .ok()
                            .and_then(|v| source::authorization(&v))
                        {
                            Some(a) => http.authorization = Some(a),
                            None => {
                                return usage_error(&format!(
                                    "--auth-env {name}: the variable is unset or empty"
                                ))
                            }
                        }
                    }
                    "--auth-file" => {
                        let path = value.to_string_lossy();
                        match std::fs::read_to_string(&*path) {
                            Ok(v) => match source::authorization(&v) {
                                Some(a) => http.authorization = Some(a),
                                None => {
                                    eprintln!("abmesh: --auth-file {path} is empty");
                                    return ExitCode::from(1);
                                }
                            },
                            Err(e) => {
                                eprintln!("abmesh: cannot read --auth-file {path}: {e}");
                                return ExitCode::from(1);
                            }
                        }
                    }
                    "--cacert" => http.ca_file = Some(value.to_string_lossy().into_owned()),
                    "--timeout" => match value
                        .to_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|v| *v > 0.0 && *v <= 3600.0)
                    {
                        Some(s) => http.timeout = std::time::Duration::from_secs_f64(s),
                        None => {
                            return usage_error(&format!(
                                "--timeout needs seconds, more than 0 and at most 3600, found '{}'",
                                value.to_string_lossy()
                            ))
                        }
                    },
                    "--write-config" => write_config = Some(value.clone()),
                    "--serve" => serve = Some(value.to_string_lossy().into_owned()),
                    "--rollback-to" => {
                        how = match value.to_str() {
                            Some("paused") => Rollback::Pause,
                            Some("control") => Rollback::Control,
                            _ => return usage_error("--rollback-to needs paused or control"),
                        }
                    }
                    _ => match value
                        .to_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|v| (0.0..=100.0).contains(v))
                    {
                        Some(v) => max_points = v,
                        None => {
                            return usage_error(
                                "--max-error-increase needs percentage points from 0 to 100",
                            )
                        }
                    },
                }
            }
            _ => return usage_error(&format!("unknown option {}", flag.to_string_lossy())),
        }
    }
    let Some(config_path) = config else {
        return usage_error(
            "guard needs --config CONFIG and --stats URL_OR_FILE or --prometheus URL",
        );
    };
    if window.is_some() && prometheus.is_none() {
        return usage_error("--window needs --prometheus (a server's query API)");
    }
    let (source, from_api) = match (stats, prometheus) {
        (Some(s), None) => (s, false),
        (None, Some(p)) => (p, true),
        _ => {
            return usage_error(
                "guard needs --config CONFIG and exactly one of --stats URL_OR_FILE or --prometheus URL",
            )
        }
    };
    let fetch = || {
        if from_api {
            source::prometheus_api(&source, window.as_deref(), &http)
        } else {
            source::prometheus_text(&source, &http)
        }
    };
    options.max_error_increase = max_points / 100.0;
    options.mode = if fixed {
        abmesh_cli::guard::Mode::FixedHorizon
    } else {
        abmesh_cli::guard::Mode::Sequential { mixing }
    };
    if let Some(addr) = serve {
        if write_config.is_some() || json {
            return usage_error(
                "--serve answers over HTTP: it takes neither --write-config nor --json",
            );
        }
        let config = match read_config_bytes(&config_path) {
            Ok((_, c)) => c,
            Err(code) => return code,
        };
        return serve_verdicts(&addr, &config, || {
            let samples = fetch()?;
            let mut o = options;
            o.now_ms = now_ms();
            Ok(abmesh_cli::guard::judge(&config, &samples, &o))
        });
    }
    let samples = fetch();
    let (bytes, config) = match read_config_bytes(&config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let samples = match samples {
        Ok(s) => s,
        Err(e) => {
            eprintln!("abmesh: cannot read stats: {e}");
            return ExitCode::from(1);
        }
    };
    options.now_ms = now_ms();
    let report = abmesh_cli::guard::judge(&config, &samples, &options);
    if json {
        out(&format!("{}\n", abmesh_cli::guard::render_json(&report)));
    } else {
        out(&abmesh_cli::guard::render_text(&report));
    }
    match report.outcome() {
        Outcome::NoEvidence => {
            for why in &report.no_evidence {
                eprintln!("abmesh: no evidence from {source}: {why}");
            }
            if write_config.is_some() {
                eprintln!("abmesh: nothing written: no evidence is not health");
            }
            ExitCode::from(4)
        }
        outcome => match write_config {
            Some(path) => write_rolled_back(&bytes, &report, how, &path, json),
            None if outcome == Outcome::Healthy => ExitCode::SUCCESS,
            None => ExitCode::from(3),
        },
    }
}

/// `guard --write-config`: the configuration with breached experiments paused or rolled back,
/// each change printed with its reasons (on standard error with `--json`, whose standard output
/// is the report). Exit 0 when nothing changed, 3 when something did, 1 on error.
fn write_rolled_back(
    bytes: &[u8],
    report: &abmesh_cli::guard::Report,
    how: Rollback,
    path: &OsString,
    json: bool,
) -> ExitCode {
    let document: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("abmesh: cannot re-read the configuration: {e}");
            return ExitCode::from(1);
        }
    };
    let (written, changes) = abmesh_cli::guard::rollback(&document, report, how);
    let text = match serde_json::to_string_pretty(&written) {
        Ok(t) => t + "\n",
        Err(e) => {
            eprintln!("abmesh: cannot write the configuration: {e}");
            return ExitCode::from(1);
        }
    };
    // Never hand a pipeline a configuration the filter would refuse.
    if let Err(err) = Config::parse(text.as_bytes()) {
        eprintln!("abmesh: the rolled-back configuration is invalid:\n{err}");
        return ExitCode::from(1);
    }
    if let Err(e) = std::fs::write(path, &text) {
        eprintln!("abmesh: cannot write {}: {e}", path.to_string_lossy());
        return ExitCode::from(1);
    }
    let mut notes = String::new();
    for c in &changes {
        notes.push_str(&format!(
            "change: {} {}: {}\n",
            c.path, c.experiment, c.what
        ));
        for why in &c.why {
            notes.push_str(&format!("  because {why}\n"));
        }
    }
    notes.push_str(&format!(
        "wrote {}: {}\n",
        path.to_string_lossy(),
        match changes.len() {
            0 => "no change".to_string(),
            1 => "1 experiment changed".to_string(),
            n => format!("{n} experiments changed"),
        }
    ));
    if json {
        eprint!("{notes}");
    } else {
        out(&notes);
    }
    if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// The most of a webhook's body read (Flagger's payload is a few hundred bytes).
const MAX_BODY_BYTES: u64 = 64 * 1024;

/// `guard --serve`: evaluates on every request and answers Flagger (`/flagger`), Argo
/// Rollouts (`/argo`) and Prometheus (`/metrics`); `?experiment=KEY`, or Flagger's
/// `metadata.experiment`, narrows the verdict to one experiment. Runs until killed.
fn serve_verdicts(
    addr: &str,
    config: &Config,
    evaluate: impl Fn() -> Result<abmesh_cli::guard::Report, String>,
) -> ExitCode {
    use abmesh_cli::guard::serve;
    use std::io::{Read, Write};
    let server = match tiny_http::Server::http(addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("abmesh: --serve {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| addr.to_string(), |a| a.to_string());
    let _ = writeln!(
        std::io::stderr(),
        "abmesh: guard serving on http://{bound}/ (/flagger, /argo, /metrics)"
    );
    let mut counters = serve::Counters::default();
    for mut request in server.incoming_requests() {
        let url = request.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let mut experiment = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("experiment="))
            .map(String::from);
        if path == "/flagger" && experiment.is_none() {
            let mut body = Vec::new();
            let _ = request
                .as_reader()
                .take(MAX_BODY_BYTES)
                .read_to_end(&mut body);
            experiment = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["metadata"]["experiment"].as_str().map(String::from));
        }
        let (status, body, kind) = match path {
            "/flagger" | "/argo" | "/metrics" => {
                let report = evaluate();
                counters.evaluations += 1;
                if let Err(e) = &report {
                    counters.source_errors += 1;
                    // Not eprintln!, which panics when standard error is gone: a server outlives
                    // whoever started it.
                    let _ = writeln!(std::io::stderr(), "abmesh: cannot read stats: {e}");
                }
                let report = report.as_ref().map_err(String::as_str);
                match path {
                    "/flagger" => {
                        let (s, b) = serve::flagger(report, experiment.as_deref());
                        (s, b, "application/json")
                    }
                    "/argo" => {
                        let (s, b) = serve::argo(report, experiment.as_deref());
                        (s, b, "application/json")
                    }
                    _ => {
                        let now = now_ms() as f64 / 1000.0;
                        (
                            200,
                            serve::metrics(config, report, counters, now),
                            "text/plain; version=0.0.4",
                        )
                    }
                }
            }
            _ => (
                404,
                "not found: /flagger, /argo or /metrics\n".to_string(),
                "text/plain",
            ),
        };
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], kind.as_bytes());
        let mut response = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(h) = header {
            response = response.with_header(h);
        }
        let _ = request.respond(response);
    }
    ExitCode::SUCCESS
}
