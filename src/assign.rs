//! Assignment: which variant of each experiment a request gets, and why not when it gets none.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::config::{Algorithm, Config, Source, Status};
use crate::growthbook;
use crate::hash::{Hasher, MAX_UNIT_LEN};
use crate::request::RequestView;
use crate::sfv::parse_dictionary;

/// One experiment's outcome for a request that got a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Index into `Config::experiments`.
    pub experiment: usize,
    /// Index into the experiment's `variants`.
    pub variant: usize,
    /// Chosen by a QA override rather than by the hash.
    pub forced: bool,
    /// The winner of a rolled-out experiment: reported in headers, never as an exposure.
    pub rollout: bool,
}

/// Why an experiment gave a request no variant (the `reason` label of
/// `abmesh_not_assigned_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request carries no id of the experiment's unit type.
    NoUnit,
    /// The unit's bucket is outside the traffic the experiment takes.
    Traffic,
    /// The request does not match `when`.
    Targeting,
    /// The unit falls in another experiment's part of the layer.
    Layer,
    /// The unit is in the holdout.
    Holdout,
    /// The experiment is paused.
    Paused,
    /// Outside the experiment's `start`/`end` window.
    Schedule,
}

impl Reason {
    /// Every reason, in the order of the metric label list.
    pub const ALL: [Reason; 7] = [
        Reason::NoUnit,
        Reason::Traffic,
        Reason::Targeting,
        Reason::Layer,
        Reason::Holdout,
        Reason::Paused,
        Reason::Schedule,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoUnit => "no_unit",
            Reason::Traffic => "traffic",
            Reason::Targeting => "targeting",
            Reason::Layer => "layer",
            Reason::Holdout => "holdout",
            Reason::Paused => "paused",
            Reason::Schedule => "schedule",
        }
    }
}

/// Everything abmesh decided about one request.
#[derive(Debug, Clone, Default)]
pub struct Evaluation<'a> {
    /// In configuration order.
    pub assignments: Vec<Assignment>,
    /// The experiments that gave no variant, and why (configuration order).
    pub not_assigned: Vec<(usize, Reason)>,
    /// Each unit type's id for this request, if it has one (indexed like `Config::units`).
    pub units: Vec<Option<Cow<'a, [u8]>>>,
    /// Unit types whose id was minted for this request (see `crate::mint`).
    pub minted: Vec<usize>,
}

impl Evaluation<'_> {
    /// Assignments that are exposures (everything but rollouts).
    pub fn exposures(&self) -> impl Iterator<Item = &Assignment> {
        self.assignments.iter().filter(|a| !a.rollout)
    }
}

/// The request's unit id for a unit type: the first source with a non-empty value of at most
/// [`MAX_UNIT_LEN`] bytes.
pub fn resolve_unit<'a>(sources: &[Source], req: &RequestView<'a>) -> Option<Cow<'a, [u8]>> {
    sources.iter().find_map(|s| {
        let v: Cow<'a, [u8]> = match s {
            Source::Header(n) => Cow::Borrowed(req.header(n.as_bytes())?),
            Source::Cookie(n) => Cow::Borrowed(req.cookie(n.as_bytes())?),
            Source::Query(n) => req.query(n.as_bytes())?,
        };
        (!v.is_empty() && v.len() <= MAX_UNIT_LEN).then_some(v)
    })
}

/// Whether the request carries one of the configured QA tokens.
pub fn has_valid_token(config: &Config, req: &RequestView) -> bool {
    let o = &config.overrides;
    if o.token_sha256.is_empty() {
        return false;
    }
    let Some(token) = req.header(o.token_header.as_bytes()) else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(token).into();
    o.token_sha256.contains(&digest)
}

/// Whether the request's token needs checking at all: it asks for overrides, or (`trust`) a
/// trusting tier must decide whether its override headers pass on. Checking only then, and
/// once, keeps the SHA-256 off every other request.
pub fn token_matters(config: &Config, req: &RequestView, trust: bool) -> bool {
    trust || req.header(config.overrides.header.as_bytes()).is_some()
}

/// Overrides from the request when `token_ok` (its token is one of the configured ones): per
/// experiment, the forced variant (empty when the request forces nothing). Unknown
/// experiments and variants are ignored.
pub fn forced_variants(config: &Config, req: &RequestView, token_ok: bool) -> Vec<Option<usize>> {
    let name = config.overrides.header.as_bytes();
    if !token_ok || req.header(name).is_none() {
        return Vec::new();
    }
    // Repeated header lines are one comma-separated list (RFC 9110, 5.3): a later member wins.
    let lines: Vec<&[u8]> = req.headers_all(name).collect();
    let joined = lines.join(&b","[..]);
    let mut forced = vec![None; config.experiments.len()];
    for (k, v) in parse_dictionary(&joined) {
        let Some(e) = config.experiment_index(k) else {
            continue;
        };
        let variants = &config.experiments[e].variants;
        if let Some(variant) = variants.iter().position(|x| x.name.as_bytes() == v) {
            forced[e] = Some(variant);
        }
    }
    forced
}

/// The hasher of a unit type's id, made on first use (`None` when the request has no id).
fn hasher_for<'h>(
    hashers: &'h mut [Option<Hasher>],
    units: &[Option<Cow<[u8]>>],
    unit: usize,
    max_salt_len: usize,
) -> Option<&'h mut Hasher> {
    let id = units.get(unit)?.as_ref()?;
    Some(
        hashers
            .get_mut(unit)?
            .get_or_insert_with(|| Hasher::new(id, max_salt_len)),
    )
}

