//! Istio for real, as far as it goes without a control plane: every Istio manifest against
//! Istio's own CRDs and rules, the Wasm OCI image through a real registry and a real client,
//! and Envoy loading the module the way a plain Envoy user fetches it (`remote`, `sha256`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::harness::{free_port, output_text, python, repo, scratch_dir};
use crate::http::{get_text, Client};

fn cli() -> PathBuf {
    repo().join("dist/abmesh")
}

/// The digest `./build.sh image` printed for this tree's image.
fn image_digest() -> String {
    let path = repo().join("dist/abmesh-image.digest");
    let d = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (./build.sh test builds the image first)",
            path.display()
        )
    });
    d.trim().to_string()
}

fn validate(only: &[&Path]) -> (bool, String) {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/e2e/istio_manifests.py"))
        .arg(repo())
        .arg(cli())
        .arg(image_digest());
    if !only.is_empty() {
        cmd.arg("--only").args(only);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), output_text(&out))
}

#[test]
fn every_istio_manifest_in_the_repository_passes_istios_crds_and_rules() {
    let (ok, text) = validate(&[]);
    assert!(ok && text.ends_with("ok\n"), "{text}");
    for kind_and_file in [
        "examples/istio/wasmplugin.yaml#0 WasmPlugin abmesh",
        "examples/istio/wasmplugin-internal.yaml#0 WasmPlugin abmesh-search",
        "examples/istio/wasmplugin-internal.yaml#1 AuthorizationPolicy",
        "examples/istio/trafficextension.yaml#0 TrafficExtension abmesh",
        "examples/istio/virtualservice.yaml#0 VirtualService",
        "examples/istio/virtualservice.yaml#1 DestinationRule",
        "examples/istio/telemetry-access-log.yaml#0 Telemetry",
        "examples/ci/wasmplugin.template.yaml#0 WasmPlugin abmesh",
        "docs/istio.md:",
    ] {
        assert!(
            text.contains(&format!("checked against its CRD: {kind_and_file}")),
            "{kind_and_file} was not validated:\n{text}"
        );
    }
    assert!(
        text.contains("checked against abmesh's module rules: docs/istio.md:"),
        "{text}"
    );
}

