//! The plugin configuration: parsed once, validated completely (every error, each with its
//! JSON path), and compiled into the form the request path uses.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::hash::{variant_ranges, BUCKETS};
use crate::mint::Mint;
use crate::ramp::RampStep;
use crate::reader::{
    field_path, index_path, json_syntax_error, percent_basis_points, string_list, Errors, Keyword,
    Obj,
};
use crate::targeting::{Condition, When};

/// The largest configuration accepted (1 MiB).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// The most experiments a configuration may define.
pub const MAX_EXPERIMENTS: usize = 1000;
/// The most variants an experiment may have.
pub const MAX_VARIANTS: usize = 100;

/// A compiled, valid configuration. Build it with [`Config::parse`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The unit types, in configuration order.
    pub units: Vec<UnitType>,
    /// The longest salt of any experiment, layer or holdout (sizes the hash key buffer).
    pub max_salt_len: usize,
    /// The holdout, if any.
    pub holdout: Option<Holdout>,
    /// The layers (indexed by `LayerSlot::layer`).
    pub layers: Vec<Layer>,
    /// The experiments, in configuration order.
    pub experiments: Vec<Experiment>,
    /// Where assignments are written.
    pub output: Output,
    /// How exposures are recorded.
    pub exposure: ExposureConfig,
    /// QA overrides.
    pub overrides: Overrides,
    /// What this instance does with assignments that arrive with a request.
    pub inbound: Inbound,
    /// `metrics.replicates`: the number of replicate series per variant (0: none).
    pub replicates: u16,
}

/// The default of `metrics.replicates`: the simulation study in the README shows false
/// alarms at the nominal rate from 16 replicates on, and 32 loses almost no power to the
/// small-sample calibration (t with about 60 degrees of freedom), at 4 × 32 series a variant.
pub const DEFAULT_REPLICATES: u16 = 32;

/// The most replicates a configuration may ask for.
pub const MAX_REPLICATES: u16 = 256;

/// What an instance does with assignments that arrive with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Remove them (the edge: a client must never choose its variant).
    Strip,
    /// Keep those for experiments this instance does not define (an internal tier behind an
    /// abmesh edge, never reachable by clients).
    Trust,
}

#[derive(Debug, Clone)]
/// A named unit type (user, device…) and where a request carries its id.
pub struct UnitType {
    /// Its name in the configuration.
    pub name: String,
    /// The mint cookie, when not listed, is read last.
    pub sources: Vec<Source>,
    /// How an id is minted for a request that has none (anonymous visitors).
    pub mint: Option<Mint>,
}

/// Where a unit id is read from. Names are stored lower-case for headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (lower-case name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query-string parameter.
    Query(String),
}

#[derive(Debug, Clone)]
/// Units kept out of every experiment of their unit type.
pub struct Holdout {
    /// Index into `Config::units`.
    pub unit: usize,
    /// The hash salt.
    pub salt: String,
    /// Units whose holdout bucket is below this are held out.
    pub threshold: u32,
}

#[derive(Debug, Clone)]
/// A layer: experiments that share its 10,000 buckets and never share a unit.
pub struct Layer {
    /// Its name in the configuration.
    pub name: String,
    /// Index into `Config::units`.
    pub unit: usize,
    /// The hash salt.
    pub salt: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// An experiment's `status`.
pub enum Status {
    /// Assigns units (the default).
    Running,
    /// Assigns nobody.
    Paused,
    /// Gives every matching request the winner; records no exposure.
    RolledOut,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 3] = [Status::Running, Status::Paused, Status::RolledOut];

    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::RolledOut => "rolled_out",
        }
    }
}

impl Keyword for Status {
    fn as_str(self) -> &'static str {
        Status::as_str(self)
    }
}

