//! flagd conditions (JSONLogic with flagd's custom operators) as `when`, where `when` says
//! exactly the same thing of a request whose context attributes are its headers: `==`/`===`
//! and `!=`/`!==` with a string, `in` a list of strings, `starts_with`, `ends_with`, `and`,
//! `or` (`when`'s `any`, one level) and `!` where the negation is expressible. An absent attribute is `null` to JSONLogic (no
//! string equals it, it is in no list) and absent to `when` (in no list): the two agree.

use serde_json::Value;

use super::when::{Cond, When};
use super::Sources;

/// The context attribute a `{"var": ...}` reads, or why it is not one the request carries.
pub fn var(v: &Value) -> Result<Option<String>, String> {
    let Some(arg) = v.get("var") else {
        return Ok(None);
    };
    let name = match arg {
        Value::String(s) => s,
        Value::Array(a) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default(),
        _ => return Err(format!("{v}: a `var` with a default value")),
    };
    if name.starts_with("$flagd.") {
        return Err(format!(
            "{v}: flagd's own `{name}`, which a request does not carry"
        ));
    }
    Ok(Some(name.to_string()))
}

/// The operator of a JSONLogic expression and its arguments.
fn operation(expr: &Value) -> Option<(&str, Vec<&Value>)> {
    let o = expr.as_object().filter(|o| o.len() == 1)?;
    let (op, args) = o.iter().next()?;
    let args = match args {
        Value::Array(a) => a.iter().collect(),
        single => vec![single],
    };
    Some((op.as_str(), args))
}

