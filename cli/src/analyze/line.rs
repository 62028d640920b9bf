//! What `analyze` reads of an access-log line: its start, method, path, status, duration,
//! units and exposure record. [`read`] tries the flat-object reader ([`super::flat`]) and
//! leaves what it cannot read to serde_json ([`read_serde`]), whose answer is the reference:
//! both give the same [`Fields`] for every line the flat reader reads (a property test here
//! and the `access_log` fuzz target check it).

use std::borrow::Cow;

use serde::Deserialize;

use super::flat::{self, Scalar};
use super::input::{Number, Problem};
use super::record::{self, Pairs, Record};

/// A string value that may still hold its JSON escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Text<'a> {
    /// A JSON string's content as in the line, escapes and all.
    Json(&'a str, bool),
    /// The value itself.
    Value(Cow<'a, str>),
}

impl Text<'_> {
    /// Whether there is a value: not empty nor `-` (Envoy's empty filter state).
    pub fn is_present(&self) -> bool {
        let text = match self {
            Text::Json(s, _) => s,
            Text::Value(v) => v.as_ref(),
        };
        !text.is_empty() && text != "-"
    }

    /// The value, its escapes undone into `buf` when it has any; `None` when the value is
    /// empty or `-` (Envoy's empty filter state).
    pub fn get<'o>(&'o self, buf: &'o mut String) -> Option<&'o str> {
        let text = match self {
            Text::Json(s, false) | Text::Value(Cow::Borrowed(s)) => *s,
            Text::Json(s, true) => Scalar::Str(s, true).text_into(buf)?,
            Text::Value(Cow::Owned(s)) => s.as_str(),
        };
        (!text.is_empty() && text != "-").then_some(text)
    }
}

/// The fields of one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields<'a> {
    pub start_ms: i64,
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
    /// The status, 0 when the line has none.
    pub status: u16,
    /// The duration, 0 when the line has none.
    pub duration_ms: f64,
    pub units: Option<Text<'a>>,
    pub exposure: Option<Text<'a>>,
    /// The units and the exposure record, when they were read with the line (as the filter
    /// writes them: [`record::read_escaped_prefix`]); otherwise from `units` and `exposure`.
    pub unit_ids: Option<Pairs<'a>>,
    pub record: Option<Record<'a>>,
}

/// The fields of a line, or what is wrong with it. An `exposure` that is not a string is no
/// record: the line is read without it.
pub fn read(bytes: &[u8]) -> Result<Fields<'_>, Problem> {
    match read_flat(bytes) {
        Some(result) => result,
        None => read_serde(bytes, true).or_else(|_| read_serde(bytes, false)),
    }
}

/// The members `analyze` reads, by their bit in the set of members seen.
const TIME: u8 = 1;
const METHOD: u8 = 2;
const PATH: u8 = 4;
const CODE: u8 = 8;
const DURATION: u8 = 16;
const UNITS: u8 = 32;
const EXPOSURE: u8 = 64;

/// The flat reader's answer; `None` for a line it leaves to serde_json (not a flat object, a
/// member given twice, a value of a type serde_json would refuse or round).
pub fn read_flat<'a>(bytes: &'a [u8]) -> Option<Result<Fields<'a>, Problem>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut seen = 0u8;
    let (mut time, mut method, mut path) = (None, None, None);
    let (mut status, mut duration_ms, mut units, mut exposure) = (None, None, None, None);
    let (mut unit_ids, mut record) = (None, None);
    let in_place = |key: &str, rest: &'a str| match key {
        "exposure" => record::read_escaped_prefix(rest).map(|(r, len)| {
            record = Some(r);
            len
        }),
        "units" => record::units_escaped_prefix(rest).map(|(p, len)| {
            unit_ids = Some(p);
            len
        }),
        _ => None,
    };
    flat::members_with(text, in_place, |key, value| {
        let bit = match key {
            "time" => TIME,
            "method" => METHOD,
            "path" => PATH,
            "code" => CODE,
            "duration_ms" => DURATION,
            "units" => UNITS,
            "exposure" => EXPOSURE,
            _ => return Some(()),
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match bit {
            TIME => time = string(&value)?.map(|s| s.text()).map(|t| t.ok_or(())),
            METHOD => method = string(&value)?,
            PATH => path = string(&value)?,
            CODE => status = number(&value)?,
            DURATION => duration_ms = number(&value)?,
            UNITS => units = string(&value)?.map(json_text),
            _ => exposure = string(&value)?.map(json_text),
        }
        Some(())
    })?;
    let (Some(time), Some(method), Some(path)) = (time, method, path) else {
        return Some(Err(Problem::OtherFormat));
    };
    let method = method.text()?;
    let path = path.text()?;
    let time = time.ok()?;
    let Some(start_ms) = abmesh::time::parse_rfc3339(&time) else {
        return Some(Err(Problem::BadTime));
    };
    Some(Ok(Fields {
        start_ms,
        method,
        path,
        status: status.flatten().unwrap_or(0.0) as u16,
        duration_ms: duration_ms.flatten().unwrap_or(0.0),
        units,
        exposure,
        unit_ids,
        record,
    }))
}

