#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! The `abmesh` binary as users run it.

use std::path::Path;
use std::process::{Command, Output};

fn abmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn check_accepts_every_example_configuration() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let out = abmesh(&["check", path.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}{}",
                path.display(),
                stdout(&out),
                stderr(&out)
            );
            assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} example configurations");
}

#[test]
fn check_prints_a_summary_with_bucket_maps() {
    let out = abmesh(&["check", "examples/layer-and-holdout.json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "ok: 2 experiments (2 running), 1 unit types, 1 layers, holdout 5%
units:
  user: header x-user-id, then cookie uid
holdout: 5% of unit user (salt \"holdout-2026\", buckets [0, 500))
layers:
  checkout (unit user, salt \"layer-checkout\"):
    [0, 5000) pay-button-color
    [5000, 10000) one-page-checkout
experiments:
  pay-button-color: running, unit user, traffic 100%, layer checkout [0, 5000)
    blue: weight 1, buckets [0, 5000)
    green: weight 1, buckets [5000, 10000)
  one-page-checkout: running, unit user, traffic 100%, layer checkout [5000, 10000)
    control: weight 1, buckets [0, 5000)
    treatment: weight 1, buckets [5000, 10000)
output: x-experiments (route headers x-exp-*)
inbound: strip (an edge: assignments sent by clients are removed)
limits (worst cases):
  Envoy stats series: 628 (limit 100,000)
  headers added to a request: 78 bytes (output.max_header_bytes 8,192)
  exposure record: 4,089 bytes (exposure.max_record_bytes 16,384)
"
    );
}

#[test]
fn check_prints_every_error_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("abmesh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"units": {"user": [{"header": "x-user-id"}]},
            "experiments": [{"key": "A", "traffic_percent": 101, "variants": [{"name": "x", "weight": -2}]}]}"#,
    )
    .unwrap();
    let out = abmesh(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "experiments[0].key: \"A\" must start with a lower-case letter and have at most 64 characters from a-z, 0-9, '_', '.', '-'
experiments[0].traffic_percent: must be a number from 0 to 100, found 101
experiments[0].variants[0].weight: must be a non-negative integer, found -2
"
    );
    assert_eq!(
        stderr(&out),
        format!("abmesh: 3 error(s) in {}\n", bad.display())
    );
    let missing = abmesh(&["check", "no/such/file.json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).starts_with("abmesh: cannot read no/such/file.json: "),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    for (args, msg) in [
        (
            vec![],
            "missing command (check, assign, guard, analyze, import or plan)",
        ),
        (vec!["frobnicate"], "unknown command 'frobnicate'"),
        (
            vec!["check"],
            "check needs exactly one CONFIG file [--time RFC3339]",
        ),
        (
            vec!["check", "examples/ramp.json", "--time", "now"],
            "--time needs an RFC 3339 time such as 2026-11-01T00:00:00Z",
        ),
        (vec!["assign"], "assign needs a CONFIG file"),
        (
            vec!["assign", "examples/basic-ab.json", "--colour", "x"],
            "unknown option --colour",
        ),
        (
            vec!["assign", "examples/basic-ab.json", "--header"],
            "--header needs a value",
        ),
        (
            vec!["assign", "examples/basic-ab.json", "--header", "novalue"],
            "--header needs NAME=VALUE",
        ),
        (
            vec!["assign", "examples/basic-ab.json", "--time", "yesterday"],
            "--time needs an RFC 3339 time such as 2026-11-01T00:00:00Z",
        ),
    ] {
        let out = abmesh(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&out),
            format!("abmesh: {msg}\nrun 'abmesh --help' for usage\n"),
            "{args:?}"
        );
    }
}

#[test]
fn help_documents_every_command() {
    let out = abmesh(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    assert!(help.contains("abmesh check CONFIG"), "{help}");
    assert!(help.contains(
        "abmesh assign CONFIG [--header NAME=VALUE]... [--cookie NAME=VALUE]... [--query QUERY]\n                       [--path PATH] [--method METHOD] [--host HOST] [--time RFC3339]"
    ), "{help}");
    assert!(help.contains(
        "abmesh guard --config CONFIG (--stats URL_OR_FILE | --prometheus URL [--window 1h])"
    ));
    assert!(help.contains(
        "abmesh import growthbook|flagd FILE [--map MAPPING] [--bucketing v2|v3] [--allow-partial]"
    ));
    assert!(help.contains(
        "abmesh analyze --config CONFIG (--access-log FILE... | --sql ENGINE | --aggregates FILE)"
    ));
    assert!(help.contains("abmesh plan (--baseline-rate RATE | --sd SD)"));
    assert!(help.contains("abmesh guard ... --write-config OUT.json"));
    // Every command answers --help with the same text, wherever the flag stands.
    for args in [
        &["check", "--help"][..],
        &["assign", "examples/basic-ab.json", "--help"],
        &["guard", "-h"],
        &["import", "--help"],
        &["plan", "--baseline-rate", "--help"],
        &["analyze", "--help"],
    ] {
        let sub = abmesh(args);
        assert_eq!(sub.status.code(), Some(0), "{args:?}");
        assert_eq!(stdout(&sub), help, "{args:?}");
    }
    assert!(help.contains(
        "exit codes: 0 success (guard: healthy, with evidence), 1 invalid configuration or unreadable\ninput (guard: a source that fails, with its URL and HTTP status), 2 usage error, 3 guardrail\nbreached (guard --write-config: the written configuration changed; analyze: sample ratio\nmismatch), 4 guard: no evidence"
    ));
}

#[test]
fn check_reads_no_more_than_a_configuration_may_hold_from_an_endless_source() {
    // /dev/zero never ends: one byte past 1 MiB is enough to refuse it (issue 18, item 5).
    let out = abmesh(&["check", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "config: must be at most 1 MiB (1048576 bytes), found more (read no further)\n"
    );
    assert_eq!(stderr(&out), "abmesh: 1 error(s) in /dev/zero\n");
    // An endless pipe on standard input: the writer is stopped by the reader going away.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args(["check", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b' '; 64 * 1024];
        while stdin.write_all(&chunk).is_ok() {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "abmesh: 1 error(s) in -\n");
}

#[test]
fn the_readme_assign_example_prints_what_the_readme_says() {
    let readme = std::fs::read_to_string(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("README.md"),
    )
    .unwrap();
    let block = readme
        .split("<!-- example: assign -->\n```console\n")
        .nth(1)
        .unwrap();
    let block = block.split("```").next().unwrap();
    let (command, expected) = block.split_once('\n').unwrap();
    let args: Vec<&str> = command
        .strip_prefix("$ abmesh ")
        .unwrap()
        .split(' ')
        .collect();
    let out = abmesh(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), expected);
}

#[test]
fn assign_takes_non_utf8_values_and_keeps_the_record_valid_json() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "assign",
            "examples/basic-ab.json",
            "--time",
            "2026-11-25T00:00:00Z",
            "--header",
        ])
        .arg(OsStr::from_bytes(b"x-user-id=\xffal\"ice\x01"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let record = text
        .lines()
        .find_map(|l| l.strip_prefix("exposure: "))
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(record).unwrap();
    assert_eq!(record["units"]["user"], "\u{fffd}al\"ice\u{1}");
    // The variant comes from the raw bytes, not from the replaced text.
    let variant = record["assignments"][0]["variant"].as_str().unwrap();
    let raw_bucket = abmesh::hash::bucket(b"new-checkout", b"\xffal\"ice\x01");
    assert_eq!(
        variant,
        if raw_bucket < 5000 {
            "control"
        } else {
            "treatment"
        }
    );
}

#[test]
fn assign_with_cookie_query_and_no_assignment() {
    let out = abmesh(&[
        "assign",
        "examples/targeting.json",
        "--path",
        "/",
        "--query",
        "did=dev%2D7&utm_source=partner-a",
        "--cookie",
        "uid=u1",
        "--header",
        "user-agent=Mozilla/5.0 (iPhone; CPU)",
        "--time",
        "2026-11-25T00:00:00Z",
    ]);
    assert_eq!(
        stdout(&out),
        "set filter state: wasm.abmesh_units: {\"device\":\"dev-7\",\"user\":\"u1\"}
set request header: none (no assignments)
not assigned: checkout-north-america (targeting)
not assigned: mobile-home (targeting)
exposure: none
"
    );
}

#[test]
fn a_closed_output_pipe_is_not_a_crash() {
    let bin = env!("CARGO_BIN_EXE_abmesh");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{bin}' check bench/configs/experiments-1000.json | head -1"
        ))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "ok: 1000 experiments (1000 running), 2 unit types, 1 layers, holdout 2%\n"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn check_prints_the_ramp_and_the_step_in_force_and_assign_follows_it() {
    let out = abmesh(&[
        "check",
        "examples/ramp.json",
        "--time",
        "2026-11-25T12:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains(
        "  new-search: running, unit user, traffic ramped to 100%\n\
         \x20   control: weight 1, buckets [0, 5000)\n\
         \x20   treatment: weight 1, buckets [5000, 10000)\n\
         \x20   ramp: 1% from 2026-11-01T00:00:00Z, 5% from 2026-11-03T00:00:00Z, 25% from 2026-11-10T00:00:00Z, 50% from 2026-11-24T00:00:00Z, 100% from 2026-12-08T00:00:00Z (0% before)\n\
         \x20   ramp now: 50% (step 4 of 5); next: 100% at 2026-12-08T00:00:00Z\n"
    ), "{text}");
    let before = stdout(&abmesh(&[
        "check",
        "examples/ramp.json",
        "--time",
        "2026-10-01T00:00:00Z",
    ]));
    assert!(
        before.contains("    ramp now: 0% (not started); next: 1% at 2026-11-01T00:00:00Z\n"),
        "{before}"
    );
    let after = stdout(&abmesh(&[
        "check",
        "examples/ramp.json",
        "--time",
        "2027-01-01T00:00:00Z",
    ]));
    assert!(
        after.contains("    ramp now: 100% (step 5 of 5); next: none (fully ramped)\n"),
        "{after}"
    );
    // user-1's new-search bucket is in treatment's range only once the ramp reaches 50%.
    let assign = |t: &str| {
        stdout(&abmesh(&[
            "assign",
            "examples/ramp.json",
            "--header",
            "x-user-id=user-1",
            "--time",
            t,
        ]))
    };
    let early = assign("2026-11-12T00:00:00Z");
    let late = assign("2026-11-25T00:00:00Z");
    assert!(
        early.contains("not assigned: new-search (traffic)\n"),
        "{early}"
    );
    assert!(
        late.contains("set request header: x-exp-new-search: "),
        "{late}"
    );
}

