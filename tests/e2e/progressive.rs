//! Progressive delivery end to end: `examples/ci/abmesh-guard.sh` against an Envoy that reads
//! its listener (and so abmesh's configuration) from a watched file, with an upstream that
//! fails treatment requests. The script must pause that experiment, push the file, and leave
//! the healthy experiment alone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{access_log_exposures, header, output_text, text, upstream};
use crate::harness::{render, repo, scratch_dir, spawn_echo, spawn_envoy, KillOnDrop, Ports};
use crate::http::Client;
use crate::reload::{split, stat, wait_first_listener, wait_stat};

const CONFIG: &str = r#"{
  "units": {"user": [{"header": "x-user-id"}]},
  "experiments": [
    {"key": "checkout-v2", "route_header": true,
     "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]},
    {"key": "search-ranker",
     "variants": [{"name": "control", "weight": 1}, {"name": "neural", "weight": 1}]}
  ]
}
"#;

/// The upstream's `x-experiments` for users `from..to`, each on a new connection so a
/// replaced listener is never reused.
fn assignments(port: u16, from: usize, to: usize) -> Vec<Option<String>> {
    let mut client = Client::new(port);
    (from..to)
        .map(|i| {
            let id = format!("user-{i}");
            let r = client.get(b"/", &[("x-user-id", id.as_bytes())]);
            if r.status != 200 {
                // The treatment cluster's failures: the echo answers 503 with the same JSON.
                let v = r.json();
                return v["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|h| h[0] == "x-experiments")
                    .map(|h| h[1].as_str().unwrap().to_string());
            }
            let (_, seen) = upstream(&r);
            text(header(&seen, "x-experiments"))
        })
        .collect()
}

/// Waits until every count of the requests sent is in Envoy's stats: the assignments, the
/// responses and their replicate series agree (no forced or held-out request here). A VM
/// publishes once a second and defines new series for at most 20 ms a publication, so a
/// fixed sleep is not enough on a busy machine.
fn wait_published(admin: u16) {
    let total = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text) = crate::http::get_text(admin, "/stats/prometheus").unwrap();
        let assigned = total(&text, "abmesh_assignments_total{");
        let responses = total(&text, "abmesh_responses_total{");
        let replicated = total(&text, "abmesh_replicate_responses_total{");
        let errors = total(
            &text
                .lines()
                .filter(|l| l.contains("class=\"5xx\""))
                .collect::<Vec<_>>()
                .join("\n"),
            "abmesh_responses_total{",
        );
        let replicated_errors = total(&text, "abmesh_replicate_5xx_total{");
        if assigned > 0.0
            && assigned == responses
            && responses == replicated
            && errors == replicated_errors
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "counts not all published after 60 s: {assigned} assigned, {responses} responses, {replicated} replicated, {errors}/{replicated_errors} 5xx"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn member<'a>(dict: &'a Option<String>, key: &str) -> Option<&'a str> {
    dict.as_deref()?
        .split(", ")
        .find_map(|m| m.strip_prefix(key)?.strip_prefix('='))
}

fn script(dir: &Path, admin: u16, lds: &Path) -> (i32, String) {
    let out = Command::new(repo().join("examples/ci/abmesh-guard.sh"))
        .arg("run")
        .env("ABMESH", repo().join("dist/abmesh"))
        .env("ABMESH_CONFIG", dir.join("config.json"))
        .env(
            "ABMESH_STATS",
            format!("http://127.0.0.1:{admin}/stats/prometheus"),
        )
        .env("ABMESH_TEMPLATE", dir.join("template.yaml"))
        .env("ABMESH_APPLY", format!("file:{}", lds.display()))
        .env("ABMESH_OUT_DIR", dir.join("out"))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), output_text(&out))
}

