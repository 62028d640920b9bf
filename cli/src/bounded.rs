//! Reading an input with a bound: `/dev/zero`, an endless pipe or a server that never stops
//! sending ends with an error after `cap` bytes instead of filling memory.

use std::io::Read;

/// The most `abmesh guard` reads from `--stats` (a file or a URL): at the series limit
/// (`abmesh::config::limits::MAX_SERIES`), with the longest names, Envoy's `/stats/prometheus`
/// holds about 22 MB of abmesh series; the rest leaves room for Envoy's own.
pub const MAX_STATS_BYTES: u64 = 64 << 20;

/// The most `abmesh import` reads of a peer's definitions file.
pub const MAX_IMPORT_BYTES: u64 = 16 << 20;

/// `64 MiB`
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Every byte of `reader` when there are at most `cap`; else an error saying so (one byte
/// more than `cap` is read, no more).
pub fn read_at_most(reader: impl Read, cap: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "more than {} ({cap} bytes): read no further",
            mib(cap)
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_input_ends_at_the_cap_with_an_error() {
        assert_eq!(
            read_at_most(std::io::repeat(0), 2 << 20).unwrap_err(),
            "more than 2 MiB (2097152 bytes): read no further"
        );
        assert_eq!(read_at_most(&b"abc"[..], 3).unwrap(), b"abc");
    }
}