/// A string member (`Some(None)` for null); `None` for other types, which serde_json refuses.
fn string<'a>(value: &Scalar<'a>) -> Option<Option<Scalar<'a>>> {
    match value {
        Scalar::Str(..) => Some(Some(value.clone())),
        Scalar::Null => Some(None),
        _ => None,
    }
}

fn json_text(s: Scalar<'_>) -> Text<'_> {
    match s {
        Scalar::Str(s, escaped) => Text::Json(s, escaped),
        // `string` gives strings only.
        _ => Text::Json("", false),
    }
}

/// A number member as [`Number`] reads it (`Some(None)` for null or a string that holds no
/// number); `None` where serde_json's answer could differ (non-integers, booleans).
fn number(value: &Scalar<'_>) -> Option<Option<Option<f64>>> {
    match value {
        Scalar::Num(n) => Some(Some(Some(flat::integer(n)?))),
        Scalar::Str(..) => Some(Some(value.text()?.trim().parse().ok())),
        Scalar::Null => Some(None),
        Scalar::Bool(_) | Scalar::Object(_) | Scalar::Array(_) => None,
    }
}

/// One access-log line, as serde_json reads it.
#[derive(Debug, Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<Number>,
    #[serde(default)]
    duration_ms: Option<Number>,
    #[serde(borrow, default)]
    units: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    exposure: Option<Cow<'a, str>>,
}

/// A line without its exposure record, which is then not read at all (nor refused).
#[derive(Debug, Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<Number>,
    #[serde(default)]
    duration_ms: Option<Number>,
    #[serde(borrow, default)]
    units: Option<Cow<'a, str>>,
}

