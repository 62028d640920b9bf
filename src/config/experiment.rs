//! `experiments[i]`: key, unit, status, traffic, ramp, variants (or a peer algorithm's), layer,
//! targeting, schedule and route header; then the layers' bucket maps must not overlap.

use super::*;

pub(super) const GROWTHBOOK_FIELDS: &[&str] = &["hash_version", "seed", "coverage", "namespace"];

pub(super) const FLAGD_FIELDS: &[&str] = &["flag_key", "bucket_by_seed"];

pub(super) const EXPERIMENT_FIELDS: &[&str] = &[
    "key",
    "algorithm",
    "hash_version",
    "seed",
    "coverage",
    "namespace",
    "flag_key",
    "bucket_by_seed",
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
    let mut layer = None;
    let mut layer_unit = None;
    if let Some(lv) = o.get("layer") {
        if let Some(lo) = Obj::new(lv, &o.path_of("layer"), &["name", "buckets"], errors) {
            let name = lo.required_string("name", errors);
            let index = name.and_then(|n| {
                let found = ctx.layers.iter().position(|l| l.name == n);
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
            if let (Some(index), Some((start, end))) = (index, buckets) {
                layer = Some(LayerSlot {
                    layer: index,
                    start,
                    end,
                });
            }
            layer_unit = index.map(|i| ctx.layers[i].unit);
        }
    }

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

    #[derive(PartialEq)]
    enum Kind {
        Abmesh,
        GrowthBook,
        Flagd,
    }
    let kind = match o.string("algorithm", errors) {
        None | Some("abmesh") => Kind::Abmesh,
        Some("growthbook") => Kind::GrowthBook,
        Some("flagd") => Kind::Flagd,
        Some(other) => {
            errors.push(
                &o.path_of("algorithm"),
                format!("must be \"abmesh\", \"growthbook\" or \"flagd\", found \"{other}\""),
            );
            Kind::Abmesh
        }
    };
    // Each algorithm's own settings, and what it takes instead of the default's.
    let (name, own, refused): (&str, &[&str], &[(&str, &str)]) = match kind {
        Kind::Abmesh => ("abmesh", &[], &[]),
        Kind::GrowthBook => (
            "growthbook",
            GROWTHBOOK_FIELDS,
            &[
                ("traffic_percent", "use coverage"),
                ("ramp", "use coverage"),
                ("salt", "use seed"),
                ("layer", "use namespace"),
            ],
        ),
        Kind::Flagd => (
            "flagd",
            FLAGD_FIELDS,
            &[
                ("traffic_percent", "flagd assigns every unit"),
                ("ramp", "flagd assigns every unit"),
                ("salt", "use bucket_by_seed"),
                ("layer", "not supported"),
            ],
        ),
    };
    for (field, instead) in refused {
        if o.get(field).is_some() {
            errors.push(
                &o.path_of(field),
                format!("is not used by algorithm \"{name}\" ({instead})"),
            );
        }
    }
    for &field in GROWTHBOOK_FIELDS.iter().chain(FLAGD_FIELDS) {
        if o.get(field).is_some() && !own.contains(&field) {
            let owner = if FLAGD_FIELDS.contains(&field) {
                "flagd"
            } else {
                "growthbook"
            };
            errors.push(
                &o.path_of(field),
                format!("is only used with \"algorithm\": \"{owner}\""),
            );
        }
    }
    let (variants, algorithm) = match kind {
        Kind::GrowthBook => compile_growthbook(&o, key, errors),
        Kind::Flagd => {
            let variants = compile_variants(&o, BUCKETS, errors);
            let prefix = o
                .string("bucket_by_seed", errors)
                .or(o.string("flag_key", errors))
                .unwrap_or(key);
            let weights = variants.iter().map(|v| v.weight).collect();
            (
                variants,
                Algorithm::Flagd {
                    prefix: prefix.as_bytes().to_vec(),
                    weights,
                },
            )
        }
        Kind::Abmesh => (compile_variants(&o, traffic_bp, errors), Algorithm::Abmesh),
    };
    let mut traffic_bp = traffic_bp;
    let mut variants = variants;
    let ramp = match (o.get("ramp"), kind) {
        (Some(r), Kind::Abmesh) => {
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
    let winner = match o.string("winner", errors) {
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
    };

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
        v.member = format!("{key}={}", v.name);
        // Keys, variant and unit names are validated to need no JSON escaping.
        v.exposure_head = format!(
            r#"{{"experiment":"{key}","variant":"{}","unit":"{unit_name}","forced":"#,
            v.name
        );
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

/// A fraction from 0 to 1.
pub(super) fn fraction(v: &Value, path: &str, errors: &mut Errors) -> Option<f64> {
    match v
        .as_f64()
        .filter(|f| v.is_number() && (0.0..=1.0).contains(f))
    {
        Some(f) => Some(f),
        None => {
            errors.push(path, format!("must be a number from 0 to 1, found {v}"));
            None
        }
    }
}

/// The variants (float weights summing to 1) and GrowthBook parameters of an experiment with
/// `"algorithm": "growthbook"`.
pub(super) fn compile_growthbook(
    o: &Obj,
    key: &str,
    errors: &mut Errors,
) -> (Vec<Variant>, Algorithm) {
    let hash_version = match o.get("hash_version") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n @ (1 | 2)) => n as u32,
            _ => {
                errors.push(
                    &o.path_of("hash_version"),
                    format!("must be 1 or 2, found {v}"),
                );
                1
            }
        },
    };
    let seed = o.string("seed", errors).unwrap_or(key).to_string();
    let coverage = o
        .get("coverage")
        .map_or(Some(1.0), |c| fraction(c, &o.path_of("coverage"), errors));
    let namespace = o.get("namespace").and_then(|n| {
        let path = o.path_of("namespace");
        let parts = n.as_array().filter(|a| a.len() == 3);
        let parsed = parts.and_then(|a| Some((a[0].as_str()?.to_string(), a[1].as_f64()?, a[2].as_f64()?)));
        match parsed {
            Some((id, start, end)) if !id.is_empty() && (0.0..=1.0).contains(&start) && start < end && end <= 1.0 => {
                Some((id, start, end))
            }
            _ => {
                errors.push(&path, format!("must be [\"namespace-id\", start, end] with 0 <= start < end <= 1, found {n}"));
                None
            }
        }
    });
    // Float weights: absent (equal weights) or a fraction; an invalid one is reported here.
    let (path, read, _) = read_variants(o, errors, |w, path, errors| match w {
        None => (false, None),
        Some(w) => (true, fraction(w, path, errors)),
    });
    let names: Vec<String> = read.iter().map(|(n, _)| n.clone()).collect();
    // GrowthBook itself falls back to equal weights when they are missing or do not sum to 1;
    // a configuration says what it means, so: all weights or none, summing to 1 (± 0.01).
    let present = read.iter().filter(|(_, (p, _))| *p).count();
    let given: Vec<f64> = read.iter().filter_map(|(_, (_, w))| *w).collect();
    let weights = if present == 0 {
        None
    } else if present != read.len() {
        errors.push(
            &path,
            "give every variant a weight, or none (equal weights)",
        );
        None
    } else if given.len() != present {
        None // an invalid weight, already reported
    } else {
        let total: f64 = given.iter().sum();
        if !(0.99..=1.01).contains(&total) {
            errors.push(
                &path,
                format!(
                    "weights must sum to 1 (within 0.01) for algorithm \"growthbook\", found {}",
                    // serde_json's float printing is in the module already; core's is not.
                    Value::from(total)
                ),
            );
        }
        Some(given)
    };
    let ranges = crate::growthbook::bucket_ranges(
        names.len() as i64,
        coverage.unwrap_or(1.0),
        weights.as_deref(),
    );
    let variants = names
        .into_iter()
        .zip(&ranges)
        .zip(
            weights
                .clone()
                .unwrap_or_else(|| crate::growthbook::equal_weights(ranges.len() as i64)),
        )
        .map(|((name, &(start, end)), w)| Variant {
            name,
            // Integer weights and bucket ranges in basis points, for summaries and `guard`.
            weight: (w * 10_000.0).round() as u64,
            range: (
                (start * 10_000.0).round() as u32,
                (end * 10_000.0).round() as u32,
            ),
            member: String::new(),
            exposure_head: String::new(),
        })
        .collect();
    (
        variants,
        Algorithm::GrowthBook {
            hash_version,
            seed,
            ranges,
            namespace,
        },
    )
}

pub(super) fn layer_buckets(v: &Value, path: &str, errors: &mut Errors) -> Option<(u32, u32)> {
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
        let Some(vo) = Obj::new(v, &vpath, &["name", "weight"], errors) else {
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
        })
        .collect()
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
