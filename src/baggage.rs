//! W3C Baggage (<https://www.w3.org/TR/baggage/>): the assignments as one `abmesh` list
//! member, so services instrumented with OpenTelemetry carry the experiment context into
//! every downstream span and log.
//!
//! Other members are never touched beyond trimming the optional whitespace around them. The
//! specification lets a platform drop list-members only when the baggage-string would exceed
//! 8,192 bytes; abmesh then drops its own member (the assignments still travel in
//! `x-experiments`), never somebody else's.

use crate::sfv::trim_ows as trim;

/// The list-member key abmesh writes (and, at an edge, removes from what clients send).
pub const KEY: &str = "abmesh";

/// The size above which list-members may be dropped (W3C Baggage, "Limits").
pub const MAX_BYTES: usize = 8192;

/// What to do with the request's `baggage` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Leave `baggage` as the client sent it.
    Unchanged,
    /// Remove `baggage` (it held only an `abmesh` member).
    Remove,
    /// Set `baggage` to this value.
    Set(Vec<u8>),
}

/// The new `baggage` header from the request's `baggage` headers (several are one list), with
/// any `abmesh` member removed and, if `ours` is given, the dictionary added as the `abmesh`
/// member. The second value is true when `ours` was not added because the result would
/// exceed [`MAX_BYTES`].
pub fn rewrite(existing: &[&[u8]], ours: Option<&str>) -> (Rewrite, bool) {
    let members: Vec<&[u8]> = existing
        .iter()
        .flat_map(|h| h.split(|&c| c == b','))
        .map(trim)
        .filter(|m| !m.is_empty())
        .collect();
    let had_ours = members.iter().any(|m| is_ours(m));
    let others: Vec<&[u8]> = members.into_iter().filter(|m| !is_ours(m)).collect();
    let mut out = others.join(&b","[..]);
    if let Some(dict) = ours {
        let len_before = out.len();
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(KEY.as_bytes());
        out.push(b'=');
        encode_value(dict, &mut out);
        if out.len() <= MAX_BYTES {
            return (Rewrite::Set(out), false);
        }
        out.truncate(len_before);
        return (finish(out, had_ours), true);
    }
    (finish(out, had_ours), false)
}

fn finish(out: Vec<u8>, had_ours: bool) -> Rewrite {
    match (had_ours, out.is_empty()) {
        (false, _) => Rewrite::Unchanged,
        (true, true) => Rewrite::Remove,
        (true, false) => Rewrite::Set(out),
    }
}

/// The decoded value of the `abmesh` member, if the request's baggage has one.
pub fn our_value(existing: &[&[u8]]) -> Option<Vec<u8>> {
    existing
        .iter()
        .flat_map(|h| h.split(|&c| c == b','))
        .map(trim)
        .find(|m| is_ours(m))
        .map(|m| {
            let eq = m.iter().position(|&c| c == b'=').unwrap_or(m.len());
            let value = m.get(eq + 1..).unwrap_or_default();
            // Properties (`;k=v`) follow the value.
            let end = value.iter().position(|&c| c == b';').unwrap_or(value.len());
            decode_value(trim(&value[..end]))
        })
}

fn is_ours(member: &[u8]) -> bool {
    let Some(eq) = member.iter().position(|&c| c == b'=') else {
        return false;
    };
    trim(&member[..eq]) == KEY.as_bytes()
}

/// `baggage-octet`: printable ASCII except space, `"`, `,`, `;` and `\`. `%` is one too, but
/// the specification requires it to be percent-encoded as data.
fn is_baggage_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Percent-encodes everything outside `baggage-octet` (UTF-8 bytes included).
pub fn encode_value(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s.as_bytes() {
        if is_baggage_octet(c) {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        }
    }
}

/// Percent-decodes a value; a malformed escape is kept literally.
pub fn decode_value(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            v[i],
            v.get(i + 1).copied().and_then(hex),
            v.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(r: (Rewrite, bool)) -> (String, bool) {
        match r.0 {
            Rewrite::Set(v) => (String::from_utf8(v).unwrap(), r.1),
            other => panic!("expected Set, got {other:?}"),
        }
    }

    #[test]
    fn the_dictionary_becomes_one_percent_encoded_member_after_the_others() {
        assert_eq!(
            set(rewrite(
                &[b"userId=alice, isProduction=false", b"k=v;prop=1"],
                Some("checkout=treatment, search=v2;forced")
            )),
            (
                "userId=alice,isProduction=false,k=v;prop=1,abmesh=checkout=treatment%2C%20search=v2%3Bforced"
                    .into(),
                false
            )
        );
        assert_eq!(set(rewrite(&[], Some("a=b"))), ("abmesh=a=b".into(), false));
    }

    #[test]
    fn a_sent_abmesh_member_is_replaced_or_removed() {
        assert_eq!(
            set(rewrite(&[b"abmesh=x=spoofed, k=v"], Some("a=b"))),
            ("k=v,abmesh=a=b".into(), false)
        );
        assert_eq!(
            set(rewrite(&[b"k=v, abmesh = x=spoofed"], None)),
            ("k=v".into(), false)
        );
        assert_eq!(rewrite(&[b" abmesh=x "], None), (Rewrite::Remove, false));
        assert_eq!(
            rewrite(&[b"k=v,,abmeshx=1"], None),
            (Rewrite::Unchanged, false)
        );
    }

    #[test]
    fn a_full_baggage_keeps_every_existing_member_and_drops_ours() {
        let big = format!("big={}", "x".repeat(MAX_BYTES - 10));
        assert_eq!(
            rewrite(&[big.as_bytes()], Some("a=b")),
            (Rewrite::Unchanged, true)
        );
        let spoofed = format!("{big},abmesh=x");
        assert_eq!(
            set(rewrite(&[spoofed.as_bytes()], Some("a=b"))),
            (big.clone(), true)
        );
        // Exactly at the limit still fits.
        let fits = format!("k={}", "y".repeat(MAX_BYTES - 3 - "abmesh=a=b".len()));
        let (r, dropped) = set(rewrite(&[fits.as_bytes()], Some("a=b")));
        assert_eq!((r.len(), dropped), (MAX_BYTES, false));
    }

    #[test]
    fn our_member_decodes_back_to_the_dictionary() {
        let mut v = Vec::new();
        encode_value("a=b, c=d;forced, e=\"%\u{e9}\"", &mut v);
        assert_eq!(
            String::from_utf8(v.clone()).unwrap(),
            "a=b%2C%20c=d%3Bforced%2C%20e=%22%25%C3%A9%22"
        );
        let header = [b"k=v,abmesh=".as_slice(), &v, b";ttl=1"].concat();
        assert_eq!(
            our_value(&[&header]).unwrap(),
            "a=b, c=d;forced, e=\"%\u{e9}\"".as_bytes()
        );
        assert_eq!(our_value(&[b"k=v"]), None);
        assert_eq!(decode_value(b"%zz%4"), b"%zz%4");
    }
}
