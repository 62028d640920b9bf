//! A read-only view of one request's data as raw bytes: headers (with the HTTP/2-style
//! pseudo-headers `:path`, `:method`, `:authority`), cookies and the query string. Any byte
//! sequence is ordinary input here: nothing is assumed to be UTF-8.

use std::borrow::Cow;

/// A request as abmesh reads it: headers as bytes, cookies and query parsed on demand.
pub struct RequestView<'a> {
    headers: Vec<(&'a [u8], &'a [u8])>,
    path: &'a [u8],
    query: &'a [u8],
    method: &'a [u8],
    host: &'a [u8],
}

impl<'a> RequestView<'a> {
    /// Builds the view from the request's header list, as Envoy hands it over: pseudo-headers
    /// included, names lower-case (other case is tolerated), duplicates kept in order.
    pub fn new<N: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &'a [(N, V)]) -> Self {
        Self::from_pairs(
            headers
                .iter()
                .map(|(n, v)| (n.as_ref(), v.as_ref()))
                .collect(),
        )
    }

    /// Builds the view from borrowed pairs (see [`parse_header_map`]).
    pub fn from_pairs(headers: Vec<(&'a [u8], &'a [u8])>) -> Self {
        let find = |name: &[u8]| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let full_path = find(b":path").unwrap_or(b"/");
        let (path, query) = match full_path.iter().position(|&c| c == b'?') {
            Some(i) => (&full_path[..i], &full_path[i + 1..]),
            None => (full_path, &b""[..]),
        };
        let method = find(b":method").unwrap_or(b"GET");
        let host = find(b":authority").or_else(|| find(b"host")).unwrap_or(b"");
        RequestView {
            headers,
            path,
            query,
            method,
            host,
        }
    }

    /// Every header name, pseudo-headers included, in order.
    pub fn header_names(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.headers.iter().map(|(n, _)| *n)
    }

    /// The path without the query string.
    pub fn path(&self) -> &'a [u8] {
        self.path
    }

    /// The `:method`.
    pub fn method(&self) -> &'a [u8] {
        self.method
    }

    /// The host without its port (`[::1]:8080` gives `[::1]`).
    pub fn host_without_port(&self) -> &'a [u8] {
        let h = self.host;
        let port_colon = match h.iter().rposition(|&c| c == b':') {
            Some(i) if !h[i..].contains(&b']') && h[i + 1..].iter().all(u8::is_ascii_digit) => {
                Some(i)
            }
            _ => None,
        };
        match port_colon {
            Some(i) => &h[..i],
            None => h,
        }
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Every header with this name (case-insensitive), in order.
    pub fn headers_all<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The first cookie with this name across all `cookie` headers; surrounding double quotes
    /// are removed from the value. Malformed pairs (no `=`) are skipped.
    pub fn cookie(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
            .flat_map(|(_, v)| v.split(|&c| c == b';'))
            .find_map(|pair| {
                let pair = trim(pair);
                let eq = pair.iter().position(|&c| c == b'=')?;
                if trim(&pair[..eq]) != name {
                    return None;
                }
                let value = trim(&pair[eq + 1..]);
                Some(match value {
                    [b'"', inner @ .., b'"'] => inner,
                    v => v,
                })
            })
    }

    /// The first query parameter with this name, decoded as `application/x-www-form-urlencoded`
    /// (`%XX` and `+`); a malformed escape such as `%zz` is kept literally.
    pub fn query(&self, name: &[u8]) -> Option<Cow<'a, [u8]>> {
        self.query.split(|&c| c == b'&').find_map(|pair| {
            if pair.is_empty() {
                return None;
            }
            let (n, v) = match pair.iter().position(|&c| c == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            (form_decode(n) == name).then(|| form_decode(v))
        })
    }
}

/// Splits a proxy-wasm serialized header map (`u32` count, then `u32` name and value
/// lengths, then each name and value followed by a NUL) into borrowed pairs. `None` when
/// the buffer is not a well-formed map.
pub fn parse_header_map(buf: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if buf.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > buf.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let (name_len, value_len) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let name = buf.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = buf.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` and `+`; borrows when there is nothing to decode.
pub fn form_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.iter().any(|&c| c == b'%' || c == b'+') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                s.get(i + 1).copied().and_then(hex_value),
                s.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(headers: &[(&str, &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        headers
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend(*n);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_a_serialized_header_map_without_copying() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/a?b=1"),
            (b"x-user-id", b"\xff\x00u"),
            (b"empty", b""),
        ];
        let buf = serialize(&pairs);
        assert_eq!(parse_header_map(&buf), Some(pairs));
        assert_eq!(parse_header_map(&[]), Some(vec![]));
    }

    #[test]
    fn refuses_truncated_or_lying_header_maps() {
        let buf = serialize(&[(b"name", b"value")]);
        for cut in 1..buf.len() - 1 {
            assert_eq!(parse_header_map(&buf[..cut]), None, "cut at {cut}");
        }
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_header_map(&huge), None);
        let mut long_name = buf;
        long_name[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(parse_header_map(&long_name), None);
    }

    #[test]
    fn splits_path_and_query_and_strips_the_port_from_the_host() {
        let h = view(&[
            (":path", b"/a/b?x=1"),
            (":authority", b"Shop.Example:8443"),
            (":method", b"POST"),
        ]);
        let r = RequestView::new(&h);
        assert_eq!(r.path(), b"/a/b");
        assert_eq!(r.method(), b"POST");
        assert_eq!(r.host_without_port(), b"Shop.Example");
        let h = view(&[(":authority", b"[::1]:80")]);
        assert_eq!(RequestView::new(&h).host_without_port(), b"[::1]");
        let h = view(&[("host", b"[::1]")]);
        assert_eq!(RequestView::new(&h).host_without_port(), b"[::1]");
    }

    #[test]
    fn finds_cookies_across_headers_and_skips_malformed_pairs() {
        let h = view(&[
            ("cookie", b"junk; =empty; a=1; uid=\"q\""),
            ("Cookie", b"uid=second; b=\xff\xfe"),
        ]);
        let r = RequestView::new(&h);
        assert_eq!(r.cookie(b"uid"), Some(&b"q"[..]));
        assert_eq!(r.cookie(b"b"), Some(&b"\xff\xfe"[..]));
        assert_eq!(r.cookie(b"junk"), None);
        assert_eq!(r.cookie(b""), Some(&b"empty"[..]));
    }

    #[test]
    fn decodes_query_values_and_keeps_malformed_escapes() {
        let h = view(&[(":path", b"/?&&a&did=x%20y+z&bad=%zz%4&did=second&e=%ff")]);
        let r = RequestView::new(&h);
        assert_eq!(r.query(b"did").as_deref(), Some(&b"x y z"[..]));
        assert_eq!(r.query(b"bad").as_deref(), Some(&b"%zz%4"[..]));
        assert_eq!(r.query(b"a").as_deref(), Some(&b""[..]));
        assert_eq!(r.query(b"e").as_deref(), Some(&b"\xff"[..]));
        assert_eq!(r.query(b"missing"), None);
    }
}
