//! SipHash with a 128-bit output, in one pass over a byte slice.
//!
//! The in-memory state stores each key as a 128-bit keyed hash. Two runs of the standard
//! library's 64-bit SipHash-1-3 under two keys gave those 128 bits at twice the cost: two
//! setups, two buffered streams and two finalisations per key, about 600 instructions a
//! limit on a 40-byte key (callgrind). SipHash's own 128-bit mode (Aumasson and Bernstein,
//! reference implementation `veorq/SipHash`) compresses the message once and squeezes two
//! words out of the finalisation; it is what this module computes, with the round counts as
//! parameters so the tests can check it against the reference's SipHash-2-4 vectors and the
//! standard library's SipHash-2-4.

/// A SipHash key: 128 random bits, as the two little-endian words the algorithm reads.
#[derive(Clone, Copy)]
pub struct SipKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for SipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is what keeps clients from choosing colliding keys: never printed.
        f.write_str("SipKey(..)")
    }
}

impl SipKey {
    /// A key from 16 bytes, read as the reference implementation reads them.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let both = u128::from_le_bytes(b);
        SipKey {
            k0: both as u64,
            k1: (both >> 64) as u64,
        }
    }

    /// A fresh key from the operating system's random source. Should that fail, the standard
    /// library's per-process random hash keys stand in (they come from the same source, read
    /// once at start-up), so a key is still one a client cannot know.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        if getrandom::fill(&mut b).is_err() {
            use std::hash::BuildHasher;
            let s = std::hash::RandomState::new();
            b[..8].copy_from_slice(&s.hash_one(0u8).to_le_bytes());
            b[8..].copy_from_slice(&s.hash_one(1u8).to_le_bytes());
        }
        Self::from_bytes(b)
    }
}

/// SipHash-1-3 of `data` under `key`, 128-bit output (the round counts the standard
/// library's `HashMap` uses: this is a keyed hash against chosen collisions, not a MAC).
pub fn siphash13_128(key: SipKey, data: &[u8]) -> u128 {
    siphash::<1, 3, true>(key, data)
}

/// SipHash-c-d. With `WIDE`, the 128-bit output (the first word in the low half, as the
/// reference writes the two words in order); otherwise the 64-bit one.
fn siphash<const C: usize, const D: usize, const WIDE: bool>(key: SipKey, data: &[u8]) -> u128 {
    let mut v = [
        key.k0 ^ 0x736f_6d65_7073_6575,
        key.k1 ^ 0x646f_7261_6e64_6f6d,
        key.k0 ^ 0x6c79_6765_6e65_7261,
        key.k1 ^ 0x7465_6462_7974_6573,
    ];
    if WIDE {
        v[1] ^= 0xee;
    }
    let mut blocks = data.chunks_exact(8);
    for block in &mut blocks {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        compress::<C>(&mut v, u64::from_le_bytes(word));
    }
    let tail = blocks.remainder();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    // The length's low byte goes in the top byte of the last word, as the specification says.
    let last = u64::from_le_bytes(last) | ((data.len() as u64) << 56);
    compress::<C>(&mut v, last);
    v[2] ^= if WIDE { 0xee } else { 0xff };
    rounds::<D>(&mut v);
    let first = v[0] ^ v[1] ^ v[2] ^ v[3];
    if !WIDE {
        return u128::from(first);
    }
    v[1] ^= 0xdd;
    rounds::<D>(&mut v);
    let second = v[0] ^ v[1] ^ v[2] ^ v[3];
    (u128::from(second) << 64) | u128::from(first)
}

fn compress<const C: usize>(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    rounds::<C>(v);
    v[0] ^= m;
}

