//! Where the mesh reads a peer's evaluation-context attribute: by default the header
//! `x-<peer>-<slug>` (`targetingKey` → `x-flagd-targeting-key`, `deviceId` →
//! `x-gb-device-id`), or what a mapping file says.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// `raw` lower-cased with a `-` where a lower-case letter or digit meets an upper-case one,
/// and every character other than `a-z`, `0-9`, `_`, `.` and `-` replaced by `-`:
/// `targetingKey` → `targeting-key`, `user.name` → `user.name`, `fractional-flag-A` →
/// `fractional-flag-a`.
pub fn slug(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 4);
    let mut previous_lower = false;
    for c in raw.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('-');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        let c = c.to_ascii_lowercase();
        out.push(
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c) {
                c
            } else {
                '-'
            },
        );
    }
    out
}

/// The sources of a peer's attributes.
#[derive(Debug, Clone)]
pub struct Sources {
    peer: &'static str,
    mapped: BTreeMap<String, Value>,
    /// Every attribute asked for, with its source, in order of first use.
    pub used: Vec<(String, Value)>,
}

impl Sources {
    /// Sources for `peer` (`flagd`, `gb`), overridden by `mapping`: a JSON object of attribute
    /// → `{"header": NAME}`, `{"cookie": NAME}` or `{"query": NAME}`.
    pub fn new(peer: &'static str, mapping: Option<&Value>) -> Result<Sources, Vec<String>> {
        let mut mapped = BTreeMap::new();
        let mut errors = Vec::new();
        if let Some(m) = mapping {
            let Some(m) = m.as_object() else {
                return Err(vec![
                    "mapping: must be an object of attribute → {\"header\"|\"cookie\"|\"query\": NAME}".into(),
                ]);
            };
            for (attribute, source) in m {
                let one = source.as_object().filter(|o| o.len() == 1).and_then(|o| {
                    let (kind, name) = o.iter().next()?;
                    let name = name.as_str().filter(|n| !n.is_empty())?;
                    ["header", "cookie", "query"]
                        .contains(&kind.as_str())
                        .then(|| {
                            let name = if kind == "header" {
                                name.to_ascii_lowercase()
                            } else {
                                name.to_string()
                            };
                            json!({ kind: name })
                        })
                });
                match one {
                    Some(s) => {
                        mapped.insert(attribute.clone(), s);
                    }
                    None => errors.push(format!(
                        "mapping.{attribute}: must be {{\"header\"|\"cookie\"|\"query\": NAME}}, found {source}"
                    )),
                }
            }
        }
        if errors.is_empty() {
            Ok(Sources {
                peer,
                mapped,
                used: Vec::new(),
            })
        } else {
            Err(errors)
        }
    }

    /// The source of `attribute` (`{"header": "x-flagd-user.name"}`), remembered as used.
    pub fn source(&mut self, attribute: &str) -> Value {
        let source =
            self.mapped.get(attribute).cloned().unwrap_or_else(
                || json!({"header": format!("x-{}-{}", self.peer, slug(attribute))}),
            );
        if !self.used.iter().any(|(a, _)| a == attribute) {
            self.used.push((attribute.to_string(), source.clone()));
        }
        source
    }

    /// `attribute: header NAME`, one line per attribute used.
    pub fn lines(&self) -> Vec<String> {
        self.used
            .iter()
            .map(|(a, s)| {
                let (kind, name) = s
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .map_or(("header", ""), |(k, v)| {
                        (k.as_str(), v.as_str().unwrap_or(""))
                    });
                format!("{a}: {kind} {name}")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_become_lower_case_header_names_split_at_camel_case() {
        for (raw, want) in [
            ("targetingKey", "targeting-key"),
            ("deviceId", "device-id"),
            ("user.name", "user.name"),
            (
                "fractional-flag-A-shared-seed",
                "fractional-flag-a-shared-seed",
            ),
            ("ID", "id"),
            ("v2Flag", "v2-flag"),
            ("é x", "--x"),
        ] {
            assert_eq!(slug(raw), want, "{raw}");
        }
    }

    #[test]
    fn a_mapping_file_overrides_the_default_header_and_bad_entries_are_named() {
        let mapping = json!({"targetingKey": {"header": "X-User-Id"}, "plan": {"cookie": "plan"}});
        let mut s = Sources::new("flagd", Some(&mapping)).unwrap();
        assert_eq!(s.source("targetingKey"), json!({"header": "x-user-id"}));
        assert_eq!(s.source("plan"), json!({"cookie": "plan"}));
        assert_eq!(s.source("tier"), json!({"header": "x-flagd-tier"}));
        assert_eq!(
            s.lines(),
            [
                "targetingKey: header x-user-id",
                "plan: cookie plan",
                "tier: header x-flagd-tier"
            ]
        );
        let bad = json!({"a": {"header": "x", "cookie": "y"}, "b": "x-b"});
        assert_eq!(
            Sources::new("gb", Some(&bad)).unwrap_err(),
            [
                "mapping.a: must be {\"header\"|\"cookie\"|\"query\": NAME}, found {\"cookie\":\"y\",\"header\":\"x\"}",
                "mapping.b: must be {\"header\"|\"cookie\"|\"query\": NAME}, found \"x-b\"",
            ]
        );
    }
}
