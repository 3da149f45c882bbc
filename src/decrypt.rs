//! Body decryption compatible with PHP's `openssl_decrypt($body, $cipher, $key, 0, $iv)`.
//!
//! What a PHP sender does, and so what this accepts:
//! - the body is the base64 of the ciphertext (`options = 0`);
//! - the key is the configured string's bytes, NUL-padded when shorter than the cipher's key
//!   size and truncated when longer;
//! - CBC uses PKCS#7 padding; CTR is a full 128-bit big-endian counter starting at the IV;
//!   GCM's 16-byte tag travels separately (here: hex, in a query parameter).
//!
//! Where PHP is lenient in ways that hide mistakes, this is strict: an IV of the wrong length
//! is refused (PHP pads or truncates it with a warning), and every failure is a typed
//! [`DecryptError`] saying which step failed, for the audit log. The client only ever learns
//! "400 bad_request", so failures give an attacker nothing to work with (no padding oracle).

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::AeadInOut;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::{AesGcm, KeyInit, Tag};
use base64::Engine;
use cbc::cipher::{
    BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, StreamCipher,
    block_padding::{NoPadding, Pkcs7},
};

/// The supported ciphers, named as PHP names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// `aes-128-cbc`
    Aes128Cbc,
    /// `aes-192-cbc`
    Aes192Cbc,
    /// `aes-256-cbc`
    Aes256Cbc,
    /// `aes-128-ctr`
    Aes128Ctr,
    /// `aes-192-ctr`
    Aes192Ctr,
    /// `aes-256-ctr`
    Aes256Ctr,
    /// `aes-128-gcm`
    Aes128Gcm,
    /// `aes-192-gcm`
    Aes192Gcm,
    /// `aes-256-gcm`
    Aes256Gcm,
}

/// The block/stream mode of a cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cipher block chaining with PKCS#7 padding.
    Cbc,
    /// Counter mode (128-bit big-endian counter).
    Ctr,
    /// Galois/counter mode with a separate 16-byte tag.
    Gcm,
}

impl Cipher {
    /// Every cipher, for docs and tests.
    pub const ALL: [Cipher; 9] = [
        Cipher::Aes128Cbc,
        Cipher::Aes192Cbc,
        Cipher::Aes256Cbc,
        Cipher::Aes128Ctr,
        Cipher::Aes192Ctr,
        Cipher::Aes256Ctr,
        Cipher::Aes128Gcm,
        Cipher::Aes192Gcm,
        Cipher::Aes256Gcm,
    ];

    /// Parses PHP's name (`aes-256-ctr`), case-insensitively.
    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// PHP's name.
    pub const fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Cbc => "aes-128-cbc",
            Cipher::Aes192Cbc => "aes-192-cbc",
            Cipher::Aes256Cbc => "aes-256-cbc",
            Cipher::Aes128Ctr => "aes-128-ctr",
            Cipher::Aes192Ctr => "aes-192-ctr",
            Cipher::Aes256Ctr => "aes-256-ctr",
            Cipher::Aes128Gcm => "aes-128-gcm",
            Cipher::Aes192Gcm => "aes-192-gcm",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// Key size in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Cbc | Cipher::Aes128Ctr | Cipher::Aes128Gcm => 16,
            Cipher::Aes192Cbc | Cipher::Aes192Ctr | Cipher::Aes192Gcm => 24,
            Cipher::Aes256Cbc | Cipher::Aes256Ctr | Cipher::Aes256Gcm => 32,
        }
    }

    /// The mode.
    pub const fn mode(self) -> Mode {
        match self {
            Cipher::Aes128Cbc | Cipher::Aes192Cbc | Cipher::Aes256Cbc => Mode::Cbc,
            Cipher::Aes128Ctr | Cipher::Aes192Ctr | Cipher::Aes256Ctr => Mode::Ctr,
            Cipher::Aes128Gcm | Cipher::Aes192Gcm | Cipher::Aes256Gcm => Mode::Gcm,
        }
    }

    /// IV lengths accepted: 16 for CBC and CTR; 12 (standard) or 16 for GCM.
    pub const fn iv_lens(self) -> &'static [usize] {
        match self.mode() {
            Mode::Cbc | Mode::Ctr => &[16],
            Mode::Gcm => &[12, 16],
        }
    }
}