/// Adds `expr` (negated when `negate`) to `when`, or says why `when` cannot express it.
pub fn condition(
    expr: &Value,
    negate: bool,
    when: &mut When,
    sources: &mut Sources,
) -> Result<(), String> {
    let Some((op, args)) = operation(expr) else {
        return Err(format!("{expr}: not a condition"));
    };
    match (op, args.as_slice()) {
        // De Morgan: `and`, or a negated `or`, needs every part (each negated for the `or`);
        // `or`, or a negated `and`, one of them: `when`'s `any`.
        ("and" | "or", parts) if (op == "and") != negate => {
            for p in parts {
                condition(p, negate, when, sources)?;
            }
            Ok(())
        }
        ("and" | "or", parts) => {
            let mut alternatives = Vec::new();
            for p in parts {
                let mut alt = When::default();
                condition(p, negate, &mut alt, sources)?;
                alternatives.push(alt);
            }
            when.set_any(alternatives)
                .map_err(|e| format!("{expr}: {e}"))
        }
        ("!", [inner]) => condition(inner, !negate, when, sources),
        ("==" | "===" | "!=" | "!==", [a, b]) => {
            let (attribute, literal) = match (var(a)?, var(b)?) {
                (Some(x), None) => (x, *b),
                (None, Some(x)) => (x, *a),
                _ => return Err(format!("{expr}: compares no single attribute with a value")),
            };
            let Some(s) = literal.as_str() else {
                return Err(format!(
                    "{expr}: compares {attribute} with {literal}, not a string: a header value is a string, so the comparison would not be exact"
                ));
            };
            let equal = op.starts_with('=');
            let cond = Cond::In(vec![s.to_string()]);
            let cond = if equal != negate {
                cond
            } else {
                Cond::NotIn(vec![s.to_string()])
            };
            when.add(sources, &attribute, cond)
        }
        ("in", [a, b]) => {
            let Some(attribute) = var(a)? else {
                return Err(format!(
                    "{expr}: `in` on an attribute's value is a substring test"
                ));
            };
            let Some(list) = b.as_array() else {
                return Err(format!("{expr}: `in` a string is a substring test"));
            };
            let strings: Option<Vec<String>> = list
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            let Some(strings) = strings else {
                return Err(format!("{expr}: a list with values that are not strings"));
            };
            let cond = if negate {
                Cond::NotIn(strings)
            } else {
                Cond::In(strings)
            };
            when.add(sources, &attribute, cond)
        }
        ("starts_with" | "ends_with", [a, b]) => {
            let (Some(attribute), Some(s)) = (var(a)?, b.as_str()) else {
                return Err(format!("{expr}: not an attribute and a string"));
            };
            if negate {
                return Err(format!("{expr}: its negation is not in `when`"));
            }
            let cond = if op == "starts_with" {
                Cond::Prefix(s.to_string())
            } else {
                Cond::Suffix(s.to_string())
            };
            when.add(sources, &attribute, cond)
        }
        _ => Err(format!("{expr}: `{op}` is not expressible in `when`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(expr: Value) -> Result<Value, String> {
        let mut sources = Sources::new("flagd", None).map_err(|e| e.join("; "))?;
        let mut when = When::default();
        condition(&expr, false, &mut when, &mut sources)?;
        Ok(when.json())
    }

    #[test]
    fn the_exact_conditions_become_when() {
        assert_eq!(
            translate(json!({"and": [
                {"==": [{"var": "email"}, "a@b.c"]},
                {"!=": ["beta", {"var": "plan"}]},
                {"in": [{"var": "country"}, ["US", "CA"]]},
                {"starts_with": [{"var": "path"}, "/api"]},
                {"ends_with": [{"var": "host"}, ".example.com"]},
                {"!": {"in": [{"var": "tier"}, ["free"]]}}
            ]}))
            .unwrap(),
            json!({"headers": {
                "x-flagd-email": {"in": ["a@b.c"]},
                "x-flagd-plan": {"not_in": ["beta"]},
                "x-flagd-country": {"in": ["US", "CA"]},
                "x-flagd-path": {"prefix": "/api"},
                "x-flagd-host": {"suffix": ".example.com"},
                "x-flagd-tier": {"not_in": ["free"]}
            }})
        );
    }

    #[test]
    fn or_and_the_negation_of_and_become_any() {
        assert_eq!(
            translate(json!({"or": [{"==": [{"var": "country"}, "CA"]}, {"ends_with": [{"var": "email"}, "@a.com"]}]}))
                .unwrap(),
            json!({"any": [{"headers": {"x-flagd-country": {"in": ["CA"]}}},
                           {"headers": {"x-flagd-email": {"suffix": "@a.com"}}}]})
        );
        assert_eq!(
            translate(
                json!({"!": {"and": [{"==": [{"var": "a"}, "x"]}, {"in": [{"var": "b"}, ["y"]]}]}})
            )
            .unwrap(),
            json!({"any": [{"headers": {"x-flagd-a": {"not_in": ["x"]}}}, {"headers": {"x-flagd-b": {"not_in": ["y"]}}}]})
        );
        // None of them: each negated.
        assert_eq!(
            translate(
                json!({"!": {"or": [{"==": [{"var": "a"}, "x"]}, {"!=": [{"var": "b"}, "y"]}]}})
            )
            .unwrap(),
            json!({"headers": {"x-flagd-a": {"not_in": ["x"]}, "x-flagd-b": {"in": ["y"]}}})
        );
    }

    #[test]
    fn what_when_cannot_say_exactly_is_refused_with_its_reason() {
        for (expr, why) in [
            (json!({"sem_ver": [{"var": "v"}, ">=", "1.0.0"]}), "{\"sem_ver\":[{\"var\":\"v\"},\">=\",\"1.0.0\"]}: `sem_ver` is not expressible in `when`"),
            (json!({"or": [{"or": [{"==": [{"var": "a"}, "x"]}]}]}), "{\"or\":[{\"or\":[{\"==\":[{\"var\":\"a\"},\"x\"]}]}]}: an `or` inside an `or`: `when`'s `any` nests one level"),
            (json!({"==": [{"var": "age"}, 30]}), "{\"==\":[{\"var\":\"age\"},30]}: compares age with 30, not a string: a header value is a string, so the comparison would not be exact"),
            (json!({"in": ["admin", {"var": "roles"}]}), "{\"in\":[\"admin\",{\"var\":\"roles\"}]}: `in` on an attribute's value is a substring test"),
            (json!({"==": [{"var": "$flagd.flagKey"}, "x"]}), "{\"var\":\"$flagd.flagKey\"}: flagd's own `$flagd.flagKey`, which a request does not carry"),
            (json!({"!": {"and": [{"starts_with": [{"var": "a"}, "x"]}]}}), "{\"starts_with\":[{\"var\":\"a\"},\"x\"]}: its negation is not in `when`"),
            (json!({"and": [{"==": [{"var": "a"}, "x"]}, {"==": [{"var": "a"}, "y"]}]}), "two conditions on header x-flagd-a (a and a): `when` takes one per value"),
        ] {
            assert_eq!(translate(expr).unwrap_err(), why);
        }
    }
}
