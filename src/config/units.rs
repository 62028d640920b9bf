//! `units`: each unit type, its sources, and how an id is minted for it.

use super::*;

pub(super) fn compile_units(top: &Obj, errors: &mut Errors) -> Vec<UnitType> {
    let mut units = Vec::new();
    let Some(map) = top.object_map("units", errors) else {
        return units;
    };
    for (name, v) in map {
        let path = field_path("units", name);
        if !is_valid_key(name) {
            errors.push(&path, format!("unit type name {KEY_RULE}"));
        }
        // A list of sources, or `{"sources": [...], "mint": {...}}`.
        let (list, mint, list_path) = if v.is_object() {
            let Some(o) = Obj::new(v, &path, &["sources", "mint"], errors) else {
                continue;
            };
            let mint = o
                .get("mint")
                .and_then(|m| crate::mint::compile(m, &o.path_of("mint"), errors));
            // With a mint, the mint cookie alone may be the source.
            let none = o.get("mint").is_some().then_some(&EMPTY);
            if o.get("sources").is_none() && none.is_none() {
                errors.push(&o.path_of("sources"), "is required");
            }
            let sources = o.list("sources", errors).or(none);
            (sources, mint, o.path_of("sources"))
        } else {
            (crate::reader::list(v, &path, errors), None, path.clone())
        };
        let path = list_path;
        let Some(list) = list else {
            continue;
        };
        if list.is_empty() && mint.is_none() {
            errors.push(&path, "must list at least one source ({\"header\": ...}, {\"cookie\": ...} or {\"query\": ...})");
        }
        let mut sources = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let source = compile_source(s, &index_path(&path, i), errors);
            sources.extend(source);
        }
        if let Some(m) = &mint {
            let own = Source::Cookie(m.cookie.clone());
            if !sources.contains(&own) {
                sources.push(own);
            }
            if let Some(other) = units
                .iter()
                .find(|u: &&UnitType| u.mint.as_ref().is_some_and(|o| o.cookie == m.cookie))
            {
                errors.push(
                    &field_path(&field_path("units", name), "mint.cookie"),
                    format!(
                        "cookie \"{}\" is already minted by unit type \"{}\"",
                        m.cookie, other.name
                    ),
                );
            }
        }
        units.push(UnitType {
            name: name.clone(),
            sources,
            mint,
        });
    }
    units
}

/// A header name from the configuration, validated and lower-cased (Envoy stores them so).
pub(super) fn header_name(name: &str, path: &str, errors: &mut Errors) -> Option<String> {
    if is_token(name) {
        Some(name.to_ascii_lowercase())
    } else {
        errors.push(path, format!("\"{name}\" is not a valid header name"));
        None
    }
}

/// The index of unit type `name`, or an error at `path` listing the defined ones.
pub(super) fn find_unit(
    units: &[UnitType],
    name: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<usize> {
    let found = units.iter().position(|u| u.name == name);
    if found.is_none() {
        let defined: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        let defined = if defined.is_empty() {
            "none".to_string()
        } else {
            defined.join(", ")
        };
        errors.push(
            path,
            format!("unknown unit type \"{name}\" (defined in units: {defined})"),
        );
    }
    found
}

/// The `unit` field of a holdout or layer: a defined unit type, or the only one when omitted.
pub(super) fn unit_field(o: &Obj, units: &[UnitType], errors: &mut Errors) -> Option<usize> {
    match o.string("unit", errors) {
        Some(name) => find_unit(units, name, &o.path_of("unit"), errors),
        None if o.get("unit").is_some() => None,
        None if units.len() == 1 => Some(0),
        None => {
            errors.push(
                &o.path_of("unit"),
                "is required when units defines more than one unit type",
            );
            None
        }
    }
}

/// An optional header-name field of `o`, validated and lower-cased.
pub(super) fn header_field(o: &Obj, name: &str, errors: &mut Errors) -> Option<String> {
    header_name(o.string(name, errors)?, &o.path_of(name), errors)
}

/// One source (`{"header": ...}`, `{"cookie": ...}` or `{"query": ...}`) at `spath`.
pub(super) fn compile_source(s: &Value, spath: &str, errors: &mut Errors) -> Option<Source> {
    let o = Obj::new(s, spath, &["header", "cookie", "query"], errors)?;
    let given: Vec<&str> = ["header", "cookie", "query"]
        .into_iter()
        .filter(|f| o.get(f).is_some())
        .collect();
    if given.len() != 1 {
        errors.push(
            spath,
            "must have exactly one of \"header\", \"cookie\" or \"query\"",
        );
        return None;
    }
    let field = given[0];
    let n = o.string(field, errors)?;
    let fpath = o.path_of(field);
    match field {
        "header" => header_name(n, &fpath, errors).map(Source::Header),
        "cookie" => {
            if is_token(n) {
                Some(Source::Cookie(n.to_string()))
            } else {
                errors.push(&fpath, NOT_A_COOKIE_NAME);
                None
            }
        }
        _ => {
            if n.is_empty() {
                errors.push(&fpath, "must not be empty");
                None
            } else {
                Some(Source::Query(n.to_string()))
            }
        }
    }
}
