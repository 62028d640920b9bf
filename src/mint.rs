//! Minted unit ids for anonymous visitors: when none of a unit type's sources yields an id,
//! the filter makes one, uses it for this request's assignments and sets it as a cookie on
//! the response, so the first request agrees with every later one.
//!
//! Minting is stateless: the id is derived from the request's `x-request-id` (a random
//! UUID that Envoy generates at the edge) and the host clock, never from a per-node counter,
//! so two nodes can never hand out the same sequence.

use std::fmt::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{is_token, NOT_A_COOKIE_NAME};
use crate::reader::{kind, Errors, Keyword, Obj};

/// `mint` of a unit type: the cookie that carries the minted id, with its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mint {
    /// The cookie that carries the id.
    pub cookie: String,
    /// The cookie's lifetime in days.
    pub max_age_days: u32,
    /// `Secure`
    pub secure: bool,
    /// `HttpOnly`
    pub http_only: bool,
    /// `SameSite`
    pub same_site: SameSite,
    /// `Path`
    pub path: String,
    /// `Domain`, if any.
    pub domain: Option<String>,
    /// `; Max-Age=…; Path=…[; Domain=…][; Secure][; HttpOnly]; SameSite=…`, rendered once.
    pub attributes: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The cookie's `SameSite` attribute.
pub enum SameSite {
    /// `Strict`
    Strict,
    /// `Lax` (the default)
    Lax,
    /// `None` (needs `Secure`)
    None,
}

impl SameSite {
    const ALL: [SameSite; 3] = [SameSite::Strict, SameSite::Lax, SameSite::None];
}

impl Keyword for SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// The fields of a `mint` object.
pub const FIELDS: &[&str] = &[
    "cookie",
    "max_age_days",
    "secure",
    "http_only",
    "same_site",
    "path",
    "domain",
];

/// Browsers cap a cookie's lifetime at 400 days (RFC 6265bis, section 5.5): a longer
/// `Max-Age` would silently mean 400.
pub const MAX_AGE_DAYS_LIMIT: u32 = 400;

/// The length of a minted id: 32 lower-case hex digits (128 bits).
pub const ID_LEN: usize = 32;

/// Reads and validates `mint` at `path`.
pub fn compile(v: &Value, path: &str, errors: &mut Errors) -> Option<Mint> {
    let o = Obj::new(v, path, FIELDS, errors)?;
    let before = errors.0.len();
    let cookie = o.required_string("cookie", errors);
    if let Some(c) = cookie {
        if !is_token(c) {
            errors.push(&o.path_of("cookie"), NOT_A_COOKIE_NAME);
        }
    }
    let max_age_days = match o.get("max_age_days") {
        None => 365,
        Some(n) => match n.as_u64() {
            Some(d @ 1..=400) => d as u32,
            _ => {
                errors.push(
                    &o.path_of("max_age_days"),
                    format!(
                        "must be an integer from 1 to {MAX_AGE_DAYS_LIMIT} (browsers cap cookie lifetimes at 400 days), found {}",
                        shown(n)
                    ),
                );
                365
            }
        },
    };
    let secure = o.bool("secure", errors).unwrap_or(true);
    let http_only = o.bool("http_only", errors).unwrap_or(true);
    let same_site = o
        .keyword("same_site", &SameSite::ALL, errors)
        .unwrap_or(SameSite::Lax);
    if same_site == SameSite::None && !secure {
        errors.push(
            &o.path_of("same_site"),
            "\"None\" requires \"secure\": true (browsers reject SameSite=None cookies that are not Secure)",
        );
    }
    let path_value = o.string("path", errors).unwrap_or("/");
    if !path_value.starts_with('/') || !path_value.bytes().all(is_attribute_byte) {
        errors.push(
            &o.path_of("path"),
            format!("must start with \"/\" and contain no ';', spaces or control characters, found \"{path_value}\""),
        );
    }
    let domain = o.string("domain", errors);
    if let Some(d) = domain {
        let labels = d.strip_prefix('.').unwrap_or(d);
        let valid = !labels.is_empty()
            && labels.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !valid {
            errors.push(
                &o.path_of("domain"),
                format!("must be a domain name such as \"example.com\", found \"{d}\""),
            );
        }
    }
    if let Some(c) = cookie {
        // Browsers enforce the cookie name prefixes (RFC 6265bis, section 4.1.3).
        if c.starts_with("__Secure-") && !secure {
            errors.push(
                &o.path_of("cookie"),
                "a \"__Secure-\" cookie requires \"secure\": true",
            );
        }
        if c.starts_with("__Host-") && (!secure || path_value != "/" || domain.is_some()) {
            errors.push(
                &o.path_of("cookie"),
                "a \"__Host-\" cookie requires \"secure\": true, \"path\": \"/\" and no \"domain\"",
            );
        }
    }
    if errors.0.len() > before {
        return None;
    }
    let mut attributes = format!(
        "; Max-Age={}; Path={path_value}",
        u64::from(max_age_days) * 86_400
    );
    if let Some(d) = domain {
        let _ = write!(attributes, "; Domain={d}");
    }
    if secure {
        attributes.push_str("; Secure");
    }
    if http_only {
        attributes.push_str("; HttpOnly");
    }
    let _ = write!(attributes, "; SameSite={}", same_site.as_str());
    Some(Mint {
        cookie: cookie?.to_string(),
        max_age_days,
        secure,
        http_only,
        same_site,
        path: path_value.to_string(),
        domain: domain.map(str::to_string),
        attributes,
    })
}

