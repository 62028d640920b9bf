#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! `abmesh import` round trips: the imported configuration assigns 10,000 ids exactly as the
//! source's own semantics do, and what cannot be carried over is listed.

use std::process::Command;

use abmesh::{evaluate, growthbook, Config, RequestView};

fn import(kind: &str, file: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args([
            "import",
            kind,
            &format!("{}/../tests/peers/{file}", env!("CARGO_MANIFEST_DIR")),
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn variant_of(config: &Config, key: &str, headers: &[(&str, &str)]) -> Option<String> {
    let eval = evaluate(config, &RequestView::new(headers), 0);
    eval.assignments.iter().find_map(|a| {
        let e = &config.experiments[a.experiment];
        (e.key == key).then(|| e.variants[a.variant].name.clone())
    })
}

#[test]
fn a_growthbook_payload_imports_and_assigns_as_growthbook() {
    let (code, _, stderr) = import("growthbook", "growthbook-payload.json", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr,
        "abmesh: carry id: header x-gb-id\n\
         abmesh: carry deviceId: header x-gb-device-id\n\
         abmesh: carry plan: header x-gb-plan\n\
         abmesh: not imported: features.banner.rules[0]: a force rule, nothing to assign at the mesh\n\
         abmesh: 1 item(s) not imported; use --allow-partial to accept\n"
    );
    let (code, stdout, _) = import(
        "growthbook",
        "growthbook-payload.json",
        &["--allow-partial"],
    );
    assert_eq!(code, 0);
    let config = Config::parse(stdout.as_bytes()).unwrap();
    let ranges = growthbook::bucket_ranges(3, 0.8, Some(&[0.34, 0.33, 0.33]));
    let names = ["control", "green", "red"];
    for i in 0..10_000 {
        let id = format!("user-{i}");
        let headers = [("x-gb-id", id.as_str()), ("x-gb-device-id", id.as_str())];
        let want = growthbook::in_namespace(&id, "checkout", 0.0, 0.5)
            .then(|| {
                growthbook::choose_variation(
                    growthbook::hash("checkout-button-exp", &id, 2).unwrap(),
                    &ranges,
                )
            })
            .flatten()
            .map(|v| names[v].to_string());
        assert_eq!(
            variant_of(&config, "checkout-button-exp", &headers),
            want,
            "{id}"
        );
        // dark-mode: no rule key, so the feature key is the seed; hash version 1, equal weights.
        let dark = growthbook::choose_variation(
            growthbook::hash("dark-mode", &id, 1).unwrap(),
            &growthbook::bucket_ranges(2, 1.0, None),
        )
        .map(|v| format!("v{v}"));
        assert_eq!(variant_of(&config, "dark-mode", &headers), dark, "{id}");
        // pricing-test: its condition `{"plan": {"$in": ["pro"]}}` is `when` on x-gb-plan.
        let pricing = growthbook::choose_variation(
            growthbook::hash("pricing-test", &id, 1).unwrap(),
            &growthbook::bucket_ranges(2, 1.0, None),
        )
        .map(|v| format!("v{v}"));
        let pro = [("x-gb-id", id.as_str()), ("x-gb-plan", "pro")];
        let free = [("x-gb-id", id.as_str()), ("x-gb-plan", "free")];
        assert_eq!(variant_of(&config, "pricing-test", &pro), pricing, "{id}");
        assert_eq!(variant_of(&config, "pricing-test", &free), None, "{id}");
        assert_eq!(variant_of(&config, "pricing-test", &headers), None, "{id}");
    }
}

#[test]
fn a_flagd_file_imports_and_assigns_as_flagd() {
    let (code, stdout, stderr) = import("flagd", "flagd-flags.json", &["--allow-partial"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr,
        "abmesh: carry targetingKey: header x-flagd-targeting-key\n\
         abmesh: note: flags.header-color: a request abmesh assigns nothing (targetingKey absent) gets flagd's default variant \"red\": make it the application's default for header-color\n\
         abmesh: note: flags.new-welcome: a request abmesh assigns nothing (targetingKey absent) gets flagd's default variant \"off\": make it the application's default for new-welcome\n\
         abmesh: not imported: flags.admin-only: targeting has no `fractional`: a rule without a split is not an experiment\n\
         abmesh: not imported: flags.old: disabled, nothing to assign\n"
    );
    assert_eq!(import("flagd", "flagd-flags.json", &[]).0, 1);
    let config = Config::parse(stdout.as_bytes()).unwrap();
    for i in 0..10_000 {
        let id = format!("user-{i}");
        let headers = [("x-flagd-targeting-key", id.as_str())];
        let color =
            abmesh::flagd::choose(format!("header-color{id}").as_bytes(), &[25, 25, 25, 25])
                .map(|v| ["red", "blue", "green", "yellow"][v].to_string());
        assert_eq!(variant_of(&config, "header-color", &headers), color, "{id}");
        let welcome = abmesh::flagd::choose(format!("welcome-seed-{id}").as_bytes(), &[10, 90])
            .map(|v| ["on", "off"][v].to_string());
        assert_eq!(
            variant_of(&config, "new-welcome", &headers),
            welcome,
            "{id}"
        );
    }
}

#[test]
fn import_reads_no_more_than_16_mib_from_an_endless_file() {
    for kind in ["growthbook", "flagd"] {
        let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
            .args(["import", kind, "/dev/zero"])
            .output()
            .unwrap();
        let (code, out, err) = (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            "abmesh: cannot read /dev/zero: more than 16 MiB (16777216 bytes): read no further\n"
        );
    }
}
