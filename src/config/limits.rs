//! What a configuration can cost at most, computed when it is compiled: the Envoy stats it may
//! create, the bytes it may add to a request, the size of an exposure record. A configuration
//! whose worst case passes a limit is refused, so no request can meet an output an upstream
//! rejects and no publication can define a million stats (SECURITY.md, "Limits", has the
//! measurements behind each number).

use super::{Config, Errors, ExposureFormat, Status, UnitIdMode};
use crate::counts;
use crate::metrics::ErrorKind;

/// The most Envoy stats series a configuration may create. Measured with 64-character names
/// (bench/limits.py): 113,908 series made a 23.5 MB `/stats/prometheus` scraped in 0.32 s and
/// 40 MB more Envoy memory; the limit keeps a scrape near 20 MB and well inside Prometheus'
/// default 10 s timeout, while 1,000 experiments of two or three variants without replicates
/// still fit.
pub const MAX_SERIES: u64 = 100_000;

/// The default of `output.max_header_bytes`: nginx (`large_client_header_buffers`) and Apache
/// (`LimitRequestFieldSize`, 8,190) refuse a request header line past about 8 KB by default,
/// and Node's whole request head is limited to 16 KB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8192;

/// The largest `output.max_header_bytes`: Envoy's own default limit on a request's headers
/// (`max_request_headers_kb`, 60 KiB).
pub const MAX_HEADER_BYTES_CEILING: usize = 61_440;

/// The default of `exposure.max_record_bytes`: container runtimes (containerd's CRI logging,
/// Docker's `json-file`) split a log line longer than 16 KiB into partial lines.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16_384;

/// The largest `exposure.max_record_bytes`: the OpenTelemetry Collector's `filelog` receiver
/// drops the rest of a line past 1 MiB (`max_log_size`), the most generous common reader.
pub const MAX_RECORD_BYTES_CEILING: usize = 1 << 20;

/// The longest `x-request-id` an exposure record carries; a longer one is recorded as `null`
/// (Envoy's own request ids are 36-byte UUIDs).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A JSON string's worst case for `n` bytes of input: every byte a `\u00XX` escape.
const fn escaped(n: usize) -> usize {
    6 * n + 2
}

/// The worst case of each output of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Envoy stats series the filter may define (every series, replicates included).
    pub series: u64,
    /// Bytes of header names and values the filter may add to one request: the assignments
    /// dictionary and every route header, with every experiment that can be assigned assigned
    /// (QA overrides can force them all, across layers) at its longest variant, forced.
    pub header_bytes: usize,
    /// The longest assignments dictionary (also the response echo and the filter-state value).
    pub dictionary_bytes: usize,
    /// The longest exposure record.
    pub record_bytes: usize,
}

/// The worst case of each output of `config`.
pub fn bounds(config: &Config) -> Bounds {
    let live = || {
        config
            .experiments
            .iter()
            .filter(|e| e.status != Status::Paused)
    };
    let longest = |e: &super::Experiment, f: fn(&super::Variant) -> usize| {
        e.variants.iter().map(f).max().unwrap_or(0)
    };
    // `, key=variant;forced` per member (the first without `, `).
    let members: usize = live()
        .map(|e| longest(e, |v| v.member.len()) + ";forced".len())
        .sum();
    let dictionary_bytes = members.saturating_sub(2);
    let route: usize = live()
        .filter_map(|e| Some(e.route_header.as_ref()?.len() + longest(e, |v| v.name.len())))
        .sum();
    let header_bytes = if dictionary_bytes == 0 {
        route
    } else {
        config.output.header.len() + dictionary_bytes + route
    };
    Bounds {
        series: counts::series_bound(config),
        header_bytes,
        dictionary_bytes,
        record_bytes: record_bound(config),
    }
}

/// The longest exposure record: every live experiment exposed at its longest entry, every unit
/// type an experiment uses present (and minted) with the longest id, the longest request id.
fn record_bound(config: &Config) -> usize {
    if config.exposure.format == ExposureFormat::Otel {
        return otel_record_bound(config);
    }
    let fixed = r#"{"ts_ms":,"request_id":,"units":{},"assignments":[]}"#.len();
    let ts = i64::MIN.to_string().len();
    // Each entry is rendered with the comma that precedes all but the first.
    let entries: usize = config
        .experiments
        .iter()
        .filter(|e| e.status != Status::Paused)
        .map(|e| {
            let v = e.variants.iter().map(|v| v.exposure_entry.len()).max();
            v.unwrap_or(0)
        })
        .sum::<usize>()
        .saturating_sub(1);
    let used = |u: usize| config.experiments.iter().any(|e| e.unit == u);
    let id = id_bound(config);
    // Unit names are plain (the key syntax): quoted, never escaped. Lists are comma-separated.
    let listed = |names: &mut dyn Iterator<Item = usize>| {
        let (n, bytes) = names.fold((0usize, 0usize), |(n, b), len| (n + 1, b + len));
        bytes + n.saturating_sub(1)
    };
    let units = if id == 0 {
        0
    } else {
        let names = (0..config.units.len()).filter(|&u| used(u));
        listed(&mut names.map(|u| config.units[u].name.len() + 2 + 1 + id))
    };
    fixed + ts + escaped(MAX_REQUEST_ID_BYTES) + units + minted_bound(config) + entries
}

