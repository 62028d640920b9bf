//! `abmesh`: check a configuration, or show what the filter does to one request.

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;

#[cfg(not(target_arch = "wasm32"))]
use abmesh::guard::Rollback;
use abmesh::plan::Plan;
use abmesh::{Config, RequestView};

const HELP: &str = "\
abmesh — online experiments (A/B tests) at the service mesh

usage:
  abmesh check CONFIG [--time RFC3339]
      Validate a plugin configuration (JSON; '-' reads standard input). Prints a summary
      (experiments with their variants and bucket ranges, ramps and the step in force at
      --time (default now), layers with their bucket maps, holdout) and exits 0, or prints
      every error, one per line as 'path: rule', and exits 1.

  abmesh assign CONFIG [--header NAME=VALUE]... [--cookie NAME=VALUE]... [--query QUERY]
                       [--path PATH] [--method METHOD] [--host HOST] [--time RFC3339]
      Print exactly what the filter would do to that request, in its order: the request
      headers it removes and sets, the log line and filter state it writes, the response
      header it echoes and cookies it adds, the experiments that gave no variant and why, and
      the exposure record. Defaults: --path /, --method GET, --time now.
      Header and cookie values are taken byte for byte (they may be any bytes).

  abmesh guard --config CONFIG (--stats URL_OR_FILE | --prometheus URL [--window 1h])
               [--auth-env VAR | --auth-file FILE] [--cacert PEM] [--json]
               [--max-error-increase POINTS] [--max-latency-increase MS] [--alpha A]
               [--fixed-horizon | --mixing M] [--per-request]
      Judge every running experiment in force: from Prometheus text (Envoy's
      /stats/prometheus or a Prometheus federation URL over http:// or https://, or a file),
      or from a Prometheus server's query API (--prometheus: sums over every proxy; --window:
      only what each series gained in that recent window). --auth-env/--auth-file: the Authorization value
      (a bare token is sent as Bearer); never printed. --cacert: trust these CAs instead of
      the system's. Per unit: with the filter's replicate series every variance is
      cluster-robust (--per-request ignores them, and without them guard says its p-values
      assume independent requests). Tests a traffic-share mismatch of the split against the
      configured weights, and per variant the 5xx ratio and mean latency against control. Sequential by default: always-valid p-values and 95% confidence
      sequences (mSPRT, mixing M = 0.1 standard deviations), valid however often guard runs;
      --fixed-horizon uses the classic tests for one planned look. Every decision of the run
      is Holm-adjusted at A (default 0.05); P(better) is the Bayesian probability that the
      variant beats control (reported only). Exits 3 when SRM p < 0.001, or when a variant's
      5xx ratio is worse than control by more than POINTS percentage points (default 0.5), or
      its mean latency by more than MS when given.

  abmesh guard ... --write-config OUT.json [--rollback-to paused|control]
      Also write the configuration with every experiment that breached a guardrail or shows
      SRM set to 'paused' (default) or, with --rollback-to control, 'rolled_out' with its
      control (first) variant as the winner; every other experiment, ramps included, is kept.
      Each change is printed with its reasons. Exits 0 when nothing changed, 3 when it did.

  abmesh import growthbook|flagd FILE [--allow-partial]
      Translate a GrowthBook SDK payload (features with experiment rules) or a flagd flag file
      (flags whose targeting is a fractional) into an abmesh configuration that assigns
      identically, printed on standard output. What cannot be expressed at the mesh is listed on
      standard error with the reason; then the command exits 1 unless --allow-partial.

  abmesh plan (--baseline-rate RATE | --sd SD) (--mde EFFECT | --mde-relative FRACTION)
              [--alpha 0.05] [--power 0.8] [--variants 2] [--daily-units N]
              [--traffic-percent 100] [--mixing 0.1] [--json]
              [--requests-per-unit M --design-effect D]
      Sample size per variant and duration: for a rate (baseline as a fraction, effect in the
      same units, or relative to the baseline) or a mean (standard deviation, effect in its
      units); several variants are each compared with control (Bonferroni). Gives the
      fixed-horizon size and the larger size sequential monitoring needs (guard's default).
      Sizes count units (the randomization unit), not requests. For a per-request metric (the
      5xx ratio, mean latency) give the mean requests per unit M and the design effect D that
      guard reports from the replicates (on an A/A or the pre-period): each unit then counts as
      M / D observations.

  abmesh --help | --version        (also: abmesh COMMAND --help)

exit codes: 0 success (guard: healthy, with evidence), 1 invalid configuration or unreadable
input (guard: a source that fails, with its URL and HTTP status), 2 usage error, 3 guardrail
breached (guard --write-config: the written configuration changed), 4 guard: no evidence (no
samples, no abmesh series or labels, or a running experiment without assignments; nothing
is written)
";

/// Writes to standard output; a closed pipe (`abmesh check x | head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("abmesh: {msg}\nrun 'abmesh --help' for usage");
    ExitCode::from(2)
}

