//! The plugin configuration: parsed once, validated completely (every error, each with its
//! JSON path), and compiled into the form the request path uses.

mod experiment;
mod layers;
pub mod limits;
mod peers;
mod sections;
mod units;
mod variants;
mod when;

use experiment::*;
use layers::*;
use peers::*;
use sections::*;
use units::*;
use variants::*;
use when::*;

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
    /// The OpenFeature Remote Evaluation Protocol, answered by the filter (`ofrep`; off when
    /// `None`).
    pub ofrep: Option<Ofrep>,
    /// Experiment indices sorted by key: a key a request names is found by binary search, not
    /// by comparing it with every key.
    by_key: Vec<usize>,
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

impl Inbound {
    /// Every mode, in the order an error lists them.
    pub const ALL: [Inbound; 2] = [Inbound::Strip, Inbound::Trust];
}

impl Keyword for Inbound {
    fn as_str(self) -> &'static str {
        match self {
            Inbound::Strip => "strip",
            Inbound::Trust => "trust",
        }
    }
    fn gloss(self) -> Option<&'static str> {
        Some(match self {
            Inbound::Strip => "an edge",
            Inbound::Trust => "an internal tier",
        })
    }
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
        /// `bucketing` (`v2`, flagd's releases up to now, or `v3`, its CBOR encoding) and
        /// the bucket-by form.
        encoding: crate::flagd::Encoding,
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
    /// `, key=name`: this variant's member of the assignments dictionary after the separator
    /// that precedes every member but the first (one copy per member on the request path).
    pub member: String,
    /// `{"experiment":"key","variant":"name","unit":"unit","forced":` — the start of this
    /// variant's entry in exposure records. With `exposure.format` `otel`: the whole map of a
    /// forced assignment but its unit id and closing brace (`crate::exposure::otel_entries`).
    pub exposure_head: String,
    /// `,` then the whole entry of a hashed (not forced) assignment:
    /// `,{"experiment":…,"unit":…,"forced":false}` — one copy per exposure. With `otel`: `,`
    /// then the map of a hashed assignment but its unit id and closing brace.
    pub exposure_entry: String,
    /// `value`, rendered as JSON: what OFREP answers for this variant (default: its name).
    pub value: Option<String>,
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
    /// `output.max_header_bytes`: the most bytes of header names and values the filter may add
    /// to a request (checked against the configuration's worst case, [`limits::bounds`]).
    pub max_header_bytes: usize,
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
    /// Every level, from the least to the most severe.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Critical,
    ];

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
/// `ofrep`: requests under `path_prefix` are OFREP evaluations, answered from this
/// configuration; the evaluation context's attributes stand for request sources.
pub struct Ofrep {
    /// `/ofrep/v1/`: `<prefix>evaluate/flags/{key}` and `<prefix>evaluate/flags`.
    pub path_prefix: String,
    /// Context attribute → the request source it stands for (`targetingKey` → the first
    /// unit type's first source unless said otherwise).
    pub context: Vec<(String, Source)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The layout of exposure records (`exposure.format`).
pub enum ExposureFormat {
    /// design.md §5: `{"ts_ms":…,"request_id":…,"units":{…},"assignments":[…]}`.
    Abmesh,
    /// One map of OpenTelemetry feature-flag attributes per assignment (`feature_flag.key`,
    /// `feature_flag.result.variant`, …) under `evaluations`, for a Collector to turn into
    /// `feature_flag.evaluation` events.
    Otel,
}

impl ExposureFormat {
    /// Every format.
    pub const ALL: [ExposureFormat; 2] = [ExposureFormat::Abmesh, ExposureFormat::Otel];
}

impl Keyword for ExposureFormat {
    fn as_str(self) -> &'static str {
        match self {
            ExposureFormat::Abmesh => "abmesh",
            ExposureFormat::Otel => "otel",
        }
    }

    fn gloss(self) -> Option<&'static str> {
        Some(match self {
            ExposureFormat::Abmesh => "one record of assignments",
            ExposureFormat::Otel => "OpenTelemetry feature-flag attributes per assignment",
        })
    }
}

#[derive(Debug, Clone)]
/// How exposures are recorded (`exposure`).
pub struct ExposureConfig {
    /// The layout of each record.
    pub format: ExposureFormat,
    /// Also write each record to the host log (default false: the access log carries it).
    pub log: bool,
    /// At this level.
    pub log_level: LogLevel,
    /// How unit ids appear in records.
    pub unit_id: UnitIdMode,
    /// Store the record and the dictionary in filter state (for the access log).
    pub filter_state: bool,
    /// `exposure.max_record_bytes`: the longest record the configuration may produce
    /// (checked against its worst case, [`limits::bounds`]).
    pub max_record_bytes: usize,
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
    "ofrep",
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
    ///     units, holdout, layers, experiments, output, exposure, overrides, inbound, metrics, ofrep");
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

    /// The index of the experiment with this key.
    pub fn experiment_index(&self, key: &[u8]) -> Option<usize> {
        let at = self
            .by_key
            .binary_search_by(|&i| self.experiments[i].key.as_bytes().cmp(key))
            .ok()?;
        self.by_key.get(at).copied()
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

    let layers = compile_layers(&top, &units, errors);

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
    let ofrep = compile_ofrep(&top, &units, errors);
    let inbound = top
        .keyword("inbound", &Inbound::ALL, errors)
        .unwrap_or(Inbound::Strip);

    let experiments: Vec<Experiment> = experiments.into_iter().map(|(_, e)| e).collect();
    let max_salt_len = experiments
        .iter()
        .map(|e| e.salt.len())
        .chain(layers.iter().map(|l| l.salt.len()))
        .chain(holdout.iter().map(|h| h.salt.len()))
        .max()
        .unwrap_or(0);
    let config = Config {
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
        ofrep,
        by_key: Vec::new(),
    };
    let mut config = config;
    let mut by_key: Vec<usize> = (0..config.experiments.len()).collect();
    by_key.sort_unstable_by(|&a, &b| config.experiments[a].key.cmp(&config.experiments[b].key));
    config.by_key = by_key;
    if config.exposure.format == ExposureFormat::Otel {
        crate::exposure::otel_entries(&mut config);
    }
    limits::check(&config, errors);
    Some(config)
}

static EMPTY: Vec<Value> = Vec::new();