/// How an experiment maps a unit to a variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Hash spec v1 (the default): `salt`, integer weights, `traffic_percent`, layers.
    Abmesh,
    /// GrowthBook's semantics (`crate::growthbook`): the variants' float weights and
    /// `coverage` give `ranges`, the unit id hashed with `seed` and `hash_version` picks one.
    GrowthBook {
        /// GrowthBook's hash version (1 or 2).
        hash_version: u32,
        /// GrowthBook's seed.
        seed: String,
        /// Each variation's bucket range, as fractions.
        ranges: Vec<(f64, f64)>,
        /// `(namespace id, start, end)`: only units whose namespace hash is in `[start, end)`.
        namespace: Option<(String, f64, f64)>,
    },
    /// flagd's `fractional` (`crate::flagd`): murmur3 of `prefix` followed by the unit id, and
    /// the variants' integer weights.
    Flagd {
        /// `flag_key` or `bucket_by_seed`, hashed before the unit id.
        prefix: Vec<u8>,
        /// The fractional weights.
        weights: Vec<u64>,
    },
}

#[derive(Debug, Clone)]
/// A compiled experiment.
pub struct Experiment {
    /// Its unique key.
    pub key: String,
    /// How units are bucketed.
    pub algorithm: Algorithm,
    /// Index into `Config::units`.
    pub unit: usize,
    /// The hash salt.
    pub salt: String,
    /// Running, paused or rolled out.
    pub status: Status,
    /// Traffic in basis points (0–10,000); a ramp's last step when there is one.
    pub traffic_bp: u32,
    /// The variants; the first is control.
    pub variants: Vec<Variant>,
    /// Its part of a layer, if any.
    pub layer: Option<LayerSlot>,
    /// Targeting.
    pub when: When,
    /// The schedule window's start (ms since the epoch).
    pub start_ms: Option<i64>,
    /// The schedule window's end (ms since the epoch).
    pub end_ms: Option<i64>,
    /// The full route header name (`x-exp-<key>`) when `route_header` is true.
    pub route_header: Option<String>,
    /// The winner, when rolled out.
    pub winner: Option<usize>,
    /// Scheduled traffic steps; when given, `traffic_bp` and the variants' ranges are those of
    /// the last step.
    pub ramp: Vec<RampStep>,
}

impl Experiment {
    /// The variant whose range holds `bucket` at `now_ms` (ramps read the clock).
    pub fn variant_at(&self, bucket: u32, now_ms: i64) -> Option<usize> {
        if self.ramp.is_empty() {
            return self
                .variants
                .iter()
                .position(|v| v.range.0 <= bucket && bucket < v.range.1);
        }
        crate::ramp::current(&self.ramp, now_ms)?
            .ranges
            .iter()
            .position(|r| r.0 <= bucket && bucket < r.1)
    }
}