#[test]
fn the_ci_script_pauses_a_failing_experiment_through_a_watched_file_and_spares_the_healthy_one() {
    let dir = scratch_dir("progressive");
    let ports = Ports::free();
    let lds = dir.join("lds.yaml");
    let log = dir.join("envoy.log");
    // The treatment cluster answers 503 to 30% of its requests.
    let mut echo = spawn_echo(&ports, 0.3);
    let (bootstrap, resource) = split(&render(&ports, &dir.join("access.log"), Some(CONFIG)), &lds);
    // The deployment template: the listener with a placeholder where the configuration goes.
    let at = resource.find("value: |").unwrap();
    let router = resource.find("- name: envoy.filters.http.router").unwrap();
    let block_end = resource[..router].rfind('\n').unwrap();
    let template = format!(
        "{}value: ABMESH_PLUGIN_CONFIG_STRING{}",
        &resource[..at],
        &resource[block_end..]
    );
    std::fs::write(dir.join("template.yaml"), &template).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    // The first deployment is rendered by the script too.
    let first = Command::new(repo().join("examples/ci/abmesh-guard.sh"))
        .args(["render"])
        .arg(dir.join("config.json"))
        .arg(dir.join("template.yaml"))
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    std::fs::write(&lds, &first.stdout).unwrap();
    std::fs::write(dir.join("bootstrap.yaml"), bootstrap).unwrap();
    let mut envoy = spawn_envoy(&dir.join("bootstrap.yaml"), 1, &log);
    let _guard = KillOnDrop {
        envoy: &mut envoy,
        upstream: &mut echo,
        log: &log,
    };
    wait_first_listener(ports.admin, &log);

    let before = assignments(ports.listener, 0, 1_000);
    assert!(before.iter().all(|d| member(d, "checkout-v2").is_some()));
    wait_published(ports.admin);

    let (code, out) = script(&dir, ports.admin, &lds);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("change: experiments[0] checkout-v2: status running -> paused\n  because variant treatment: 5xx ratio"),
        "{out}"
    );
    assert!(!out.contains("search-ranker: status"), "{out}");
    assert!(out.contains("abmesh-guard: applied "), "{out}");
    let deployed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(deployed["experiments"][0]["status"], "paused");
    assert_eq!(deployed["experiments"][1].get("status"), None);

    wait_stat(ports.admin, "listener_manager.lds.update_success", 2, &log);
    let records_before = access_log_exposures(&dir.join("access.log")).len();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let a = assignments(ports.listener, 0, 1_000);
        if a.iter().all(|d| member(d, "checkout-v2").is_none()) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the paused configuration never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The healthy experiment is untouched: every unit keeps its variant.
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            member(a, "search-ranker"),
            member(b, "search-ranker"),
            "user-{i}"
        );
    }
    // No exposure record of the paused experiment once it serves (the last 1,000 requests).
    std::thread::sleep(Duration::from_millis(500));
    let records = access_log_exposures(&dir.join("access.log"));
    let last: Vec<&serde_json::Value> = records[records.len() - 1_000..].iter().collect();
    assert!(records.len() >= records_before + 1_000);
    for r in last {
        for a in r["assignments"].as_array().unwrap() {
            assert_ne!(a["experiment"], "checkout-v2", "{r}");
        }
    }
    assert!(stat(ports.admin, "listener_manager.lds.update_rejected") == 0);

    // The next scheduled run finds nothing to do.
    wait_published(ports.admin);
    let (code, out) = script(&dir, ports.admin, &lds);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("abmesh-guard: healthy; nothing to apply"),
        "{out}"
    );
}

