//! `when`: targeting conditions.

use super::*;

const WHEN_FIELDS: [&str; 7] = [
    "path_prefix",
    "methods",
    "hosts",
    "headers",
    "cookies",
    "query",
    "any",
];

pub(super) fn compile_when(v: &Value, path: &str, errors: &mut Errors) -> When {
    compile_when_at(v, path, true, errors)
}

/// A `when`; `any` (a list of `when`s of which one must hold) only at the top, so a request
/// is matched against at most one level of alternatives.
fn compile_when_at(v: &Value, path: &str, top: bool, errors: &mut Errors) -> When {
    let mut when = When::default();
    let fields = if top {
        &WHEN_FIELDS[..]
    } else {
        &WHEN_FIELDS[..6]
    };
    let Some(o) = Obj::new(v, path, fields, errors) else {
        return when;
    };
    if let Some(list) = o.get("any") {
        let apath = o.path_of("any");
        match list.as_array() {
            Some(l) if !l.is_empty() => {
                when.any = l
                    .iter()
                    .enumerate()
                    .map(|(i, w)| compile_when_at(w, &index_path(&apath, i), false, errors))
                    .collect();
            }
            _ => errors.push(
                &apath,
                "must be a non-empty list of conditions like `when`'s, one of which must hold",
            ),
        }
    }
    let bytes_list = |name: &str, errors: &mut Errors| -> Vec<Vec<u8>> {
        o.get(name)
            .map(|l| string_list(l, &o.path_of(name), errors))
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.as_bytes().to_vec())
            .collect()
    };
    when.path_prefix = bytes_list("path_prefix", errors);
    when.methods = bytes_list("methods", errors);
    when.hosts = bytes_list("hosts", errors)
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for (field, list) in [
        ("path_prefix", &when.path_prefix),
        ("methods", &when.methods),
        ("hosts", &when.hosts),
    ] {
        if o.get(field)
            .is_some_and(|l| l.as_array().is_some_and(Vec::is_empty))
            && list.is_empty()
        {
            errors.push(
                &o.path_of(field),
                "must not be an empty list (omit it to match everything)",
            );
        }
    }
    for (field, target) in [
        ("headers", &mut when.headers),
        ("cookies", &mut when.cookies),
        ("query", &mut when.query),
    ] {
        let Some(map) = o.object_map(field, errors) else {
            continue;
        };
        for (name, cv) in map {
            let cpath = field_path(&o.path_of(field), name);
            let name = if field == "headers" {
                match header_name(name, &cpath, errors) {
                    Some(n) => n,
                    None => continue,
                }
            } else {
                name.clone()
            };
            if let Some(c) = compile_condition(cv, &cpath, errors) {
                target.push((name.into_bytes(), c));
            }
        }
    }
    when
}

pub(super) fn compile_condition(v: &Value, path: &str, errors: &mut Errors) -> Option<Condition> {
    const KINDS: [&str; 5] = ["in", "not_in", "present", "prefix", "suffix"];
    let o = Obj::new(v, path, &KINDS, errors)?;
    let given: Vec<&str> = KINDS.into_iter().filter(|f| o.get(f).is_some()).collect();
    if given.len() != 1 {
        errors.push(
            path,
            "must have exactly one of \"in\", \"not_in\", \"present\", \"prefix\" or \"suffix\"",
        );
        return None;
    }
    let to_bytes = |l: Vec<&str>| l.into_iter().map(|s| s.as_bytes().to_vec()).collect();
    match given[0] {
        "in" => Some(Condition::In(to_bytes(string_list(
            o.get("in")?,
            &o.path_of("in"),
            errors,
        )))),
        "not_in" => Some(Condition::NotIn(to_bytes(string_list(
            o.get("not_in")?,
            &o.path_of("not_in"),
            errors,
        )))),
        "present" => o.bool("present", errors).map(Condition::Present),
        "suffix" => o
            .string("suffix", errors)
            .map(|p| Condition::Suffix(p.as_bytes().to_vec())),
        _ => o
            .string("prefix", errors)
            .map(|p| Condition::Prefix(p.as_bytes().to_vec())),
    }
}