#[derive(Debug, Clone)]
/// A variant of an experiment.
pub struct Variant {
    /// Its name in the configuration.
    pub name: String,
    /// `key=name`, this variant's member of the assignments dictionary.
    pub member: String,
    /// `{"experiment":"key","variant":"name","unit":"unit","forced":` — the start of this
    /// variant's entry in exposure records.
    pub exposure_head: String,
    /// Its weight.
    pub weight: u64,
    /// Buckets `[start, end)` this variant covers at the experiment's traffic.
    pub range: (u32, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// An experiment's part of a layer.
pub struct LayerSlot {
    /// Index into `Config::layers`.
    pub layer: usize,
    /// First bucket.
    pub start: u32,
    /// One past the last bucket.
    pub end: u32,
}

#[derive(Debug, Clone)]
/// Where assignments are written (`output`).
pub struct Output {
    /// The header that carries the assignments dictionary (`x-experiments`).
    pub header: String,
    /// The prefix of route headers (`x-exp-`).
    pub route_header_prefix: String,
    /// The response header that echoes the assignments, if any.
    pub response_header: Option<String>,
    /// Also carry the assignments as the `abmesh` member of W3C `baggage`.
    pub baggage: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The host log level of exposure lines.
pub enum LogLevel {
    /// trace
    Trace,
    /// debug
    Debug,
    /// info
    Info,
    /// warn
    Warn,
    /// error
    Error,
    /// critical
    Critical,
}

impl LogLevel {
    /// The names, in level order.
    pub const NAMES: [&'static str; 6] = ["trace", "debug", "info", "warn", "error", "critical"];

    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How exposure records carry unit ids (`exposure.unit_id`).
pub enum UnitIdMode {
    /// As received (JSON-escaped).
    Raw,
    /// The hex of `xxh3_64(id)`.
    Xxh3,
    /// Not at all.
    Omit,
}

impl UnitIdMode {
    /// Every mode.
    pub const ALL: [UnitIdMode; 3] = [UnitIdMode::Raw, UnitIdMode::Xxh3, UnitIdMode::Omit];
}

impl Keyword for UnitIdMode {
    fn as_str(self) -> &'static str {
        match self {
            UnitIdMode::Raw => "raw",
            UnitIdMode::Xxh3 => "xxh3",
            UnitIdMode::Omit => "omit",
        }
    }
}

#[derive(Debug, Clone)]
/// How exposures are recorded (`exposure`).
pub struct ExposureConfig {
    /// Also write each record to the host log.
    pub log: bool,
    /// At this level.
    pub log_level: LogLevel,
    /// How unit ids appear in records.
    pub unit_id: UnitIdMode,
    /// Store the record and the dictionary in filter state (for the access log).
    pub filter_state: bool,
}

#[derive(Debug, Clone)]
/// QA overrides (`overrides`).
pub struct Overrides {
    /// The header carrying the overrides dictionary (`key=variant, …`).
    pub header: String,
    /// The header carrying the QA token.
    pub token_header: String,
    /// The SHA-256 digests of the accepted tokens.
    pub token_sha256: Vec<[u8; 32]>,
}

/// Why the configuration was refused: every problem found, each `path: rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Each error as `path: rule`, in the order found.
    pub errors: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

const TOP_FIELDS: &[&str] = &[
    "units",
    "holdout",
    "layers",
    "experiments",
    "output",
    "exposure",
    "overrides",
    "inbound",
    "metrics",
];
const GROWTHBOOK_FIELDS: &[&str] = &["hash_version", "seed", "coverage", "namespace"];
const FLAGD_FIELDS: &[&str] = &["flag_key", "bucket_by_seed"];
const EXPERIMENT_FIELDS: &[&str] = &[
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

const KEY_RULE: &str =
    "must start with a lower-case letter and have at most 64 characters from a-z, 0-9, '_', '.', '-'";
const VARIANT_RULE: &str =
    "must start with a letter and have at most 64 characters from A-Z, a-z, 0-9, '_', '.', '-'";

/// `^[a-z][a-z0-9_.-]{0,63}$`
pub fn is_valid_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
}

/// `^[A-Za-z][A-Za-z0-9_.-]{0,63}$`
pub fn is_valid_variant(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// The error of a cookie name that is not an RFC 9110 token.
pub(crate) const NOT_A_COOKIE_NAME: &str =
    "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)";

/// An RFC 9110 token: what a header name (abmesh stores them lower-case) and a cookie name
/// may be.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

impl Config {
    /// Parses, validates and compiles a configuration. On failure, every problem found is
    /// returned, not just the first.
    ///
    /// ```
    /// let config = abmesh::Config::parse(br#"{"units": {"user": [{"header": "x-user-id"}]},
    ///   "experiments": [{"key": "demo", "variants": [{"name": "a", "weight": 1}]}]}"#).unwrap();
    /// assert_eq!(config.experiments[0].key, "demo");
    /// let err = abmesh::Config::parse(br#"{"experimnts": []}"#).unwrap_err();
    /// assert_eq!(err.errors[0], "config: unknown field \"experimnts\"; expected one of: \
    ///     units, holdout, layers, experiments, output, exposure, overrides, inbound, metrics");
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let mut errors = Errors::default();
        if bytes.len() > MAX_CONFIG_BYTES {
            errors.push(
                "",
                format!(
                    "must be at most 1 MiB ({MAX_CONFIG_BYTES} bytes), found {} bytes",
                    bytes.len()
                ),
            );
            return Err(ConfigError { errors: errors.0 });
        }
        let value: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                errors.push("", json_syntax_error(&e));
                return Err(ConfigError { errors: errors.0 });
            }
        };
        let config = compile(&value, &mut errors);
        match config {
            Some(c) if errors.0.is_empty() => Ok(c),
            _ => Err(ConfigError { errors: errors.0 }),
        }
    }

    /// The index of the unit type `name`.
    pub fn unit_index(&self, name: &str) -> Option<usize> {
        self.units.iter().position(|u| u.name == name)
    }
}

fn compile(root: &Value, errors: &mut Errors) -> Option<Config> {
    let top = Obj::new(root, "", TOP_FIELDS, errors)?;
    let units = compile_units(&top, errors);
    let default_unit = || if units.len() == 1 { Some(0) } else { None };

    let holdout = top.get("holdout").and_then(|v| {
        let o = Obj::new(v, "holdout", &["unit", "salt", "percent"], errors)?;
        let unit = unit_field(&o, &units, errors);
        let salt = o.required_string("salt", errors);
        let threshold = match o.get("percent") {
            Some(p) => percent_basis_points(p, &o.path_of("percent"), errors),
            None => {
                errors.push(&o.path_of("percent"), "is required");
                None
            }
        };
        Some(Holdout {
            unit: unit?,
            salt: salt?.to_string(),
            threshold: threshold?,
        })
    });

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
            let unit = unit_field(&o, &units, errors);
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

    // `output` is compiled first, because each experiment renders its route header name with
    // its prefix; its errors are still reported where they always were, after the
    // experiments'.
    let mut output_errors = Errors::default();
    let output = compile_output(&top, &mut output_errors);
    let mut experiments = Vec::new();
    if let Some(list) = top.list("experiments", errors) {
        if list.len() > MAX_EXPERIMENTS {
            errors.push(
                "experiments",
                format!(
                    "at most {MAX_EXPERIMENTS} experiments are allowed, found {}",
                    list.len()
                ),
            );
        }
        let mut first_seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, v) in list.iter().enumerate() {
            let path = index_path("experiments", i);
            if let Some(key) = v.get("key").and_then(Value::as_str) {
                if let Some(first) = first_seen.get(key) {
                    errors.push(
                        &field_path(&path, "key"),
                        format!("duplicate experiment key \"{key}\" (first used at experiments[{first}])"),
                    );
                } else {
                    first_seen.insert(key, i);
                }
            }
            let ctx = Ctx {
                units: &units,
                layers: &layers,
                default_unit: default_unit(),
                route_header_prefix: &output.route_header_prefix,
            };
            if let Some(e) = compile_experiment(v, &path, &ctx, errors) {
                experiments.push((i, e));
            }
        }
    }
    check_layer_overlaps(&experiments, &layers, errors);
    errors.0.extend(output_errors.0);
    let exposure = compile_exposure(&top, errors);
    let overrides = compile_overrides(&top, errors);
    let replicates = compile_metrics(&top, errors);
    let inbound = match top.string("inbound", errors) {
        None | Some("strip") => Inbound::Strip,
        Some("trust") => Inbound::Trust,
        Some(other) => {
            errors.push(
                "inbound",
                format!("must be \"strip\" (an edge) or \"trust\" (an internal tier), found \"{other}\""),
            );
            Inbound::Strip
        }
    };

    let experiments: Vec<Experiment> = experiments.into_iter().map(|(_, e)| e).collect();
    let max_salt_len = experiments
        .iter()
        .map(|e| e.salt.len())
        .chain(layers.iter().map(|l| l.salt.len()))
        .chain(holdout.iter().map(|h| h.salt.len()))
        .max()
        .unwrap_or(0);
    Some(Config {
        units,
        max_salt_len,
        holdout,
        layers,
        experiments,
        output,
        exposure,
        overrides,
        inbound,
        replicates,
    })
}

fn compile_metrics(top: &Obj, errors: &mut Errors) -> u16 {
    let Some(o) = top.section("metrics", &["replicates"], errors) else {
        return DEFAULT_REPLICATES;
    };
    match o.get("replicates") {
        None => DEFAULT_REPLICATES,
        Some(v) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(n) if n <= MAX_REPLICATES => n,
            _ => {
                errors.push(
                    &o.path_of("replicates"),
                    format!(
                        "must be an integer from 0 (no replicate series) to {MAX_REPLICATES}, found {v}"
                    ),
                );
                DEFAULT_REPLICATES
            }
        },
    }
}

