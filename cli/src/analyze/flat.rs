//! A reader for the JSON `analyze` reads on every line: Envoy's `json_format` access-log line
//! (an object of strings and numbers), abmesh's units value and its exposure record. It
//! reads a text once, borrows every string without escapes, gives nested values as their
//! (checked) text, and gives up (`None`) on what it leaves to serde_json, valid or not (a `\u`
//! escape, a key with an escape, a control character): the caller then reads that text with serde_json,
//! whose answer is the reference (`tests` compare the two on generated lines). serde_json with
//! a borrowed struct spends most of a line's time on what this skips: a visitor per member,
//! an allocation per string with escapes.

use std::borrow::Cow;

/// A member's value, its text as in the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// A string's content between its quotes, escapes still in it, and whether it has any.
    Str(&'a str, bool),
    /// A number's text, checked against JSON's grammar.
    Num(&'a str),
    Bool(bool),
    Null,
    /// A nested object's text, checked.
    Object(&'a str),
    /// A nested array's text, checked.
    Array(&'a str),
}

impl<'a> Scalar<'a> {
    /// The string's value: borrowed when it has no escape, `None` for other values (and for a
    /// `\u` escape, which [`members`] never lets through).
    pub fn text(&self) -> Option<Cow<'a, str>> {
        match *self {
            Scalar::Str(s, false) => Some(Cow::Borrowed(s)),
            Scalar::Str(s, true) => unescape(s).map(Cow::Owned),
            _ => None,
        }
    }

    /// The string's value written into `out` (cleared first), so that a value with escapes
    /// costs no allocation once `out` has grown; `None` for other values.
    pub fn text_into<'o>(&self, out: &'o mut String) -> Option<&'o str>
    where
        'a: 'o,
    {
        out.clear();
        match *self {
            Scalar::Str(s, false) => out.push_str(s),
            Scalar::Str(s, true) => unescape_into(s, out)?,
            _ => return None,
        }
        Some(out.as_str())
    }
}

/// Calls `each(key, value)` for each member of the JSON object `text` (surrounding
/// whitespace allowed), in order; `None` when `text` is not an object or is one this reader
/// leaves to serde_json, or when `each` returns `None`.
pub fn members<'a>(
    text: &'a str,
    each: impl FnMut(&'a str, Scalar<'a>) -> Option<()>,
) -> Option<()> {
    members_with(text, |_, _| None, each)
}

/// [`members`], where `in_place(key, rest)` may read a top-level member's string value itself
/// (`rest` starts at its opening quote) and say how long it is, quotes included: that value
/// is then not read again here, and `each` gets it as a string with escapes. Whoever reads
/// the string must check what this reader would have (no bare quote, no control character,
/// escapes only where allowed).
pub fn members_with<'a>(
    text: &'a str,
    mut in_place: impl FnMut(&'a str, &'a str) -> Option<usize>,
    mut each: impl FnMut(&'a str, Scalar<'a>) -> Option<()>,
) -> Option<()> {
    let b = text.as_bytes();
    // A control character is refused inside a string and allowed (tab, CR, LF) between
    // tokens; Envoy writes none, so a text with any is left to serde_json, and strings are
    // then searched for their end a word at a time. A minimum has no early exit: it vectorizes.
    if b.iter().fold(u8::MAX, |m, &c| m.min(c)) < 0x20 {
        return None;
    }
    let start = skip_ws(b, 0);
    let end = object(text, start, 0, &mut in_place, &mut each)?;
    (skip_ws(b, end) == b.len()).then_some(())
}

/// Calls `each(value)` for each element of the JSON array `text`, as [`members`] does.
pub fn elements<'a>(text: &'a str, mut each: impl FnMut(Scalar<'a>) -> Option<()>) -> Option<()> {
    let b = text.as_bytes();
    if b.iter().fold(u8::MAX, |m, &c| m.min(c)) < 0x20 {
        return None;
    }
    let start = skip_ws(b, 0);
    let end = array(text, start, 0, &mut each)?;
    (skip_ws(b, end) == b.len()).then_some(())
}

