//! OpenFeature flagd's `fractional` bucketing: murmur3 (x86, 32-bit, seed 0) of the bucket-by
//! string, then `bucket = (hash × total_weight) >> 32` and the variant whose cumulative integer
//! weight first exceeds the bucket.
//!
//! murmur3 is hand-written (20 lines, checked against the reference implementation's values in
//! the tests): the `murmur3` crate reads through `std::io::Read` and returns `io::Result`, whose
//! machinery costs more of the 250 KB wasm budget than the function itself.

/// MurmurHash3 x86 32-bit.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &b) in tail.iter().enumerate() {
            k |= u32::from(b) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The CBOR head (RFC 8949, major type 3, preferred serialization) of a text string of `len`
/// bytes, and how many of the 9 bytes it uses: flagd's v3 bucketing hashes values in their
/// deterministic CBOR encoding.
pub fn cbor_text_head(len: usize) -> ([u8; 9], usize) {
    let mut head = [0u8; 9];
    let len = len as u64;
    let used = if len < 24 {
        head[0] = 0x60 | len as u8;
        1
    } else if len <= 0xff {
        head[0] = 0x78;
        head[1] = len as u8;
        2
    } else if len <= 0xffff {
        head[0] = 0x79;
        head[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        3
    } else if len <= 0xffff_ffff {
        head[0] = 0x7a;
        head[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        5
    } else {
        head[0] = 0x7b;
        head[1..9].copy_from_slice(&len.to_be_bytes());
        9
    };
    (head, used)
}

/// Appends the CBOR text string of `parts` concatenated.
fn push_cbor_text(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let (head, used) = cbor_text_head(parts.iter().map(|p| p.len()).sum());
    out.extend_from_slice(&head[..used]);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// How a flagd flag's bucket-by value becomes the bytes murmur3 hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// flagd up to now (`@fractional-v2`): the string's bytes — `prefix` then the unit id.
    V2,
    /// `@fractional-v3` with a bucket-by expression (`bucket_by_seed`): the CBOR text string
    /// of `prefix` then the unit id.
    V3Text,
    /// `@fractional-v3` shorthand (no bucket-by: the targeting key): the CBOR array
    /// `[flag key, unit id]`.
    V3Pair,
}

/// The bytes flagd hashes for a unit id under `encoding` (`prefix`: the seed or flag key).
pub fn bucket_input(encoding: Encoding, prefix: &[u8], id: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + id.len() + 19);
    match encoding {
        Encoding::V2 => {
            out.extend_from_slice(prefix);
            out.extend_from_slice(id);
        }
        Encoding::V3Text => push_cbor_text(&mut out, &[prefix, id]),
        Encoding::V3Pair => {
            out.push(0x82);
            push_cbor_text(&mut out, &[prefix]);
            push_cbor_text(&mut out, &[id]);
        }
    }
    out
}

/// The bucket in `[0, total_weight)` of a bucket-by string.
pub fn bucket(bucket_by: &[u8], total_weight: u64) -> u64 {
    (u64::from(murmur3_32(bucket_by, 0)) * total_weight) >> 32
}

/// The variant of a bucket-by string under integer `weights` (`None` when they sum to 0).
pub fn choose(bucket_by: &[u8], weights: &[u64]) -> Option<usize> {
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return None;
    }
    let b = bucket(bucket_by, total);
    let mut cumulative = 0;
    weights.iter().position(|&w| {
        cumulative += w;
        b < cumulative
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_reference_implementation() {
        // mmh3.hash(key, seed, signed=False) from the `mmh3` Python package (the reference C++
        // MurmurHash3_x86_32), recorded.
        for (key, seed, want) in [
            ("", 0, 0),
            ("", 1, 1_364_076_727),
            ("", 0xffff_ffff, 2_180_083_513),
            ("a", 0, 1_009_084_850),
            ("ab", 0, 2_613_040_991),
            ("abc", 0, 3_017_643_002),
            ("abcd", 0, 1_139_631_978),
            ("hello", 0, 613_153_351),
            ("test", 0, 3_127_628_307),
            (
                "The quick brown fox jumps over the lazy dog",
                0,
                776_992_547,
            ),
            ("headerflag-keyuser-1", 0, 3_687_708_621),
            ("my-flaguser@example.com", 0, 99_903_941),
            ("José😀", 0, 1_740_844_104),
        ] {
            assert_eq!(
                murmur3_32(key.as_bytes(), seed),
                want,
                "{key:?} seed {seed}"
            );
        }
    }

    #[test]
    fn cbor_text_heads_use_the_shortest_length_form() {
        for (len, want) in [
            (0, &[0x60][..]),
            (23, &[0x77]),
            (24, &[0x78, 24]),
            (255, &[0x78, 0xff]),
            (256, &[0x79, 0x01, 0x00]),
            (65_535, &[0x79, 0xff, 0xff]),
            (65_536, &[0x7a, 0x00, 0x01, 0x00, 0x00]),
        ] {
            let (head, used) = cbor_text_head(len);
            assert_eq!(&head[..used], want, "{len}");
        }
    }

    #[test]
    fn v3_hashes_the_cbor_of_the_bucket_by_value() {
        assert_eq!(bucket_input(Encoding::V2, b"f", b"id"), b"fid");
        assert_eq!(bucket_input(Encoding::V3Text, b"f", b"id"), b"\x63fid");
        assert_eq!(
            bucket_input(Encoding::V3Pair, b"flag", b"id"),
            b"\x82\x64flag\x62id"
        );
    }

    #[test]
    fn buckets_split_the_hash_range_at_the_weight_boundaries() {
        // hash × total >> 32: the empty string hashes to 0, bucket 0 whatever the total.
        assert_eq!(bucket(b"", 100), 0);
        // "my-flaguser@example.com" hashes to 99903941: 99903941 × 100 >> 32 = 2.
        assert_eq!(bucket(b"my-flaguser@example.com", 100), 2);
        assert_eq!(choose(b"my-flaguser@example.com", &[2, 98]), Some(1)); // 2 is not < 2
        assert_eq!(choose(b"my-flaguser@example.com", &[3, 97]), Some(0));
        assert_eq!(choose(b"x", &[0, 0]), None);
        assert_eq!(choose(b"x", &[0, 5]), Some(1));
    }
}
