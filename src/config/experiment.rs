//! `experiments[i]`: key, unit, status, traffic, ramp, targeting, schedule and route header;
//! its layer slot (`layers`), variants (`variants`) and peer algorithm (`peers`) are read by
//! their own modules. Everything a request needs is rendered here, once.

use super::*;

pub(super) const EXPERIMENT_FIELDS: &[&str] = &[
    "key",
    "algorithm",
    "hash_version",
    "seed",
    "coverage",
    "namespace",
    "ranges",
    "flag_key",
    "bucket_by_seed",
    "bucketing",
    "unit",
    "salt",
    "status",
    "traffic_percent",
    "ramp",
    "variants",
    "layer",
    "when",
    "start",
    "end",
    "route_header",
    "winner",
];

pub(super) struct Ctx<'a> {
    pub(super) units: &'a [UnitType],
    pub(super) layers: &'a [Layer],
    pub(super) default_unit: Option<usize>,
    pub(super) route_header_prefix: &'a str,
}

pub(super) fn compile_experiment(
    v: &Value,
    path: &str,
    ctx: &Ctx,
    errors: &mut Errors,
) -> Option<Experiment> {
    let o = Obj::new(v, path, EXPERIMENT_FIELDS, errors)?;
    let before = errors.0.len();
    let key = o.required_string("key", errors).unwrap_or("");
    if o.get("key").is_some_and(Value::is_string) && !is_valid_key(key) {
        errors.push(&o.path_of("key"), format!("\"{key}\" {KEY_RULE}"));
    }
    let salt = o.string("salt", errors).unwrap_or(key).to_string();
    let status = o
        .keyword("status", &Status::ALL, errors)
        .unwrap_or(Status::Running);
    let traffic_bp = match o.get("traffic_percent") {
        Some(t) => {
            percent_basis_points(t, &o.path_of("traffic_percent"), errors).unwrap_or(BUCKETS)
        }
        None => BUCKETS,
    };

    // Layer first: it decides the unit when the experiment names none.
    let (layer, layer_unit) = o.get("layer").map_or((None, None), |lv| {
        layer_slot(lv, &o.path_of("layer"), ctx.layers, errors)
    });

    let unit = match (o.string("unit", errors), layer_unit) {
        (Some(name), Some(lu)) => {
            let found = ctx.units.iter().position(|u| u.name == name);
            if found != Some(lu) {
                let layer_name = layer.map_or("", |l| ctx.layers[l.layer].name.as_str());
                errors.push(
                    &o.path_of("unit"),
                    format!(
                        "must be omitted or equal to the unit of layer \"{layer_name}\" (\"{}\"), found \"{name}\"",
                        ctx.units[lu].name
                    ),
                );
            }
            Some(lu)
        }
        (None, Some(lu)) => Some(lu),
        // A broken layer is reported on its own; do not report its unit twice.
        (Some(name), None) if o.get("layer").is_some() => {
            ctx.units.iter().position(|u| u.name == name)
        }
        (Some(name), None) => find_unit(ctx.units, name, &o.path_of("unit"), errors),
        (None, None) => {
            if ctx.default_unit.is_none() && o.get("unit").is_none() && o.get("layer").is_none() {
                errors.push(
                    &o.path_of("unit"),
                    format!(
                        "is required because units defines {} unit types, not exactly one",
                        ctx.units.len()
                    ),
                );
            }
            ctx.default_unit
        }
    };

    let kind = o
        .keyword("algorithm", &AlgorithmName::ALL, errors)
        .unwrap_or(AlgorithmName::Abmesh);
    check_algorithm_fields(&o, kind, errors);
    let (variants, algorithm) = match kind {
        AlgorithmName::GrowthBook => compile_growthbook(&o, key, errors),
        AlgorithmName::Flagd => compile_flagd(&o, key, errors),
        AlgorithmName::Abmesh => (compile_variants(&o, traffic_bp, errors), Algorithm::Abmesh),
    };
    let mut traffic_bp = traffic_bp;
    let mut variants = variants;
    compile_values(&o, &mut variants, errors);
    let ramp = match (o.get("ramp"), kind) {
        (Some(r), AlgorithmName::Abmesh) => {
            if o.get("traffic_percent").is_some() {
                errors.push(
                    &o.path_of("ramp"),
                    "cannot be combined with traffic_percent (the ramp sets the traffic)",
                );
            }
            let weights: Vec<u64> = variants.iter().map(|v| v.weight).collect();
            let ramp = crate::ramp::compile(r, &o.path_of("ramp"), &weights, errors);
            if let Some(last) = ramp.last() {
                traffic_bp = last.traffic_bp;
                for (v, range) in variants.iter_mut().zip(&last.ranges) {
                    v.range = *range;
                }
            }
            ramp
        }
        _ => Vec::new(),
    };
    let winner = winner(&o, &variants, status, errors);

    let when = match o.get("when") {
        Some(w) => compile_when(w, &o.path_of("when"), errors),
        None => When::default(),
    };
    let start_ms = o.time("start", errors);
    let end_ms = o.time("end", errors);
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if s >= e {
            errors.push(&o.path_of("end"), "must be after start");
        }
    }
    let route_header = o.bool("route_header", errors).unwrap_or(false);

    if errors.0.len() > before {
        return None;
    }
    let unit = unit?;
    // Everything a request needs that the configuration decides is rendered here, once.
    let unit_name = ctx.units.get(unit).map_or("", |u| u.name.as_str());
    for v in &mut variants {
        v.member = format!(", {key}={}", v.name);
        // Keys, variant and unit names are validated to need no JSON escaping.
        v.exposure_head = format!(
            r#"{{"experiment":"{key}","variant":"{}","unit":"{unit_name}","forced":"#,
            v.name
        );
        v.exposure_entry = format!(",{}false}}", v.exposure_head);
    }
    Some(Experiment {
        key: key.to_string(),
        algorithm,
        unit,
        salt,
        status,
        traffic_bp,
        variants,
        layer,
        when,
        start_ms,
        end_ms,
        route_header: route_header.then(|| format!("{}{key}", ctx.route_header_prefix)),
        winner,
        ramp,
    })
}
