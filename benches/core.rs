#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark may fail loudly
//! Native benchmark of the pure core (`cargo bench --bench core`): per-request evaluation with
//! 1, 20 and 100 running experiments, and compiling 1,000 experiments. A small harness of our
//! own (warm-up, then the median of 9 timed samples) instead of criterion, so `cargo test`
//! does not build criterion's dependency tree. Prints one JSON object per line.

use std::hint::black_box;
use std::time::{Duration, Instant};

use abmesh::plan::Plan;
use abmesh::{evaluate, Config, RequestView};

fn config(n: usize) -> (Vec<u8>, Config) {
    let path = format!(
        "{}/bench/configs/experiments-{n}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run bench/make_configs.py)"));
    let config = Config::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    (bytes, config)
}

/// Median nanoseconds per call of `f`, over 9 samples of about `sample` each.
fn measure(sample: Duration, mut f: impl FnMut(usize)) -> f64 {
    let mut i = 0;
    let warm = Instant::now();
    while warm.elapsed() < sample {
        f(i);
        i += 1;
    }
    let per_sample = i.max(1);
    let mut samples: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_sample {
                f(i);
                i += 1;
            }
            t.elapsed().as_nanos() as f64 / per_sample as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[4]
}

fn main() {
    // `ABMESH_PROFILE=N` (with `EXPERIMENTS`, default 20): only N plans, untimed, for
    // `valgrind --tool=callgrind`, which counts instructions per function and line.
    let profile: Option<usize> = std::env::var("ABMESH_PROFILE")
        .ok()
        .and_then(|v| v.parse().ok());
    let only: Option<usize> = std::env::var("EXPERIMENTS")
        .ok()
        .and_then(|v| v.parse().ok());
    let ids: Vec<String> = (0..4096).map(|i| format!("user-{i:08}")).collect();
    let cookies: Vec<String> = (0..4096)
        .map(|i| format!("theme=dark; did=device-{i}; _ga=GA1.2.3"))
        .collect();
    for n in [1, 20, 100] {
        if profile.is_some() && n != only.unwrap_or(20) {
            continue;
        }
        let (_, config) = config(n);
        let request = |i: usize| -> Vec<(&'static str, Vec<u8>)> {
            vec![
                (":method", b"GET".to_vec()),
                (":path", b"/checkout/cart?step=2&ref=mail".to_vec()),
                (":authority", b"shop.example.com".to_vec()),
                ("user-agent", b"Mozilla/5.0 (X11; Linux x86_64)".to_vec()),
                ("accept", b"text/html,application/xhtml+xml".to_vec()),
                ("cookie", cookies[i % 4096].as_bytes().to_vec()),
                ("x-user-id", ids[i % 4096].as_bytes().to_vec()),
                (
                    "x-request-id",
                    b"4a6f1c2e-9d1b-4f3e-8a7c-2b5d6e8f9a01".to_vec(),
                ),
            ]
        };
        let requests: Vec<_> = (0..4096).map(request).collect();
        if let Some(count) = profile {
            for i in 0..count {
                let view = RequestView::new(&requests[i % 4096]);
                black_box(Plan::new(&config, &view, 1_795_000_000_000));
            }
            return;
        }
        let eval_ns = measure(Duration::from_millis(300), |i| {
            let h = &requests[i % 4096];
            let view = RequestView::new(h);
            black_box(evaluate(&config, &view, 1_795_000_000_000));
        });
        let plan_ns = measure(Duration::from_millis(300), |i| {
            let h = &requests[i % 4096];
            let view = RequestView::new(h);
            black_box(Plan::new(&config, &view, 1_795_000_000_000));
        });
        // The same plan with `exposure.format` "otel": a map of attributes per assignment.
        let (bytes, _) = crate::config(n);
        let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        json["exposure"]["format"] = "otel".into();
        // Raw ids, as the plan above: past 4 experiments their worst case needs a larger cap.
        json["exposure"]["max_record_bytes"] = 1_048_576.into();
        let otel = Config::parse(json.to_string().as_bytes()).unwrap();
        let plan_otel_ns = measure(Duration::from_millis(300), |i| {
            let h = &requests[i % 4096];
            let view = RequestView::new(h);
            black_box(Plan::new(&otel, &view, 1_795_000_000_000));
        });
        println!(
            r#"{{"bench": "request", "experiments": {n}, "evaluate_ns": {eval_ns:.1}, "plan_ns": {plan_ns:.1}, "plan_otel_ns": {plan_otel_ns:.1}}}"#
        );
    }
    let (bytes, _) = config(1000);
    let compile_ns = measure(Duration::from_millis(500), |_| {
        black_box(Config::parse(black_box(&bytes)).ok());
    });
    println!(
        r#"{{"bench": "compile", "experiments": 1000, "bytes": {}, "compile_ns": {compile_ns:.0}}}"#,
        bytes.len()
    );
}
