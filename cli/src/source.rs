//! Where `abmesh guard` reads its samples: a file, Prometheus text over `http(s)://` (Envoy's
//! `/stats/prometheus`, a Prometheus federation endpoint), or a Prometheus server's query API,
//! summed over every proxy. Native only: the HTTP and TLS client never reaches the wasm.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::bounded::{read_at_most, MAX_STATS_BYTES};
use crate::guard::{consistent, parse_prometheus, Sample};
use abmesh::metrics::{ASSIGNMENTS, DURATION, FORCED, REPLICATE_METRICS, RESPONSES};

/// How to reach an HTTP source.
#[derive(Debug, Clone)]
pub struct Http {
    /// The `Authorization` header value (never printed).
    pub authorization: Option<String>,
    /// PEM file of the CAs to trust instead of the system's roots.
    pub ca_file: Option<String>,
    /// The deadline of each request, from connecting to the body's last byte (`--timeout`).
    pub timeout: Duration,
}

/// The default `--timeout`: Prometheus' own default scrape timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting may take, within the deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Http {
    fn default() -> Self {
        Http {
            authorization: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The credential in `value`: a whole header value (`Bearer …`, `Basic …`) when it has a space,
/// else a bearer token. Surrounding whitespace (a file's final newline) is dropped.
pub fn authorization(value: &str) -> Option<String> {
    let v = value.trim();
    if v.is_empty() {
        None
    } else if v.contains(' ') {
        Some(v.to_string())
    } else {
        Some(format!("Bearer {v}"))
    }
}

fn agent(http: &Http) -> Result<ureq::Agent, String> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let roots = match &http.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read --cacert {path}: {e}"))?;
            let certs: Vec<_> = parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("--cacert {path} holds no PEM certificate"));
            }
            RootCerts::Specific(Arc::new(certs))
        }
    };
    let config = ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .timeout_connect(Some(CONNECT_TIMEOUT.min(http.timeout)))
        .timeout_global(Some(http.timeout))
        .http_status_as_error(false)
        .build();
    Ok(config.into())
}

/// GET `url` (with `query` parameters); the body of a 200, else an error naming the URL and
/// the status.
fn get(
    agent: &ureq::Agent,
    http: &Http,
    url: &str,
    query: &[(&str, &str)],
) -> Result<String, String> {
    let mut request = agent.get(url);
    for (k, v) in query {
        request = request.query(*k, *v);
    }
    if let Some(a) = &http.authorization {
        request = request.header("authorization", a.as_str());
    }
    let mut response = request.call().map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if status.as_u16() != 200 {
        return Err(format!(
            "{url}: HTTP status {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_string());
    }
    let body = read_at_most(response.body_mut().as_reader(), MAX_STATS_BYTES)
        .map_err(|e| format!("{url}: {e}"))?;
    String::from_utf8(body).map_err(|_| format!("{url}: the body is not UTF-8 text"))
}

/// Prometheus text from a file or an `http(s)://` URL.
pub fn prometheus_text(source: &str, http: &Http) -> Result<Vec<Sample>, String> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        get(&agent(http)?, http, source, &[])?
    } else {
        let bytes = std::fs::File::open(source)
            .map_err(|e| e.to_string())
            .and_then(|f| read_at_most(f, MAX_STATS_BYTES))
            .map_err(|e| format!("{source}: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{source}: not UTF-8 text"))?
    };
    let samples = parse_prometheus(&text).map_err(|e| format!("{source} {e}"))?;
    consistent(&samples).map_err(|e| format!("{source}: {e}"))?;
    Ok(samples)
}

/// A Prometheus range-vector duration: `30s`, `1h`, `1h30m`, `7d`.
pub fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// The PromQL query for one series, summed over every proxy by `by`. With a `window`, each
/// series counts what it gained in that window: `(m - m offset W) >= 0`, or its whole value
/// when it did not exist at the window's start (abmesh defines a series on first use, so a
/// new one holds only counts from inside the window) or restarted since. Not `increase()`,
/// which drops the first count of a series born inside the window: a replicate's 5xx series
/// is born with its first error, so `increase` would lose errors unevenly across arms.
pub fn query(metric: &str, by: &str, window: Option<&str>) -> String {
    match window {
        None => format!("sum by ({by}) ({metric})"),
        Some(w) => format!("sum by ({by}) ((({metric} - {metric} offset {w}) >= 0) or {metric})"),
    }
}

