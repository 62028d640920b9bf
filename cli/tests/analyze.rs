#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! `abmesh analyze` on access logs written as the shipped Envoy format writes them, each line
//! made by the real core for a simulated user: heavy-tailed activity, a goal reached with a
//! known probability per variant. The analysis must find exactly the simulation's units and
//! conversions per variant, and flag the split when treatment users go missing.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output};

use abmesh::plan::Plan;
use abmesh::{Config, RequestView};
use serde_json::Value;

const CONFIG: &str = r#"{"units": {"user": [{"header": "x-user-id"}]},
  "experiments": [{"key": "checkout-v2", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]},
                  {"key": "search", "when": {"path_prefix": ["/search"]}, "variants": [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}]}]}"#;

/// A small deterministic generator (xorshift64*), so every run sees the same users.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the simulation knows: per variant of checkout-v2, units and converted units.
#[derive(Default, Debug, PartialEq)]
struct Truth {
    units: BTreeMap<String, u64>,
    converted: BTreeMap<String, u64>,
}

/// Access-log lines for `users` simulated users; a treatment user converts with probability
/// 0.13, a control user with 0.10. `keep(variant, user)` decides whether a user's lines reach
/// the log at all.
fn simulate(users: usize, keep: impl Fn(&str, usize) -> bool) -> (String, Truth) {
    let config = Config::parse(CONFIG.as_bytes()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut log = String::new();
    let mut truth = Truth::default();
    let t0 = 1_795_000_000_000i64;
    for u in 0..users {
        let id = format!("user-{u}");
        // Heavy-tailed activity: most users send a few requests, some send hundreds.
        let requests = 1 + (-(rng.next().max(1e-12)).ln() * 3.0 / rng.next().max(0.02)) as usize;
        let requests = requests.min(400);
        let start = t0 + (rng.next() * 86_400_000.0 * 3.0) as i64;
        let mut variant = String::new();
        let mut lines = Vec::new();
        let mut converted = false;
        for r in 0..requests {
            let ts = start + r as i64 * 1000;
            let path = if r % 5 == 4 {
                "/search?q=x"
            } else {
                "/product"
            };
            let headers: [(&str, &[u8]); 3] = [
                (":method", b"GET"),
                (":path", path.as_bytes()),
                ("x-user-id", id.as_bytes()),
            ];
            let (plan, eval) = Plan::new(&config, &RequestView::new(&headers), ts);
            if r == 0 {
                let a = eval.assignments.iter().find(|a| a.experiment == 0).unwrap();
                variant = config.experiments[0].variants[a.variant].name.clone();
            }
            lines.push(line(ts, "GET", path, 200, &plan));
        }
        let p = if variant == "treatment" { 0.13 } else { 0.10 };
        if rng.next() < p {
            converted = true;
            let ts = start + requests as i64 * 1000;
            let headers: [(&str, &[u8]); 3] = [
                (":method", b"POST"),
                (":path", b"/checkout/complete"),
                ("x-user-id", id.as_bytes()),
            ];
            let (plan, _) = Plan::new(&config, &RequestView::new(&headers), ts);
            lines.push(line(ts, "POST", "/checkout/complete", 200, &plan));
        }
        if keep(&variant, u) {
            *truth.units.entry(variant.clone()).or_default() += 1;
            *truth.converted.entry(variant).or_default() += u64::from(converted);
            for l in lines {
                log.push_str(&l);
                log.push('\n');
            }
        }
    }
    (log, truth)
}

/// One line in the shipped `envoy/envoy.yaml` access-log format.
fn line(ts: i64, method: &str, path: &str, code: u16, plan: &Plan) -> String {
    serde_json::json!({
        "time": abmesh::time::format_rfc3339(ts),
        "request_id": format!("rid-{ts}"),
        "method": method, "path": path, "code": code, "upstream": "checkout_control",
        "duration_ms": 12,
        "assignments": plan.assignments,
        "exposure": plan.exposure(),
        "units": plan.units,
    })
    .to_string()
}

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("abmesh-analyze-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs analyze on `log` written as `log_name`: each test uses names of its own, since the
/// tests of this file run at once in one directory.
fn analyze(log_name: &str, log: &[u8], extra: &[&str]) -> Output {
    let d = dir();
    std::fs::write(d.join(format!("{log_name}.config.json")), CONFIG).unwrap();
    std::fs::write(d.join(log_name), log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "analyze",
            "--config",
            d.join(format!("{log_name}.config.json")).to_str().unwrap(),
        ])
        .args(["--access-log", d.join(log_name).to_str().unwrap()])
        .args(["--goal", "purchase=POST /checkout/complete 2xx", "--json"])
        .args(extra)
        .output()
        .unwrap()
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

fn experiment<'a>(r: &'a Value, key: &str) -> &'a Value {
    r["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key)
        .unwrap()
}

#[test]
fn analyze_finds_every_simulated_unit_and_conversion_and_the_true_lift() {
    let (log, truth) = simulate(6000, |_, _| true);
    let out = analyze("access.log", log.as_bytes(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["bad_input"], serde_json::json!({}));
    let e = experiment(&r, "checkout-v2");
    assert_eq!(e["srm"], false);
    for v in e["variants"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        assert_eq!(v["units"].as_u64(), truth.units.get(name).copied());
        let rate = v["metrics"]["purchase conversion"]["value"]
            .as_f64()
            .unwrap();
        let want = truth.converted[name] as f64 / truth.units[name] as f64;
        assert!((rate - want).abs() < 1e-12, "{name}: {rate} vs {want}");
    }
    let t = &e["variants"][1]["metrics"]["purchase conversion"]["against_control"];
    let (low, high) = (
        t["diff_low"].as_f64().unwrap(),
        t["diff_high"].as_f64().unwrap(),
    );
    assert!(
        low < 0.03 && 0.03 < high,
        "the true +3 points outside [{low}, {high}]"
    );
    // Every request of a unit is one of its, whichever experiment exposed it.
    let s = experiment(&r, "search");
    let units: u64 = s["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["units"].as_u64().unwrap())
        .sum();
    assert!(
        units > 0 && units < 6000,
        "only users who searched are exposed to search: {units}"
    );
}

#[test]
fn a_tenth_of_treatment_users_missing_is_a_sample_ratio_mismatch() {
    let (log, truth) = simulate(6000, |variant, u| variant != "treatment" || u % 10 != 3);
    assert!(truth.units["treatment"] < truth.units["control"]);
    let out = analyze("missing.log", log.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "abmesh: sample ratio mismatch: the units are not split as configured\n"
    );
    let r = report(&out);
    assert_eq!(experiment(&r, "checkout-v2")["srm"], true);
}

#[test]
fn a_gzip_log_and_standard_input_give_the_same_report_as_the_plain_file() {
    let (log, _) = simulate(500, |_, _| true);
    let plain = report(&analyze("plain.log", log.as_bytes(), &[]));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(log.as_bytes()).unwrap();
    let zipped = report(&analyze("zipped.log.gz", &gz.finish().unwrap(), &[]));
    assert_eq!(plain["experiments"], zipped["experiments"]);
    let d = dir();
    std::fs::write(d.join("stdin.config.json"), CONFIG).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "analyze",
            "--config",
            d.join("stdin.config.json").to_str().unwrap(),
            "--access-log",
            "-",
        ])
        .args(["--goal", "purchase=POST /checkout/complete 2xx", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(report(&out)["experiments"], plain["experiments"]);
}

#[test]
fn bad_input_is_counted_by_kind_with_its_first_lines_and_strict_makes_it_fatal() {
    let (log, _) = simulate(50, |_, _| true);
    let record = r#"{\"ts_ms\":1795000000000,\"request_id\":null,\"units\":{\"user\":\"x\"},\"assignments\":[{\"experiment\":\"gone\",\"variant\":\"a\",\"unit\":\"user\",\"forced\":false}]}"#;
    let mut bad = String::from("not json at all\n{\"time\": \"2026-01-01T00:00:00Z\"}\n{broken\n");
    bad += &format!("{{\"time\":\"2026-12-01T00:00:00Z\",\"method\":\"GET\",\"path\":\"/\",\"exposure\":\"{record}\"}}\n");
    bad += "{\"time\":\"yesterday\",\"method\":\"GET\",\"path\":\"/\"}\n";
    let text = bad + &log;
    let out = analyze("bad.log", text.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    let path = dir().join("bad.log").display().to_string();
    let at = |n: u32| format!("{path}:{n}");
    assert_eq!(r["bad_input"]["other_format"]["count"], 2);
    assert_eq!(
        r["bad_input"]["other_format"]["first"],
        serde_json::json!([at(1), at(2)])
    );
    assert_eq!(
        r["bad_input"]["not_json"]["first"],
        serde_json::json!([at(3)])
    );
    assert_eq!(
        r["bad_input"]["unknown_experiment"]["first"],
        serde_json::json!([at(4)])
    );
    assert_eq!(
        r["bad_input"]["bad_time"]["first"],
        serde_json::json!([at(5)])
    );
    let out = analyze("bad.log", text.as_bytes(), &["--strict"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "abmesh: 5 lines or inputs could not be used (--strict)\n"
    );
}

#[test]
fn a_truncated_gzip_is_reported_and_what_came_before_it_is_used() {
    let (log, _) = simulate(300, |_, _| true);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(log.as_bytes()).unwrap();
    let full = gz.finish().unwrap();
    let cut = &full[..full.len() / 2];
    let out = analyze("cut.log.gz", cut, &[]);
    let r = report(&out);
    assert_eq!(r["bad_input"]["truncated_gzip"]["count"], 1);
    assert!(r["lines"].as_u64().unwrap() > 0);
}

#[test]
fn a_malformed_goal_is_a_usage_error_naming_it() {
    let out = analyze("x.log", b"", &["--goal", "buy"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "abmesh: goal 'buy': no '=' (expected NAME=[METHOD ]PATH[ CLASS], e.g. purchase=POST /checkout/complete 2xx)\nrun 'abmesh --help' for usage\n"
    );
}

#[test]
fn the_order_of_lines_and_files_does_not_change_the_result() {
    // In time order the first exposures are known before the requests that follow them (one
    // pass); reversed or shuffled and split into files read in the wrong order, requests come
    // before their unit's first exposure and a second pass must count them again.
    let (log, _) = simulate(300, |_, _| true);
    let lines: Vec<&str> = log.lines().collect();
    let in_order = report(&analyze("order.log", log.as_bytes(), &[]));
    let mut reversed: Vec<&str> = lines.clone();
    reversed.reverse();
    let reversed = reversed.join("\n");
    let mut rng = Rng(7);
    let mut shuffled = lines.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (rng.next() * (i + 1) as f64) as usize);
    }
    let (late, early) = shuffled.split_at(shuffled.len() / 2);
    let (late, early) = (late.join("\n"), early.join("\n"));
    let d = dir();
    std::fs::write(d.join("b-early.log"), &early).unwrap();
    let early_path = d.join("b-early.log");
    let split = report(&analyze(
        "a-late.log",
        late.as_bytes(),
        &["--access-log", early_path.to_str().unwrap()],
    ));
    assert_eq!(in_order["passes"], 1);
    for other in [
        report(&analyze("reversed.log", reversed.as_bytes(), &[])),
        split,
    ] {
        assert_eq!(other["experiments"], in_order["experiments"]);
        assert_eq!(other["lines"], in_order["lines"]);
        assert_eq!(other["passes"], 2);
    }
    assert!(
        in_order["experiments"][0]["variants"][0]["sums"]["units"]
            .as_u64()
            .unwrap()
            > 100
    );
}

#[test]
fn the_html_page_shows_each_metrics_effect_over_time_ending_at_the_reported_effect() {
    let (log, _) = simulate(800, |_, _| true);
    let page = dir().join("report.html");
    let out = analyze(
        "html.log",
        log.as_bytes(),
        &["--html", page.to_str().unwrap()],
    );
    let r = report(&out);
    let x = experiment(&r, "checkout-v2");
    let timeline = x["timeline"].as_array().unwrap();
    // Users start over three days: a point per day, cumulative, the last holding every unit.
    assert!((3..=4).contains(&timeline.len()), "{}", timeline.len());
    let units = |p: &Value| {
        p["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    for pair in timeline.windows(2) {
        assert!(units(&pair[0])
            .iter()
            .zip(units(&pair[1]))
            .all(|(a, b)| *a <= b));
    }
    let last = timeline.last().unwrap();
    let variants = x["variants"].as_array().unwrap();
    assert_eq!(
        units(last),
        variants
            .iter()
            .map(|v| v["units"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    let daily: u64 = x["daily_exposed_units"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            d["units"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
        })
        .sum();
    assert_eq!(daily, x["units"].as_u64().unwrap());
    // The last point is the report: same estimate, same interval (the p-value alone is Holm's).
    let final_effect = &variants[1]["metrics"]["purchase conversion"]["against_control"];
    let last_effect = &last["variants"][0]["against_control"]["purchase conversion"];
    for k in ["diff", "diff_low", "diff_high", "lift", "p_value"] {
        assert_eq!(last_effect[k], final_effect[k], "{k}");
    }
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<h2>checkout-v2 <small>by user</small></h2>"));
    assert!(html.contains("Split as configured."));
    // Per experiment a chart per metric (five for one goal) and the units per day.
    let metrics = r["experiments"][0]["variants"][0]["metrics"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(metrics, 5);
    assert_eq!(html.matches("<svg ").count(), 2 * (metrics + 1));
    assert_eq!(
        html.matches("<svg ").count(),
        html.matches("</svg>").count()
    );
    let diff = final_effect["diff"].as_f64().unwrap();
    assert!(
        html.contains(&format!("treatment − control: {:+.2}pt [", 100.0 * diff)),
        "the last point is labelled with the reported effect"
    );
}