/// Which step of decryption failed. The `Display` text goes to the audit log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptError {
    /// The body is empty.
    Empty,
    /// The body is not base64.
    NotBase64,
    /// The IV parameter is not hex.
    IvNotHex,
    /// The IV has a length the cipher does not use.
    IvLength,
    /// GCM without a tag parameter.
    TagMissing,
    /// The tag parameter is not 32 hex digits.
    TagInvalid,
    /// CBC ciphertext that is not a whole number of blocks.
    CiphertextLength,
    /// CBC padding is not valid PKCS#7 (typically: wrong key or IV).
    BadPadding,
    /// The GCM tag does not authenticate the ciphertext.
    TagMismatch,
    /// `require_json` is set and the plaintext is not JSON (typically: wrong key with CTR).
    NotJson,
}

impl std::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DecryptError {}

impl DecryptError {
    /// The step that failed, for the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecryptError::Empty => "empty body",
            DecryptError::NotBase64 => "body is not base64",
            DecryptError::IvNotHex => "iv is not hex",
            DecryptError::IvLength => "iv has the wrong length",
            DecryptError::TagMissing => "tag is missing",
            DecryptError::TagInvalid => "tag is not 16 bytes of hex",
            DecryptError::CiphertextLength => {
                "ciphertext length is not a multiple of the block size"
            }
            DecryptError::BadPadding => "bad padding",
            DecryptError::TagMismatch => "authentication tag mismatch",
            DecryptError::NotJson => "plaintext is not JSON",
        }
    }
}

/// A configured decryptor: cipher and key bytes (already padded or truncated).
#[derive(Clone)]
pub struct Decryptor {
    cipher: Cipher,
    key: Vec<u8>,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("cipher", &self.cipher.name())
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// How the key bytes were fitted to the cipher, for `check`'s warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFit {
    /// Exactly the cipher's key size.
    Exact,
    /// Shorter: NUL-padded (a weak key).
    Padded {
        /// Bytes given.
        given: usize,
    },
    /// Longer: truncated.
    Truncated {
        /// Bytes given.
        given: usize,
    },
}

/// Fits key material to the cipher the way PHP does: NUL-pad or truncate.
pub fn fit_key(cipher: Cipher, material: &[u8]) -> (Vec<u8>, KeyFit) {
    let n = cipher.key_len();
    let mut key = material.to_vec();
    let fit = match material.len().cmp(&n) {
        std::cmp::Ordering::Equal => KeyFit::Exact,
        std::cmp::Ordering::Less => KeyFit::Padded {
            given: material.len(),
        },
        std::cmp::Ordering::Greater => KeyFit::Truncated {
            given: material.len(),
        },
    };
    key.resize(n, 0);
    (key, fit)
}

/// Decodes base64 the way bodies arrive in practice: line breaks and surrounding whitespace
/// ignored, a `+` turned into a space by form decoding restored, padding optional.
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let joined: Vec<u8> = body
        .iter()
        .filter(|b| !matches!(b, b'\r' | b'\n' | b'\t'))
        .copied()
        .collect();
    let core = joined.trim_ascii();
    if core.is_empty() {
        return Err(DecryptError::Empty);
    }
    // Inside the body a space can only be a `+` that form decoding turned into a space. At the
    // ends it may also be padding whitespace; a sender's base64 is a multiple of 4 long, so
    // give back as few of the end spaces as `+` as make the length fit, leading ones first.
    let lead = joined.len() - joined.trim_ascii_start().len();
    let trail = joined.len() - joined.trim_ascii_end().len();
    let restore = |extra_lead: usize, extra_trail: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(core.len() + extra_lead + extra_trail);
        out.extend(std::iter::repeat_n(b'+', extra_lead));
        out.extend(core.iter().map(|b| if *b == b' ' { b'+' } else { *b }));
        out.extend(std::iter::repeat_n(b'+', extra_trail));
        out
    };
    let padded_len_ok = |n: usize| n.is_multiple_of(4);
    let mut candidates = vec![(0, 0)];
    for total in 1..=3usize {
        // Leading spaces first: real whitespace is common after a body, rare before it.
        for l in (0..=total.min(lead)).rev() {
            let t = total - l;
            if t <= trail {
                candidates.push((l, t));
            }
        }
    }
    for (l, t) in candidates {
        let c = restore(l, t);
        if padded_len_ok(c.len())
            && let Ok(bytes) = engine.decode(&c)
        {
            return Ok(bytes);
        }
    }
    // Not a multiple of 4 however the ends are read: unpadded base64, or not base64 at all.
    engine
        .decode(restore(0, 0))
        .map_err(|_| DecryptError::NotBase64)
}

