//! The largest configuration the limits accept, in a real Envoy: 39 experiments of 100
//! variants with 64-character keys and names (97,775 series, the most that fit under 100,000
//! without replicates), 20 of them with route headers (8,073 header bytes of 8,192). Four
//! clients send for 20 seconds while the VMs define their series, 20 ms a publication at most:
//! every answer is 200, no request takes more than LATENCY_BOUND, every request carries what
//! the core decides, and a QA request forcing every experiment gets its whole dictionary
//! through. The scrape's size and time are printed for BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abmesh::config::limits::{bounds, MAX_SERIES};
use abmesh::Config;

use crate::harness::{core_plan, header, text, upstream, Envoy};
use crate::http::Client;

/// The slowest request allowed: a publication that defined all of a configuration's series at
/// once stalled its worker for 10 to 50 seconds; one bounded to 20 ms keeps the slowest request
/// near 30 ms on a quiet machine. The bound leaves room for a shared 2-core machine running the
/// other end-to-end tests at the same time.
const LATENCY_BOUND: Duration = Duration::from_millis(500);

const TOKEN_SHA: &str = "c83f048e00253c5f4fd6f298789ef4355b75f919ea9b16f86e0a83dcfa0c9697";

fn long(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:03}-")
        .chars()
        .chain(std::iter::repeat('x'))
        .take(64)
        .collect()
}

fn largest_config() -> String {
    let experiments: Vec<String> = (0..39)
        .map(|i| {
            let variants: Vec<String> = (0..100)
                .map(|j| format!(r#"{{"name": "{}", "weight": 1}}"#, long("V", j)))
                .collect();
            let route = if i < 20 {
                r#", "route_header": true"#
            } else {
                ""
            };
            format!(
                r#"{{"key": "{}", "variants": [{}]{route}}}"#,
                long("e", i),
                variants.join(", ")
            )
        })
        .collect();
    format!(
        r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}},
  "metrics": {{"replicates": 0}},
  "overrides": {{"token_sha256": ["{TOKEN_SHA}"]}},
  "experiments": [{}]}}"#,
        experiments.join(",\n")
    )
}

#[test]
fn the_largest_accepted_configuration_never_stalls_a_request() {
    let json = largest_config();
    let config = Arc::new(Config::parse(json.as_bytes()).unwrap());
    let b = bounds(&config);
    assert_eq!((b.series, b.header_bytes), (97_775, 8_073));
    assert!(b.series <= MAX_SERIES);
    let envoy = Envoy::start(Some(&json), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, config, port) = (stop.clone(), config.clone(), envoy.ports.listener);
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let mut latencies = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("limits-{c}-{i}");
                    let t = Instant::now();
                    let resp = client.get(b"/", &[("x-user-id", user.as_bytes())]);
                    latencies.push(t.elapsed());
                    assert_eq!(resp.status, 200, "{user}");
                    let (_, seen) = upstream(&resp);
                    let want = core_plan(&config, b"GET", b"/", &[("x-user-id", user.as_bytes())]);
                    assert_eq!(
                        text(header(&seen, "x-experiments")),
                        want.assignments,
                        "{user}"
                    );
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let slowest = at(1.0);
    eprintln!(
        "limits e2e: {} requests, p50 {:?}, p99 {:?}, slowest {slowest:?}",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
    assert!(
        latencies.len() > 1000,
        "only {} requests in 20 s",
        latencies.len()
    );
    assert!(slowest < LATENCY_BOUND, "a request took {slowest:?}");

    // A QA request forcing every experiment at its longest: the whole dictionary gets through.
    let forced: Vec<String> = (0..39)
        .map(|i| format!("{}={}", long("e", i), long("V", 99)))
        .collect();
    let forced = forced.join(", ");
    let headers: [(&str, &[u8]); 3] = [
        ("x-user-id", b"qa"),
        ("x-abmesh-token", b"demo-qa-token"),
        ("x-abmesh-force", forced.as_bytes()),
    ];
    let resp = Client::new(envoy.ports.listener).get(b"/", &headers);
    assert_eq!(resp.status, 200);
    let (_, seen) = upstream(&resp);
    let dictionary = text(header(&seen, "x-experiments")).unwrap();
    assert_eq!(dictionary.len(), b.dictionary_bytes);
    assert_eq!(dictionary.matches(";forced").count(), 39);

    let t = Instant::now();
    let scrape = envoy.prometheus();
    let took = t.elapsed();
    let series = scrape.lines().filter(|l| l.starts_with("abmesh_")).count();
    eprintln!(
        "limits e2e: /stats/prometheus {} bytes in {took:?}, {series} abmesh series defined so far",
        scrape.len()
    );
    assert!(series > 0);
}