#[inline(always)]
fn rounds<const N: usize>(v: &mut [u64; 4]) {
    for _ in 0..N {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference key and messages of `vectors.h`: key bytes 0..16, message bytes 0..len.
    fn reference_key() -> SipKey {
        SipKey::from_bytes(std::array::from_fn(|i| i as u8))
    }

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    /// The output as the reference implementation writes it: the two words little-endian.
    fn reference_bytes(h: u128) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&(h as u64).to_le_bytes());
        out[8..].copy_from_slice(&((h >> 64) as u64).to_le_bytes());
        out
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// `vectors_sip128` of the reference repository (github.com/veorq/SipHash, `vectors.h`):
    /// SipHash-2-4 with 128-bit output, for the message lengths given. The lengths cover the
    /// empty message, every tail length (0 to 7 bytes after whole words) and several words.
    const SIP128_2_4: &[(usize, &str)] = &[
        (0, "a3817f04ba25a8e66df67214c7550293"),
        (1, "da87c1d86b99af44347659119b22fc45"),
        (2, "8177228da4a45dc7fca38bdef60affe4"),
        (3, "9c70b60c5267a94e5f33b6b02985ed51"),
        (4, "f88164c12d9c8faf7d0f6e7c7bcd5579"),
        (5, "1368875980776f8854527a07690e9627"),
        (6, "14eeca338b208613485ea0308fd7a15e"),
        (7, "a1f1ebbed8dbc153c0b84aa61ff08239"),
        (8, "3b62a9ba6258f5610f83e264f31497b4"),
        (9, "264499060ad9baabc47f8b02bb6d71ed"),
        (15, "5493e99933b0a8117e08ec0f97cfc3d9"),
        (16, "6ee2a4ca67b054bbfd3315bf85230577"),
        (17, "473d06e8738db89854c066c47ae47740"),
        (31, "2939b0183223fafc1723de4f52c43d35"),
        (32, "7c3956ca5eeafc3e363e9d556546eb68"),
        (63, "5150d1772f50834a503e069a973fbd7c"),
    ];

    #[test]
    fn matches_the_reference_vectors_for_siphash_2_4_128() {
        for (len, want) in SIP128_2_4 {
            let h = siphash::<2, 4, true>(reference_key(), &message(*len));
            assert_eq!(hex(&reference_bytes(h)), *want, "message length {len}");
        }
    }

    /// The 64-bit mode against the standard library's SipHash-2-4 (`std::hash::SipHasher`,
    /// deprecated for hash maps but still the algorithm), over every length to 100 bytes and
    /// keys that are not the reference's.
    #[test]
    #[allow(deprecated)]
    fn matches_the_standard_library_siphash_2_4_64() {
        use std::hash::Hasher;
        for (k0, k1) in [
            (0u64, 0u64),
            (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908),
            (u64::MAX, 0x1234_5678_9abc_def0),
        ] {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&k0.to_le_bytes());
            key[8..].copy_from_slice(&k1.to_le_bytes());
            for len in 0..100 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut std = std::hash::SipHasher::new_with_keys(k0, k1);
                std.write(&data);
                let ours = siphash::<2, 4, false>(SipKey::from_bytes(key), &data);
                assert_eq!(
                    ours,
                    u128::from(std.finish()),
                    "key {k0:x}/{k1:x}, length {len}"
                );
            }
        }
    }

    #[test]
    fn the_1_3_output_depends_on_every_byte_and_on_the_key() {
        let key = SipKey::random();
        let base = siphash13_128(key, b"ip:203.0.113.9");
        assert_ne!(base, siphash13_128(key, b"ip:203.0.113.8"));
        assert_ne!(base, siphash13_128(key, b"ip:203.0.113.9\0"));
        assert_ne!(base, siphash13_128(SipKey::random(), b"ip:203.0.113.9"));
        assert_eq!(base, siphash13_128(key, b"ip:203.0.113.9"));
        // Both halves carry the message: the second word is not a constant.
        assert_ne!(base >> 64, siphash13_128(key, b"x") >> 64);
    }

    #[test]
    fn the_key_is_not_printed() {
        assert_eq!(format!("{:?}", reference_key()), "SipKey(..)");
    }
}