impl Decryptor {
    /// A decryptor for `cipher` with `key` bytes (fitted with [`fit_key`]).
    pub fn new(cipher: Cipher, key: &[u8]) -> Decryptor {
        Decryptor {
            cipher,
            key: fit_key(cipher, key).0,
        }
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Decrypts a base64 body, leaving a CBC plaintext's padding in place.
    fn open(
        &self,
        body: &[u8],
        iv_hex: Option<&str>,
        tag_hex: Option<&str>,
    ) -> Result<Opened, DecryptError> {
        let iv = self.iv(iv_hex)?;
        let tag = match self.cipher.mode() {
            Mode::Gcm => {
                let h = tag_hex.ok_or(DecryptError::TagMissing)?;
                let t = hex::decode(h.trim()).map_err(|_| DecryptError::TagInvalid)?;
                if t.len() != 16 {
                    return Err(DecryptError::TagInvalid);
                }
                Some(t)
            }
            _ => None,
        };
        let data = decode_body(body)?;
        let k = self.key.as_slice();
        let tag = tag.as_deref();
        // CBC keeps its padding here; the callers check it (`pkcs7_pad_len`).
        match self.cipher {
            Cipher::Aes128Cbc => cbc_decrypt!(Aes128, k, &iv, &data).map(padded),
            Cipher::Aes192Cbc => cbc_decrypt!(Aes192, k, &iv, &data).map(padded),
            Cipher::Aes256Cbc => cbc_decrypt!(Aes256, k, &iv, &data).map(padded),
            Cipher::Aes128Ctr => ctr_apply!(Aes128, k, &iv, data).map(unpadded),
            Cipher::Aes192Ctr => ctr_apply!(Aes192, k, &iv, data).map(unpadded),
            Cipher::Aes256Ctr => ctr_apply!(Aes256, k, &iv, data).map(unpadded),
            Cipher::Aes128Gcm => gcm_decrypt!(Aes128, k, &iv, tag, data).map(unpadded),
            Cipher::Aes192Gcm => gcm_decrypt!(Aes192, k, &iv, tag, data).map(unpadded),
            Cipher::Aes256Gcm => gcm_decrypt!(Aes256, k, &iv, tag, data).map(unpadded),
        }
    }

    /// Decrypts a base64 body. `iv_hex` absent means an all-zero IV (12 bytes for GCM);
    /// `tag_hex` is required for GCM and ignored otherwise.
    pub fn decrypt(
        &self,
        body: &[u8],
        iv_hex: Option<&str>,
        tag_hex: Option<&str>,
    ) -> Result<Vec<u8>, DecryptError> {
        let Opened { mut plain, pad } = self.open(body, iv_hex, tag_hex)?;
        let pad = pad.ok_or(DecryptError::BadPadding)?;
        plain.truncate(plain.len() - pad);
        Ok(plain)
    }

    /// [`Decryptor::decrypt`], then, with `require_json`, a check that the plaintext is JSON
    /// ([`DecryptError::NotJson`] otherwise). With CBC the JSON check runs whether or not the
    /// padding is valid, over the same bytes, and only then is a bad padding reported: a
    /// request with valid padding but a garbled block would otherwise take measurably longer
    /// (the parse) than one with bad padding, the difference a padding oracle needs.
    pub fn decrypt_checked(
        &self,
        body: &[u8],
        iv_hex: Option<&str>,
        tag_hex: Option<&str>,
        require_json: bool,
    ) -> Result<Vec<u8>, DecryptError> {
        let Opened { mut plain, pad } = self.open(body, iv_hex, tag_hex)?;
        let end = plain.len() - pad.unwrap_or(1);
        let json =
            !require_json || serde_json::from_slice::<serde::de::IgnoredAny>(&plain[..end]).is_ok();
        match (pad, json) {
            (None, _) => Err(DecryptError::BadPadding),
            (Some(_), false) => Err(DecryptError::NotJson),
            (Some(_), true) => {
                plain.truncate(end);
                Ok(plain)
            }
        }
    }

    /// The IV from its hex parameter (all zeros when absent), checked against the cipher.
    fn iv(&self, iv_hex: Option<&str>) -> Result<Vec<u8>, DecryptError> {
        let iv = match iv_hex {
            Some(h) => hex::decode(h.trim()).map_err(|_| DecryptError::IvNotHex)?,
            None => vec![0; self.cipher.iv_lens()[0]],
        };
        if !self.cipher.iv_lens().contains(&iv.len()) {
            return Err(DecryptError::IvLength);
        }
        Ok(iv)
    }

    /// Encrypts like PHP's `openssl_encrypt($plaintext, $cipher, $key, 0, $iv, $tag)`:
    /// returns the base64 body and, for GCM, the tag. For `hookwarden encrypt` and tests.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        iv: &[u8],
    ) -> Result<(String, Option<Vec<u8>>), DecryptError> {
        if !self.cipher.iv_lens().contains(&iv.len()) {
            return Err(DecryptError::IvLength);
        }
        let k = self.key.as_slice();
        let data = plaintext.to_vec();
        let (ct, tag) = match self.cipher {
            Cipher::Aes128Cbc => (cbc_encrypt!(Aes128, k, iv, &data)?, None),
            Cipher::Aes192Cbc => (cbc_encrypt!(Aes192, k, iv, &data)?, None),
            Cipher::Aes256Cbc => (cbc_encrypt!(Aes256, k, iv, &data)?, None),
            Cipher::Aes128Ctr => (ctr_apply!(Aes128, k, iv, data)?, None),
            Cipher::Aes192Ctr => (ctr_apply!(Aes192, k, iv, data)?, None),
            Cipher::Aes256Ctr => (ctr_apply!(Aes256, k, iv, data)?, None),
            Cipher::Aes128Gcm => gcm_encrypt!(Aes128, k, iv, data)?,
            Cipher::Aes192Gcm => gcm_encrypt!(Aes192, k, iv, data)?,
            Cipher::Aes256Gcm => gcm_encrypt!(Aes256, k, iv, data)?,
        };
        Ok((base64::engine::general_purpose::STANDARD.encode(ct), tag))
    }
}

