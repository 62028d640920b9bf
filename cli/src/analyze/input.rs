//! Reading access logs: files (plain or gzip, by their first bytes), globs, `-` for standard
//! input; one JSON object per line, in the format of the shipped `envoy/envoy.yaml`. Whatever
//! cannot be read is counted by kind with its first locations, never dropped silently.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A line longer than this is counted and skipped (an exposure record is at most 1 MiB).
pub const MAX_LINE_BYTES: usize = 2 << 20;

/// How many locations of each kind of bad input are kept for the report.
const LOCATIONS_KEPT: usize = 5;

/// Kinds of input `analyze` could not use, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    Unreadable,
    TruncatedGzip,
    TooLong,
    NotJson,
    OtherFormat,
    BadTime,
    BadUnits,
    BadExposure,
    UnknownExperiment,
    UnknownVariant,
    NoUnitId,
    TwoVariants,
}

impl Problem {
    pub fn describe(self) -> &'static str {
        match self {
            Problem::Unreadable => "unreadable input",
            Problem::TruncatedGzip => "truncated or corrupt gzip (the rest of the file is lost)",
            Problem::TooLong => "line longer than 2 MiB",
            Problem::NotJson => "not a JSON object",
            Problem::OtherFormat => "a line of another format (no time, method and path)",
            Problem::BadTime => "time is not RFC 3339",
            Problem::BadUnits => "units is not a JSON object of unit ids",
            Problem::BadExposure => "exposure is not an abmesh exposure record",
            Problem::UnknownExperiment => "exposure of an experiment not in the configuration",
            Problem::UnknownVariant => "exposure of a variant not in the configuration",
            Problem::NoUnitId => {
                "exposure without the experiment's unit id (exposure.unit_id omit?)"
            }
            Problem::TwoVariants => {
                "a unit exposed to a second variant of an experiment (the first is kept)"
            }
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Problem::Unreadable => "unreadable",
            Problem::TruncatedGzip => "truncated_gzip",
            Problem::TooLong => "too_long",
            Problem::NotJson => "not_json",
            Problem::OtherFormat => "other_format",
            Problem::BadTime => "bad_time",
            Problem::BadUnits => "bad_units",
            Problem::BadExposure => "bad_exposure",
            Problem::UnknownExperiment => "unknown_experiment",
            Problem::UnknownVariant => "unknown_variant",
            Problem::NoUnitId => "no_unit_id",
            Problem::TwoVariants => "two_variants",
        }
    }
}

/// Bad input by kind: how many, and where the first ones were (`file:line`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally(pub BTreeMap<Problem, (u64, Vec<String>)>);

impl Tally {
    pub fn add(&mut self, p: Problem, at: &Location) {
        let e = self.0.entry(p).or_default();
        e.0 += 1;
        if e.1.len() < LOCATIONS_KEPT {
            e.1.push(at.to_string());
        }
    }

    /// Adds another tally's counts (keeping the first locations).
    pub fn merge(&mut self, other: Tally) {
        for (p, (n, at)) in other.0 {
            let e = self.0.entry(p).or_default();
            e.0 += n;
            let room = LOCATIONS_KEPT.saturating_sub(e.1.len());
            e.1.extend(at.into_iter().take(room));
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|(n, _)| n).sum()
    }
}

/// Where a line is.
#[derive(Debug, Clone)]
pub struct Location<'a> {
    pub source: &'a str,
    pub line: u64,
}

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(self.source)
        } else {
            write!(f, "{}:{}", self.source, self.line)
        }
    }
}

/// A number Envoy writes as a number, or as a string in a text format (`None` when the string
/// is no number). Read by a visitor rather than an untagged enum, which would buffer every
/// value before trying each form: this is on every line.
#[derive(Debug)]
pub struct Number(Option<f64>);

