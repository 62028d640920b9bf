//! The Prometheus text exposition format, as Envoy's `/stats/prometheus` and a Prometheus
//! server's federation endpoint write it.

use std::collections::BTreeMap;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Its line in the text it was read from (1-based; 0 when it came from a query API).
    pub line: usize,
}

/// Parses the Prometheus text exposition format. Comments and other metrics' lines that are
/// malformed are skipped; an `abmesh_` line guard cannot trust is an error naming the line:
/// malformed (a truncated download), a value that is not a finite number of at least 0 (no
/// counter can hold one), or a label given twice.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let ours = line.starts_with("abmesh_");
        match parse_line(line) {
            Ok(mut s) => {
                if ours && !(s.value.is_finite() && s.value >= 0.0) {
                    return Err(format!(
                        "line {}: {}: the value {} is not a count (a finite number of at least 0)",
                        i + 1,
                        shown(line),
                        s.value
                    ));
                }
                s.line = i + 1;
                out.push(s);
            }
            Err(why) if ours => return Err(format!("line {}: {}: {why}", i + 1, shown(line))),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// A line as an error quotes it: at most 200 characters.
fn shown(line: &str) -> String {
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let malformed = || "not a Prometheus sample (name{labels} value)".to_string();
    parse_sample(line).ok_or_else(malformed)?
}

/// `None`: malformed; `Some(Err)`: well-formed but with a label given twice.
fn parse_sample(line: &str) -> Option<Result<Sample, String>> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some(Ok(Sample {
                name: n.into(),
                labels: BTreeMap::new(),
                value: v.trim().split(' ').next()?.parse().ok()?,
                line: 0,
            }));
        }
    };
    let mut labels = BTreeMap::new();
    let mut twice = None;
    let mut chars = rest.char_indices().peekable();
    let end;
    loop {
        while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
            chars.next();
        }
        if chars.peek().is_some_and(|(_, c)| *c == '}') {
            end = chars.next().map(|(i, _)| i);
            break;
        }
        let mut key = String::new();
        for (_, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        for (_, c) in chars.by_ref() {
            match (escaped, c) {
                (true, 'n') => (value.push('\n'), escaped = false).1,
                (true, c) => (value.push(c), escaped = false).1,
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => value.push(c),
            }
        }
        let key = key.trim().to_string();
        if labels.contains_key(&key) && twice.is_none() {
            twice = Some(key.clone());
        }
        labels.insert(key, value);
        chars.peek()?;
    }
    let value = rest
        .get(end? + 1..)?
        .trim()
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    if let Some(key) = twice {
        return Some(Err(format!(
            "the label \"{key}\" is given twice (which one counts is unknowable)"
        )));
    }
    Some(Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        line: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_prometheus_text() {
        let text = "# TYPE abmesh_assignments_total counter\n\
            abmesh_assignments_total{experiment=\"a\",variant=\"control\"} 12\n\
            abmesh_request_duration_milliseconds_bucket{experiment=\"a\",variant=\"x\",le=\"+Inf\"} 3\n\
            weird{k=\"v\\\"q\"} 1.5\n\
            plain_metric 7\n\
            broken{k=\"v\" 3\n";
        let s = parse_prometheus(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "abmesh_assignments_total");
        assert_eq!(s[0].labels["variant"], "control");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].labels["le"], "+Inf");
        assert_eq!(s[2].labels["k"], "v\"q");
        assert_eq!(s[3].value, 7.0);
        assert_eq!((s[0].line, s[3].line), (2, 5));
    }

    #[test]
    fn an_abmesh_line_guard_cannot_trust_is_an_error_naming_the_line() {
        let ok = "abmesh_assignments_total{experiment=\"a\",variant=\"b\"} 1\n";
        for (line, why) in [
            (
                "abmesh_assignments_total{experiment=\"a\",variant=\"b\"} NaN",
                "the value NaN is not a count (a finite number of at least 0)",
            ),
            (
                "abmesh_assignments_total{experiment=\"a\",variant=\"b\"} -3",
                "the value -3 is not a count (a finite number of at least 0)",
            ),
            (
                "abmesh_assignments_total{experiment=\"a\",variant=\"b\"} +Inf",
                "the value inf is not a count (a finite number of at least 0)",
            ),
            (
                "abmesh_assignments_total{experiment=\"a\",variant=\"b\",variant=\"c\"} 3",
                "the label \"variant\" is given twice (which one counts is unknowable)",
            ),
            (
                "abmesh_assignments_total{experiment=\"a\",vari",
                "not a Prometheus sample (name{labels} value)",
            ),
        ] {
            assert_eq!(
                parse_prometheus(&format!("{ok}{line}\n")).unwrap_err(),
                format!("line 2: {line}: {why}")
            );
        }
        // Other metrics' lines are not guard's to judge.
        assert_eq!(
            parse_prometheus("envoy_x{a=\"1\",a=\"2\"} NaN\nenvoy_y -1\n")
                .unwrap()
                .len(),
            1
        );
    }
}