#[test]
fn the_validator_refuses_what_istio_would_refuse_or_silently_never_attach() {
    let dir = scratch_dir("istio-bad");
    let bad = dir.join("bad.yaml");
    // The gateway plugin as it was shipped before, plus the mistakes users make.
    std::fs::write(
        &bad,
        r#"apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: abmesh, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  url: ftp://ghcr.io/example/abmesh:0.1.0
  sha256: "ABC"
  phase: AUTHN
  failStrategy: FAIL_CLOSED
  matches: []
  match: [{mode: SERVER}]
  pluginConfig: {"units": {"user": [{"header": "x-user-id"}]}, "experiments": [{"key": "Bad Key", "variants": [{"name": "a", "weight": 1}]}]}
---
apiVersion: extensions.istio.io/v1alpha1
kind: TrafficExtension
metadata: {name: Abmesh}
spec:
  selector: {matchLabels: {app: search}}
  targetRefs: [{kind: Gateway, name: gw}]
  wasm: {url: "oci://registry.example.com/abmesh/abmesh:0.1.0"}
  lua: {inlineCode: "x"}
"#,
    )
    .unwrap();
    let (ok, text) = validate(&[&bad]);
    assert!(!ok, "{text}");
    let p = bad.display();
    let digest = image_digest();
    let hex = digest.trim_start_matches("sha256:");
    for line in [
        format!("{p}#0 WasmPlugin abmesh: spec: Additional properties are not allowed ('matches' was unexpected)"),
        format!("{p}#0 WasmPlugin abmesh: spec.failStrategy: 'FAIL_CLOSED' is not one of ['FAIL_CLOSE', 'FAIL_OPEN', 'FAIL_RELOAD']"),
        format!("{p}#0 WasmPlugin abmesh: spec.sha256: 'ABC' does not match '(^$|^[a-f0-9]{{64}}$)'"),
        format!("{p}#0 WasmPlugin abmesh: spec.url: url must have schema one of [http, https, file, oci]"),
        format!("{p}#0 WasmPlugin abmesh: match: on a gateway the mode must be CLIENT or CLIENT_AND_SERVER (Istio never attaches SERVER to a gateway listener), found ['SERVER']"),
        format!("{p}#0 WasmPlugin abmesh: sha256: must pin the image this tree builds, {hex} (run ./build.sh pin), found 'ABC'"),
        format!("{p}#0 WasmPlugin abmesh: failStrategy: FAIL_OPEN, the only strategy under which a fetch failure or a trap never refuses traffic, found 'FAIL_CLOSED'"),
        format!("{p}#0 WasmPlugin abmesh: pluginConfig: abmesh check refuses it: experiments[0].key: \"Bad Key\" must start with a lower-case letter and have at most 64 characters from a-z, 0-9, '_', '.', '-'"),
        format!("{p}#1 TrafficExtension Abmesh: metadata.name: must be a DNS-1123 subdomain, found 'Abmesh'"),
        format!("{p}#1 TrafficExtension Abmesh: spec: only one of targetRefs or selector can be set"),
        format!("{p}#1 TrafficExtension Abmesh: spec: exactly one of wasm or lua must be set"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn flagger_and_argo_rollouts_manifests_pass_their_crds_and_their_mistakes_are_refused() {
    let (ok, text) = validate(&[]);
    assert!(ok, "{text}");
    for kind_and_file in [
        "examples/flagger/canary.yaml#0 Canary checkout",
        "examples/argo/analysis-template-guard.yaml#0 AnalysisTemplate abmesh-guard",
        "examples/argo/analysis-template-prometheus.yaml#0 AnalysisTemplate abmesh-error-ratio",
    ] {
        assert!(
            text.contains(&format!("checked against its CRD: {kind_and_file}")),
            "{kind_and_file} was not validated:\n{text}"
        );
    }
    let dir = scratch_dir("progressive-bad");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: checkout, namespace: shop}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: checkout}
  service: {port: 8080}
  analysis:
    intervall: 1m
    webhooks:
      - {name: abmesh-guard, type: rolout, url: "http://abmesh-guard:9090/flagger"}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: abmesh-guard}
spec:
  metrics:
    - name: abmesh-guard
      successCondition: result == "healthy"
      provider:
        web: {url: "http://abmesh-guard:9090/argo", jsonpath: "{$.verdict}"}
"#,
    )
    .unwrap();
    let (ok, text) = validate(&[&bad]);
    assert!(!ok, "{text}");
    let p = bad.display();
    for line in [
        format!("{p}#0 Canary checkout: spec.analysis: Additional properties are not allowed ('intervall' was unexpected)"),
        format!("{p}#0 Canary checkout: spec.analysis.webhooks.0.type: 'rolout' is not one of ['', 'confirm-rollout', 'pre-rollout', 'rollout', 'confirm-promotion', 'post-rollout', 'event', 'rollback', 'confirm-traffic-increase']"),
        format!("{p}#1 AnalysisTemplate abmesh-guard: spec.metrics.0.provider.web: Additional properties are not allowed ('jsonpath' was unexpected)"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
}

/// A registry (Debian's docker-registry, the CNCF distribution server) on 127.0.0.1, killed
/// on drop; its log is printed if the test fails.
struct Registry {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    fn start() -> Registry {
        let dir = scratch_dir("registry");
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: '127.0.0.1:{port}'}}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "docker-registry (Debian's docker-registry package; ./build.sh test installs it)",
            );
        let r = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(get_text(port, "/v2/"), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "the registry did not start:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- registry log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (./build.sh test installs it)");
    let text = output_text(&out);
    assert!(out.status.success(), "skopeo {args:?}:\n{text}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_image_round_trips_through_a_real_registry_and_istios_pull_gets_the_same_wasm() {
    let registry = Registry::start();
    let version = env!("CARGO_PKG_VERSION");
    let layout = format!("oci:{}:{version}", repo().join("dist/oci").display());
    let archive = format!(
        "oci-archive:{}",
        repo().join("dist/abmesh-oci.tar").display()
    );
    let remote = format!(
        "docker://127.0.0.1:{}/abmesh/abmesh:{version}",
        registry.port
    );
    let digest = image_digest();
    // The layout and the tarball are the same image.
    for source in [&layout, &archive] {
        let d = skopeo(&["inspect", "--format", "{{.Digest}}", source]);
        assert_eq!(d.trim(), digest, "{source}");
    }
    // Push with a real client; the registry keeps the manifest byte for byte.
    skopeo(&["copy", "--dest-tls-verify=false", &archive, &remote]);
    let d = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &remote,
    ]);
    assert_eq!(d.trim(), digest, "the registry serves another manifest");
    // Pull back with skopeo: the same manifest.
    let back = scratch_dir("pulled").join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:{version}", back.display()),
    ]);
    let d = skopeo(&[
        "inspect",
        "--format",
        "{{.Digest}}",
        &format!("oci:{}:{version}", back.display()),
    ]);
    assert_eq!(d.trim(), digest);
    // And as Istio's fetcher reads it over the registry API: the identical module.
    let wasm = scratch_dir("istio-pull").join("plugin.wasm");
    let out = Command::new(python())
        .arg(repo().join("tests/e2e/oci_pull.py"))
        .arg(format!("http://127.0.0.1:{}", registry.port))
        .arg("abmesh/abmesh")
        .arg(version)
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    assert!(
        std::fs::read(&wasm).unwrap() == std::fs::read(repo().join("dist/abmesh.wasm")).unwrap(),
        "the pulled plugin.wasm differs from dist/abmesh.wasm"
    );
    // A tag that does not exist is an error, not an empty module.
    let missing = Command::new(python())
        .arg(repo().join("tests/e2e/oci_pull.py"))
        .arg(format!("http://127.0.0.1:{}", registry.port))
        .arg("abmesh/abmesh")
        .arg("9.9.9")
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        output_text(&missing).contains("HTTP Error 404"),
        "{}",
        output_text(&missing)
    );
}

