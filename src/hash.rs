//! Hash spec v1: the public, stable mapping from a unit id to one of 10,000 buckets, and the
//! bucket ranges each variant covers. Every implementation must agree with
//! `tests/vectors/`; changing anything here re-randomizes every experiment.

use xxhash_rust::xxh3::xxh3_64;

/// Buckets per salt: allocation granularity is 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// The longest unit id that counts as present (longer ones are treated as absent).
pub const MAX_UNIT_LEN: usize = 512;

/// `xxh3_64(utf8(salt) ++ b":" ++ id) mod 10000`.
///
/// ```
/// assert_eq!(abmesh::hash::bucket(b"new-checkout", b"alice"), 5269);
/// ```
pub fn bucket(salt: &[u8], id: &[u8]) -> u32 {
    Hasher::default().bucket(salt, id)
}

/// Computes buckets for one request, reusing one buffer for the hash key, so a request with
/// many experiments allocates once.
#[derive(Default)]
pub struct Hasher {
    key: Vec<u8>,
}

impl Hasher {
    pub fn bucket(&mut self, salt: &[u8], id: &[u8]) -> u32 {
        self.key.clear();
        self.key.extend_from_slice(salt);
        self.key.push(b':');
        self.key.extend_from_slice(id);
        (xxh3_64(&self.key) % u64::from(BUCKETS)) as u32
    }
}

/// The bucket ranges `[start, end)` covered by each variant for the given weights and traffic
/// (basis points, 0..=10000), per hash spec v1:
/// `edge_k = floor(10000 × (w_0 + … + w_{k-1}) / W)` and variant `k` covers
/// `[edge_k, edge_k + floor((edge_{k+1} − edge_k) × t / 10000))`.
///
/// Weights must not all be zero (configuration validation guarantees it); if they are, every
/// range is empty.
pub fn variant_ranges(weights: &[u64], traffic_bp: u32) -> Vec<(u32, u32)> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let buckets = u128::from(BUCKETS);
    let t = u128::from(traffic_bp.min(BUCKETS));
    let mut ranges = Vec::with_capacity(weights.len());
    if total == 0 {
        ranges.resize(weights.len(), (0, 0));
        return ranges;
    }
    let mut cumulative: u128 = 0;
    let mut edge = 0u128;
    for (k, &w) in weights.iter().enumerate() {
        cumulative += u128::from(w);
        let next = if k + 1 == weights.len() {
            buckets
        } else {
            buckets * cumulative / total
        };
        let covered = (next - edge) * t / buckets;
        ranges.push((edge as u32, (edge + covered) as u32));
        edge = next;
    }
    ranges
}

/// The variant whose range holds `bucket`, if any.
pub fn variant_for_bucket(ranges: &[(u32, u32)], bucket: u32) -> Option<usize> {
    ranges
        .iter()
        .position(|&(start, end)| start <= bucket && bucket < end)
}

/// Lower-case hex of `xxh3_64(id)`, for exposure records that must not carry raw ids.
pub fn xxh3_hex(id: &[u8]) -> String {
    format!("{:016x}", xxh3_64(id))
}
