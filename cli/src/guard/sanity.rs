//! Counters that must agree. A request's assignment is counted before its response, and both
//! are published together, so a variant's responses never exceed its assignments by more than
//! a scrape that reads one publication half-done can show. A source where they do holds
//! something else (mixed sources, hand-edited numbers) and is not judged.

use std::collections::BTreeMap;

use abmesh::metrics::{ASSIGNMENTS, REPLICATE_5XX, REPLICATE_RESPONSES, RESPONSES};

use super::Sample;

/// How far a later counter may lead the one it follows: one publication's traffic, which guard
/// cannot know from one scrape, taken as 10% or 1,000, whichever is more.
pub fn lag_allowance(base: f64) -> f64 {
    (0.1 * base).max(1000.0)
}

/// Totals of one metric by the given labels, with the first line each came from.
fn totals<'s>(
    samples: &'s [Sample],
    metric: &str,
    by: &[&str],
) -> BTreeMap<Vec<&'s str>, (f64, usize)> {
    let mut out: BTreeMap<Vec<&str>, (f64, usize)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == metric) {
        let key: Vec<&str> = by
            .iter()
            .map(|l| s.labels.get(*l).map_or("", String::as_str))
            .collect();
        let t = out.entry(key).or_insert((0.0, s.line));
        t.0 += s.value;
    }
    out
}

fn at(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" (line {line})")
    }
}

/// The first pair of counters that disagree, described.
pub fn consistent(samples: &[Sample]) -> Result<(), String> {
    let by = ["experiment", "variant"];
    let assigned = totals(samples, ASSIGNMENTS, &by);
    for (key, (responses, line)) in totals(samples, RESPONSES, &by) {
        let (assignments, a_line) = assigned.get(&key).copied().unwrap_or((0.0, 0));
        if responses > assignments + lag_allowance(assignments) {
            return Err(format!(
                "{RESPONSES}{} of experiment \"{}\" variant \"{}\" add up to {responses}, more than \
                 its {assignments} {ASSIGNMENTS}{} allow (a publication can lag by {}): the source \
                 does not hold one proxy's or one Prometheus' abmesh counters",
                at(line),
                key[0],
                key[1],
                at(a_line),
                lag_allowance(assignments)
            ));
        }
    }
    let by = ["experiment", "variant", "replicate"];
    let responses = totals(samples, REPLICATE_RESPONSES, &by);
    for (key, (errors, line)) in totals(samples, REPLICATE_5XX, &by) {
        let (total, r_line) = responses.get(&key).copied().unwrap_or((0.0, 0));
        if errors > total + lag_allowance(total) {
            return Err(format!(
                "{REPLICATE_5XX}{} of experiment \"{}\" variant \"{}\" replicate {} is {errors}, \
                 more than its {total} {REPLICATE_RESPONSES}{} allow (a publication can lag by \
                 {}): the source does not hold one proxy's or one Prometheus' abmesh counters",
                at(line),
                key[0],
                key[1],
                key[2],
                at(r_line),
                lag_allowance(total)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::parse_prometheus;

    #[test]
    fn responses_may_lead_assignments_by_one_publication_and_no_more() {
        let text = |responses: u32| {
            format!(
                "abmesh_assignments_total{{experiment=\"a\",variant=\"b\"}} 20000\n\
                 abmesh_responses_total{{experiment=\"a\",variant=\"b\",class=\"2xx\"}} 20000\n\
                 abmesh_responses_total{{experiment=\"a\",variant=\"b\",class=\"5xx\"}} {responses}\n"
            )
        };
        assert_eq!(consistent(&parse_prometheus(&text(2000)).unwrap()), Ok(()));
        assert_eq!(
            consistent(&parse_prometheus(&text(2001)).unwrap()).unwrap_err(),
            "abmesh_responses_total (line 2) of experiment \"a\" variant \"b\" add up to 22001, \
             more than its 20000 abmesh_assignments_total (line 1) allow (a publication can lag by \
             2000): the source does not hold one proxy's or one Prometheus' abmesh counters"
        );
    }

    #[test]
    fn a_replicate_cannot_have_more_5xx_than_responses() {
        let text = "abmesh_replicate_responses_total{experiment=\"a\",variant=\"b\",replicate=\"3\"} 10\n\
                    abmesh_replicate_5xx_total{experiment=\"a\",variant=\"b\",replicate=\"3\"} 1011\n";
        assert_eq!(
            consistent(&parse_prometheus(text).unwrap()).unwrap_err(),
            "abmesh_replicate_5xx_total (line 2) of experiment \"a\" variant \"b\" replicate 3 is \
             1011, more than its 10 abmesh_replicate_responses_total (line 1) allow (a publication \
             can lag by 1000): the source does not hold one proxy's or one Prometheus' abmesh \
             counters"
        );
    }
}
