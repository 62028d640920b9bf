//! Any bytes as a plugin configuration: parsing and compiling never panics; a refused one has
//! at least one error, each `path: rule`; an accepted one can be summarised and evaluated.
#![no_main]

use abmesh::{evaluate, Config, RequestView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Config::parse(data) {
        Ok(config) => {
            let _ = abmesh::summary::describe(&config);
            let headers: [(&str, &[u8]); 4] =
                [(":path", b"/checkout?uid=u1"), (":method", b"GET"), ("x-user-id", b"alice"), ("cookie", b"uid=bob")];
            let eval = evaluate(&config, &RequestView::new(&headers), 1_795_000_000_000);
            assert!(eval.assignments.len() + eval.not_assigned.len() == config.experiments.len());
        }
        Err(e) => {
            assert!(!e.errors.is_empty());
            for line in &e.errors {
                assert!(line.contains(": "), "error without a path: {line}");
            }
        }
    }
});