/// Deeper than this is left to serde_json, which refuses past 128.
const MAX_DEPTH: usize = 64;

/// The object at `i` (its members given to `each`) and the index after it.
fn object<'a>(
    text: &'a str,
    mut i: usize,
    depth: usize,
    in_place: &mut impl FnMut(&'a str, &'a str) -> Option<usize>,
    each: &mut impl FnMut(&'a str, Scalar<'a>) -> Option<()>,
) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'{') || depth > MAX_DEPTH {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (end, escaped) = string_end(b, i + 1)?;
        if escaped {
            return None;
        }
        let key = text.get(i + 1..end)?;
        i = skip_ws(b, end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let rest = text.get(i..)?;
        let (value, after) = match in_place(key, rest) {
            Some(len) => (Scalar::Str(rest.get(1..len - 1)?, true), i + len),
            None => value(text, i, depth)?,
        };
        each(key, value)?;
        i = skip_ws(b, after);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The array at `i` (its elements given to `each`) and the index after it.
fn array<'a>(
    text: &'a str,
    mut i: usize,
    depth: usize,
    each: &mut impl FnMut(Scalar<'a>) -> Option<()>,
) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'[') || depth > MAX_DEPTH {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    loop {
        let (value, after) = value(text, i, depth)?;
        each(value)?;
        i = skip_ws(b, after);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Some(i + 1),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The value starting at `i` and the index after it; a nested object or array is checked
/// and given as its text.
fn value(text: &str, i: usize, depth: usize) -> Option<(Scalar<'_>, usize)> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => {
            let (end, escaped) = string_end(b, i + 1)?;
            Some((Scalar::Str(text.get(i + 1..end)?, escaped), end + 1))
        }
        b'-' | b'0'..=b'9' => {
            let end = number_end(b, i)?;
            Some((Scalar::Num(text.get(i..end)?), end))
        }
        b'{' => {
            let end = object(text, i, depth + 1, &mut |_, _| None, &mut |_, _| Some(()))?;
            Some((Scalar::Object(text.get(i..end)?), end))
        }
        b'[' => {
            let end = array(text, i, depth + 1, &mut |_| Some(()))?;
            Some((Scalar::Array(text.get(i..end)?), end))
        }
        b't' if b[i..].starts_with(b"true") => Some((Scalar::Bool(true), i + 4)),
        b'f' if b[i..].starts_with(b"false") => Some((Scalar::Bool(false), i + 5)),
        b'n' if b[i..].starts_with(b"null") => Some((Scalar::Null, i + 4)),
        _ => None,
    }
}

/// The index of the quote that ends the string whose content starts at `i`, and whether the
/// content has escapes. `\u` escapes are left to serde_json (surrogate pairs); control
/// characters, which a JSON string cannot hold, were refused before ([`members`]).
fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i = quote_or_backslash(b, i)?;
        if b[i] == b'"' {
            return Some((i, escaped));
        }
        if !matches!(
            b.get(i + 1)?,
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't'
        ) {
            return None;
        }
        escaped = true;
        i += 2;
    }
}

/// The first index at or after `i` that holds `"` or `\\`. Eight bytes at a time (SWAR): a
/// string's content has an escape every few bytes in the values that nest JSON (units,
/// exposure), too often for a SIMD search's setup to pay.
fn quote_or_backslash(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    // A zero byte of `v` sets its high bit here; a flag above the lowest one can be false,
    // so only the lowest is used.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let found = zero(x ^ QUOTES) | zero(x ^ BACKSLASHES);
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while *b.get(i)? != b'"' && b[i] != b'\\' {
        i += 1;
    }
    Some(i)
}

/// The index after the number starting at `i` (JSON's grammar: `-? (0 | [1-9][0-9]*)
/// (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// A number's value as serde_json reads it, where the two agree exactly: integers of at most
/// 15 digits (exact in an f64). `None` for the rest, which go to serde_json.
pub fn integer(text: &str) -> Option<f64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = digits
        .bytes()
        .fold(0i64, |n, c| n * 10 + i64::from(c - b'0'));
    Some(if negative { -(n as f64) } else { n as f64 })
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    unescape_into(s, &mut out)?;
    Some(out)
}

