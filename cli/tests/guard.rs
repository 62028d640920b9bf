#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! `abmesh guard` on Prometheus text: SRM against the configured weights, and per-variant
//! error and latency comparisons, through the built binary.

use std::collections::BTreeMap;
use std::process::Command;

use abmesh::{evaluate, Config, RequestView};

const CONFIG: &str = r#"{"units": {"user": [{"header": "x-user-id"}]},
  "experiments": [{"key": "checkout-v2", "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}]},
                  {"key": "ranker", "traffic_percent": 40, "variants": [{"name": "control", "weight": 2}, {"name": "neural", "weight": 1}]}]}"#;

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("abmesh-guard-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs guard on `stats` (a file) and returns the exit code and standard output.
fn guard(config: &str, stats: &str, extra: &[&str]) -> (i32, String) {
    let (code, out, _, _) = guard_all(config, stats, extra);
    (code, out)
}

/// Prometheus text for the assignments the real core makes for `units` ids under `config`.
fn split_stats(config: &str, units: usize) -> String {
    let config = Config::parse(config.as_bytes()).unwrap();
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for i in 0..units {
        let id = format!("unit-{i}");
        let headers = [("x-user-id", id.as_str())];
        // Now: guard judges what is in force now (ramps included).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for a in evaluate(&config, &RequestView::new(&headers), now).assignments {
            let e = &config.experiments[a.experiment];
            *counts
                .entry((e.key.clone(), e.variants[a.variant].name.clone()))
                .or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|((e, v), n)| {
            format!("abmesh_assignments_total{{experiment=\"{e}\",variant=\"{v}\"}} {n}\n")
        })
        .collect()
}

fn sli(e: &str, v: &str, responses: u64, errors: u64, mean: f64, sd: f64) -> String {
    let n = responses as f64;
    let (sum, squares) = (mean * n, sd * sd * (n - 1.0) + n * mean * mean);
    format!(
        "abmesh_responses_total{{experiment=\"{e}\",variant=\"{v}\",class=\"2xx\"}} {}\n\
         abmesh_responses_total{{experiment=\"{e}\",variant=\"{v}\",class=\"5xx\"}} {errors}\n\
         abmesh_request_duration_milliseconds_sum{{experiment=\"{e}\",variant=\"{v}\"}} {sum}\n\
         abmesh_request_duration_milliseconds_count{{experiment=\"{e}\",variant=\"{v}\"}} {responses}\n\
         abmesh_request_duration_milliseconds_sum_squares{{experiment=\"{e}\",variant=\"{v}\"}} {squares}\n",
        responses - errors
    )
}

#[test]
fn a_correct_split_of_10000_units_is_not_flagged() {
    let (code, out) = guard(CONFIG, &split_stats(CONFIG, 10_000), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("mode: sequential (always-valid p-values, 95% confidence sequences \"CS\"; mixing 0.1), Holm-adjusted at alpha 0.05\n"),
        "{out}"
    );
    assert!(
        out.contains("checkout-v2 [ok]  SRM always-valid p = ") && out.ends_with("healthy\n"),
        "{out}"
    );
    assert!(out.contains("ranker [ok]"), "{out}");
    let (code, out) = guard(CONFIG, &split_stats(CONFIG, 10_000), &["--fixed-horizon"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkout-v2 [ok]  SRM chi-square "), "{out}");
}

#[test]
fn a_split_against_other_weights_is_flagged_as_srm() {
    // Envoy assigned with 50/50 and 2/1; guard is told 60/40: the split no longer matches.
    let told = CONFIG.replace(
        r#""weight": 50}, {"name": "treatment", "weight": 50}"#,
        r#""weight": 60}, {"name": "treatment", "weight": 40}"#,
    );
    for (mode, breach) in [
        (None, "sample ratio mismatch: always-valid p = "),
        (
            Some("--fixed-horizon"),
            "sample ratio mismatch: chi-square ",
        ),
    ] {
        let mut args = vec!["--json"];
        args.extend(mode);
        let (code, out) = guard(&told, &split_stats(CONFIG, 10_000), &args);
        assert_eq!(code, 3, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["healthy"], false);
        assert_eq!(v["multiple_testing"], "holm");
        let e = &v["experiments"][0];
        assert_eq!(e["experiment"], "checkout-v2");
        assert!(
            e["srm"]["holm_adjusted_p_value"].as_f64().unwrap() < 0.001,
            "{e}"
        );
        assert_eq!(e["srm"]["flagged"], true);
        assert!(
            e["breaches"][0].as_str().unwrap().starts_with(breach),
            "{e}"
        );
        assert_eq!(v["experiments"][1]["breaches"], serde_json::json!([]));
    }
}

#[test]
fn a_variant_with_more_errors_than_allowed_breaches_and_names_the_experiment() {
    let mut stats = split_stats(CONFIG, 4_000);
    stats += &sli("checkout-v2", "control", 2_000, 4, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 2_000, 400, 26.0, 6.0);
    let (code, out) = guard(CONFIG, &stats, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("checkout-v2 [BREACH]"), "{out}");
    assert!(
        out.contains(
            "breach: variant treatment: 5xx ratio 20.00% against control 0.20%, +19.80 points"
        ),
        "{out}"
    );
    // The latency comparison is reported (Welch), not used for the exit code.
    assert!(out.contains("+6.00ms ["), "{out}");
    // A small increase within the allowance does not breach.
    let mut stats = split_stats(CONFIG, 4_000);
    stats += &sli("checkout-v2", "control", 2_000, 4, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 2_000, 10, 20.0, 5.0);
    let (code, out) = guard(CONFIG, &stats, &[]);
    assert_eq!(code, 0, "{out}");
    // ...unless the allowance is lowered below it and the increase is significant.
    let mut stats = split_stats(CONFIG, 4_000);
    stats += &sli("checkout-v2", "control", 2_000, 4, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 2_000, 20, 20.0, 5.0);
    // +0.8 points, significant at one look (p < 0.05), but the 95% interval (+0.32 to +1.28)
    // reaches below the default allowance of 0.5 points: not a breach.
    let fixed = |extra: &[&str]| {
        let mut args = vec!["--fixed-horizon"];
        args.extend_from_slice(extra);
        guard(CONFIG, &stats, &args).0
    };
    assert_eq!(fixed(&[]), 0);
    assert_eq!(fixed(&["--max-error-increase", "0.1"]), 3);
    // Sequentially, 2,000 requests per arm are not enough evidence for that: the confidence
    // sequence is wider than the one-look interval, the price of looking as often as wanted.
    assert_eq!(guard(CONFIG, &stats, &["--max-error-increase", "0.1"]).0, 0);
    // Ten times the data at the same rates is.
    let mut stats = split_stats(CONFIG, 40_000);
    stats += &sli("checkout-v2", "control", 20_000, 40, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 20_000, 200, 20.0, 5.0);
    let (code, out) = guard(CONFIG, &stats, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("(95% CS 0.55 to 1.05)"), "{out}");
}

#[test]
fn holm_adjusts_every_decision_of_the_run_and_latency_can_be_a_guardrail() {
    // Two comparisons (treatment and neural), each just significant on its own.
    let config = CONFIG.replace(r#""traffic_percent": 40, "#, "");
    let mut stats = split_stats(&config, 4_000);
    stats += &sli("checkout-v2", "control", 2_000, 4, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 2_000, 40, 20.5, 5.0);
    stats += &sli("ranker", "control", 2_000, 4, 20.0, 5.0);
    stats += &sli("ranker", "neural", 2_000, 4, 20.0, 5.0);
    let (_, out) = guard(
        &config,
        &stats,
        &["--json", "--fixed-horizon", "--max-latency-increase", "0"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cmp = |e: usize, metric: &str| v["experiments"][e]["variants"][1][metric].clone();
    let p: Vec<f64> = [
        (0, "errors_vs_control"),
        (0, "latency_vs_control"),
        (1, "errors_vs_control"),
        (1, "latency_vs_control"),
    ]
    .iter()
    .map(|(e, m)| cmp(*e, m)["guardrail_p_value"].as_f64().unwrap())
    .collect();
    let adjusted: Vec<f64> = [
        (0, "errors_vs_control"),
        (0, "latency_vs_control"),
        (1, "errors_vs_control"),
        (1, "latency_vs_control"),
    ]
    .iter()
    .map(|(e, m)| cmp(*e, m)["holm_adjusted_p_value"].as_f64().unwrap())
    .collect();
    assert_eq!(adjusted, abmesh_cli::sequential::holm(&p), "{out}");
    // Four decisions: the smallest p is multiplied by 4, the next by 3, ...
    let min = p.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(
        adjusted.contains(&(min * 4.0).min(1.0)),
        "{p:?} {adjusted:?}"
    );
    // The latency guardrail breaches (+0.5 ms over an allowance of 0, n = 2,000 per arm).
    let breaches = v["experiments"][0]["breaches"].as_array().unwrap();
    assert!(
        breaches.iter().any(|b| b.as_str().unwrap().starts_with(
            "variant treatment: mean latency 20.50 ms against control 20.00 ms, +0.50 ms (95% CI "
        )),
        "{out}"
    );
    // The Bayesian summary is reported beside the tests.
    let better = cmp(0, "errors_vs_control")["prob_better"].as_f64().unwrap();
    assert!(better < 0.001, "{better}");
}

#[test]
fn guard_reports_usage_and_read_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args(["guard", "--config", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "abmesh: guard needs --config CONFIG and exactly one of --stats URL_OR_FILE or --prometheus URL\nrun 'abmesh --help' for usage\n"
    );
    let d = dir();
    std::fs::write(d.join("ok.json"), CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "guard",
            "--config",
            d.join("ok.json").to_str().unwrap(),
            "--stats",
            "http://127.0.0.1:1/stats",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("abmesh: cannot read stats: http://127.0.0.1:1/stats: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const RAMPED: &str = r#"{"units": {"user": [{"header": "x-user-id"}]},
  "experiments": [{"key": "checkout-v2", "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}]},
                  {"key": "ranker", "ramp": [{"at": "2026-01-01T00:00:00Z", "traffic_percent": 10}, {"at": "2027-01-01T00:00:00Z", "traffic_percent": 40}],
                   "variants": [{"name": "control", "weight": 2}, {"name": "neural", "weight": 1}]}],
  "output": {"baggage": true}}"#;

fn failing_treatment_stats() -> String {
    let mut stats = split_stats(RAMPED, 4_000);
    stats += &sli("checkout-v2", "control", 2_000, 4, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 2_000, 400, 26.0, 6.0);
    stats += &sli("ranker", "control", 300, 1, 20.0, 5.0);
    stats += &sli("ranker", "neural", 150, 0, 20.0, 5.0);
    stats
}

#[test]
fn write_config_pauses_a_breached_experiment_and_keeps_the_healthy_ones_ramp() {
    let out_path = dir().join("written-pause.json");
    let (code, out) = guard(
        RAMPED,
        &failing_treatment_stats(),
        &["--write-config", out_path.to_str().unwrap()],
    );
    assert_eq!(code, 3, "{out}");
    let notes = out.split("guardrail breached\n").nth(1).unwrap();
    assert!(
        notes.starts_with(
            "change: experiments[0] checkout-v2: status running -> paused\n  because variant treatment: 5xx ratio 20.00% against control 0.20%"
        ),
        "{notes}"
    );
    assert!(
        notes.ends_with(&format!(
            "wrote {}: 1 experiment changed\n",
            out_path.display()
        )),
        "{notes}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let mut expected: serde_json::Value = serde_json::from_str(RAMPED).unwrap();
    expected["experiments"][0]["status"] = "paused".into();
    assert_eq!(
        written, expected,
        "only the breached experiment's status changes"
    );
    // The next run judges only what still runs: healthy, nothing to change.
    let written_text = std::fs::read_to_string(&out_path).unwrap();
    let again = dir().join("written-again.json");
    let (code, out) = guard(
        &written_text,
        &failing_treatment_stats(),
        &["--write-config", again.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with(&format!("wrote {}: no change\n", again.display())),
        "{out}"
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&again).unwrap()).unwrap();
    assert_eq!(again, expected);
}

#[test]
fn write_config_can_roll_back_to_control_and_reports_changes_on_stderr_with_json() {
    let out_path = dir().join("written-control.json");
    let d = dir();
    std::fs::write(d.join("ramped.json"), RAMPED).unwrap();
    std::fs::write(d.join("failing.txt"), failing_treatment_stats()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args(["guard", "--config"])
        .arg(d.join("ramped.json"))
        .arg("--stats")
        .arg(d.join("failing.txt"))
        .args(["--json", "--rollback-to", "control", "--write-config"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["healthy"], false);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "change: experiments[0] checkout-v2: status running -> rolled_out (winner control)\n"
        ),
        "{stderr}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(written["experiments"][0]["status"], "rolled_out");
    assert_eq!(written["experiments"][0]["winner"], "control");
    assert_eq!(
        written["experiments"][1],
        serde_json::from_str::<serde_json::Value>(RAMPED).unwrap()["experiments"][1]
    );
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "guard",
            "--config",
            "x",
            "--stats",
            "y",
            "--rollback-to",
            "treatment",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "abmesh: --rollback-to needs paused or control\nrun 'abmesh --help' for usage\n"
    );
}

/// `examples/ci/abmesh-guard.sh run` with `ABMESH_APPLY=istio` and `kubectl` replaced by
/// `kubectl_body` (a shell script that sees the real arguments).
fn ci_script_to_istio(name: &str, kubectl_body: &str) -> (i32, String, std::path::PathBuf) {
    ci_script_with_stats(name, kubectl_body, &failing_treatment_stats())
}

fn ci_script_with_stats(
    name: &str,
    kubectl_body: &str,
    stats: &str,
) -> (i32, String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir().join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), RAMPED).unwrap();
    std::fs::write(d.join("stats.txt"), stats).unwrap();
    let kubectl = d.join("kubectl");
    std::fs::write(&kubectl, format!("#!/bin/sh\n{kubectl_body}\n")).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let out = Command::new(repo.join("examples/ci/abmesh-guard.sh"))
        .arg("run")
        .current_dir(&d)
        .env("ABMESH", env!("CARGO_BIN_EXE_abmesh"))
        .env("ABMESH_CONFIG", d.join("config.json"))
        .env("ABMESH_STATS", d.join("stats.txt"))
        .env(
            "ABMESH_TEMPLATE",
            repo.join("examples/ci/wasmplugin.template.yaml"),
        )
        .env("ABMESH_APPLY", "istio")
        .env("KUBECTL", &kubectl)
        .env("ABMESH_OUT_DIR", d.join("out"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text, d)
}

#[test]
fn the_ci_script_applies_the_paused_configuration_to_istio_with_kubectl() {
    let (code, out, d) = ci_script_to_istio(
        "istio-ok",
        r#"echo "$@" > kubectl.args; cp "$3" applied.yaml"#,
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("abmesh-guard: applied "), "{out}");
    let args = std::fs::read_to_string(d.join("kubectl.args")).unwrap();
    assert_eq!(
        args,
        format!("apply -f {}\n", d.join("out/manifest.yaml").display())
    );
    // What kubectl received: the template's WasmPlugin with the written configuration.
    let applied = std::fs::read_to_string(d.join("applied.yaml")).unwrap();
    let template = std::fs::read_to_string(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join("examples/ci/wasmplugin.template.yaml"),
    )
    .unwrap();
    let (head, _) = template.rsplit_once("ABMESH_PLUGIN_CONFIG").unwrap();
    assert!(applied.starts_with(head), "{applied}");
    let plugin_config = applied.strip_prefix(head).unwrap().trim_end();
    let deployed: serde_json::Value = serde_json::from_str(plugin_config).unwrap();
    let mut expected: serde_json::Value = serde_json::from_str(RAMPED).unwrap();
    expected["experiments"][0]["status"] = "paused".into();
    assert_eq!(deployed, expected);
    // The next run starts from what is deployed.
    let now: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    assert_eq!(now, expected);
}

#[test]
fn a_failed_kubectl_apply_is_an_error_and_keeps_the_deployed_configuration() {
    let (code, out, d) = ci_script_to_istio(
        "istio-fails",
        "echo 'error: the server has asked for the client to provide credentials' >&2; exit 1",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.ends_with(&format!(
            "error: the server has asked for the client to provide credentials\nabmesh-guard: kubectl apply failed; nothing applied, {} unchanged\n",
            d.join("config.json").display()
        )),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("config.json")).unwrap(),
        RAMPED
    );
}

/// Runs guard on `stats` (a file) and returns the exit code, standard output and error.
fn guard_all(config: &str, stats: &str, extra: &[&str]) -> (i32, String, String, String) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = dir().join(format!(
        "all-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    let (c, s) = (d.join("config.json"), d.join("stats.txt"));
    std::fs::write(&c, config).unwrap();
    std::fs::write(&s, stats).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "guard",
            "--config",
            c.to_str().unwrap(),
            "--stats",
            s.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        s.to_str().unwrap().to_string(),
    )
}

fn assert_no_evidence(stats: &str, why: &str) {
    let written = dir().join(format!("never-written-{}.json", why.len()));
    let (code, out, err, path) = guard_all(
        CONFIG,
        stats,
        &["--write-config", written.to_str().unwrap()],
    );
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.ends_with(&format!("no evidence: {why}\nno evidence\n")),
        "{out}"
    );
    assert_eq!(
        err,
        format!(
            "abmesh: no evidence from {path}: {why}\nabmesh: nothing written: no evidence is not health\n"
        )
    );
    assert!(!written.exists(), "--write-config wrote {written:?}");
}

#[test]
fn an_empty_source_is_no_evidence_and_exits_4() {
    assert_no_evidence("", "the source holds no Prometheus samples");
}

#[test]
fn a_source_without_abmesh_series_is_no_evidence_and_exits_4() {
    assert_no_evidence(
        "# TYPE up gauge\nup 1\nenvoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 12\nenvoy_wasm_abmesh_vm_reload{} 0\n",
        "the source holds no abmesh series: is the plugin attached, and does the source scrape Envoy's /stats/prometheus?",
    );
}

#[test]
fn series_without_their_labels_are_no_evidence_and_name_the_stats_tags() {
    // What Envoy's /stats/prometheus shows without abmesh's stats_tags (seen in Envoy 1.40).
    assert_no_evidence(
        "experiment___checkout_v2___variant___treatment___abmesh_assignments_total{} 3\n\
         experiment___checkout_v2___reason___holdout___abmesh_not_assigned_total{} 2\n",
        "the abmesh series carry no experiment and variant labels (for example experiment___checkout_v2___variant___treatment___abmesh_assignments_total): add abmesh's stats tags (stats_tags in Envoy's bootstrap, extraStatTags in Istio; README, Metrics)",
    );
    let mut stats = split_stats(CONFIG, 2_000);
    stats += "replicate___3___abmesh_replicate_assignments_total{experiment=\"checkout-v2\",variant=\"control\"} 30\n";
    assert_no_evidence(
        &stats,
        "the replicate series carry no replicate label (for example replicate___3___abmesh_replicate_assignments_total): add replicate to the stats tags (README, Metrics)",
    );
}

#[test]
fn every_running_experiment_with_no_assignments_is_named() {
    let (code, out, err, path) = guard_all(CONFIG, "abmesh_errors_total{kind=\"host\"} 0\n", &[]);
    assert_eq!(code, 4, "{out}");
    assert_eq!(
        err,
        format!(
            "abmesh: no evidence from {path}: experiment checkout-v2 is running but the source holds no assignments for it\n\
             abmesh: no evidence from {path}: experiment ranker is running but the source holds no assignments for it\n"
        )
    );
}

#[test]
fn a_running_experiment_with_no_assignments_is_no_evidence() {
    // Only checkout-v2 is in the stats; ranker runs but has nothing.
    let stats: String = split_stats(CONFIG, 2_000)
        .lines()
        .filter(|l| !l.contains("ranker"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_no_evidence(
        &stats,
        "experiment ranker is running but the source holds no assignments for it",
    );
}

#[test]
fn a_replicate_label_beyond_the_configuration_is_no_evidence() {
    let mut stats = split_stats(CONFIG, 2_000);
    stats += "abmesh_replicate_assignments_total{experiment=\"checkout-v2\",variant=\"control\",replicate=\"40\"} 30\n";
    stats += "abmesh_replicate_responses_total{experiment=\"checkout-v2\",variant=\"control\",replicate=\"41\"} 30\n";
    let (code, out, err, path) = guard_all(CONFIG, &stats, &[]);
    assert_eq!(code, 4, "{out}");
    // The first reason is about the source; the variants' replicates are also incomplete.
    let why = "abmesh_replicate_assignments_total{experiment=\"checkout-v2\",variant=\"control\"} has replicate \"40\", not below the configuration's 32 replicates (metrics.replicates): the stats come from another configuration";
    assert!(
        err.starts_with(&format!("abmesh: no evidence from {path}: {why}\n")),
        "{err}"
    );
}

/// The samples the filter publishes for `units` users of `config` (the real core assigns
/// them and picks their replicate), each sending `requests(i)` requests of which
/// `failures(i, variant)` fail.
fn unit_stats(
    config: &str,
    units: usize,
    requests: impl Fn(usize) -> u64,
    failures: impl Fn(usize, &str) -> u64,
) -> String {
    let config = Config::parse(config.as_bytes()).unwrap();
    let mut plain: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
    let mut reps: BTreeMap<(String, String, u16, &str), u64> = BTreeMap::new();
    for i in 0..units {
        let id = format!("unit-{i}");
        let headers = [("x-user-id", id.as_str())];
        let eval = evaluate(&config, &RequestView::new(&headers), 0);
        let (m, _) = (requests(i), ());
        for (e, v, r) in abmesh::metrics::replicated(&config, &eval) {
            let exp = &config.experiments[e];
            let (key, name) = (exp.key.clone(), exp.variants[v].name.clone());
            let fails = failures(i, &name).min(m);
            for (series, n) in [
                ("abmesh_assignments_total", m),
                ("ok", m - fails),
                ("5xx", fails),
                ("abmesh_request_duration_milliseconds_sum", 20 * m),
                ("abmesh_request_duration_milliseconds_count", m),
                (
                    "abmesh_request_duration_milliseconds_sum_squares",
                    400 * m + 25 * m,
                ),
            ] {
                *plain
                    .entry((key.clone(), name.clone(), series))
                    .or_default() += n;
            }
            for (series, n) in [
                ("abmesh_replicate_assignments_total", m),
                ("abmesh_replicate_responses_total", m),
                ("abmesh_replicate_5xx_total", fails),
                ("abmesh_replicate_duration_milliseconds_sum", 20 * m),
            ] {
                *reps
                    .entry((key.clone(), name.clone(), r, series))
                    .or_default() += n;
            }
        }
    }
    let mut out = String::new();
    for ((e, v, series), n) in plain {
        let labels = format!("experiment=\"{e}\",variant=\"{v}\"");
        match series {
            "ok" => out += &format!("abmesh_responses_total{{{labels},class=\"2xx\"}} {n}\n"),
            "5xx" => out += &format!("abmesh_responses_total{{{labels},class=\"5xx\"}} {n}\n"),
            s => out += &format!("{s}{{{labels}}} {n}\n"),
        }
    }
    for ((e, v, r, series), n) in reps {
        out += &format!("{series}{{experiment=\"{e}\",variant=\"{v}\",replicate=\"{r}\"}} {n}\n");
    }
    out
}

#[test]
fn heavy_users_failing_on_both_arms_are_healthy_per_unit_and_a_false_alarm_per_request() {
    // 3,000 users; every 50th sends 400 requests and fails 60% of them — whichever arm it is
    // in. Nothing differs between arms.
    let stats = unit_stats(
        CONFIG,
        3_000,
        |i| if i % 50 == 0 { 400 } else { 3 },
        |i, _| if i % 50 == 0 { 240 } else { 0 },
    );
    let (code, out, _, _) = guard_all(CONFIG, &stats, &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["inference"], "per_unit");
    assert_eq!(v["replicates"], 32);
    assert_eq!(v["experiments"][0]["srm"]["test"], "traffic_share");
    // Heavy failing users make the 5xx ratio's variance many times the binomial one.
    let deff = v["experiments"][0]["variants"][1]["errors_vs_control"]["design_effect"]
        .as_f64()
        .unwrap();
    assert!(deff > 20.0, "{deff}");
    let (code, text, _, _) = guard_all(CONFIG, &stats, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "inference: per unit (cluster-robust variances from 32 replicate series per variant)\n"
        ),
        "{text}"
    );
    // The same stats judged per request see a split and error mismatch that is not there.
    let (code, text, _, _) = guard_all(CONFIG, &stats, &["--per-request"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("inference: per request (replicates not used (--per-request)): p-values assume independent requests"), "{text}");
}

#[test]
fn a_treatment_that_fails_its_users_breaches_per_unit() {
    let stats = unit_stats(
        CONFIG,
        6_000,
        |i| 2 + (i % 7) as u64,
        |i, variant| match (variant, i % 4) {
            ("treatment", 0) => 3,
            _ => 0,
        },
    );
    let (code, out, _, _) = guard_all(CONFIG, &stats, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("  breach: variant treatment: 5xx ratio "),
        "{out}"
    );
}

#[test]
fn the_ci_script_applies_nothing_and_exits_4_when_the_stats_are_no_evidence() {
    let (code, out, d) = ci_script_with_stats("istio-blind", "touch kubectl.ran", "");
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("no evidence: the source holds no Prometheus samples\n"),
        "{out}"
    );
    assert!(
        out.ends_with("abmesh-guard: no evidence; nothing applied\n"),
        "{out}"
    );
    assert!(!d.join("kubectl.ran").exists(), "kubectl ran: {out}");
    assert_eq!(
        std::fs::read_to_string(d.join("config.json")).unwrap(),
        RAMPED,
        "the deployed configuration changed"
    );
}

/// A real 20-point 5xx breach, then one line that would once have hidden it.
fn breach_and(line: &str) -> String {
    let mut stats = split_stats(CONFIG, 4_000);
    stats += &sli("checkout-v2", "control", 2_000, 4, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 2_000, 400, 26.0, 6.0);
    stats + line + "\n"
}

#[test]
fn a_nan_negative_or_twice_labelled_counter_ends_guard_with_exit_1_naming_the_line() {
    let (code, _) = guard(CONFIG, &breach_and(""), &[]);
    assert_eq!(code, 3, "the breach itself is found");
    // The appended line takes the place of the empty last line of `breach_and("")`.
    let lines = breach_and("").lines().count();
    for (line, why) in [
        (
            r#"abmesh_responses_total{experiment="checkout-v2",variant="control",class="4xx"} NaN"#,
            "the value NaN is not a count (a finite number of at least 0)",
        ),
        (
            r#"abmesh_responses_total{experiment="checkout-v2",variant="control",class="4xx"} -2000"#,
            "the value -2000 is not a count (a finite number of at least 0)",
        ),
        (
            r#"abmesh_responses_total{experiment="checkout-v2",variant="treatment",class="5xx",class="2xx"} 0"#,
            "the label \"class\" is given twice (which one counts is unknowable)",
        ),
    ] {
        let (code, out, err, path) = guard_all(CONFIG, &breach_and(line), &[]);
        assert_eq!(code, 1, "{line}: {out}");
        assert_eq!(out, "");
        assert_eq!(
            err,
            format!("abmesh: cannot read stats: {path} line {lines}: {line}: {why}\n")
        );
    }
}

#[test]
fn responses_far_beyond_assignments_end_guard_with_exit_1_naming_both_lines() {
    let mut stats = String::from(
        "abmesh_assignments_total{experiment=\"checkout-v2\",variant=\"control\"} 100\n",
    );
    stats += &sli("checkout-v2", "control", 5_000, 4, 20.0, 5.0);
    let (code, out, err, path) = guard_all(CONFIG, &stats, &[]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "abmesh: cannot read stats: {path}: abmesh_responses_total (line 2) of experiment \
             \"checkout-v2\" variant \"control\" add up to 5000, more than its 100 \
             abmesh_assignments_total (line 1) allow (a publication can lag by 1000): the source \
             does not hold one proxy's or one Prometheus' abmesh counters\n"
        )
    );
}

#[test]
fn guard_reads_no_more_than_64_mib_of_stats_from_an_endless_file() {
    let d = dir().join("endless");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), CONFIG).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "guard",
            "--config",
            d.join("config.json").to_str().unwrap(),
            "--stats",
            "/dev/zero",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "abmesh: cannot read stats: /dev/zero: more than 64 MiB (67108864 bytes): read no further\n"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_server_that_never_finishes_its_body_meets_the_deadline() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers 200 and then one line of stats a second, for ever.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
                loop {
                    if s.write_all(b"# still coming\n").is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
        }
    });
    let d = dir().join("slow");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), CONFIG).unwrap();
    let url = format!("http://127.0.0.1:{port}/stats/prometheus");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "guard",
            "--config",
            d.join("config.json").to_str().unwrap(),
            "--stats",
            &url,
        ])
        .args(["--timeout", "2"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!("abmesh: cannot read stats: {url}: ")),
        "{err}"
    );
    assert!(
        err.contains("timeout") || err.contains("timed out"),
        "{err}"
    );
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn a_variant_whose_replicate_series_are_not_published_yet_is_no_evidence_not_healthy() {
    // Control's replicate series are there, treatment's not yet (a proxy defines a series on
    // its first count, a large configuration's over minutes): treatment cannot be judged.
    let config = r#"{"units": {"user": [{"header": "x-user-id"}]},
      "experiments": [{"key": "checkout-v2", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}]}"#;
    let mut stats = split_stats(config, 2_000);
    stats += &sli("checkout-v2", "control", 1_000, 2, 20.0, 5.0);
    stats += &sli("checkout-v2", "treatment", 1_000, 300, 20.0, 5.0);
    for r in 0..32 {
        stats += &format!(
            "abmesh_replicate_assignments_total{{experiment=\"checkout-v2\",variant=\"control\",replicate=\"{r}\"}} 31\n\
             abmesh_replicate_responses_total{{experiment=\"checkout-v2\",variant=\"control\",replicate=\"{r}\"}} 31\n"
        );
    }
    let (code, out, err, path) = guard_all(config, &stats, &[]);
    assert_eq!(code, 4, "{out}");
    // Not a sample ratio mismatch: the split is not judged on half-published replicates.
    assert!(!out.contains("sample ratio mismatch"), "{out}");
    assert_eq!(
        err,
        format!(
            "abmesh: no evidence from {path}: experiment checkout-v2 variant treatment: its replicate series do not hold its assignments yet (a proxy publishes a new series on its first count, a large configuration's over minutes)\n"
        )
    );
}

