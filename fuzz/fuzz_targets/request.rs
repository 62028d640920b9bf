//! Arbitrary request bytes — path and query, unit header, cookies, override dictionary and
//! token, extra headers — against a configuration that reads all of them: evaluation never
//! panics, the exposure record is valid JSON, and every header value abmesh sets is printable.
#![no_main]

use std::sync::OnceLock;

use abmesh::plan::Plan;
use abmesh::{Config, RequestView};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = include_str!("../seeds/fuzz-config.json");
/// The same experiments at a trusting tier that mints device ids and writes baggage.
const TIERS: &str = include_str!("../seeds/fuzz-config-tiers.json");
const TOKEN: &[u8] = b"demo-qa-token";

#[derive(Arbitrary, Debug)]
struct Input {
    path: Vec<u8>,
    method: Vec<u8>,
    host: Vec<u8>,
    user: Option<Vec<u8>>,
    cookie: Option<Vec<u8>>,
    force: Option<Vec<u8>>,
    valid_token: bool,
    other_token: Option<Vec<u8>>,
    extra: Vec<(Vec<u8>, Vec<u8>)>,
    experiments: Option<Vec<u8>>,
    baggage: Vec<Vec<u8>>,
    tiers: bool,
    now_ms: i64,
}

fn config(tiers: bool) -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    static T: OnceLock<Config> = OnceLock::new();
    if tiers {
        T.get_or_init(|| Config::parse(TIERS.as_bytes()).expect("the tiers configuration is valid"))
    } else {
        C.get_or_init(|| Config::parse(CONFIG.as_bytes()).expect("the fuzz configuration is valid"))
    }
}

fuzz_target!(|input: Input| {
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b":path".to_vec(), input.path), (b":method".to_vec(), input.method), (b":authority".to_vec(), input.host)];
    if let Some(u) = input.user {
        headers.push((b"x-user-id".to_vec(), u));
    }
    if let Some(c) = input.cookie {
        headers.push((b"cookie".to_vec(), c));
    }
    if let Some(f) = input.force {
        headers.push((b"x-abmesh-force".to_vec(), f));
        let token = if input.valid_token { TOKEN.to_vec() } else { input.other_token.unwrap_or_default() };
        headers.push((b"x-abmesh-token".to_vec(), token));
    }
    if let Some(x) = input.experiments {
        headers.push((b"x-experiments".to_vec(), x));
    }
    for b in input.baggage {
        headers.push((b"baggage".to_vec(), b));
    }
    headers.extend(input.extra);
    let config = config(input.tiers);
    let (plan, eval) = Plan::new(config, &RequestView::new(&headers), input.now_ms);
    assert_eq!(eval.assignments.len() + eval.not_assigned.len(), config.experiments.len());
    if let Some(record) = plan.exposure() {
        let v: serde_json::Value = serde_json::from_str(record).expect("the exposure record is JSON");
        assert!(v["assignments"].as_array().is_some_and(|a| !a.is_empty()));
    }
    for (name, value) in plan.set() {
        assert!(name.bytes().all(|c| c.is_ascii_graphic()), "{name:?}");
        assert!(value.bytes().all(|c| c == b' ' || c.is_ascii_graphic()), "{value:?}");
    }
    if let abmesh::baggage::Rewrite::Set(b) = &plan.baggage {
        // Only what the client sent may be unprintable; abmesh's own member never is.
        if let Some(i) = b.windows(7).rposition(|w| w == b"abmesh=") {
            assert!(b[i..].iter().all(|c| c.is_ascii_graphic()), "{b:?}");
        }
    }
    // Replicates: one per hashed assignment with a unit, each below the configured count.
    let replicated = abmesh::metrics::replicated(config, &eval);
    assert!(replicated.len() <= eval.assignments.iter().filter(|a| !a.forced && !a.rollout).count());
    assert!(replicated.iter().all(|&(_, _, r)| r < config.replicates));
    for c in &plan.set_cookies {
        assert!(c.bytes().all(|c| c == b' ' || c.is_ascii_graphic()), "{c:?}");
    }
});