static EMPTY: Vec<Value> = Vec::new();

fn compile_units(top: &Obj, errors: &mut Errors) -> Vec<UnitType> {
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
            let spath = index_path(&path, i);
            let Some(o) = Obj::new(s, &spath, &["header", "cookie", "query"], errors) else {
                continue;
            };
            let given: Vec<&str> = ["header", "cookie", "query"]
                .into_iter()
                .filter(|f| o.get(f).is_some())
                .collect();
            if given.len() != 1 {
                errors.push(
                    &spath,
                    "must have exactly one of \"header\", \"cookie\" or \"query\"",
                );
                continue;
            }
            let field = given[0];
            let Some(n) = o.string(field, errors) else {
                continue;
            };
            let fpath = o.path_of(field);
            let source = match field {
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
            };
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
fn header_name(name: &str, path: &str, errors: &mut Errors) -> Option<String> {
    if is_token(name) {
        Some(name.to_ascii_lowercase())
    } else {
        errors.push(path, format!("\"{name}\" is not a valid header name"));
        None
    }
}

/// The index of unit type `name`, or an error at `path` listing the defined ones.
fn find_unit(units: &[UnitType], name: &str, path: &str, errors: &mut Errors) -> Option<usize> {
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
fn unit_field(o: &Obj, units: &[UnitType], errors: &mut Errors) -> Option<usize> {
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
fn header_field(o: &Obj, name: &str, errors: &mut Errors) -> Option<String> {
    header_name(o.string(name, errors)?, &o.path_of(name), errors)
}

struct Ctx<'a> {
    units: &'a [UnitType],
    layers: &'a [Layer],
    default_unit: Option<usize>,
    route_header_prefix: &'a str,
}

fn compile_experiment(v: &Value, path: &str, ctx: &Ctx, errors: &mut Errors) -> Option<Experiment> {
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

/// The variants (float weights summing to 1) and GrowthBook parameters of an experiment with
/// `"algorithm": "growthbook"`.
fn compile_growthbook(o: &Obj, key: &str, errors: &mut Errors) -> (Vec<Variant>, Algorithm) {
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

/// The `variants` of `o`, with the rules every algorithm shares (a non-empty list of at most
/// MAX_VARIANTS, valid unique names); `weight` reads each variant's weight its own way. Returns
/// the list's path, `(name, weight)` per readable variant, and whether every element was one.
fn read_variants<W>(
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

fn compile_variants(o: &Obj, traffic_bp: u32, errors: &mut Errors) -> Vec<Variant> {
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

fn compile_when(v: &Value, path: &str, errors: &mut Errors) -> When {
    let mut when = When::default();
    let Some(o) = Obj::new(
        v,
        path,
        &[
            "path_prefix",
            "methods",
            "hosts",
            "headers",
            "cookies",
            "query",
        ],
        errors,
    ) else {
        return when;
    };
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

fn compile_condition(v: &Value, path: &str, errors: &mut Errors) -> Option<Condition> {
    let o = Obj::new(v, path, &["in", "not_in", "present", "prefix"], errors)?;
    let given: Vec<&str> = ["in", "not_in", "present", "prefix"]
        .into_iter()
        .filter(|f| o.get(f).is_some())
        .collect();
    if given.len() != 1 {
        errors.push(
            path,
            "must have exactly one of \"in\", \"not_in\", \"present\" or \"prefix\"",
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
        _ => o
            .string("prefix", errors)
            .map(|p| Condition::Prefix(p.as_bytes().to_vec())),
    }
}

fn check_layer_overlaps(
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

fn compile_output(top: &Obj, errors: &mut Errors) -> Output {
    let mut out = Output {
        header: "x-experiments".into(),
        route_header_prefix: "x-exp-".into(),
        response_header: None,
        baggage: false,
    };
    let Some(o) = top.section(
        "output",
        &[
            "header",
            "route_header_prefix",
            "response_header",
            "baggage",
        ],
        errors,
    ) else {
        return out;
    };
    if let Some(h) = header_field(&o, "header", errors) {
        out.header = h;
    }
    if let Some(p) = o.string("route_header_prefix", errors) {
        match header_name(p, &o.path_of("route_header_prefix"), errors) {
            Some(p) if out.header.starts_with(&p) => errors.push(
                &o.path_of("route_header_prefix"),
                format!("must not be a prefix of output.header \"{}\"", out.header),
            ),
            Some(p) => out.route_header_prefix = p,
            None => {}
        }
    }
    out.response_header = header_field(&o, "response_header", errors);
    out.baggage = o.bool("baggage", errors).unwrap_or(false);
    out
}

fn compile_exposure(top: &Obj, errors: &mut Errors) -> ExposureConfig {
    let mut out = ExposureConfig {
        log: true,
        log_level: LogLevel::Info,
        unit_id: UnitIdMode::Raw,
        filter_state: true,
    };
    let Some(o) = top.section(
        "exposure",
        &["log", "log_level", "unit_id", "filter_state"],
        errors,
    ) else {
        return out;
    };
    out.log = o.bool("log", errors).unwrap_or(true);
    out.filter_state = o.bool("filter_state", errors).unwrap_or(true);
    if let Some(level) = o.string("log_level", errors) {
        const LEVELS: [LogLevel; 6] = [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Critical,
        ];
        match LogLevel::NAMES.iter().position(|n| *n == level) {
            Some(i) => out.log_level = LEVELS[i],
            None => errors.push(
                &o.path_of("log_level"),
                format!(
                    "must be one of {}, found \"{level}\"",
                    LogLevel::NAMES.join(", ")
                ),
            ),
        }
    }
    if let Some(mode) = o.keyword("unit_id", &UnitIdMode::ALL, errors) {
        out.unit_id = mode;
    }
    out
}

fn compile_overrides(top: &Obj, errors: &mut Errors) -> Overrides {
    let mut out = Overrides {
        header: "x-abmesh-force".into(),
        token_header: "x-abmesh-token".into(),
        token_sha256: Vec::new(),
    };
    let Some(o) = top.section(
        "overrides",
        &["header", "token_header", "token_sha256"],
        errors,
    ) else {
        return out;
    };
    if let Some(h) = header_field(&o, "header", errors) {
        out.header = h;
    }
    if let Some(h) = header_field(&o, "token_header", errors) {
        out.token_header = h;
    }
    let path = o.path_of("token_sha256");
    match o.get("token_sha256") {
        None => errors.push(
            &path,
            "is required (the SHA-256 hex digests of the accepted QA tokens)",
        ),
        Some(l) => {
            for (i, hex) in string_list(l, &path, errors).into_iter().enumerate() {
                match parse_sha256_hex(hex) {
                    Some(d) => out.token_sha256.push(d),
                    None => errors.push(
                        &index_path(&path, i),
                        format!(
                            "must be 64 hexadecimal characters (a SHA-256 digest), found \"{hex}\""
                        ),
                    ),
                }
            }
        }
    }
    out
}

fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}
