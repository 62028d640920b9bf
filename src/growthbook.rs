//! GrowthBook's assignment semantics, exactly as its JavaScript SDK computes them (and as the
//! cross-SDK suite `tests/peers/growthbook-cases.json` checks): FNV-1a 32 over UTF-16 code
//! units, hash versions 1 and 2, bucket ranges from float weights and coverage, variation
//! choice and namespaces. Floating-point steps follow the SDK's order so results are bit-equal.

/// FNV-1a 32 over the UTF-16 code units of `s`, as JavaScript's `charCodeAt` sees them.
pub fn fnv1a32_utf16(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for unit in s.encode_utf16() {
        h ^= u32::from(unit);
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// GrowthBook's `hash(seed, value, version)`: a number in [0, 1), or `None` for an unknown
/// version. Version 1 is `fnv(value + seed) % 1000 / 1000`; version 2 is
/// `fnv(str(fnv(seed + value))) % 10000 / 10000`.
pub fn hash(seed: &str, value: &str, version: u32) -> Option<f64> {
    match version {
        1 => Some(f64::from(fnv1a32_utf16(&format!("{value}{seed}")) % 1000) / 1000.0),
        2 => {
            let inner = fnv1a32_utf16(&format!("{seed}{value}"));
            Some(f64::from(fnv1a32_utf16(&inner.to_string()) % 10_000) / 10_000.0)
        }
        _ => None,
    }
}

/// `n` equal weights (`[]` for n ≤ 0).
pub fn equal_weights(n: i64) -> Vec<f64> {
    if n <= 0 {
        return Vec::new();
    }
    vec![1.0 / n as f64; n as usize]
}

/// GrowthBook's `getBucketRanges`: coverage clamped to [0, 1]; weights replaced by equal ones
/// when missing, of the wrong length, or not summing to 1 ± 0.01.
pub fn bucket_ranges(
    num_variations: i64,
    coverage: f64,
    weights: Option<&[f64]>,
) -> Vec<(f64, f64)> {
    let coverage = coverage.clamp(0.0, 1.0);
    let equal = equal_weights(num_variations);
    let mut weights: Vec<f64> = weights.map_or_else(|| equal.clone(), <[f64]>::to_vec);
    if weights.len() != equal.len() {
        weights.clone_from(&equal);
    }
    let total: f64 = weights.iter().fold(0.0, |sum, w| sum + w);
    if !(0.99..=1.01).contains(&total) {
        weights = equal;
    }
    let mut cumulative = 0.0;
    weights
        .iter()
        .map(|w| {
            let start = cumulative;
            cumulative += w;
            (start, start + coverage * w)
        })
        .collect()
}

/// The variation whose range holds `n`, if any.
pub fn choose_variation(n: f64, ranges: &[(f64, f64)]) -> Option<usize> {
    ranges
        .iter()
        .position(|&(start, end)| n >= start && n < end)
}

/// Whether a unit id is in `[start, end)` of namespace `id` (hash version 1, seed `__id`).
pub fn in_namespace(unit: &str, id: &str, start: f64, end: f64) -> bool {
    hash(&format!("__{id}"), unit, 1).is_some_and(|n| n >= start && n < end)
}