// The RustCrypto mode types are generic over the block cipher with several trait bounds each;
// macros instantiate them for the three AES sizes without spelling those bounds out.

/// CBC decryption that keeps the padding, for the callers of `open` to check.
macro_rules! cbc_decrypt {
    ($aes:ty, $key:expr, $iv:expr, $data:expr) => {{
        let data: &[u8] = $data;
        if data.is_empty() || data.len() % 16 != 0 {
            Err(DecryptError::CiphertextLength)
        } else {
            cbc::Decryptor::<$aes>::new_from_slices($key, $iv)
                .map_err(|_| DecryptError::IvLength)
                .and_then(|d| {
                    d.decrypt_padded_vec::<NoPadding>(data)
                        .map_err(|_| DecryptError::CiphertextLength)
                })
        }
    }};
}

/// A plaintext and the length of its padding (`None`: the padding is invalid).
struct Opened {
    plain: Vec<u8>,
    pad: Option<usize>,
}

/// A CBC plaintext with its PKCS#7 padding still on.
fn padded(plain: Vec<u8>) -> Opened {
    let pad = pkcs7_pad_len(&plain);
    Opened { plain, pad }
}

/// A plaintext of a mode without padding.
fn unpadded(plain: Vec<u8>) -> Opened {
    Opened {
        plain,
        pad: Some(0),
    }
}