/// The fields of a line read by serde_json: the reference [`read_flat`] is held to.
pub fn read_serde(bytes: &[u8], exposure: bool) -> Result<Fields<'_>, Problem> {
    let not_json = || {
        if bytes.trim_ascii_start().starts_with(b"{") {
            Problem::NotJson
        } else {
            Problem::OtherFormat
        }
    };
    let line = if exposure {
        serde_json::from_slice::<Line>(bytes).map_err(|_| not_json())?
    } else {
        let r: Request = serde_json::from_slice(bytes).map_err(|_| not_json())?;
        Line {
            time: r.time,
            method: r.method,
            path: r.path,
            code: r.code,
            duration_ms: r.duration_ms,
            units: r.units,
            exposure: None,
        }
    };
    let (Some(time), Some(method), Some(path)) = (line.time, line.method, line.path) else {
        return Err(Problem::OtherFormat);
    };
    let start_ms = abmesh::time::parse_rfc3339(&time).ok_or(Problem::BadTime)?;
    let value = |n: Option<Number>| n.and_then(|n| n.value()).unwrap_or(0.0);
    Ok(Fields {
        start_ms,
        method,
        path,
        status: value(line.code) as u16,
        duration_ms: value(line.duration_ms),
        units: line.units.map(Text::Value),
        exposure: line.exposure.map(Text::Value),
        unit_ids: None,
        record: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHIPPED: &str = r#"{"time":"2026-11-19T05:11:43.532Z","request_id":"r","method":"GET","path":"/p","code":200,"upstream":"checkout_control","duration_ms":41,"assignments":"x=control","exposure":"{\"ts_ms\":1795065103532,\"units\":{\"user\":\"u0\"}}","units":"{\"user\":\"u0\"}"}"#;

    fn same(f: &Fields, g: &Fields) -> bool {
        let (mut a, mut b) = (String::new(), String::new());
        let text = |t: &Option<Text>, buf: &mut String| {
            t.as_ref().and_then(|t| t.get(buf).map(String::from))
        };
        f.start_ms == g.start_ms
            && f.method == g.method
            && f.path == g.path
            && f.status == g.status
            && f.duration_ms.to_bits() == g.duration_ms.to_bits()
            && text(&f.units, &mut a) == text(&g.units, &mut b)
            && text(&f.exposure, &mut a) == text(&g.exposure, &mut b)
    }

    #[test]
    fn the_shipped_format_is_read_by_the_flat_reader_as_serde_json_reads_it() {
        let flat = read_flat(SHIPPED.as_bytes()).unwrap().unwrap();
        let serde = read_serde(SHIPPED.as_bytes(), true).unwrap();
        assert!(same(&flat, &serde), "{flat:?} {serde:?}");
        let mut buf = String::new();
        assert_eq!(
            flat.units.as_ref().unwrap().get(&mut buf),
            Some(r#"{"user":"u0"}"#)
        );
        assert_eq!((flat.status, flat.duration_ms), (200, 41.0));
    }

    #[test]
    fn a_member_given_twice_or_of_a_type_serde_json_refuses_is_left_to_it() {
        for line in [
            r#"{"time":"2026-11-19T05:11:43Z","time":"2026-11-19T05:11:43Z","method":"GET","path":"/"}"#,
            r#"{"time":"2026-11-19T05:11:43Z","method":true,"path":"/"}"#,
            r#"{"time":"2026-11-19T05:11:43Z","method":"GET","path":"/","code":2.5}"#,
            r#"{"time":"2026-11-19T05:11:43Z","method":"GET","path":"/","units":{"a":"b"}}"#,
        ] {
            assert_eq!(read_flat(line.as_bytes()), None, "{line}");
        }
    }

    #[test]
    fn missing_fields_and_bad_times_are_the_same_problems_either_way() {
        for (line, problem) in [
            (
                r#"{"time":"2026-11-19T05:11:43Z","method":"GET"}"#,
                Problem::OtherFormat,
            ),
            (
                r#"{"time":"yesterday","method":"GET","path":"/"}"#,
                Problem::BadTime,
            ),
            (
                r#"{"time":null,"method":"GET","path":"/"}"#,
                Problem::OtherFormat,
            ),
        ] {
            assert_eq!(read_flat(line.as_bytes()), Some(Err(problem)), "{line}");
            assert_eq!(
                read_serde(line.as_bytes(), true).unwrap_err(),
                problem,
                "{line}"
            );
        }
    }

    /// Lines near the shipped format: members from a small vocabulary with values of every
    /// type, escapes, whitespace, duplicates and damage.
    fn line() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("time"),
            Just("method"),
            Just("path"),
            Just("code"),
            Just("duration_ms"),
            Just("units"),
            Just("exposure"),
            Just("other"),
        ];
        let value = prop_oneof![
            Just("\"2026-11-19T05:11:43.532Z\"".to_string()),
            Just("\"2026-02-30T05:11:43Z\"".to_string()),
            Just("\"GET\"".to_string()),
            Just("\"/a\\/b\\\"c\"".to_string()),
            Just("\"{\\\"user\\\":\\\"u1\\\"}\"".to_string()),
            Just("\"-\"".to_string()),
            Just("\"\\u0041\"".to_string()),
            Just("\" 503 \"".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[1,2]".to_string()),
            Just("{\"a\":\"b\"}".to_string()),
            (-1_000_000_000_000_000_000i64..1_000_000_000_000_000_000).prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|x| format!("{x}")),
            Just("1e2".to_string()),
            Just("-0".to_string()),
            Just("01".to_string()),
            "[ -~]{0,6}".prop_map(|s| format!("\"{s}\"")),
        ];
        let member = (key, value, "[ \t]{0,1}").prop_map(|(k, v, w)| format!("\"{k}\"{w}:{w}{v}"));
        (
            proptest::collection::vec(member, 0..9),
            "[ ]{0,1}",
            prop_oneof![Just(""), Just(","), Just("}"), Just("x")],
            0usize..400,
        )
            .prop_map(|(members, w, tail, cut)| {
                let mut line = format!("{w}{{{}}}{w}", members.join(","));
                if tail != "," {
                    line.push_str(tail);
                }
                if cut < line.len() && line.is_char_boundary(cut) && cut % 7 == 0 {
                    line.truncate(cut);
                }
                line
            })
    }

    proptest! {
        #[test]
        fn the_flat_reader_agrees_with_serde_json_on_every_line_it_reads(line in line()) {
            let serde = read_serde(line.as_bytes(), true).or_else(|_| read_serde(line.as_bytes(), false));
            match read_flat(line.as_bytes()) {
                None => {}
                Some(Err(p)) => prop_assert_eq!(serde.clone().unwrap_err(), p, "{}", line),
                Some(Ok(flat)) => {
                    let serde = serde.clone().unwrap();
                    prop_assert!(same(&flat, &serde), "{} {:?} {:?}", line, flat, serde);
                }
            }
            prop_assert_eq!(read(line.as_bytes()).map(|f| f.start_ms), serde.map(|f| f.start_ms));
        }
    }
}