fn read_config(path: &OsString) -> Result<Config, ExitCode> {
    read_config_bytes(path).map(|(_, c)| c)
}

/// The configuration file's bytes and its compiled form.
fn read_config_bytes(path: &OsString) -> Result<(Vec<u8>, Config), ExitCode> {
    let bytes = if path == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map(|_| b)
    } else {
        std::fs::read(path)
    };
    let bytes = bytes.map_err(|e| {
        eprintln!("abmesh: cannot read {}: {e}", path.to_string_lossy());
        ExitCode::from(1)
    })?;
    let config = Config::parse(&bytes).map_err(|err| {
        for e in &err.errors {
            out(&format!("{e}\n"));
        }
        eprintln!(
            "abmesh: {} error(s) in {}",
            err.errors.len(),
            path.to_string_lossy()
        );
        ExitCode::from(1)
    })?;
    Ok((bytes, config))
}

fn split_pair(arg: &OsString) -> Option<(Vec<u8>, Vec<u8>)> {
    let b = arg.as_encoded_bytes();
    let eq = b.iter().position(|&c| c == b'=')?;
    (eq > 0).then(|| (b[..eq].to_vec(), b[eq + 1..].to_vec()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn assign(args: &[OsString]) -> ExitCode {
    let Some(config_path) = args.first() else {
        return usage_error("assign needs a CONFIG file");
    };
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut cookies: Vec<Vec<u8>> = Vec::new();
    let (mut path, mut query, mut method, mut host, mut time) =
        (b"/".to_vec(), None, b"GET".to_vec(), None, None);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let Some(flag) = flag.to_str() else {
            return usage_error("arguments must be flags");
        };
        let Some(value) = rest.next() else {
            return usage_error(&format!("{flag} needs a value"));
        };
        match flag {
            "--header" => match split_pair(value) {
                Some((n, v)) => headers.push((n.to_ascii_lowercase(), v)),
                None => return usage_error("--header needs NAME=VALUE"),
            },
            "--cookie" => match split_pair(value) {
                Some((n, v)) => cookies.push([n, b"=".to_vec(), v].concat()),
                None => return usage_error("--cookie needs NAME=VALUE"),
            },
            "--query" => {
                query = Some(
                    value
                        .as_encoded_bytes()
                        .strip_prefix(b"?")
                        .unwrap_or(value.as_encoded_bytes())
                        .to_vec(),
                )
            }
            "--path" => path = value.as_encoded_bytes().to_vec(),
            "--method" => method = value.as_encoded_bytes().to_vec(),
            "--host" => host = Some(value.as_encoded_bytes().to_vec()),
            "--time" => match value.to_str().and_then(abmesh::time::parse_rfc3339) {
                Some(t) => time = Some(t),
                None => return usage_error(&format!("--time needs {}", abmesh::time::EXPECTED)),
            },
            other => return usage_error(&format!("unknown option {other}")),
        }
    }
    let config = match read_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(q) = query {
        path.push(b'?');
        path.extend_from_slice(&q);
    }
    let mut all: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b":method".to_vec(), method), (b":path".to_vec(), path)];
    if let Some(h) = host {
        all.push((b":authority".to_vec(), h));
    }
    all.extend(headers);
    if !cookies.is_empty() {
        all.push((b"cookie".to_vec(), cookies.join(&b"; "[..])));
    }
    let req = RequestView::new(&all);
    let (plan, eval) = Plan::new(&config, &req, time.unwrap_or_else(now_ms));
    out(&render(&config, &plan, &eval));
    ExitCode::SUCCESS
}

