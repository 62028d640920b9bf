//! The top-level sections compiled on their own: `output`, `exposure`, `overrides`, `metrics`.

use super::*;

pub(super) fn compile_metrics(top: &Obj, errors: &mut Errors) -> u16 {
    let Some(o) = top.section("metrics", &["replicates"], errors) else {
        return DEFAULT_REPLICATES;
    };
    match o.get("replicates") {
        None => DEFAULT_REPLICATES,
        Some(v) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(n) if n <= MAX_REPLICATES => n,
            _ => {
                errors.push(
                    &o.path_of("replicates"),
                    format!(
                        "must be an integer from 0 (no replicate series) to {MAX_REPLICATES}, found {v}"
                    ),
                );
                DEFAULT_REPLICATES
            }
        },
    }
}

pub(super) fn compile_output(top: &Obj, errors: &mut Errors) -> Output {
    let mut out = Output {
        header: "x-experiments".into(),
        route_header_prefix: "x-exp-".into(),
        response_header: None,
        baggage: false,
        max_header_bytes: limits::DEFAULT_MAX_HEADER_BYTES,
    };
    let Some(o) = top.section(
        "output",
        &[
            "header",
            "route_header_prefix",
            "response_header",
            "baggage",
            "max_header_bytes",
        ],
        errors,
    ) else {
        return out;
    };
    if let Some(h) = header_field(&o, "header", errors) {
        out.header = h;
    }
    if let Some(p) = o.string("route_header_prefix", errors) {
        match header_name(p, &o.path_of("route_header_prefix"), errors) {
            Some(p) if out.header.starts_with(&p) => errors.push(
                &o.path_of("route_header_prefix"),
                format!("must not be a prefix of output.header \"{}\"", out.header),
            ),
            Some(p) => out.route_header_prefix = p,
            None => {}
        }
    }
    out.response_header = header_field(&o, "response_header", errors);
    out.baggage = o.bool("baggage", errors).unwrap_or(false);
    let ceiling = limits::MAX_HEADER_BYTES_CEILING;
    let why = " (Envoy's default limit on request headers)";
    if let Some(n) = byte_limit(&o, "max_header_bytes", (256, ceiling), why, errors) {
        out.max_header_bytes = n;
    }
    out
}

/// A byte count `field` must hold within `range` (inclusive); `why` follows the range in the
/// error.
fn byte_limit(
    o: &Obj,
    field: &str,
    (floor, ceiling): (usize, usize),
    why: &str,
    errors: &mut Errors,
) -> Option<usize> {
    let v = o.get(field)?;
    match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(n) if (floor..=ceiling).contains(&n) => Some(n),
        _ => {
            errors.push(
                &o.path_of(field),
                format!("must be an integer from {floor} to {ceiling}{why}, found {v}"),
            );
            None
        }
    }
}

pub(super) fn compile_exposure(top: &Obj, errors: &mut Errors) -> ExposureConfig {
    // The access log (filter state) is the exposure pipeline; the application log is opt-in:
    // Envoy writes it synchronously, line by line, at several µs per exposed request.
    let mut out = ExposureConfig {
        format: ExposureFormat::Abmesh,
        log: false,
        log_level: LogLevel::Info,
        unit_id: UnitIdMode::Raw,
        filter_state: true,
        max_record_bytes: limits::DEFAULT_MAX_RECORD_BYTES,
    };
    let Some(o) = top.section(
        "exposure",
        &[
            "format",
            "log",
            "log_level",
            "unit_id",
            "filter_state",
            "max_record_bytes",
        ],
        errors,
    ) else {
        return out;
    };
    out.log = o.bool("log", errors).unwrap_or(false);
    out.filter_state = o.bool("filter_state", errors).unwrap_or(true);
    if let Some(level) = o.string("log_level", errors) {
        match LogLevel::ALL.into_iter().find(|l| l.as_str() == level) {
            Some(l) => out.log_level = l,
            None => errors.push(
                &o.path_of("log_level"),
                format!(
                    "must be one of {}, found \"{level}\"",
                    LogLevel::ALL.map(LogLevel::as_str).join(", ")
                ),
            ),
        }
    }
    if let Some(mode) = o.keyword("unit_id", &UnitIdMode::ALL, errors) {
        out.unit_id = mode;
    }
    if let Some(format) = o.keyword("format", &ExposureFormat::ALL, errors) {
        out.format = format;
    }
    let ceiling = limits::MAX_RECORD_BYTES_CEILING;
    if let Some(n) = byte_limit(&o, "max_record_bytes", (1024, ceiling), "", errors) {
        out.max_record_bytes = n;
    }
    out
}

pub(super) fn compile_overrides(top: &Obj, errors: &mut Errors) -> Overrides {
    let mut out = Overrides {
        header: "x-abmesh-force".into(),
        token_header: "x-abmesh-token".into(),
        token_sha256: Vec::new(),
    };
    let Some(o) = top.section(
        "overrides",
        &["header", "token_header", "token_sha256"],
        errors,
    ) else {
        return out;
    };
    if let Some(h) = header_field(&o, "header", errors) {
        out.header = h;
    }
    if let Some(h) = header_field(&o, "token_header", errors) {
        out.token_header = h;
    }
    let path = o.path_of("token_sha256");
    match o.get("token_sha256") {
        None => errors.push(
            &path,
            "is required (the SHA-256 hex digests of the accepted QA tokens)",
        ),
        Some(l) => {
            for (i, hex) in string_list(l, &path, errors).into_iter().enumerate() {
                match parse_sha256_hex(hex) {
                    Some(d) => out.token_sha256.push(d),
                    None => errors.push(
                        &index_path(&path, i),
                        format!(
                            "must be 64 hexadecimal characters (a SHA-256 digest), found \"{hex}\""
                        ),
                    ),
                }
            }
        }
    }
    out
}

pub(super) fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// `ofrep`: `path_prefix` (`/…/`, required) and `context` (attribute → source).
pub(super) fn compile_ofrep(top: &Obj, units: &[UnitType], errors: &mut Errors) -> Option<Ofrep> {
    let o = top.section("ofrep", &["path_prefix", "context"], errors)?;
    let prefix = o.required_string("path_prefix", errors);
    if let Some(p) = prefix {
        if !(p.starts_with('/') && p.ends_with('/'))
            || p.bytes().any(|b| b <= b' ' || b == b'?' || b >= 0x7f)
        {
            errors.push(
                &o.path_of("path_prefix"),
                format!("must be a path that starts and ends with '/', such as \"/ofrep/v1/\", found \"{p}\""),
            );
        }
    }
    let mut context = Vec::new();
    match o.get("context") {
        Some(c) => {
            let path = o.path_of("context");
            match c.as_object() {
                Some(m) => {
                    for (attribute, s) in m {
                        if let Some(source) = super::units::compile_source(s, &field_path(&path, attribute), errors) {
                            context.push((attribute.clone(), source));
                        }
                    }
                }
                None => errors.push(
                    &path,
                    format!("must be an object of context attribute → {{\"header\"|\"cookie\"|\"query\": NAME}}, found {}", crate::reader::kind(c)),
                ),
            }
        }
        None => match units.first().and_then(|u| u.sources.first()) {
            Some(s) => context.push(("targetingKey".to_string(), s.clone())),
            None => errors.push(
                &o.path_of("context"),
                "is required when no unit type has a source for targetingKey",
            ),
        },
    }
    Some(Ofrep {
        path_prefix: prefix?.to_string(),
        context,
    })
}