/// The PKCS#7 padding length of `plain` (a whole number of 16-byte blocks), or `None` when the
/// padding is invalid. The last block's bytes are all looked at, whatever they hold.
fn pkcs7_pad_len(plain: &[u8]) -> Option<usize> {
    let last = plain.len().checked_sub(16).map(|at| &plain[at..])?;
    let pad = last[15];
    let bad = last.iter().rev().enumerate().fold(0u8, |bad, (i, &b)| {
        let inside = u8::from(i < usize::from(pad));
        bad | (inside & u8::from(b != pad))
    });
    (bad == 0 && (1..=16).contains(&pad)).then_some(usize::from(pad))
}

macro_rules! cbc_encrypt {
    ($aes:ty, $key:expr, $iv:expr, $data:expr) => {
        cbc::Encryptor::<$aes>::new_from_slices($key, $iv)
            .map_err(|_| DecryptError::IvLength)
            .map(|e| e.encrypt_padded_vec::<Pkcs7>($data))
    };
}

macro_rules! ctr_apply {
    ($aes:ty, $key:expr, $iv:expr, $data:expr) => {{
        let mut data: Vec<u8> = $data;
        ctr::Ctr128BE::<$aes>::new_from_slices($key, $iv)
            .map_err(|_| DecryptError::IvLength)
            .map(|mut c| {
                c.apply_keystream(&mut data);
                data
            })
    }};
}

macro_rules! gcm_decrypt {
    ($aes:ty, $key:expr, $iv:expr, $tag:expr, $data:expr) => {{
        let iv: &[u8] = $iv;
        let mut data: Vec<u8> = $data;
        let tag = Tag::<U16>::try_from($tag.ok_or(DecryptError::TagMissing)?)
            .map_err(|_| DecryptError::TagInvalid)?;
        let verified = if iv.len() == 12 {
            let nonce = aes_gcm::Nonce::<U12>::try_from(iv).map_err(|_| DecryptError::IvLength)?;
            AesGcm::<$aes, U12>::new_from_slice($key)
                .map_err(|_| DecryptError::IvLength)?
                .decrypt_inout_detached(&nonce, b"", data.as_mut_slice().into(), &tag)
        } else {
            let nonce = aes_gcm::Nonce::<U16>::try_from(iv).map_err(|_| DecryptError::IvLength)?;
            AesGcm::<$aes, U16>::new_from_slice($key)
                .map_err(|_| DecryptError::IvLength)?
                .decrypt_inout_detached(&nonce, b"", data.as_mut_slice().into(), &tag)
        };
        verified
            .map(|()| data)
            .map_err(|_| DecryptError::TagMismatch)
    }};
}

macro_rules! gcm_encrypt {
    ($aes:ty, $key:expr, $iv:expr, $data:expr) => {{
        let iv: &[u8] = $iv;
        let mut data: Vec<u8> = $data;
        let tag = if iv.len() == 12 {
            let nonce = aes_gcm::Nonce::<U12>::try_from(iv).map_err(|_| DecryptError::IvLength)?;
            AesGcm::<$aes, U12>::new_from_slice($key)
                .map_err(|_| DecryptError::IvLength)?
                .encrypt_inout_detached(&nonce, b"", data.as_mut_slice().into())
        } else {
            let nonce = aes_gcm::Nonce::<U16>::try_from(iv).map_err(|_| DecryptError::IvLength)?;
            AesGcm::<$aes, U16>::new_from_slice($key)
                .map_err(|_| DecryptError::IvLength)?
                .encrypt_inout_detached(&nonce, b"", data.as_mut_slice().into())
        };
        tag.map(|t| (data, Some(t.to_vec())))
            .map_err(|_| DecryptError::TagMismatch)
    }};
}