fn shown(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

fn is_attribute_byte(c: u8) -> bool {
    c.is_ascii_graphic() && c != b';'
}

/// A new unit id: the first 128 bits of SHA-256 over the request id, the time in nanoseconds
/// and the unit type, as 32 hex digits. With Envoy's random `x-request-id` the id is
/// unpredictable and unique; the clock (and `salt`, e.g. the stream's context id) separate
/// requests that arrive without one.
pub fn mint_id(request_id: Option<&[u8]>, now_ns: u64, unit: &str, salt: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"abmesh-mint-v1\0");
    h.update(request_id.unwrap_or_default());
    h.update(b"\0");
    h.update(now_ns.to_le_bytes());
    h.update(salt.to_le_bytes());
    h.update(unit.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let mut out = String::with_capacity(ID_LEN);
    for b in &digest[..ID_LEN / 2] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The `Set-Cookie` value that stores `id` in the mint's cookie.
pub fn set_cookie(mint: &Mint, id: &str) -> String {
    format!("{}={id}{}", mint.cookie, mint.attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mint(json: &str) -> Result<Mint, Vec<String>> {
        let v: Value = serde_json::from_str(json).unwrap();
        let mut errors = Errors::default();
        let m = compile(&v, "units.visitor.mint", &mut errors);
        match m {
            Some(m) if errors.0.is_empty() => Ok(m),
            _ => Err(errors.0),
        }
    }

    #[test]
    fn defaults_give_a_year_long_secure_http_only_lax_cookie() {
        let m = mint(r#"{"cookie": "abid"}"#).unwrap();
        assert_eq!(
            set_cookie(&m, "0123"),
            "abid=0123; Max-Age=31536000; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn every_attribute_is_rendered_as_configured() {
        let m = mint(
            r#"{"cookie": "vid", "max_age_days": 30, "secure": false, "http_only": false,
                "same_site": "Strict", "path": "/shop", "domain": "example.com"}"#,
        )
        .unwrap();
        assert_eq!(
            set_cookie(&m, "x"),
            "vid=x; Max-Age=2592000; Path=/shop; Domain=example.com; SameSite=Strict"
        );
    }

    #[test]
    fn unsafe_or_malformed_attributes_are_refused_with_their_paths() {
        assert_eq!(
            mint(r#"{"cookie": "a b", "same_site": "None", "secure": false, "max_age_days": 401,
                     "path": "shop", "domain": "ex ample.com"}"#)
            .unwrap_err(),
            [
                "units.visitor.mint.cookie: must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                "units.visitor.mint.max_age_days: must be an integer from 1 to 400 (browsers cap cookie lifetimes at 400 days), found 401",
                "units.visitor.mint.same_site: \"None\" requires \"secure\": true (browsers reject SameSite=None cookies that are not Secure)",
                "units.visitor.mint.path: must start with \"/\" and contain no ';', spaces or control characters, found \"shop\"",
                "units.visitor.mint.domain: must be a domain name such as \"example.com\", found \"ex ample.com\"",
            ]
        );
        assert_eq!(
            mint(r#"{"cookie": "__Host-id", "path": "/a", "same_site": "lax", "max_age_days": "1"}"#)
                .unwrap_err(),
            [
                "units.visitor.mint.max_age_days: must be an integer from 1 to 400 (browsers cap cookie lifetimes at 400 days), found a string",
                "units.visitor.mint.same_site: must be \"Strict\", \"Lax\" or \"None\", found \"lax\"",
                "units.visitor.mint.cookie: a \"__Host-\" cookie requires \"secure\": true, \"path\": \"/\" and no \"domain\"",
            ]
        );
        assert_eq!(
            mint(r#"{"secure": false, "cookie": "__Secure-id", "speed": 1}"#).unwrap_err(),
            [
                "units.visitor.mint: unknown field \"speed\"; expected one of: cookie, max_age_days, secure, http_only, same_site, path, domain",
                "units.visitor.mint.cookie: a \"__Secure-\" cookie requires \"secure\": true",
            ]
        );
    }

    #[test]
    fn minted_ids_are_32_hex_digits_distinct_per_request_and_reproducible() {
        let a = mint_id(Some(b"4f1c"), 1, "visitor", 0);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(a, mint_id(Some(b"4f1c"), 1, "visitor", 0));
        assert_ne!(a, mint_id(Some(b"4f1d"), 1, "visitor", 0));
        assert_ne!(a, mint_id(Some(b"4f1c"), 2, "visitor", 0));
        assert_ne!(a, mint_id(Some(b"4f1c"), 1, "device", 0));
        assert_ne!(mint_id(None, 1, "v", 1), mint_id(None, 1, "v", 2));
    }
}