impl Number {
    pub fn value(&self) -> Option<f64> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or a string holding one")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
                Ok(Number(Some(v as f64)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
                Ok(Number(Some(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
                Ok(Number(Some(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Number, E> {
                Ok(Number(v.trim().parse().ok()))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The inputs named on the command line: globs expanded (sorted), `-` kept as is.
pub fn expand(patterns: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in patterns {
        if p == "-" || !p.contains(['*', '?', '[']) {
            out.push(p.clone());
            continue;
        }
        let paths = glob::glob(p).map_err(|e| format!("--access-log {p}: {e}"))?;
        let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        if found.is_empty() {
            return Err(format!("--access-log {p}: no file matches"));
        }
        found.sort();
        out.extend(found.into_iter().map(|f| f.display().to_string()));
    }
    Ok(out)
}

/// Standard input copied to a temporary file, so that both passes can read it.
pub fn spool_stdin() -> Result<tempfile::NamedTempFile, String> {
    let mut f =
        tempfile::NamedTempFile::new().map_err(|e| format!("cannot spool standard input: {e}"))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut f)
        .and_then(|_| f.flush())
        .map_err(|e| format!("cannot spool standard input: {e}"))?;
    Ok(f)
}

/// A file, gunzipped when it starts with the gzip magic bytes.
struct Reader {
    inner: Box<dyn Read>,
    gzip: bool,
}

impl Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

fn open(path: &Path) -> std::io::Result<Reader> {
    let mut file = BufReader::new(File::open(path)?);
    let gzip = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Reader {
            inner: Box::new(flate2::read::MultiGzDecoder::new(file)),
            gzip: true,
        }
    } else {
        Reader {
            inner: Box::new(file),
            gzip: false,
        }
    })
}

/// How much of a file is read at once: lines are handed out from this buffer without a copy.
const BLOCK_BYTES: usize = 1 << 20;

/// Calls `each` with every line of `path` (without its newline), its location and the tally; a line
/// longer than [`MAX_LINE_BYTES`], an unreadable file and a truncated gzip are counted.
pub fn each_line(
    path: &Path,
    name: &str,
    tally: &mut Tally,
    mut each: impl FnMut(&[u8], &Location, &mut Tally),
) {
    let Ok(mut reader) = open(path) else {
        let at = Location {
            source: name,
            line: 0,
        };
        return tally.add(Problem::Unreadable, &at);
    };
    let mut buf = vec![0u8; BLOCK_BYTES];
    // buf[..end] holds what was read and not yet handed out; a line that does not fit is
    // skipped to its newline (`skipping`) and counted as too long.
    let (mut end, mut number, mut skipping) = (0usize, 0u64, false);
    loop {
        let read = match reader.read(&mut buf[end..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let at = Location {
                    source: name,
                    line: number + 1,
                };
                let kind = if reader.gzip {
                    Problem::TruncatedGzip
                } else {
                    Problem::Unreadable
                };
                return tally.add(kind, &at);
            }
        };
        let last = read == 0;
        end += read;
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &buf[start..end]) {
            number += 1;
            let line = &buf[start..start + i];
            hand_out(
                line,
                std::mem::take(&mut skipping),
                name,
                number,
                tally,
                &mut each,
            );
            start += i + 1;
        }
        if last {
            if start < end || skipping {
                number += 1;
                hand_out(&buf[start..end], skipping, name, number, tally, &mut each);
            }
            return;
        }
        buf.copy_within(start..end, 0);
        end -= start;
        if end == buf.len() {
            if buf.len() > MAX_LINE_BYTES {
                // Past the limit: forget the line's bytes, remember it is too long.
                (end, skipping) = (0, true);
            } else {
                buf.resize((buf.len() * 2).min(MAX_LINE_BYTES + 1), 0);
            }
        }
    }
}

fn hand_out(
    line: &[u8],
    too_long: bool,
    name: &str,
    number: u64,
    tally: &mut Tally,
    each: &mut impl FnMut(&[u8], &Location, &mut Tally),
) {
    let at = Location {
        source: name,
        line: number,
    };
    if too_long || line.len() > MAX_LINE_BYTES {
        tally.add(Problem::TooLong, &at);
    } else if !line.iter().all(u8::is_ascii_whitespace) {
        each(line, &at, tally);
    }
}