/// A listener answering 200 itself behind abmesh loaded from `remote` with `sha256`, echoing
/// assignments on the response so the client sees them.
fn remote_listener(name: &str, port: u16, module_port: u16, sha256: &str) -> String {
    let code = format!(
        r#"{{remote: {{http_uri: {{uri: "http://127.0.0.1:{module_port}/abmesh.wasm", cluster: modules, timeout: 5s}}, sha256: "{sha256}", retry_policy: {{num_retries: 1}}}}}}"#
    );
    let config = r#"{"units": {"user": [{"header": "x-user-id"}]}, "output": {"response_header": "x-abmesh"}, "experiments": [{"key": "exp", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}]}"#;
    crate::harness::direct_listener_with_code(name, port, None, &code, config)
}

#[test]
fn envoy_loads_the_module_by_remote_with_its_sha256_and_refuses_a_wrong_one() {
    let dir = scratch_dir("remote");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let wasm = std::fs::read(repo().join("dist/abmesh.wasm")).unwrap();
    std::fs::write(www.join("abmesh.wasm"), &wasm).unwrap();
    let mut server = crate::harness::FileServer::start(&www);
    let module_port = server.port;
    let (admin, good, bad) = (free_port(), free_port(), free_port());
    let right = crate::harness::sha256_hex(&wasm);
    let wrong = crate::harness::sha256_hex(b"not abmesh");
    let yaml = format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  clusters:
  - name: modules
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: modules
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {module_port}}}}}}}}}]}}]
  listeners:{}{}
"#,
        remote_listener("good", good, module_port, &right),
        remote_listener("bad", bad, module_port, &wrong)
    );
    std::fs::write(dir.join("envoy.yaml"), yaml).unwrap();
    let log = dir.join("envoy.log");
    let mut envoy = crate::harness::spawn_envoy(&dir.join("envoy.yaml"), 1, &log);
    let _guard = crate::harness::KillOnDrop {
        envoy: &mut envoy,
        upstream: &mut server.child,
        log: &log,
    };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(get_text(admin, "/ready"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "Envoy not ready:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The right digest: the module is fetched, configured, and assigns.
    let mut client = Client::new(good);
    for i in 0..20 {
        let r = client.get(b"/", &[("x-user-id", format!("u{i}").as_bytes())]);
        assert_eq!(r.status, 200, "{}", logs());
        let echo = r
            .header("x-abmesh")
            .map(|v| String::from_utf8_lossy(v).to_string());
        assert!(
            matches!(echo.as_deref(), Some("exp=control" | "exp=treatment")),
            "{echo:?}\n{}",
            logs()
        );
    }
    // A wrong digest: Envoy never runs that module; the plugin fails closed (Envoy's default).
    let r = Client::new(bad).get(b"/", &[("x-user-id", b"u1")]);
    assert_eq!(r.status, 503, "{}", logs());
    assert!(r.header("x-abmesh").is_none());
    let text = logs();
    assert!(text.contains("Plugin abmesh-bad failed to load"), "{text}");
    assert!(
        text.contains("wasm log good: abmesh 0.1.0 configured") && !text.contains("wasm log bad:"),
        "{text}"
    );
}