use {cbc_decrypt, cbc_encrypt, ctr_apply, gcm_decrypt, gcm_encrypt};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_name(c.name()), Some(c));
        }
        assert_eq!(Cipher::from_name("AES-256-CTR"), Some(Cipher::Aes256Ctr));
        assert_eq!(Cipher::from_name("aes-256-ecb"), None);
    }

    #[test]
    fn keys_are_fitted_like_php() {
        assert_eq!(
            fit_key(Cipher::Aes128Ctr, b"short"),
            (
                b"short\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
                KeyFit::Padded { given: 5 }
            )
        );
        let long = [7u8; 40];
        assert_eq!(
            fit_key(Cipher::Aes256Cbc, &long),
            (vec![7u8; 32], KeyFit::Truncated { given: 40 })
        );
        assert_eq!(fit_key(Cipher::Aes192Gcm, &[1u8; 24]).1, KeyFit::Exact);
    }

    /// NIST SP 800-38A F.5.5 (CTR-AES256.Decrypt), first block: an independent vector for the
    /// counter mode and key handling.
    #[test]
    fn ctr_matches_nist_sp800_38a() {
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .unwrap();
        let iv = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
        let ct = hex::decode("601ec313775789a5b7a7f504bbf3d228").unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(ct);
        let d = Decryptor::new(Cipher::Aes256Ctr, &key);
        let pt = d.decrypt(body.as_bytes(), Some(iv), None).unwrap();
        assert_eq!(hex::encode(pt), "6bc1bee22e409f96e93d7e117393172a");
    }

    /// NIST SP 800-38A F.2.2 (CBC-AES128.Decrypt), first block, with a PKCS#7 block appended
    /// by encrypting: round trip through our CBC against the published first block.
    #[test]
    fn cbc_matches_nist_sp800_38a() {
        let key = hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let iv = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        let pt = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        let d = Decryptor::new(Cipher::Aes128Cbc, &key);
        let (body, _) = d.encrypt(&pt, &iv).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap();
        assert_eq!(hex::encode(&raw[..16]), "7649abac8119b246cee98e9b12e9197d");
        assert_eq!(
            d.decrypt(body.as_bytes(), Some(&hex::encode(&iv)), None)
                .unwrap(),
            pt
        );
    }

    #[test]
    fn every_cipher_round_trips_with_both_gcm_iv_sizes() {
        let pt = br#"{"call_id":42,"status":"answered"}"#;
        for c in Cipher::ALL {
            for &n in c.iv_lens() {
                let iv = vec![9u8; n];
                let d = Decryptor::new(c, b"0123456789abcdef0123456789abcdef");
                let (body, tag) = d.encrypt(pt, &iv).unwrap();
                let tag_hex = tag.map(hex::encode);
                let out = d
                    .decrypt(body.as_bytes(), Some(&hex::encode(&iv)), tag_hex.as_deref())
                    .unwrap();
                assert_eq!(out, pt, "{}", c.name());
            }
        }
    }

    #[test]
    fn failures_name_their_step() {
        let d = Decryptor::new(Cipher::Aes256Cbc, b"k");
        let iv = "00".repeat(16);
        assert_eq!(d.decrypt(b"", Some(&iv), None), Err(DecryptError::Empty));
        assert_eq!(
            d.decrypt(b"not base64!!", Some(&iv), None),
            Err(DecryptError::NotBase64)
        );
        assert_eq!(
            d.decrypt(b"AAAA", Some("zz"), None),
            Err(DecryptError::IvNotHex)
        );
        assert_eq!(
            d.decrypt(b"AAAA", Some("00ff"), None),
            Err(DecryptError::IvLength)
        );
        assert_eq!(
            d.decrypt(b"AAAA", Some(&iv), None),
            Err(DecryptError::CiphertextLength)
        );
        let g = Decryptor::new(Cipher::Aes128Gcm, b"k");
        assert_eq!(
            g.decrypt(b"AAAA", None, None),
            Err(DecryptError::TagMissing)
        );
        assert_eq!(
            g.decrypt(b"AAAA", None, Some("abcd")),
            Err(DecryptError::TagInvalid)
        );
    }

    /// The padding check agrees with the cbc crate's own unpadding for every last byte and
    /// every padding length, valid or not.
    #[test]
    fn pkcs7_lengths_match_the_crate() {
        use cbc::cipher::block_padding::Padding;
        for pad in 0..=255u8 {
            for filled in [0usize, 1, 5, 15, 16] {
                let mut block = [0x41u8; 16];
                for b in block.iter_mut().rev().take(filled) {
                    *b = pad;
                }
                block[15] = pad;
                let theirs = Pkcs7::raw_unpad(&block).ok().map(|rest| 16 - rest.len());
                assert_eq!(pkcs7_pad_len(&block), theirs, "pad {pad}, {filled} filled");
            }
        }
    }

    /// With CBC, a bad padding is still reported as bad padding and a valid padding over
    /// non-JSON as not JSON; valid messages decrypt as `decrypt` gives them.
    #[test]
    fn checked_decryption_reports_what_failed() {
        let iv = [3u8; 16];
        let ivh = hex::encode(iv);
        for cipher in [Cipher::Aes128Cbc, Cipher::Aes256Cbc, Cipher::Aes256Ctr] {
            let d = Decryptor::new(cipher, b"the key");
            let (json, _) = d.encrypt(br#"{"a":1}"#, &iv).unwrap();
            assert_eq!(
                d.decrypt_checked(json.as_bytes(), Some(&ivh), None, true),
                Ok(br#"{"a":1}"#.to_vec())
            );
            let (text, _) = d.encrypt(b"not json at all", &iv).unwrap();
            assert_eq!(
                d.decrypt_checked(text.as_bytes(), Some(&ivh), None, true),
                Err(DecryptError::NotJson)
            );
            assert_eq!(
                d.decrypt_checked(text.as_bytes(), Some(&ivh), None, false),
                Ok(b"not json at all".to_vec())
            );
        }
        let d = Decryptor::new(Cipher::Aes256Cbc, b"the key");
        let wrong = Decryptor::new(Cipher::Aes256Cbc, b"wrong key");
        let (body, _) = d.encrypt(br#"{"a":1}"#, &iv).unwrap();
        assert_eq!(
            wrong.decrypt(body.as_bytes(), Some(&ivh), None),
            Err(DecryptError::BadPadding)
        );
        assert_eq!(
            wrong.decrypt_checked(body.as_bytes(), Some(&ivh), None, true),
            Err(DecryptError::BadPadding)
        );
    }

    #[test]
    fn wrong_key_is_bad_padding_for_cbc_and_tag_mismatch_for_gcm() {
        let iv = [3u8; 16];
        let right = Decryptor::new(Cipher::Aes256Cbc, b"right key");
        let wrong = Decryptor::new(Cipher::Aes256Cbc, b"wrong key");
        let (body, _) = right.encrypt(b"{\"a\":1}", &iv).unwrap();
        // A wrong key yields random padding bytes; most of the time that is invalid PKCS#7.
        assert_eq!(
            wrong.decrypt(body.as_bytes(), Some(&hex::encode(iv)), None),
            Err(DecryptError::BadPadding)
        );
        let right = Decryptor::new(Cipher::Aes256Gcm, b"right key");
        let wrong = Decryptor::new(Cipher::Aes256Gcm, b"wrong key");
        let (body, tag) = right.encrypt(b"{\"a\":1}", &[3u8; 12]).unwrap();
        assert_eq!(
            wrong.decrypt(
                body.as_bytes(),
                Some(&"03".repeat(12)),
                Some(&hex::encode(tag.unwrap()))
            ),
            Err(DecryptError::TagMismatch)
        );
    }

    #[test]
    fn base64_is_decoded_leniently_the_way_bodies_arrive() {
        let want = b"\xfb\xff\xbe hello".to_vec();
        let clean = base64::engine::general_purpose::STANDARD.encode(&want);
        assert!(clean.contains('+') || clean.contains('/'));
        assert!(
            clean.starts_with('+'),
            "the vector must start with a '+' to test the edge"
        );
        let wrapped = format!("  {}\r\n{}\n  ", &clean[..4], &clean[4..]);
        assert_eq!(decode_body(wrapped.as_bytes()).unwrap(), want);
        let spaced = clean.replace('+', " ");
        assert_eq!(decode_body(spaced.as_bytes()).unwrap(), want);
        let spaced_and_wrapped = format!("\n{spaced}  \n");
        assert_eq!(decode_body(spaced_and_wrapped.as_bytes()).unwrap(), want);
        let unpadded = clean.trim_end_matches('=');
        assert_eq!(decode_body(unpadded.as_bytes()).unwrap(), want);
    }
}