/// A running `guard --serve` on an ephemeral port, killed when dropped.
struct Served {
    child: std::process::Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &str, stats_file: &std::path::Path) -> Served {
    use std::io::BufRead;
    let d = dir();
    let cfg = d.join(format!(
        "serve-{}.json",
        stats_file.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "guard",
            "--config",
            cfg.to_str().unwrap(),
            "--stats",
            stats_file.to_str().unwrap(),
        ])
        .args(["--serve", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    err.read_line(&mut line).unwrap();
    // Keep reading what the server logs, as a terminal or a journal would.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let base = line
        .trim()
        .strip_prefix("abmesh: guard serving on ")
        .and_then(|u| u.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Served { child, base }
}

/// Status and body of a request to the server (non-2xx included).
fn call(s: &Served, method: &str, path: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", s.base);
    let mut r = if method == "POST" {
        agent
            .post(&url)
            .content_type("application/json")
            .send(body)
            .unwrap()
    } else {
        agent.get(&url).call().unwrap()
    };
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn flagger_payload(experiment: &str) -> String {
    format!(
        r#"{{"name":"checkout","namespace":"shop","phase":"Progressing","checksum":"x","metadata":{{"experiment":"{experiment}"}}}}"#
    )
}

#[test]
fn guard_serves_flagger_argo_and_prometheus_evaluating_on_every_request() {
    let stats = dir().join("served.prom");
    std::fs::write(&stats, failing_treatment_stats()).unwrap();
    let s = serve(RAMPED, &stats);
    // Flagger: the breached experiment halts (412, the reason in the body), a healthy one advances.
    let (code, body) = call(&s, "POST", "/flagger", &flagger_payload("checkout-v2"));
    assert_eq!(code, 412, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["verdict"], "breached");
    assert!(
        v["reasons"][0].as_str().unwrap().contains("treatment"),
        "{body}"
    );
    let (code, body) = call(&s, "POST", "/flagger", &flagger_payload("ranker"));
    assert_eq!(
        (code, body.contains("\"verdict\":\"healthy\"")),
        (200, true),
        "{body}"
    );
    let (code, body) = call(&s, "POST", "/flagger", &flagger_payload("nope"));
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("experiment nope is not a running experiment of the configuration"),
        "{body}"
    );
    // Argo Rollouts: always a document; the run as a whole is breached.
    let (code, body) = call(&s, "GET", "/argo", "");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["verdict"].as_str(), v["healthy"].as_bool()),
        (Some("breached"), Some(false)),
        "{body}"
    );
    assert_eq!(v["experiments"]["checkout-v2"]["verdict"], "breached");
    assert_eq!(v["experiments"]["ranker"]["verdict"], "healthy");
    let (_, body) = call(&s, "GET", "/argo?experiment=ranker", "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["experiment"].as_str(), v["verdict"].as_str()),
        (Some("ranker"), Some("healthy")),
        "{body}"
    );
    // Prometheus: one gauge per experiment.
    let (code, body) = call(&s, "GET", "/metrics", "");
    assert_eq!(code, 200);
    assert!(body.lines().any(|l| l.starts_with("abmesh_guard_error_ratio_increase{experiment=\"checkout-v2\",variant=\"treatment\"} 0.19")), "{body}");
    for line in [
        "abmesh_guard_healthy{experiment=\"checkout-v2\"} 0",
        "abmesh_guard_healthy{experiment=\"ranker\"} 1",
        "abmesh_guard_breaches{experiment=\"checkout-v2\"} 1",
        "abmesh_guard_no_evidence{experiment=\"ranker\"} 0",
        "abmesh_guard_experiment{experiment=\"checkout-v2\",status=\"running\"} 1",
        "abmesh_guard_configured_share{experiment=\"checkout-v2\",variant=\"control\"} 0.5",
        "abmesh_guard_up 1",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
    }
    // Every request evaluates again: an empty source is no evidence — Flagger halts (503),
    // Argo reads no_evidence (its successCondition fails, its failureCondition does not).
    std::fs::write(&stats, "").unwrap();
    let (code, body) = call(&s, "POST", "/flagger", &flagger_payload("ranker"));
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the source holds no Prometheus samples"),
        "{body}"
    );
    let (_, body) = call(&s, "GET", "/argo", "");
    assert!(body.contains(r#""verdict":"no_evidence""#), "{body}");
    // A source that cannot be read: no evidence, counted.
    std::fs::remove_file(&stats).unwrap();
    let (code, _) = call(&s, "POST", "/flagger", &flagger_payload("ranker"));
    assert_eq!(code, 503);
    let (_, body) = call(&s, "GET", "/metrics", "");
    assert!(
        body.contains("abmesh_guard_up 0") && body.contains("abmesh_guard_source_errors_total 2"),
        "{body}"
    );
    assert_eq!(call(&s, "GET", "/other", "").0, 404);
}
