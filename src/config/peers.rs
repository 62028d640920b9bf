//! The peers' algorithms an experiment may use instead of abmesh's (`"algorithm"`): their own
//! settings, the abmesh settings they refuse, and their variants.

use super::*;

pub(super) const GROWTHBOOK_FIELDS: &[&str] =
    &["hash_version", "seed", "coverage", "namespace", "ranges"];

pub(super) const FLAGD_FIELDS: &[&str] = &["flag_key", "bucket_by_seed", "bucketing"];

/// flagd's `fractional` bucketing generations (`"bucketing"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagdBucketing {
    V2,
    V3,
}

impl Keyword for FlagdBucketing {
    fn as_str(self) -> &'static str {
        match self {
            FlagdBucketing::V2 => "v2",
            FlagdBucketing::V3 => "v3",
        }
    }

    fn gloss(self) -> Option<&'static str> {
        Some(match self {
            FlagdBucketing::V2 => "the string's bytes, flagd 0.15 and later",
            FlagdBucketing::V3 => "its CBOR encoding, flagd's hashing-consistency ADR",
        })
    }
}

/// `"algorithm"` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AlgorithmName {
    Abmesh,
    GrowthBook,
    Flagd,
}

impl AlgorithmName {
    pub(super) const ALL: [AlgorithmName; 3] = [
        AlgorithmName::Abmesh,
        AlgorithmName::GrowthBook,
        AlgorithmName::Flagd,
    ];
}

impl Keyword for AlgorithmName {
    fn as_str(self) -> &'static str {
        match self {
            AlgorithmName::Abmesh => "abmesh",
            AlgorithmName::GrowthBook => "growthbook",
            AlgorithmName::Flagd => "flagd",
        }
    }
}

/// Reports the settings `kind` does not use: abmesh's that it replaces with its own, and the
/// other algorithms'.
pub(super) fn check_algorithm_fields(o: &Obj, kind: AlgorithmName, errors: &mut Errors) {
    let (own, refused): (&[&str], &[(&str, &str)]) = match kind {
        AlgorithmName::Abmesh => (&[], &[]),
        AlgorithmName::GrowthBook => (
            GROWTHBOOK_FIELDS,
            &[
                ("traffic_percent", "use coverage"),
                ("ramp", "use coverage"),
                ("salt", "use seed"),
                ("layer", "use namespace"),
            ],
        ),
        AlgorithmName::Flagd => (
            FLAGD_FIELDS,
            &[
                ("traffic_percent", "flagd assigns every unit"),
                ("ramp", "flagd assigns every unit"),
                ("salt", "use bucket_by_seed"),
                ("layer", "not supported"),
            ],
        ),
    };
    let name = kind.as_str();
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
                AlgorithmName::Flagd
            } else {
                AlgorithmName::GrowthBook
            };
            errors.push(
                &o.path_of(field),
                format!("is only used with \"algorithm\": \"{}\"", owner.as_str()),
            );
        }
    }
}

/// The variants and prefix of an experiment with `"algorithm": "flagd"`.
pub(super) fn compile_flagd(o: &Obj, key: &str, errors: &mut Errors) -> (Vec<Variant>, Algorithm) {
    let variants = compile_variants(o, BUCKETS, errors);
    let seed = o.string("bucket_by_seed", errors);
    let flag_key = o.string("flag_key", errors);
    let prefix = seed.or(flag_key).unwrap_or(key);
    let bucketing = o
        .keyword(
            "bucketing",
            &[FlagdBucketing::V2, FlagdBucketing::V3],
            errors,
        )
        .unwrap_or(FlagdBucketing::V2);
    // v2 hashes one string whatever its form; v3 tells a bucket-by expression (a string) from
    // the shorthand (the pair of flag key and targeting key).
    let encoding = match (bucketing, seed) {
        (FlagdBucketing::V2, _) => crate::flagd::Encoding::V2,
        (FlagdBucketing::V3, Some(_)) => crate::flagd::Encoding::V3Text,
        (FlagdBucketing::V3, None) => crate::flagd::Encoding::V3Pair,
    };
    let weights = variants.iter().map(|v| v.weight).collect();
    (
        variants,
        Algorithm::Flagd {
            prefix: prefix.as_bytes().to_vec(),
            weights,
            encoding,
        },
    )
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
    // Explicit `ranges` (GrowthBook's newer experiments) replace weights and coverage.
    let explicit = o.get("ranges").and_then(|r| {
        let path = o.path_of("ranges");
        if o.get("coverage").is_some() || present > 0 {
            errors.push(
                &path,
                "replaces weights and coverage: give ranges, or weights and coverage",
            );
        }
        explicit_ranges(r, names.len(), &path, errors)
    });
    let ranges = explicit.clone().unwrap_or_else(|| {
        crate::growthbook::bucket_ranges(
            names.len() as i64,
            coverage.unwrap_or(1.0),
            weights.as_deref(),
        )
    });
    let weights = match &explicit {
        Some(r) => Some(r.iter().map(|(a, b)| b - a).collect()),
        None => weights,
    };
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
            exposure_entry: String::new(),
            value: None,
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

/// `ranges`: one `[start, end]` per variant, `0 <= start <= end <= 1`, not overlapping.
fn explicit_ranges(
    v: &Value,
    variants: usize,
    path: &str,
    errors: &mut Errors,
) -> Option<Vec<(f64, f64)>> {
    let rule = format!("must be one [start, end] per variant ({variants}), 0 <= start <= end <= 1, not overlapping");
    let parsed: Option<Vec<(f64, f64)>> = v.as_array().and_then(|list| {
        list.iter()
            .map(|r| {
                let pair = r.as_array().filter(|p| p.len() == 2)?;
                Some((pair[0].as_f64()?, pair[1].as_f64()?))
            })
            .collect()
    });
    let valid = parsed.filter(|r| {
        r.len() == variants
            && r.iter().all(|&(a, b)| 0.0 <= a && a <= b && b <= 1.0)
            && r.iter().enumerate().all(|(i, x)| {
                r.iter()
                    .skip(i + 1)
                    .all(|y| x.1 <= y.0 || y.1 <= x.0 || x.0 == x.1 || y.0 == y.1)
            })
    });
    if valid.is_none() {
        errors.push(path, format!("{rule}, found {v}"));
    }
    valid
}

/// A fraction from 0 to 1.
fn fraction(v: &Value, path: &str, errors: &mut Errors) -> Option<f64> {
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