/// Appends the content of a JSON string (between its quotes) without its escapes. A byte
/// loop: the escaped values are short and dense with escapes.
fn unescape_into(s: &str, out: &mut String) -> Option<()> {
    let b = s.as_bytes();
    let (mut from, mut i) = (0, 0);
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(s.get(from..i)?);
        out.push(match b.get(i + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => return None,
        });
        i += 2;
        from = i;
    }
    out.push_str(s.get(from..)?);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Option<Vec<(String, Scalar<'_>)>> {
        let mut out = Vec::new();
        members(text, |k, v| {
            out.push((k.to_string(), v));
            Some(())
        })?;
        Some(out)
    }

    #[test]
    fn a_flat_object_gives_its_members_in_order_with_strings_borrowed() {
        let got =
            all(r#" {"a": "x", "b":12, "c" : -0.5e3, "d":true,"e":false, "f":null,"g":"q\"t"} "#)
                .unwrap();
        assert_eq!(
            got,
            vec![
                ("a".into(), Scalar::Str("x", false)),
                ("b".into(), Scalar::Num("12")),
                ("c".into(), Scalar::Num("-0.5e3")),
                ("d".into(), Scalar::Bool(true)),
                ("e".into(), Scalar::Bool(false)),
                ("f".into(), Scalar::Null),
                ("g".into(), Scalar::Str(r#"q\"t"#, true)),
            ]
        );
        assert_eq!(got[6].1.text().unwrap(), "q\"t");
        assert_eq!(all("{}").unwrap(), vec![]);
    }

    #[test]
    fn what_it_leaves_to_serde_json_is_none() {
        for text in [
            r#"{"a":{"b":1,}}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a\"":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":"x"} x"#,
            "{\"a\":\"x\ty\"}",
            r#"{"a":"x\q"}"#,
            r#"{"a":tru}"#,
            r#"{"a" 1}"#,
            r#"["a"]"#,
            r#"{"a":"x""#,
            "",
        ] {
            assert_eq!(all(text), None, "{text}");
        }
    }

    #[test]
    fn nested_values_are_checked_and_given_as_their_text() {
        let got = all(r#"{"u": {"a": "b"}, "l": [1, {"x": [true]}, "s"], "e": []}"#).unwrap();
        assert_eq!(got[0].1, Scalar::Object(r#"{"a": "b"}"#));
        assert_eq!(got[1].1, Scalar::Array(r#"[1, {"x": [true]}, "s"]"#));
        assert_eq!(got[2].1, Scalar::Array("[]"));
        let mut items = Vec::new();
        elements(r#" [1, {"x": [true]}, "s"] "#, |v| {
            items.push(v);
            Some(())
        })
        .unwrap();
        assert_eq!(
            items,
            vec![
                Scalar::Num("1"),
                Scalar::Object(r#"{"x": [true]}"#),
                Scalar::Str("s", false)
            ]
        );
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(elements(&deep, |_| Some(())), None);
    }

    #[test]
    fn integers_are_read_exactly_and_the_rest_left_to_serde_json() {
        assert_eq!(integer("200"), Some(200.0));
        assert_eq!(integer("-7"), Some(-7.0));
        assert_eq!(integer("999999999999999"), Some(999_999_999_999_999.0));
        assert_eq!(integer("9999999999999999"), None);
        assert_eq!(integer("1.5"), None);
        assert_eq!(integer("1e3"), None);
        assert_eq!(integer("-"), None);
    }

    #[test]
    fn escapes_are_undone_into_a_reused_buffer() {
        let mut out = String::from("old");
        let s = Scalar::Str(r#"{\"user\":\"u\\1\/\n\"}"#, true);
        assert_eq!(s.text_into(&mut out), Some("{\"user\":\"u\\1/\n\"}"));
        assert_eq!(Scalar::Num("1").text_into(&mut out), None);
    }
}
