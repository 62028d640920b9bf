//! The small part of RFC 8941 (structured field values) abmesh needs: reading the override
//! dictionary `key=variant, key2=variant` from untrusted bytes.
//!
//! Members that are not `key=token` or `key="string"` are skipped one by one rather than
//! voiding the whole header, so one typo in a QA override does not silently drop the others.

/// The `(key, value)` members of a dictionary, in order; a later duplicate key wins, as in
/// RFC 8941. Never fails: malformed members are skipped.
pub fn parse_dictionary(input: &[u8]) -> Vec<(&[u8], &[u8])> {
    parse_members(input)
        .into_iter()
        .map(|m| (m.key, m.value))
        .collect()
}

/// One dictionary member: `key=value`, and whether it carries the `forced` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The experiment key.
    pub key: &'a [u8],
    /// The variant.
    pub value: &'a [u8],
    /// Carries the `;forced` parameter.
    pub forced: bool,
}

/// As [`parse_dictionary`], keeping whether each member is marked `;forced`.
pub fn parse_members(input: &[u8]) -> Vec<Member<'_>> {
    let mut out: Vec<Member> = Vec::new();
    for member in split_members(input) {
        let member = trim_ows(member);
        let Some(eq) = member.iter().position(|&c| c == b'=') else {
            continue;
        };
        let key = &member[..eq];
        let (value, params) = split_params(&member[eq + 1..]);
        let value = if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
            &value[1..value.len() - 1]
        } else {
            value
        };
        if !is_key(key) || !is_token_like(value) {
            continue;
        }
        // `;forced` or `;forced=?1` (an RFC 8941 boolean true).
        let forced = params
            .split(|&c| c == b';')
            .map(trim_ows)
            .any(|p| p == b"forced" || p == b"forced=?1");
        out.push(Member { key, value, forced });
    }
    keep_last_of_each_key(out)
}

/// Drops every member whose key appears again later, keeping the order of the rest: sorting
/// positions by key makes this O(n log n), where removing earlier duplicates on each insert
/// was O(n²) in a header a client writes.
fn keep_last_of_each_key(members: Vec<Member<'_>>) -> Vec<Member<'_>> {
    if members.len() < 2 {
        return members;
    }
    let mut by_key: Vec<usize> = (0..members.len()).collect();
    // Equal keys in header order, so the last of each run is the later duplicate.
    by_key.sort_unstable_by(|&a, &b| members[a].key.cmp(members[b].key).then(a.cmp(&b)));
    let mut superseded = vec![false; members.len()];
    for pair in by_key.windows(2) {
        if members[pair[0]].key == members[pair[1]].key {
            superseded[pair[0]] = true;
        }
    }
    members
        .into_iter()
        .zip(superseded)
        .filter_map(|(m, gone)| (!gone).then_some(m))
        .collect()
}

/// Splits on commas outside double quotes.
fn split_members(input: &[u8]) -> Vec<&[u8]> {
    let mut members = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, &c) in input.iter().enumerate() {
        match c {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                members.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(&input[start..]);
    members
}

/// Without the optional whitespace (spaces and tabs) around it, as RFC 9110 and W3C Baggage
/// allow between list members.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// The value and its parameters (`;a=b;c`), a quoted string kept whole.
fn split_params(s: &[u8]) -> (&[u8], &[u8]) {
    let from = if s.first() == Some(&b'"') {
        s.iter()
            .skip(1)
            .position(|&c| c == b'"')
            .map_or(s.len(), |i| i + 2)
    } else {
        0
    };
    match s[from.min(s.len())..].iter().position(|&c| c == b';') {
        Some(i) => (&s[..from + i], &s[from + i + 1..]),
        None => (s, &b""[..]),
    }
}

/// RFC 8941 key: `lcalpha / "*"` then `lcalpha / DIGIT / "_" / "-" / "." / "*"`.
pub fn is_key(s: &[u8]) -> bool {
    matches!(s.first(), Some(b'a'..=b'z' | b'*'))
        && s.iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'))
}

/// Printable ASCII without separators: enough to name a variant; rejects everything else.
fn is_token_like(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&c| c.is_ascii_graphic() && !matches!(c, b'"' | b',' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &[u8]) -> Vec<(String, String)> {
        parse_dictionary(input)
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_tokens_strings_and_parameters() {
        assert_eq!(
            parsed(b"a=treatment, b=\"v2\",c=x;forced"),
            pairs(&[("a", "treatment"), ("b", "v2"), ("c", "x")])
        );
    }

    #[test]
    fn later_duplicates_win_and_keep_their_position() {
        assert_eq!(parsed(b"a=x, b=y, a=z"), pairs(&[("b", "y"), ("a", "z")]));
    }

    #[test]
    fn members_remember_the_forced_parameter() {
        let m = parse_members(b"a=x;forced, b=\"y\";forced=?1, c=z;other, d=w;forced=?0");
        let forced: Vec<(&[u8], bool)> = m.iter().map(|m| (m.key, m.forced)).collect();
        assert_eq!(
            forced,
            [
                (&b"a"[..], true),
                (&b"b"[..], true),
                (&b"c"[..], false),
                (&b"d"[..], false)
            ]
        );
        assert_eq!(m[1].value, b"y");
    }

    #[test]
    fn skips_malformed_members_but_keeps_good_ones() {
        assert_eq!(
            parsed(b"=x, B=y, novalue, c=, d=\xff\xfe, e=\"a,b\", f=ok,,, g = h"),
            pairs(&[("f", "ok")])
        );
        assert!(parse_dictionary(b"").is_empty());
        assert!(parse_dictionary(b"\"\"\"").is_empty());
    }
}
