//! Guard judges units, end to end: a population of users with heavy-tailed request counts and
//! user-specific failures goes through abmesh in a real Envoy with several A/A experiments and
//! one treatment that really fails its users; guard reads Envoy's stats directly and through a
//! real Prometheus server (Debian's `prometheus`) scraping that Envoy.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::wait_for_total;
use crate::harness::{free_port, output_text, repo, scratch_dir, Envoy, Prometheus};
use crate::http::Client;

/// Kills a helper process when the test ends, printing its log first if the test failed.
struct Stop(std::process::Child, Option<std::path::PathBuf>);

impl Drop for Stop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(log) = &self.1 {
                eprintln!(
                    "--- {} ---\n{}",
                    log.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const AA: [&str; 10] = [
    "aa-one", "aa-two", "aa-three", "aa-four", "aa-five", "aa-six", "aa-seven", "aa-eight",
    "aa-nine", "aa-ten",
];

fn plugin_config() -> String {
    let aa: Vec<String> = AA
        .iter()
        .map(|k| {
            format!(r#"{{"key": "{k}", "variants": [{{"name": "control", "weight": 1}}, {{"name": "treatment", "weight": 1}}]}}"#)
        })
        .collect();
    format!(
        r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}},
  "metrics": {{"replicates": 32}},
  "experiments": [
    {{"key": "checkout-v2", "route_header": true, "variants": [{{"name": "control", "weight": 1}}, {{"name": "treatment", "weight": 1}}]}},
    {}
  ]}}"#,
        aa.join(",\n    ")
    )
}

/// SplitMix64 of `x`: the test's own deterministic randomness.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn uniform(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Sends the population's traffic: `users` users, requests per user log-normal (mean about
/// 5, a heavy tail capped at 300), 3% of users failing 40% of their requests (the upstream
/// answers 503 to requests marked `x-echo-fail`), on top of the treatment cluster's own
/// failures. Returns the number of requests sent.
fn population(envoy: &Envoy, users: u64) -> u64 {
    let mut client = Client::new(envoy.ports.listener);
    let mut sent = 0;
    for u in 0..users {
        let z = {
            // Box–Muller from two uniforms of the user.
            let (a, b) = (1.0 - uniform(u * 4), uniform(u * 4 + 1));
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        };
        let requests = ((5f64.ln() - 0.72 + 1.2 * z).exp().round() as u64).clamp(1, 300);
        let bad = uniform(u * 4 + 2) < 0.03;
        let id = format!("pop-user-{u}");
        for r in 0..requests {
            let fail = bad && uniform(u * 1_000_003 + r) < 0.4;
            let mut headers: Vec<(&str, &[u8])> = vec![("x-user-id", id.as_bytes())];
            if fail {
                headers.push(("x-echo-fail", b"1"));
            }
            let status = client.get(b"/checkout", &headers).status;
            assert!(status == 200 || status == 503, "status {status}");
            sent += 1;
        }
    }
    sent
}

fn abmesh(args: &[&str]) -> Output {
    Command::new(repo().join("dist/abmesh"))
        .args(args)
        .output()
        .unwrap()
}

