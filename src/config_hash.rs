//! A fast unkeyed hash for tables whose keys all come from the config: routes by path and by
//! name, the metrics' label sets.
//!
//! Never use it for a table that inserts anything a client sends (a cache of paths, of
//! addresses, of header values): its collisions are easy to make, and such a table could be
//! filled with keys that all probe the same place.
//!
//! std's default hash (SipHash with a random key) resists hash flooding, which matters where a
//! client decides what is inserted. Nothing a client sends is ever inserted into these tables;
//! a lookup with a path of its choosing can at worst probe the few keys the config holds. The
//! keyed hash cost about 170 instructions a request on the route lookup and 250 on the metrics
//! lookup (`bench/run --instructions`); this one takes eight bytes per multiply.

use std::hash::{BuildHasher, Hasher};

/// Builds [`WordHasher`]s; the `S` of a `HashMap` keyed by config values.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigKeyHash;

impl BuildHasher for ConfigKeyHash {
    type Hasher = WordHasher;
    fn build_hasher(&self) -> WordHasher {
        WordHasher(0)
    }
}

/// Folded multiplies over little-endian 64-bit words: each word is mixed in by a 64 x 64 -> 128
/// bit multiply whose halves are XORed, so every input bit reaches the low bits hashbrown takes
/// the bucket index from (a plain multiply only carries differences upwards: keys that differ
/// in their eighth byte all landed in one bucket).
#[derive(Debug, Clone, Copy)]
pub struct WordHasher(u64);

/// An odd constant with mixed bits (from rustc-hash 2).
const K: u64 = 0xf135_7aea_2e62_a9c5;

impl WordHasher {
    fn add(&mut self, word: u64) {
        let p = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.add(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_near_keys_apart() {
        let h = |s: &str| ConfigKeyHash.hash_one(s);
        assert_eq!(h("/hook"), h("/hook"));
        let paths = [
            "",
            "/",
            "/hook",
            "/hook/",
            "/hooK",
            "/hook2",
            "/hook\0",
            "/webhook/abcdefgh",
            "/webhook/abcdefgi",
            "/webhook/abcdefgh/",
            "/webhook/abcdefghabcdefgh",
        ];
        let mut hashes: Vec<u64> = paths.iter().map(|p| h(p)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), paths.len());
    }

    /// Many similar keys (routes numbered in a sequence) spread over a table's buckets: the
    /// low bits hashbrown indexes by differ.
    #[test]
    fn sequential_keys_spread_in_the_low_bits() {
        let mut low: Vec<u64> = (0..1024)
            .map(|i| ConfigKeyHash.hash_one(format!("/hooks/{i}")) & 1023)
            .collect();
        low.sort_unstable();
        low.dedup();
        assert!(low.len() > 600, "{} distinct of 1024", low.len());
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut m: HashMap<String, usize, ConfigKeyHash> = HashMap::default();
        for i in 0..500 {
            m.insert(format!("/r/{i}"), i);
        }
        assert!((0..500).all(|i| m.get(format!("/r/{i}").as_str()) == Some(&i)));
        assert_eq!(m.get("/r/500"), None);
    }
}