#[test]
fn ramps_in_envoy_take_the_traffic_of_the_step_in_force_now() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day = 86_400_000;
    let t = |offset_days: i64| abmesh::time::format_rfc3339(now + offset_days * day);
    let config = format!(
        r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}},
  "experiments": [
    {{"key": "mid-ramp", "ramp": [{{"at": "{}", "traffic_percent": 10}}, {{"at": "{}", "traffic_percent": 30}},
                               {{"at": "{}", "traffic_percent": 80}}],
     "variants": [{{"name": "control", "weight": 1}}, {{"name": "treatment", "weight": 1}}]}},
    {{"key": "not-started", "ramp": [{{"at": "{}", "traffic_percent": 50}}],
     "variants": [{{"name": "control", "weight": 1}}, {{"name": "treatment", "weight": 1}}]}},
    {{"key": "ramped", "ramp": [{{"at": "{}", "traffic_percent": 5}}, {{"at": "{}", "traffic_percent": 60}}],
     "variants": [{{"name": "control", "weight": 1}}, {{"name": "treatment", "weight": 2}}]}}
  ]}}"#,
        t(-7),
        t(-1),
        t(6),
        t(1),
        t(-30),
        t(-2)
    );
    let core = abmesh::Config::parse(config.as_bytes()).unwrap();
    let envoy = crate::harness::Envoy::start(Some(&config), 2);
    let mut client = Client::new(envoy.ports.listener);
    let n = 10_000;
    let mut counts = [0usize; 3];
    for i in 0..n {
        let id = format!("ramp-user-{i}");
        let headers = [("x-user-id", id.as_str())];
        let (_, seen) = upstream(&client.get(b"/", &[("x-user-id", id.as_bytes())]));
        let got = text(header(&seen, "x-experiments"));
        let want = abmesh::plan::Plan::new(&core, &abmesh::RequestView::new(&headers), now)
            .0
            .assignments;
        assert_eq!(got, want, "{id}: Envoy and the core at the same moment");
        for (k, key) in ["mid-ramp", "not-started", "ramped"].iter().enumerate() {
            counts[k] += usize::from(member(&got, key).is_some());
        }
    }
    // 4.5 standard deviations of a binomial share over 10,000 units.
    for (k, expected) in [0.30, 0.0, 0.60].into_iter().enumerate() {
        let share = counts[k] as f64 / n as f64;
        let tolerance = 4.5 * (expected * (1.0 - expected) / n as f64).sqrt();
        assert!(
            (share - expected).abs() <= tolerance,
            "experiment {k}: {share} assigned, expected {expected} ± {tolerance}"
        );
    }
}

/// The CI example's install step, run as GitHub Actions would run it, against a release
/// served over HTTP: it installs the CLI only when both pinned sha256 match.
#[test]
fn the_ci_example_installs_a_released_cli_only_when_its_pinned_sha256_match() {
    let workflow = repo().join("examples/ci/github-actions.yml");
    let out = Command::new(crate::harness::python())
        .arg("-c")
        .arg("import sys, yaml; steps = yaml.safe_load(open(sys.argv[1]))['jobs']['guard']['steps']; print(next(s for s in steps if s.get('id') == 'install')['run'])")
        .arg(&workflow)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let step = String::from_utf8(out.stdout).unwrap();
    let dir = scratch_dir("release");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let cli = std::fs::read(repo().join("dist/abmesh")).unwrap();
    let guard = std::fs::read(repo().join("examples/ci/abmesh-guard.sh")).unwrap();
    std::fs::write(www.join(format!("abmesh-{version}-x86_64-linux")), &cli).unwrap();
    std::fs::write(www.join("abmesh-guard.sh"), &guard).unwrap();
    let server = crate::harness::FileServer::start(&www);
    let port = server.port;
    let sha = crate::harness::sha256_hex;
    let run = |name: &str, cli_sha: &str| {
        let runner = dir.join(name);
        std::fs::create_dir_all(&runner).unwrap();
        let env_file = runner.join("github_env");
        let out = Command::new("bash")
            .arg("-c")
            .arg(&step)
            .env("ABMESH_VERSION", version)
            .env("ABMESH_RELEASE_URL", format!("http://127.0.0.1:{port}"))
            .env("ABMESH_CLI_SHA256", cli_sha)
            .env("ABMESH_GUARD_SHA256", sha(&guard))
            .env("RUNNER_TEMP", &runner)
            .env("GITHUB_ENV", &env_file)
            .output()
            .unwrap();
        (
            out.status.success(),
            output_text(&out),
            std::fs::read_to_string(&env_file).unwrap_or_default(),
        )
    };
    let (ok, text, env) = run("good", &sha(&cli));
    let installed = dir.join("good/abmesh/abmesh");
    assert!(ok, "{text}");
    assert!(text.contains(&format!("abmesh {version}")), "{text}");
    assert_eq!(
        env,
        format!(
            "ABMESH={}\nABMESH_GUARD={}\n",
            installed.display(),
            dir.join("good/abmesh/abmesh-guard.sh").display()
        )
    );
    // A release whose CLI is not the pinned one is refused before it runs.
    let (ok, text, env) = run("tampered", &sha(b"another build"));
    assert!(!ok, "{text}");
    assert!(text.contains("abmesh/abmesh: FAILED"), "{text}");
    assert!(!text.contains(&format!("abmesh {version}")), "{text}");
    assert_eq!(env, "");
    drop(server);
}