/// Evaluates every experiment for one request at time `now_ms` (Unix milliseconds).
pub fn evaluate<'a>(config: &Config, req: &RequestView<'a>, now_ms: i64) -> Evaluation<'a> {
    let token_ok = token_matters(config, req, false) && has_valid_token(config, req);
    evaluate_units(config, req, resolve_units(config, req), now_ms, token_ok)
}

/// Each unit type's id in the request (indexed like `Config::units`).
pub fn resolve_units<'a>(config: &Config, req: &RequestView<'a>) -> Vec<Option<Cow<'a, [u8]>>> {
    config
        .units
        .iter()
        .map(|u| resolve_unit(&u.sources, req))
        .collect()
}

/// As [`evaluate`], with the unit ids already resolved (some of them perhaps minted) and the
/// token already checked.
pub fn evaluate_units<'a>(
    config: &Config,
    req: &RequestView<'a>,
    units: Vec<Option<Cow<'a, [u8]>>>,
    now_ms: i64,
    token_ok: bool,
) -> Evaluation<'a> {
    let forced = forced_variants(config, req, token_ok);
    let mut hashers: Vec<Option<Hasher>> = (0..units.len()).map(|_| None).collect();
    let max_salt = config.max_salt_len;
    // Per request, the holdout and each layer need one hash, however many experiments use them.
    let held_out = match &config.holdout {
        Some(h) => hasher_for(&mut hashers, &units, h.unit, max_salt)
            .map(|x| (h.unit, x.bucket(h.salt.as_bytes()) < h.threshold)),
        None => None,
    };
    let mut layer_buckets: Vec<Option<u32>> = vec![None; config.layers.len()];
    let mut eval = Evaluation {
        assignments: Vec::with_capacity(config.experiments.len()),
        not_assigned: Vec::with_capacity(config.experiments.len()),
        units: Vec::new(),
        minted: Vec::new(),
    };
    'experiments: for (i, e) in config.experiments.iter().enumerate() {
        let mut assign = |variant: usize, forced: bool, rollout: bool| {
            eval.assignments.push(Assignment {
                experiment: i,
                variant,
                forced,
                rollout,
            });
        };
        if e.status == Status::Paused {
            eval.not_assigned.push((i, Reason::Paused));
            continue;
        }
        if let Some(&Some(v)) = forced.get(i) {
            assign(v, true, false);
            continue;
        }
        if e.status == Status::RolledOut {
            match e.winner {
                Some(w) if e.when.matches(req) => assign(w, false, true),
                _ => eval.not_assigned.push((i, Reason::Targeting)),
            }
            continue;
        }
        let reason = 'decide: {
            if e.start_ms.is_some_and(|s| now_ms < s) || e.end_ms.is_some_and(|end| now_ms >= end) {
                break 'decide Reason::Schedule;
            }
            if !e.when.matches(req) {
                break 'decide Reason::Targeting;
            }
            let Some(id) = units.get(e.unit).and_then(Option::as_ref) else {
                break 'decide Reason::NoUnit;
            };
            if held_out == Some((e.unit, true)) {
                break 'decide Reason::Holdout;
            }
            let chosen = match &e.algorithm {
                // GrowthBook runs no experiment with fewer than two variations.
                Algorithm::GrowthBook { .. } if e.variants.len() < 2 => {
                    break 'decide Reason::Traffic
                }
                Algorithm::GrowthBook {
                    hash_version,
                    seed,
                    ranges,
                    namespace,
                } => {
                    // GrowthBook hashes strings; ids that are not UTF-8 cannot match an SDK anyway.
                    let id = String::from_utf8_lossy(id);
                    if let Some((ns, start, end)) = namespace {
                        if !growthbook::in_namespace(&id, ns, *start, *end) {
                            break 'decide Reason::Layer;
                        }
                    }
                    growthbook::hash(seed, &id, *hash_version)
                        .and_then(|n| growthbook::choose_variation(n, ranges))
                }
                Algorithm::Flagd {
                    prefix,
                    weights,
                    encoding,
                } => {
                    let bucket_by = crate::flagd::bucket_input(*encoding, prefix, id);
                    crate::flagd::choose(&bucket_by, weights)
                }
                Algorithm::Abmesh => {
                    let Some(h) = hasher_for(&mut hashers, &units, e.unit, max_salt) else {
                        break 'decide Reason::NoUnit;
                    };
                    if let Some(slot) = e.layer {
                        let layer = &config.layers[slot.layer];
                        let b = *layer_buckets[slot.layer]
                            .get_or_insert_with(|| h.bucket(layer.salt.as_bytes()));
                        if !(slot.start <= b && b < slot.end) {
                            break 'decide Reason::Layer;
                        }
                    }
                    e.variant_at(h.bucket(e.salt.as_bytes()), now_ms)
                }
            };
            match chosen {
                Some(v) => {
                    assign(v, false, false);
                    continue 'experiments;
                }
                None => Reason::Traffic,
            }
        };
        eval.not_assigned.push((i, reason));
    }
    drop(hashers);
    eval.units = units;
    eval
}