/// The longest id an exposure record carries for one unit, as `exposure.unit_id` writes it.
fn id_bound(config: &Config) -> usize {
    match config.exposure.unit_id {
        UnitIdMode::Raw => escaped(crate::hash::MAX_UNIT_LEN),
        UnitIdMode::Xxh3 => 18,
        UnitIdMode::Omit => 0,
    }
}

/// `,"minted":[…]` with every unit type an experiment uses minted.
fn minted_bound(config: &Config) -> usize {
    let used = |u: usize| config.experiments.iter().any(|e| e.unit == u);
    // Unit names are plain (the key syntax): quoted, never escaped; comma-separated.
    let (n, bytes) = (0..config.units.len())
        .filter(|&u| used(u) && config.units[u].mint.is_some())
        .fold((0usize, 0usize), |(n, b), u| {
            (n + 1, b + config.units[u].name.len() + 2)
        });
    match n {
        0 => 0,
        n => r#","minted":[]"#.len() + bytes + n - 1,
    }
}

/// [`record_bound`] for `exposure.format` `otel`: every live experiment's evaluation at its
/// longest map (a forced one: its reason is the longer), each with the longest unit id.
fn otel_record_bound(config: &Config) -> usize {
    let fixed = r#"{"ts_ms":,"request_id":,"evaluations":[]}"#.len();
    let ts = i64::MIN.to_string().len();
    let id = match id_bound(config) {
        0 => 0,
        n => crate::exposure::CONTEXT_ID.len() + n,
    };
    let entries: usize = config
        .experiments
        .iter()
        .filter(|e| e.status != Status::Paused)
        .map(|e| {
            let map = e.variants.iter().map(|v| {
                v.exposure_head
                    .len()
                    .max(v.exposure_entry.len().saturating_sub(1))
            });
            // Preceded by a comma, closed by a brace.
            1 + map.max().unwrap_or(0) + id + 1
        })
        .sum::<usize>()
        .saturating_sub(1);
    fixed + ts + escaped(MAX_REQUEST_ID_BYTES) + minted_bound(config) + entries
}

/// A count in groups of thousands, as every limit message and report shows them: `1,047,149`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Refuses a configuration whose worst case passes a limit, naming the count and the limit.
pub(super) fn check(config: &Config, errors: &mut Errors) {
    let b = bounds(config);
    if b.series > MAX_SERIES {
        errors.push(
            "metrics",
            format!(
                "the experiments can create {} Envoy stats series, more than the limit of {} \
                 (per experiment {}, per variant {} + 4 per replicate with metrics.replicates {}, \
                 and {}): use fewer experiments or variants, or fewer replicates",
                grouped(b.series),
                grouped(MAX_SERIES),
                counts::PER_EXPERIMENT,
                counts::PER_VARIANT,
                config.replicates,
                ErrorKind::COUNT,
            ),
        );
    }
    let cap = config.output.max_header_bytes;
    if b.header_bytes > cap {
        errors.push(
            "output",
            format!(
                "the headers abmesh adds to a request can reach {} bytes (the assignments \
                 dictionary and the route headers with every experiment assigned), more than \
                 output.max_header_bytes ({}): use fewer or shorter experiment keys and variant \
                 names, fewer route headers, or raise output.max_header_bytes",
                grouped(b.header_bytes as u64),
                grouped(cap as u64),
            ),
        );
    }
    let cap = config.exposure.max_record_bytes;
    if b.record_bytes > cap {
        errors.push(
            "exposure",
            format!(
                "an exposure record can reach {} bytes (every experiment exposed, every unit id \
                 at {} bytes), more than exposure.max_record_bytes ({}): use fewer or shorter \
                 experiment keys and variant names, exposure.unit_id \"xxh3\", or raise \
                 exposure.max_record_bytes",
                grouped(b.record_bytes as u64),
                crate::hash::MAX_UNIT_LEN,
                grouped(cap as u64),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_numbers_read_in_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_047_149), "1,047,149");
    }
}
