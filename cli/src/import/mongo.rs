//! GrowthBook conditions (its MongoDB-like language on attributes) as `when`, where `when`
//! says exactly the same thing of a request whose attributes are its headers: implicit
//! equality with a string, `$eq`, `$ne`, `$in`, `$nin` (strings), `$exists`, `$inGroup` /
//! `$notInGroup` (saved groups of strings, from the payload), `$and` and `$or` (`when`'s
//! `any`, one level). GrowthBook treats a
//! missing attribute as `undefined`: equal to no string, in no list; `when` treats an absent
//! header the same way.

use serde_json::{Map, Value};

use super::when::{Cond, When};
use super::Sources;

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Adds `cond` to `when`, or says why `when` cannot express it; `groups` are the payload's
/// `savedGroups`.
pub fn condition(
    cond: &Value,
    when: &mut When,
    sources: &mut Sources,
    groups: &Map<String, Value>,
) -> Result<(), String> {
    let Some(fields) = cond.as_object() else {
        return Err(format!("{cond}: not a condition object"));
    };
    for (key, value) in fields {
        if key == "$and" {
            let Some(parts) = value.as_array() else {
                return Err(format!("$and: {value} is not a list"));
            };
            for p in parts {
                condition(p, when, sources, groups)?;
            }
            continue;
        }
        if key == "$or" {
            let Some(parts) = value.as_array() else {
                return Err(format!("$or: {value} is not a list"));
            };
            let mut alternatives = Vec::new();
            for p in parts {
                let mut alt = When::default();
                condition(p, &mut alt, sources, groups)?;
                alternatives.push(alt);
            }
            when.set_any(alternatives)?;
            continue;
        }
        if key.starts_with('$') {
            return Err(format!("`{key}` is not expressible in `when`"));
        }
        let c = attribute_condition(key, value, groups)?;
        when.add(sources, key, c)?;
    }
    Ok(())
}

fn attribute_condition(
    attribute: &str,
    value: &Value,
    groups: &Map<String, Value>,
) -> Result<Cond, String> {
    let not_string = |v: &Value| {
        format!(
            "{attribute}: compares with {v}, not a string: a header value is a string, so the comparison would not be exact"
        )
    };
    let ops = match value {
        Value::String(s) => return Ok(Cond::In(vec![s.clone()])),
        Value::Object(o) if !o.is_empty() && o.keys().all(|k| k.starts_with('$')) => o,
        Value::Object(_) => return Err(format!("{attribute}: equality with an object")),
        other => return Err(not_string(other)),
    };
    if ops.len() > 1 {
        return Err(format!(
            "{attribute}: {} operators on one attribute: `when` takes one per value",
            ops.len()
        ));
    }
    let Some((op, arg)) = ops.iter().next() else {
        return Err(format!("{attribute}: no operator"));
    };
    let group = |id: &Value| {
        let list = id.as_str().and_then(|id| groups.get(id));
        match list {
            Some(l) => strings(l).ok_or_else(|| {
                format!("{attribute}: saved group {id} holds values that are not strings")
            }),
            None => Err(format!(
                "{attribute}: saved group {id} is not in the payload's savedGroups"
            )),
        }
    };
    match op.as_str() {
        "$eq" => arg
            .as_str()
            .map(|s| Cond::In(vec![s.to_string()]))
            .ok_or_else(|| not_string(arg)),
        "$ne" => arg
            .as_str()
            .map(|s| Cond::NotIn(vec![s.to_string()]))
            .ok_or_else(|| not_string(arg)),
        "$in" => strings(arg).map(Cond::In).ok_or_else(|| not_string(arg)),
        "$nin" => strings(arg).map(Cond::NotIn).ok_or_else(|| not_string(arg)),
        "$exists" => arg
            .as_bool()
            .map(Cond::Present)
            .ok_or_else(|| format!("{attribute}: $exists takes true or false, found {arg}")),
        "$inGroup" => group(arg).map(Cond::In),
        "$notInGroup" => group(arg).map(Cond::NotIn),
        other => Err(format!(
            "{attribute}: `{other}` is not expressible in `when`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(cond: Value) -> Result<Value, String> {
        let mut sources = Sources::new("gb", None).map_err(|e| e.join("; "))?;
        let mut when = When::default();
        let groups = json!({"vip": ["4", "5"], "odd": [1, 3]});
        condition(
            &cond,
            &mut when,
            &mut sources,
            groups.as_object().unwrap_or(&Map::new()),
        )?;
        Ok(when.json())
    }

    #[test]
    fn the_exact_operators_become_when() {
        assert_eq!(
            translate(json!({
                "browser": "firefox",
                "country": {"$in": ["US", "CA"]},
                "$and": [{"plan": {"$ne": "free"}}, {"beta": {"$exists": true}}],
                "id": {"$inGroup": "vip"},
                "tier": {"$nin": ["a"]},
                "deviceId": {"$eq": "d1"}
            }))
            .unwrap(),
            json!({"headers": {
                "x-gb-browser": {"in": ["firefox"]},
                "x-gb-country": {"in": ["US", "CA"]},
                "x-gb-plan": {"not_in": ["free"]},
                "x-gb-beta": {"present": true},
                "x-gb-id": {"in": ["4", "5"]},
                "x-gb-tier": {"not_in": ["a"]},
                "x-gb-device-id": {"in": ["d1"]}
            }})
        );
    }

    #[test]
    fn or_becomes_any() {
        assert_eq!(
            translate(json!({"$or": [{"country": "CA"}, {"plan": {"$in": ["pro"]}, "beta": {"$exists": true}}], "id": {"$ne": "x"}}))
                .unwrap(),
            json!({"any": [
                {"headers": {"x-gb-country": {"in": ["CA"]}}},
                {"headers": {"x-gb-plan": {"in": ["pro"]}, "x-gb-beta": {"present": true}}}
            ], "headers": {"x-gb-id": {"not_in": ["x"]}}})
        );
    }

    #[test]
    fn what_when_cannot_say_exactly_is_refused_with_its_reason() {
        for (cond, why) in [
            (json!({"$nor": [{"a": "x"}]}), "`$nor` is not expressible in `when`"),
            (json!({"$or": [{"a": "x"}], "b": {"$or": 1}}), "b: `$or` is not expressible in `when`"),
            (json!({"$or": [{"$or": [{"a": "x"}]}]}), "an `or` inside an `or`: `when`'s `any` nests one level"),
            (json!({"age": {"$gt": 30}}), "age: `$gt` is not expressible in `when`"),
            (json!({"age": 30}), "age: compares with 30, not a string: a header value is a string, so the comparison would not be exact"),
            (json!({"name": {"$regex": "^a"}}), "name: `$regex` is not expressible in `when`"),
            (json!({"a": {"$exists": true, "$ne": "x"}}), "a: 2 operators on one attribute: `when` takes one per value"),
            (json!({"id": {"$inGroup": "odd"}}), "id: saved group \"odd\" holds values that are not strings"),
            (json!({"id": {"$inGroup": "none"}}), "id: saved group \"none\" is not in the payload's savedGroups"),
        ] {
            assert_eq!(translate(cond).unwrap_err(), why);
        }
    }
}
