//! The Prometheus text exposition format, as Envoy's `/stats/prometheus` and a Prometheus
//! server's federation endpoint write it.

use std::collections::BTreeMap;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (comments and malformed lines are skipped).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some(Sample {
                name: n.into(),
                labels: BTreeMap::new(),
                value: v.trim().parse().ok()?,
            });
        }
    };
    let mut labels = BTreeMap::new();
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
        labels.insert(key.trim().to_string(), value);
        chars.peek()?;
    }
    let value = rest
        .get(end? + 1..)?
        .trim()
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
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
        let s = parse_prometheus(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "abmesh_assignments_total");
        assert_eq!(s[0].labels["variant"], "control");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].labels["le"], "+Inf");
        assert_eq!(s[2].labels["k"], "v\"q");
        assert_eq!(s[3].value, 7.0);
    }
}
