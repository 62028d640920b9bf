//! An abmesh `when` built one attribute at a time: each condition goes under the attribute's
//! source (`headers`, `cookies` or `query`); two conditions on one source cannot be merged
//! exactly in general, so the second is refused.

use serde_json::{Map, Value};

use super::Sources;

/// One condition on one value, as `when` writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    In(Vec<String>),
    NotIn(Vec<String>),
    Present(bool),
    Prefix(String),
    Suffix(String),
}

impl Cond {
    /// The condition that holds exactly when this one does not, if `when` has it. An absent
    /// value is in no list, so `in` and `not_in` are each other's negation.
    pub fn negated(&self) -> Option<Cond> {
        match self {
            Cond::In(l) => Some(Cond::NotIn(l.clone())),
            Cond::NotIn(l) => Some(Cond::In(l.clone())),
            Cond::Present(b) => Some(Cond::Present(!b)),
            Cond::Prefix(_) | Cond::Suffix(_) => None,
        }
    }

    fn json(&self) -> Value {
        let strings = |l: &[String]| Value::from(l.to_vec());
        let (kind, v) = match self {
            Cond::In(l) => ("in", strings(l)),
            Cond::NotIn(l) => ("not_in", strings(l)),
            Cond::Present(b) => ("present", Value::from(*b)),
            Cond::Prefix(p) => ("prefix", Value::from(p.as_str())),
            Cond::Suffix(s) => ("suffix", Value::from(s.as_str())),
        };
        let mut o = Map::new();
        o.insert(kind.into(), v);
        Value::Object(o)
    }
}

/// A `when` under construction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct When {
    /// (`headers`|`cookies`|`query`, name, attribute, condition), in order added.
    conditions: Vec<(String, String, String, Cond)>,
    /// `any`: alternatives, one of which must hold (one level, as the configuration allows).
    any: Vec<When>,
}

impl When {
    /// Adds `cond` on `attribute`; refused when the attribute's source already has one.
    pub fn add(
        &mut self,
        sources: &mut Sources,
        attribute: &str,
        cond: Cond,
    ) -> Result<(), String> {
        let source = sources.source(attribute);
        let (kind, name) = source
            .as_object()
            .and_then(|o| o.iter().next())
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .unwrap_or_default();
        let section = match kind.as_str() {
            "cookie" => "cookies",
            "query" => "query",
            _ => "headers",
        };
        if let Some((_, _, other, existing)) = self
            .conditions
            .iter()
            .find(|(s, n, _, _)| s == section && *n == name)
        {
            if *existing == cond {
                return Ok(());
            }
            return Err(format!(
                "two conditions on {kind} {name} ({other} and {attribute}): `when` takes one per value"
            ));
        }
        self.conditions
            .push((section.to_string(), name, attribute.to_string(), cond));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.any.is_empty()
    }

    /// Makes `alternatives` this `when`'s `any`; refused when it has one already, or when an
    /// alternative has its own (`when` nests one level).
    pub fn set_any(&mut self, alternatives: Vec<When>) -> Result<(), String> {
        if !self.any.is_empty() {
            return Err("two alternatives (`or`) in one condition: `when` has one `any`".into());
        }
        if alternatives.iter().any(|a| !a.any.is_empty()) {
            return Err("an `or` inside an `or`: `when`'s `any` nests one level".into());
        }
        self.any = alternatives;
        Ok(())
    }

    /// The negation of a `when`, if `when` has it: one condition's negation, or for several
    /// the `any` of their negations (De Morgan).
    pub fn negated(&self) -> Option<When> {
        if !self.any.is_empty() {
            return None;
        }
        let negate = |(s, n, a, c): &(String, String, String, Cond)| {
            Some((s.clone(), n.clone(), a.clone(), c.negated()?))
        };
        match self.conditions.as_slice() {
            [] => None,
            [one] => Some(When {
                conditions: vec![negate(one)?],
                any: Vec::new(),
            }),
            several => Some(When {
                conditions: Vec::new(),
                any: several
                    .iter()
                    .map(|c| {
                        Some(When {
                            conditions: vec![negate(c)?],
                            any: Vec::new(),
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            }),
        }
    }

    /// `{"headers": {...}, "cookies": {...}, "query": {...}, "any": [...]}` with the sections
    /// used.
    pub fn json(&self) -> Value {
        let mut out = Map::new();
        if !self.any.is_empty() {
            out.insert(
                "any".into(),
                Value::Array(self.any.iter().map(When::json).collect()),
            );
        }
        for (section, name, _, cond) in &self.conditions {
            let entry = out
                .entry(section.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(o) = entry.as_object_mut() {
                o.insert(name.clone(), cond.json());
            }
        }
        Value::Object(out)
    }
}