/// Every series guard reads, with the labels it is summed by.
pub fn queries(window: Option<&str>) -> Vec<(String, String)> {
    let by_variant = "experiment, variant";
    let mut out = vec![
        (
            ASSIGNMENTS.to_string(),
            query(ASSIGNMENTS, by_variant, window),
        ),
        (FORCED.to_string(), query(FORCED, by_variant, window)),
        (
            RESPONSES.to_string(),
            query(RESPONSES, "experiment, variant, class", window),
        ),
    ];
    for suffix in ["sum", "count", "sum_squares"] {
        let name = format!("{DURATION}_{suffix}");
        let q = query(&name, by_variant, window);
        out.push((name, q));
    }
    for name in REPLICATE_METRICS {
        out.push((
            name.to_string(),
            query(name, "experiment, variant, replicate", window),
        ));
    }
    out
}

/// The samples of one instant-query answer, named `name`.
pub fn parse_query_answer(name: &str, body: &str) -> Result<Vec<Sample>, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("not a Prometheus API answer: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            v["errorType"].as_str().unwrap_or("an error"),
            v["error"].as_str().unwrap_or("")
        ));
    }
    let Some(result) = v["data"]["result"].as_array() else {
        return Err("not a Prometheus API answer: no data.result".into());
    };
    let mut out = Vec::with_capacity(result.len());
    for r in result {
        let labels: BTreeMap<String, String> = r["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let value = r["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| format!("a sample of {name} has no numeric value"))?;
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!(
                "a sample of {name} ({}) has the value {value}, not a count (a finite number of at least 0)",
                labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(",")
            ));
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
            line: 0,
        });
    }
    Ok(out)
}

/// Every series guard reads, from the Prometheus server at `base` (`/api/v1/query`).
pub fn prometheus_api(
    base: &str,
    window: Option<&str>,
    http: &Http,
) -> Result<Vec<Sample>, String> {
    let agent = agent(http)?;
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let mut samples = Vec::new();
    for (name, q) in queries(window) {
        let body = get(&agent, http, &url, &[("query", &q)])?;
        samples.extend(parse_query_answer(&name, &body).map_err(|e| format!("{url} ({q}): {e}"))?);
    }
    consistent(&samples).map_err(|e| format!("{url}: {e}"))?;
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_a_bearer_token_or_a_whole_header_value() {
        assert_eq!(authorization("abc\n").as_deref(), Some("Bearer abc"));
        assert_eq!(authorization("Basic dTpw").as_deref(), Some("Basic dTpw"));
        assert_eq!(authorization("  \n"), None);
    }

    #[test]
    fn windows_are_prometheus_durations() {
        for ok in ["1h", "30m", "1h30m", "7d", "500ms"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "h", "1", "1hour", "-1h", "1h ", "1.5h"] {
            assert!(!is_duration(bad), "{bad}");
        }
        assert_eq!(
            query(
                "abmesh_assignments_total",
                "experiment, variant",
                Some("1h")
            ),
            "sum by (experiment, variant) (((abmesh_assignments_total - abmesh_assignments_total offset 1h) >= 0) or abmesh_assignments_total)"
        );
    }

    #[test]
    fn a_query_answer_becomes_samples_and_an_error_answer_says_why() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"experiment":"a","variant":"control","replicate":"3"},"value":[1.7e9,"12"]}]}}"#;
        let s = parse_query_answer("abmesh_replicate_assignments_total", body).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels["replicate"], "3");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(
            parse_query_answer(
                "x",
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#
            )
            .unwrap_err(),
            "Prometheus answered bad_data: parse error at char 5"
        );
    }
}