/// The experiments with breaches in a `guard --json` report.
fn breached(out: &Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "guard printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["inference"], "per_unit", "{v}");
    v["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["breaches"].as_array().unwrap().is_empty())
        .map(|e| e["experiment"].as_str().unwrap().to_string())
        .collect()
}

/// Prometheus scraping Envoy's admin endpoint every second; returns it and its port.
fn start_prometheus(admin: u16) -> (Prometheus, u16) {
    let p = Prometheus::start(&[("envoy", admin, "/stats/prometheus")], None);
    let port = p.port;
    (p, port)
}

fn prom_value(port: u16, query: &str) -> Option<f64> {
    crate::harness::prom_value(port, query)
}

#[test]
fn heavy_users_and_user_failures_pause_no_a_a_experiment_and_the_failing_treatment_is_paused() {
    let envoy = Envoy::start_failing(Some(&plugin_config()), 2, 0.10);
    // Prometheus scrapes from the start, so `--window` sees the counters rise.
    let (_prometheus, port) = start_prometheus(envoy.ports.admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while prom_value(port, "up") != Some(1.0) {
        assert!(Instant::now() < deadline, "Prometheus never scraped Envoy");
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = population(&envoy, 1_500);
    assert!(sent > 5_000, "{sent} requests");
    // Every request is assigned to every experiment.
    let experiments = 1 + AA.len() as u64;
    wait_for_total(
        &envoy,
        "abmesh_replicate_responses_total",
        experiments * sent,
    );
    let dir = scratch_dir("units");
    let config = dir.join("config.json");
    std::fs::write(&config, plugin_config()).unwrap();
    let c = config.to_str().unwrap();
    let url = format!("http://127.0.0.1:{}/stats/prometheus", envoy.ports.admin);

    let written = dir.join("written.json");
    let out = abmesh(&[
        "guard",
        "--config",
        c,
        "--stats",
        &url,
        "--json",
        "--write-config",
        written.to_str().unwrap(),
    ]);
    assert_eq!(
        breached(&out),
        ["checkout-v2"],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(3));
    let w: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&written).unwrap()).unwrap();
    let status = |i: usize| w["experiments"][i]["status"].as_str().map(str::to_string);
    assert_eq!(status(0).as_deref(), Some("paused"));
    for i in 1..=AA.len() {
        assert_eq!(status(i), None, "A/A experiment {i} kept running: {w}");
    }
    let fixed = abmesh(&[
        "guard",
        "--config",
        c,
        "--stats",
        &url,
        "--json",
        "--fixed-horizon",
    ]);
    assert_eq!(breached(&fixed), ["checkout-v2"]);
    // The same stats judged per request, as guard did before the replicate series: the heavy
    // failing users make healthy A/A experiments look broken.
    let per_request = abmesh(&[
        "guard",
        "--config",
        c,
        "--stats",
        &url,
        "--json",
        "--per-request",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&per_request.stdout).unwrap();
    assert_eq!(v["inference"], "per_request");
    let paused: Vec<&str> = v["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["breaches"].as_array().unwrap().is_empty())
        .filter_map(|e| e["experiment"].as_str())
        .filter(|k| k.starts_with("aa-"))
        .collect();
    eprintln!(
        "judged per request, {} of {} A/A experiments would be paused: {paused:?}",
        paused.len(),
        AA.len()
    );

    // The same through a real Prometheus server, summed over the proxy's series.
    let want = (experiments * sent) as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while prom_value(port, "sum(abmesh_replicate_responses_total)") != Some(want) {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the totals"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Two more scrapes of the final totals.
    std::thread::sleep(Duration::from_millis(2500));
    let base = format!("http://127.0.0.1:{port}");
    for extra in [&[][..], &["--window", "1h"][..]] {
        let mut args = vec!["guard", "--config", c, "--prometheus", &base, "--json"];
        args.extend_from_slice(extra);
        let out = abmesh(&args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(breached(&out), ["checkout-v2"], "{extra:?}");
    }
    // A window after the traffic ended holds nothing: no evidence, not health.
    std::thread::sleep(Duration::from_millis(4000));
    let out = abmesh(&[
        "guard",
        "--config",
        c,
        "--prometheus",
        &base,
        "--window",
        "3s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every running experiment is named, not only the first.
    let expected: String = std::iter::once("checkout-v2")
        .chain(AA)
        .map(|k| {
            format!("abmesh: no evidence from {base}: experiment {k} is running but the source holds no assignments for it\n")
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    // A Prometheus query that fails is an error naming the URL and the answer.
    let out = abmesh(&[
        "guard",
        "--config",
        c,
        "--prometheus",
        &format!("{base}/nowhere"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "abmesh: cannot read stats: {base}/nowhere/api/v1/query: HTTP status 404 Not Found\n"
        )
    );
}

/// A Prometheus text of one healthy experiment with replicate series.
fn healthy_stats() -> String {
    let mut s = String::new();
    for v in ["control", "treatment"] {
        let l = format!("experiment=\"checkout-v2\",variant=\"{v}\"");
        s += &format!("abmesh_assignments_total{{{l}}} 3200\nabmesh_responses_total{{{l},class=\"2xx\"}} 3200\n");
        for r in 0..32 {
            let n = 90 + (r * 7) % 21;
            s += &format!(
                "abmesh_replicate_assignments_total{{{l},replicate=\"{r}\"}} {n}\n\
                 abmesh_replicate_responses_total{{{l},replicate=\"{r}\"}} {n}\n\
                 abmesh_replicate_5xx_total{{{l},replicate=\"{r}\"}} {}\n",
                r % 3
            );
        }
    }
    s
}

#[test]
fn guard_reads_https_with_a_private_ca_and_a_bearer_token_it_never_prints() {
    let dir = scratch_dir("tls");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=abmesh test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    std::fs::write(dir.join("stats.txt"), healthy_stats()).unwrap();
    let port = free_port();
    let server = format!(
        r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("authorization") != "Bearer s3cret-token":
            self.send_response(401); self.send_header("content-length", "0"); self.end_headers(); return
        body = open("stats.txt", "rb").read()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", {port}), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("server.pem", "server.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#
    );
    let child = Command::new(crate::harness::python())
        .args(["-c", &server])
        .current_dir(&dir)
        .spawn()
        .unwrap();
    let _stop = Stop(child, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the TLS server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = dir.join("config.json");
    std::fs::write(&config, plugin_config()).unwrap();
    let url = format!("https://127.0.0.1:{port}/stats");
    let ca = dir.join("ca.pem");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "guard",
            "--config",
            config.to_str().unwrap(),
            "--stats",
            &url,
        ];
        args.extend_from_slice(extra);
        let out = Command::new(repo().join("dist/abmesh"))
            .args(&args)
            .env("ABMESH_TOKEN", "s3cret-token")
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(!text.contains("s3cret"), "the token was printed: {text}");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--auth-env",
        "ABMESH_TOKEN",
    ]);
    // Healthy for checkout-v2; the A/A experiments of the configuration have no series here.
    assert_eq!(code, Some(4), "{out}{err}");
    assert!(
        out.contains(
            "inference: per unit (cluster-robust variances from 32 replicate series per variant)\n"
        ),
        "{out}"
    );
    assert!(out.contains("checkout-v2 [ok]"), "{out}");
    assert!(err.starts_with(&format!("abmesh: no evidence from {url}: experiment aa-one is running but the source holds no assignments for it\n")), "{err}");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let (code, _, err) = run(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--auth-file",
        token_file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(4), "{err}");
    // Without the token: the URL and the status.
    let (code, _, err) = run(&["--cacert", ca.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        format!("abmesh: cannot read stats: {url}: HTTP status 401 Unauthorized\n")
    );
    // Without the private CA the system roots do not know the server.
    let (code, _, err) = run(&["--auth-env", "ABMESH_TOKEN"]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("abmesh: cannot read stats: {url}: ")),
        "{err}"
    );
}