/// `guard --write-config`: the configuration with breached experiments paused or rolled back,
/// each change printed with its reasons (on standard error with `--json`, whose standard output
/// is the report). Exit 0 when nothing changed, 3 when something did, 1 on error.
#[cfg(not(target_arch = "wasm32"))]
fn write_rolled_back(
    bytes: &[u8],
    report: &abmesh::guard::Report,
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
    let (written, changes) = abmesh::guard::rollback(&document, report, how);
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

/// `abmesh plan`: sample size and duration.
fn plan(args: &[OsString]) -> ExitCode {
    use abmesh::power::{Effect, Input, Metric};
    let mut input = Input {
        metric: Metric::Proportion { baseline: 0.0 },
        effect: Effect::Absolute(0.0),
        alpha: 0.05,
        power: 0.8,
        variants: 2,
        mixing: abmesh::sequential::DEFAULT_MIXING,
        daily_units: None,
        traffic_percent: 100.0,
        per_request: None,
    };
    let (mut metric, mut effect, mut json) = (None, None, false);
    let (mut requests_per_unit, mut design_effect) = (None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let Some(flag) = flag.to_str() else {
            return usage_error("arguments must be flags");
        };
        if flag == "--json" {
            json = true;
            continue;
        }
        let Some(value) = rest.next() else {
            return usage_error(&format!("{flag} needs a value"));
        };
        let Some(v) = value.to_str().and_then(|v| v.parse::<f64>().ok()) else {
            return usage_error(&format!("{flag} needs a number"));
        };
        match flag {
            "--baseline-rate" => metric = Some(Metric::Proportion { baseline: v }),
            "--sd" => metric = Some(Metric::Mean { sd: v }),
            "--mde" => effect = Some(Effect::Absolute(v)),
            "--mde-relative" => effect = Some(Effect::Relative(v)),
            "--alpha" => input.alpha = v,
            "--power" => input.power = v,
            "--variants" if v >= 0.0 && v.fract() == 0.0 => input.variants = v as usize,
            "--variants" => return usage_error("--variants needs a whole number"),
            "--mixing" => input.mixing = v,
            "--daily-units" => input.daily_units = Some(v),
            "--traffic-percent" => input.traffic_percent = v,
            "--requests-per-unit" => requests_per_unit = Some(v),
            "--design-effect" => design_effect = Some(v),
            other => return usage_error(&format!("unknown option {other}")),
        }
    }
    let (Some(m), Some(e)) = (metric, effect) else {
        return usage_error(
            "plan needs --baseline-rate RATE or --sd SD, and --mde EFFECT or --mde-relative FRACTION",
        );
    };
    input.metric = m;
    input.effect = e;
    input.per_request = match (requests_per_unit, design_effect) {
        (None, None) => None,
        (Some(r), Some(d)) => Some(abmesh::power::PerRequest {
            requests_per_unit: r,
            design_effect: d,
        }),
        _ => {
            return usage_error(
                "--requests-per-unit and --design-effect go together (guard --json reports the design effect it measures)",
            )
        }
    };
    let p = match abmesh::power::plan(&input) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("abmesh: {e}");
            return ExitCode::from(1);
        }
    };
    let k = input.variants as u64;
    if json {
        let v = serde_json::json!({
            "metric": match m { Metric::Proportion { .. } => "proportion", Metric::Mean { .. } => "mean" },
            "baseline_rate": match m { Metric::Proportion { baseline } => Some(baseline), _ => None },
            "sd": match m { Metric::Mean { sd } => Some(sd), _ => None },
            "mde": p.delta, "alpha": input.alpha, "power": input.power, "variants": input.variants,
            "comparisons": p.comparisons, "alpha_per_comparison": p.alpha_per_comparison,
            "correction": "bonferroni", "mixing": input.mixing,
            "fixed_horizon": {"per_variant": p.per_variant_fixed(), "total": p.per_variant_fixed() * k, "days": p.days_fixed},
            "sequential": {"per_variant": p.per_variant_sequential(), "total": p.per_variant_sequential() * k, "days": p.days_sequential},
            "sequential_inflation": p.inflation(),
            "daily_units": input.daily_units, "traffic_percent": input.traffic_percent,
            "unit": "units (the randomization unit: users, devices…), not requests",
            "requests_per_unit": input.per_request.map(|r| r.requests_per_unit),
            "design_effect": input.per_request.map(|r| r.design_effect),
        });
        out(&format!("{v}\n"));
        return ExitCode::SUCCESS;
    }
    let mut text = match m {
        Metric::Proportion { baseline } => format!(
            "metric: a rate, baseline {:.2}%; minimum detectable effect {:+.2} points ({:.2}% against {:.2}%)\n",
            baseline * 100.0,
            p.delta * 100.0,
            (baseline + p.delta) * 100.0,
            baseline * 100.0
        ),
        Metric::Mean { sd } => format!(
            "metric: a mean, standard deviation {sd}; minimum detectable effect {:+} ({:+.3} standard deviations)\n",
            p.delta,
            p.delta / sd
        ),
    };
    text.push_str(&format!(
        "{} variants: {} comparison{} against control at alpha {} each (alpha {} / {}, Bonferroni), power {}%\n",
        input.variants,
        p.comparisons,
        if p.comparisons == 1 { "" } else { "s" },
        p.alpha_per_comparison,
        input.alpha,
        p.comparisons,
        input.power * 100.0
    ));
    text.push_str(&match input.per_request {
        None => "counted in units (the randomization unit: users, devices…), one observation each; for a per-request metric give --requests-per-unit and --design-effect\n".to_string(),
        Some(r) => format!(
            "counted in units (the randomization unit), not requests: a per-request metric at {} requests per unit with design effect {} (each unit worth {:.2} independent requests)\n",
            r.requests_per_unit,
            r.design_effect,
            r.requests_per_unit / r.design_effect
        ),
    });
    let thousands = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    if let Some(d) = input.daily_units {
        text.push_str(&format!(
            "days at {} units a day, {}% of them in the experiment\n",
            thousands(d.round() as u64),
            input.traffic_percent
        ));
    }
    let days = |d: Option<f64>| {
        d.map_or(String::new(), |d| {
            format!(", {d} day{}", if d == 1.0 { "" } else { "s" })
        })
    };
    text.push_str(&format!(
        "fixed horizon (one look):        {} per variant, {} in total{}\n",
        thousands(p.per_variant_fixed()),
        thousands(p.per_variant_fixed() * k),
        days(p.days_fixed)
    ));
    text.push_str(&format!(
        "sequential (guard's default):    {} per variant, {} in total{} ({:.2}x; mixing {})\n",
        thousands(p.per_variant_sequential()),
        thousands(p.per_variant_sequential() * k),
        days(p.days_sequential),
        p.inflation(),
        input.mixing
    ));
    out(&text);
    ExitCode::SUCCESS
}

