//! `experiments[i].variants` (names, integer weights, bucket ranges) and `winner`.

use super::*;

/// The `variants` of `o`, with the rules every algorithm shares (a non-empty list of at most
/// MAX_VARIANTS, valid unique names); `weight` reads each variant's weight its own way. Returns
/// the list's path, `(name, weight)` per readable variant, and whether every element was one.
pub(super) fn read_variants<W>(
    o: &Obj,
    errors: &mut Errors,
    mut weight: impl FnMut(Option<&Value>, &str, &mut Errors) -> W,
) -> (String, Vec<(String, W)>, bool) {
    let path = o.path_of("variants");
    let Some(list) = o.get("variants") else {
        errors.push(&path, "is required (at least one variant)");
        return (path, Vec::new(), false);
    };
    let Some(list) = crate::reader::list(list, &path, errors) else {
        return (path, Vec::new(), false);
    };
    if list.is_empty() {
        errors.push(&path, "must have at least one variant");
    }
    if list.len() > MAX_VARIANTS {
        errors.push(
            &path,
            format!(
                "at most {MAX_VARIANTS} variants are allowed, found {}",
                list.len()
            ),
        );
    }
    let mut out: Vec<(String, W)> = Vec::new();
    let mut complete = !list.is_empty();
    for (i, v) in list.iter().enumerate() {
        let vpath = index_path(&path, i);
        let Some(vo) = Obj::new(v, &vpath, &["name", "weight", "value"], errors) else {
            complete = false;
            continue;
        };
        let name = vo.required_string("name", errors).unwrap_or("");
        if vo.get("name").is_some_and(Value::is_string) {
            if !is_valid_variant(name) {
                errors.push(&vo.path_of("name"), format!("\"{name}\" {VARIANT_RULE}"));
            } else if let Some(first) = out.iter().position(|(n, _)| n == name) {
                errors.push(
                    &vo.path_of("name"),
                    format!(
                        "duplicate variant \"{name}\" (first used at {})",
                        index_path(&path, first)
                    ),
                );
            }
        }
        let w = weight(vo.get("weight"), &vo.path_of("weight"), errors);
        out.push((name.to_string(), w));
    }
    (path, out, complete)
}

pub(super) fn compile_variants(o: &Obj, traffic_bp: u32, errors: &mut Errors) -> Vec<Variant> {
    let (path, read, complete) = read_variants(o, errors, |w, path, errors| match w {
        None => {
            errors.push(path, "is required");
            None
        }
        Some(w) => {
            let n = w.as_u64();
            if n.is_none() {
                errors.push(path, format!("must be a non-negative integer, found {w}"));
            }
            n
        }
    });
    let ok = complete && read.iter().all(|(_, w)| w.is_some());
    let (names, weights): (Vec<String>, Vec<u64>) =
        read.into_iter().map(|(n, w)| (n, w.unwrap_or(0))).unzip();
    if ok && weights.iter().all(|&w| w == 0) {
        errors.push(&path, "weights must not all be zero");
    }
    let ranges = variant_ranges(&weights, traffic_bp);
    names
        .into_iter()
        .zip(weights)
        .zip(ranges)
        .map(|((name, weight), range)| Variant {
            name,
            weight,
            range,
            // Rendered once the experiment's unit is known (end of `compile_experiment`).
            member: String::new(),
            exposure_head: String::new(),
            exposure_entry: String::new(),
            value: None,
        })
        .collect()
}

/// `winner`: the variant a rolled-out experiment serves to everyone.
pub(super) fn winner(
    o: &Obj,
    variants: &[Variant],
    status: Status,
    errors: &mut Errors,
) -> Option<usize> {
    match o.string("winner", errors) {
        Some(w) => {
            let found = variants.iter().position(|v| v.name == w);
            if found.is_none() && !variants.is_empty() {
                let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
                errors.push(
                    &o.path_of("winner"),
                    format!("unknown variant \"{w}\" (variants: {})", names.join(", ")),
                );
            }
            found
        }
        None => {
            if status == Status::RolledOut && o.get("winner").is_none() {
                errors.push(
                    &o.path_of("winner"),
                    "is required when status is \"rolled_out\"",
                );
            }
            None
        }
    }
}

/// Each variant's `value` (what OFREP answers for it), rendered as JSON once: a boolean, a
/// string, a number or an object — OFREP's flag types.
pub(super) fn compile_values(o: &Obj, variants: &mut [Variant], errors: &mut Errors) {
    let Some(list) = o.get("variants").and_then(Value::as_array) else {
        return;
    };
    let path = o.path_of("variants");
    for (i, (v, variant)) in list.iter().zip(variants.iter_mut()).enumerate() {
        // `null`, as everywhere in the configuration, is absent.
        let Some(value) = v.get("value").filter(|v| !v.is_null()) else {
            continue;
        };
        match value {
            Value::Bool(_) | Value::String(_) | Value::Number(_) | Value::Object(_) => {
                variant.value = serde_json::to_string(value).ok();
            }
            other => errors.push(
                &field_path(&index_path(&path, i), "value"),
                format!(
                    "must be a boolean, string, number or object (an OFREP flag value), found {}",
                    crate::reader::kind(other)
                ),
            ),
        }
    }
}
