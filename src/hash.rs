//! Hash spec v1: the public, stable mapping from a unit id to one of 10,000 buckets, and the
//! bucket ranges each variant covers. Every implementation must agree with
//! `tests/vectors/`; changing anything here re-randomizes every experiment.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

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
    Hasher::new(id, salt.len()).bucket(salt)
}

/// Computes the buckets of one unit id under many salts. The id is copied once, at the end of
/// the key buffer; each salt is then written just before it, so a request with many
/// experiments copies only short salts and allocates once.
pub struct Hasher {
    key: Vec<u8>,
    id_start: usize,
}

impl Hasher {
    /// `max_salt_len`: the longest salt this hasher will see (longer ones still work, slower).
    pub fn new(id: &[u8], max_salt_len: usize) -> Self {
        let id_start = max_salt_len + 1;
        let mut key = vec![0u8; id_start];
        key.extend_from_slice(id);
        Hasher { key, id_start }
    }

    /// The bucket of the id under `salt`.
    pub fn bucket(&mut self, salt: &[u8]) -> u32 {
        let hash = match self.id_start.checked_sub(salt.len() + 1) {
            Some(start) => {
                let prefix = &mut self.key[start..self.id_start];
                prefix[..salt.len()].copy_from_slice(salt);
                prefix[salt.len()] = b':';
                xxh3_64(&self.key[start..])
            }
            None => {
                let mut key = Vec::with_capacity(salt.len() + 1 + self.key.len() - self.id_start);
                key.extend_from_slice(salt);
                key.push(b':');
                key.extend_from_slice(&self.key[self.id_start..]);
                xxh3_64(&key)
            }
        };
        (hash % u64::from(BUCKETS)) as u32
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

/// The seed of the replicate hash: the ASCII bytes `abmesh/r` read as a big-endian integer.
/// Every assignment hash is `xxh3_64` with seed 0 over `salt:id`; a different seed makes the
/// replicate hash a different function, so no choice of salt can correlate it with a bucket.
pub const REPLICATE_SEED: u64 = 0x6162_6d65_7368_2f72;

/// The replicate of a unit id: `xxh3_64_with_seed(id, REPLICATE_SEED) mod replicates`.
/// All requests of one unit fall in one replicate, independently of its variants, so the
/// replicate totals of a variant are independent, identically distributed observations.
/// `replicates` is at least 1 (the configuration guarantees it when replicates are on).
///
/// ```
/// assert_eq!(abmesh::hash::replicate(b"alice", 16), 5);
/// ```
pub fn replicate(id: &[u8], replicates: u16) -> u16 {
    (xxh3_64_with_seed(id, REPLICATE_SEED) % u64::from(replicates.max(1))) as u16
}

/// Lower-case hex of `xxh3_64(id)`, for exposure records that must not carry raw ids.
pub fn xxh3_hex(id: &[u8]) -> String {
    format!("{:016x}", xxh3_64(id))
}