fn import(args: &[OsString]) -> ExitCode {
    let allow_partial = args.iter().any(|a| a == "--allow-partial");
    let rest: Vec<&OsString> = args.iter().filter(|a| *a != "--allow-partial").collect();
    let (Some(kind), Some(path), None) = (
        rest.first().and_then(|k| k.to_str()),
        rest.get(1),
        rest.get(2),
    ) else {
        return usage_error("import needs growthbook|flagd and a FILE");
    };
    let text = match std::fs::read(path) {
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
        "growthbook" => abmesh::import::growthbook(&source),
        "flagd" => abmesh::import::flagd(&source),
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

/// The CLI is native; a wasm32 build of it (a side effect of `cargo test --target wasm32` on
/// the core) has no HTTP client for guard's sources.
#[cfg(target_arch = "wasm32")]
fn guard(_args: &[OsString]) -> ExitCode {
    usage_error("guard needs the native CLI")
}

#[cfg(not(target_arch = "wasm32"))]
fn guard(args: &[OsString]) -> ExitCode {
    use abmesh::guard::Outcome;
    use abmesh::source::{self, Http};
    let (mut config, mut stats, mut json, mut max_points) = (None, None, false, 0.5f64);
    let (mut prometheus, mut window) = (None, None);
    let (mut write_config, mut how) = (None, Rollback::Pause);
    let mut http = Http::default();
    let mut options = abmesh::guard::Options::default();
    let mut fixed = false;
    let mut mixing = abmesh::sequential::DEFAULT_MIXING;
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
                | "--write-config"
                | "--rollback-to"),
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
                    "--write-config" => write_config = Some(value.clone()),
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
    let (source, samples) = match (stats, prometheus) {
        (Some(s), None) => {
            let samples = source::prometheus_text(&s, &http);
            (s, samples)
        }
        (None, Some(p)) => {
            let samples = source::prometheus_api(&p, window.as_deref(), &http);
            (p, samples)
        }
        _ => {
            return usage_error(
                "guard needs --config CONFIG and exactly one of --stats URL_OR_FILE or --prometheus URL",
            )
        }
    };
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
    options.max_error_increase = max_points / 100.0;
    options.mode = if fixed {
        abmesh::guard::Mode::FixedHorizon
    } else {
        abmesh::guard::Mode::Sequential { mixing }
    };
    options.now_ms = now_ms();
    let report = abmesh::guard::judge(&config, &samples, &options);
    if json {
        out(&format!("{}\n", abmesh::guard::render_json(&report)));
    } else {
        out(&abmesh::guard::render_text(&report));
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

/// What `abmesh assign` prints: the plan's effects, in the order the filter applies them.
fn render(config: &Config, plan: &Plan, eval: &abmesh::Evaluation) -> String {
    use abmesh::plan::{Effect, ResponseEffect};
    let mut out = String::new();
    for effect in plan.effects() {
        out.push_str(&match effect {
            Effect::RemoveRequestHeader(n) => format!("remove request header: {n}\n"),
            Effect::SetRequestHeader(n, v) => {
                format!("set request header: {n}: {}\n", String::from_utf8_lossy(v))
            }
            Effect::Log(level, line) => format!("log ({}): {line}\n", level.as_str()),
            Effect::SetFilterState(n, v) => format!("set filter state: wasm.{n}: {v}\n"),
        });
    }
    if plan.set().is_empty() {
        out.push_str("set request header: none (no assignments)\n");
    }
    if plan.baggage_full {
        out.push_str("baggage: assignments left out (the header would exceed 8192 bytes)\n");
    }
    for effect in plan.response_effects() {
        out.push_str(&match effect {
            ResponseEffect::SetHeader(n, v) => format!("set response header: {n}: {v}\n"),
            ResponseEffect::AddSetCookie(c) => format!("add response header: set-cookie: {c}\n"),
        });
    }
    for (e, reason) in &eval.not_assigned {
        out.push_str(&format!(
            "not assigned: {} ({})\n",
            config.experiments[*e].key,
            reason.as_str()
        ));
    }
    match &plan.exposure() {
        Some(x) => out.push_str(&format!("exposure: {x}\n")),
        None => out.push_str("exposure: none\n"),
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // `abmesh plan --help` is how people ask; it must not be read as a file or an option value.
    if args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        out(HELP);
        return ExitCode::SUCCESS;
    }
    match args.first().and_then(|a| a.to_str()) {
        None => usage_error("missing command (check, assign, guard, import or plan)"),
        Some("--help" | "-h" | "help") => {
            out(HELP);
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            out(&format!("abmesh {}\n", env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        Some("check") => {
            let (path, time) = match args.get(1..) {
                Some([path]) => (path, None),
                Some([path, flag, t]) if flag == "--time" => {
                    match t.to_str().and_then(abmesh::time::parse_rfc3339) {
                        Some(t) => (path, Some(t)),
                        None => {
                            return usage_error(&format!("--time needs {}", abmesh::time::EXPECTED))
                        }
                    }
                }
                _ => return usage_error("check needs exactly one CONFIG file [--time RFC3339]"),
            };
            match read_config(path) {
                Ok(config) => {
                    let now = time.unwrap_or_else(now_ms);
                    out(&abmesh::summary::describe_at(&config, Some(now)));
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Some("assign") => assign(&args[1..]),
        Some("guard") => guard(&args[1..]),
        Some("import") => import(&args[1..]),
        Some("plan") => plan(&args[1..]),
        Some(other) => usage_error(&format!("unknown command '{other}'")),
    }
}
