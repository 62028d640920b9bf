//! `layers` (named bucket spaces with their unit and salt) and each experiment's slot in one,
//! whose bucket ranges must not overlap another's in the same layer.

use super::*;

pub(super) fn compile_layers(top: &Obj, units: &[UnitType], errors: &mut Errors) -> Vec<Layer> {
    let mut layers = Vec::new();
    if let Some(map) = top.object_map("layers", errors) {
        for (name, v) in map {
            let path = field_path("layers", name);
            if !is_valid_key(name) {
                errors.push(&path, format!("layer name {KEY_RULE}"));
            }
            let Some(o) = Obj::new(v, &path, &["unit", "salt"], errors) else {
                continue;
            };
            let unit = unit_field(&o, units, errors);
            let salt = o.string("salt", errors).unwrap_or(name);
            if let Some(unit) = unit {
                layers.push(Layer {
                    name: name.clone(),
                    unit,
                    salt: salt.to_string(),
                });
            }
        }
    }

    layers
}

/// An experiment's `layer`: its slot, and the layer's unit (which the experiment inherits).
pub(super) fn layer_slot(
    lv: &Value,
    path: &str,
    layers: &[Layer],
    errors: &mut Errors,
) -> (Option<LayerSlot>, Option<usize>) {
    let Some(lo) = Obj::new(lv, path, &["name", "buckets"], errors) else {
        return (None, None);
    };
    let name = lo.required_string("name", errors);
    let index = name.and_then(|n| {
        let found = layers.iter().position(|l| l.name == n);
        if found.is_none() {
            errors.push(
                &lo.path_of("name"),
                format!("unknown layer \"{n}\" (define it under layers)"),
            );
        }
        found
    });
    let buckets = lo
        .get("buckets")
        .and_then(|b| layer_buckets(b, &lo.path_of("buckets"), errors));
    if lo.get("buckets").is_none() {
        errors.push(&lo.path_of("buckets"), "is required");
    }
    let slot = match (index, buckets) {
        (Some(layer), Some((start, end))) => Some(LayerSlot { layer, start, end }),
        _ => None,
    };
    (slot, index.map(|i| layers[i].unit))
}

fn layer_buckets(v: &Value, path: &str, errors: &mut Errors) -> Option<(u32, u32)> {
    let rule = format!("must be [start, end] with 0 <= start < end <= {BUCKETS}");
    let pair = v.as_array().filter(|a| a.len() == 2);
    let nums = pair.and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)));
    match nums {
        Some((s, e)) if s < e && e <= u64::from(BUCKETS) => Some((s as u32, e as u32)),
        _ => {
            errors.push(path, format!("{rule}, found {v}"));
            None
        }
    }
}

pub(super) fn check_layer_overlaps(
    experiments: &[(usize, Experiment)],
    layers: &[Layer],
    errors: &mut Errors,
) {
    for (n, (i, e)) in experiments.iter().enumerate() {
        let Some(slot) = e.layer else { continue };
        for (j, other) in &experiments[..n] {
            let Some(o) = other.layer else { continue };
            if o.layer == slot.layer && slot.start < o.end && o.start < slot.end {
                errors.push(
                    &format!("experiments[{i}].layer.buckets"),
                    format!(
                        "[{}, {}) overlaps [{}, {}) of experiment \"{}\" (experiments[{j}]) in layer \"{}\"",
                        slot.start, slot.end, o.start, o.end, other.key, layers[slot.layer].name
                    ),
                );
            }
        }
    }
}