#[test]
fn plan_prints_fixed_and_sequential_sizes_and_durations() {
    let out = abmesh(&[
        "plan",
        "--baseline-rate",
        "0.05",
        "--mde-relative",
        "0.1",
        "--variants",
        "3",
        "--daily-units",
        "50000",
        "--traffic-percent",
        "20",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "metric: a rate, baseline 5.00%; minimum detectable effect +0.50 points (5.50% against 5.00%)\n\
         3 variants: 2 comparisons against control at alpha 0.025 each (alpha 0.05 / 2, Bonferroni), power 80%\n\
         counted in units (the randomization unit: users, devices…), one observation each; for a per-request metric give --requests-per-unit and --design-effect\n\
         days at 50,000 units a day, 20% of them in the experiment\n\
         fixed horizon (one look):        37,824 per variant, 113,472 in total, 12 days\n\
         sequential (guard's default):    80,731 per variant, 242,193 in total, 25 days (2.13x; mixing 0.1)\n"
    );
    // statsmodels 0.15.0: samplesize_proportions_2indep_onetail(0.005, 0.05, 0.8, alpha=0.025)
    // = 37823.996…, rounded up; NormalIndPower().solve_power(effect_size=2/40, alpha=0.05,
    // power=0.8) = 6279.09…, rounded up.
    let out = abmesh(&["plan", "--sd", "40", "--mde", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metric"], "mean");
    assert_eq!(v["fixed_horizon"]["per_variant"], 6280);
    assert_eq!(v["correction"], "bonferroni");
    assert!(v["sequential_inflation"].as_f64().unwrap() > 1.5);
    let out = abmesh(&["plan", "--baseline-rate", "0.99", "--mde", "0.02"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "abmesh: baseline 0.99 plus the effect 0.02 is 1.01, outside 0 to 1\nrun 'abmesh --help' for usage\n"
    );
    // An effect so small that the size passes 2^53 once spun for ever (issue 18); it now ends
    // at once with the reason. Time is not asserted (tests assert behaviour); a hang would hang.
    let out = abmesh(&["plan", "--sd", "1", "--mde", "0.0000001"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "abmesh: the effect 0.0000001 is too small for this spread: the sample size would exceed 2^53 (9007199254740992) per variant\n"
    );
    for (flag, value) in [("--mde", "NaN"), ("--sd", "inf"), ("--alpha", "five")] {
        let out = abmesh(&["plan", "--sd", "1", "--mde", "0.1", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert_eq!(
            stderr(&out),
            format!("abmesh: {flag} needs a finite number, found '{value}'\nrun 'abmesh --help' for usage\n")
        );
    }
    // Inputs out of their range are usage errors that name the value, however extreme.
    for (args, why) in [
        (&["--sd", "1", "--mde", "1e308"][..], "the effect 1e308 is more than 100 standard deviations (1): no experiment is needed to see it"),
        (&["--sd", "1", "--mde", "1", "--mixing", "1e300"], "mixing must be above 0 and at most 10 (standard deviations), found 1e300"),
        (&["--sd", "1", "--mde", "1", "--variants", "101"], "an experiment has at most 100 variants, found 101"),
        (&["--sd", "1", "--mde", "1", "--alpha", "3"], "alpha must be between 0 and 1, found 3"),
        (&["--baseline-rate", "-1e-320", "--mde", "0.1"], "the baseline rate must be between 0 and 1, found -1e-320"),
    ] {
        let out = abmesh(&[&["plan"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&out), format!("abmesh: {why}\nrun 'abmesh --help' for usage\n"));
    }
    // A plan no sample size can meet is no usage error.
    let out = abmesh(&["plan", "--sd", "1e300", "--mde", "1e-300"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "abmesh: the effect 1e-300 is too small for this spread: the sample size would exceed 2^53 (9007199254740992) per variant\n"
    );
    let out = abmesh(&["plan", "--mde", "0.02"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "abmesh: plan needs --baseline-rate RATE or --sd SD, and --mde EFFECT or --mde-relative FRACTION\nrun 'abmesh --help' for usage\n"
    );
}
