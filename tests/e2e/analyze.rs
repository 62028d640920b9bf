//! `abmesh analyze` on the access log a real Envoy wrote with the shipped `envoy/envoy.yaml`.
//! Simulated users with heavy-tailed activity browse, learn their `checkout-v2` variant from
//! the response's `x-experiments` echo, and complete a purchase with a known probability per
//! variant (20% control, 30% treatment). The analysis must find exactly the units the users
//! saw, the true +10 points inside its interval, and no SRM. Then the same users come back
//! (a new period, a new log) and a tenth of the treatment users, who learned their variant
//! the first time, do not: the unit-count SRM flags it.
//!
//! Requests a unit sends after its first exposure cannot change the exposed-unit counts: the
//! proxy records the exposure when the first assigned request passes. What the unit count
//! catches is units that never reach the proxy in a period — here, treatment users lost.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::harness::{demo_plugin_config, repo, scratch_dir, Envoy};
use crate::http::Client;

const USERS: usize = 6000;

/// A small deterministic generator (xorshift64*), seeded per user.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the users saw: per variant, the users told that variant and those who purchased.
#[derive(Default, Debug)]
struct Seen {
    units: BTreeMap<String, u64>,
    purchased: BTreeMap<String, u64>,
    /// Each user's variant, for the second period.
    variant_of: BTreeMap<usize, String>,
    requests: usize,
}

fn variant_in(echo: Option<&[u8]>) -> Option<String> {
    let dict = String::from_utf8_lossy(echo?).into_owned();
    dict.split(", ")
        .find_map(|m| m.strip_prefix("checkout-v2="))
        .map(|v| v.split(';').next().unwrap_or(v).to_string())
}

/// Users `skip` leaves out browse: a first page, more pages (heavy-tailed: most a few, some
/// hundreds), then perhaps a purchase.
fn browse(envoy: &Envoy, period: u64, skip: impl Fn(usize) -> bool + Sync) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = envoy.ports.listener;
    std::thread::scope(|s| {
        for t in 0..8 {
            let (seen, skip) = (seen.clone(), &skip);
            s.spawn(move || {
                let mut client = Client::new(port);
                for u in (t..USERS).step_by(8) {
                    if skip(u) {
                        continue;
                    }
                    let mut rng = Rng::new(period * 1_000_003 + u as u64);
                    let id = format!("shopper-{u}");
                    let headers: [(&str, &[u8]); 1] = [("x-user-id", id.as_bytes())];
                    let first = client.get(format!("/product/{}", u % 50).as_bytes(), &headers);
                    assert_eq!(first.status, 200);
                    let variant = variant_in(first.header("x-experiments"));
                    let pages =
                        1 + ((-(rng.next().max(1e-12)).ln()) * 2.0 / rng.next().max(0.05)) as usize;
                    for p in 0..pages.min(60) {
                        let r =
                            client.get(format!("/product/{}", (u + p) % 50).as_bytes(), &headers);
                        assert_eq!(r.status, 200);
                    }
                    let rate = match variant.as_deref() {
                        Some("treatment") => 0.30,
                        _ => 0.20,
                    };
                    let purchase = rng.next() < rate;
                    if purchase {
                        let r = client.send(b"POST", b"/checkout/complete", &headers);
                        assert_eq!(r.status, 200);
                    }
                    let mut s = seen.lock().unwrap();
                    s.requests += 2 + pages.min(60) + usize::from(purchase) - 1;
                    if let Some(v) = variant {
                        *s.units.entry(v.clone()).or_default() += 1;
                        *s.purchased.entry(v.clone()).or_default() += u64::from(purchase);
                        s.variant_of.insert(u, v);
                    }
                }
            });
        }
    });
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

fn analyze(envoy: &Envoy) -> (i32, Value, String) {
    let dir = scratch_dir("analyze");
    std::fs::write(dir.join("demo.json"), demo_plugin_config()).unwrap();
    let out = Command::new(repo().join("dist/abmesh"))
        .args([
            "analyze",
            "--config",
            dir.join("demo.json").to_str().unwrap(),
        ])
        .args([
            "--access-log",
            envoy.dir.join("access.log").to_str().unwrap(),
        ])
        .args(["--goal", "purchase=POST /checkout/complete 2xx", "--json"])
        .args(["--html", dir.join("report.html").to_str().unwrap()])
        .output()
        .unwrap();
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap_or_default();
    assert!(
        page.contains("<h2>checkout-v2 <small>by user</small></h2>") && page.contains("<svg "),
        "--html wrote no page for checkout-v2"
    );
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.code().unwrap(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn checkout(report: &Value) -> &Value {
    report["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "checkout-v2")
        .unwrap()
}

#[test]
fn analyze_finds_the_true_lift_in_envoys_access_log_and_flags_lost_treatment_users() {
    let envoy = Envoy::start(None, 2);
    let seen = browse(&envoy, 1, |_| false);
    envoy.wait_for_logs("access-log lines", seen.requests, |e| {
        e.access_log().lines().count()
    });
    let (code, report, err) = analyze(&envoy);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["bad_input"], serde_json::json!({}), "{report}");
    let e = checkout(&report);
    assert_eq!(e["srm"], false, "{e}");
    for v in e["variants"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        assert_eq!(v["units"].as_u64(), seen.units.get(name).copied(), "{name}");
        let rate = v["metrics"]["purchase conversion"]["value"]
            .as_f64()
            .unwrap();
        let want = seen.purchased[name] as f64 / seen.units[name] as f64;
        assert!((rate - want).abs() < 1e-12, "{name}: {rate} vs {want}");
    }
    let t = &e["variants"][1]["metrics"]["purchase conversion"]["against_control"];
    let (low, high) = (
        t["diff_low"].as_f64().unwrap(),
        t["diff_high"].as_f64().unwrap(),
    );
    assert!(
        low < 0.10 && 0.10 < high,
        "the true +10 points outside [{low}, {high}]"
    );
    assert!(
        low > 0.0,
        "6,000 users show a 10-point lift: [{low}, {high}]"
    );
    drop(envoy);

    // The next period: a tenth of the treatment users stay away.
    let envoy = Envoy::start(None, 2);
    let variant_of = seen.variant_of.clone();
    let lost = move |u: usize| variant_of.get(&u).is_some_and(|v| v == "treatment") && u % 10 == 3;
    let again = browse(&envoy, 2, lost);
    envoy.wait_for_logs("access-log lines", again.requests, |e| {
        e.access_log().lines().count()
    });
    let (code, report, err) = analyze(&envoy);
    assert_eq!(code, 3, "{report}");
    assert_eq!(
        err,
        "abmesh: sample ratio mismatch: the units are not split as configured\n"
    );
    let e = checkout(&report);
    assert_eq!(e["srm"], true);
    assert!(e["srm_p"].as_f64().unwrap() < 0.001);
}
