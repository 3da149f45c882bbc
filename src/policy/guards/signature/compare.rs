//! The primitives every scheme shares: HMAC, constant-time comparison, lenient decoding and
//! the timestamp window.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

use super::VerifyError;
use crate::config::Algorithm;

/// Signed content: borrowed pieces (the body) and small owned ones (timestamps, separators),
/// fed to the MAC in order without copying the body.
pub(crate) type Content<'a> = Vec<Cow<'a, [u8]>>;

/// HMAC of `parts` (concatenated) under `key`.
pub(crate) fn hmac(alg: Algorithm, key: &[u8], parts: &[Cow<'_, [u8]>]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[Cow<'_, [u8]>]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail; an empty MAC would never match.
        let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
            return Vec::new();
        };
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match alg {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// Constant-time equality. The lengths are public (every MAC of a scheme has the same
/// length), only the contents are compared without early exit.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The first expected MAC that equals any presented signature, comparing every pair in
/// constant time (so the timing says nothing about which one matched, or how nearly).
pub(crate) fn find_match<'e>(expected: &'e [Vec<u8>], presented: &[Vec<u8>]) -> Option<&'e [u8]> {
    let mut found = None;
    for e in expected {
        let mut hit = subtle::Choice::from(0);
        for p in presented {
            if p.len() == e.len() {
                hit |= e.as_slice().ct_eq(p.as_slice());
            }
        }
        if bool::from(hit) && found.is_none() {
            found = Some(e.as_slice());
        }
    }
    found
}

/// Hex in either case.
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s.trim()).ok()
}

/// Base64 in the standard or URL-safe alphabet, with or without padding.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// Standard base64 with padding, as every provider here writes it.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A Unix timestamp in seconds: ASCII digits only, without leading zeros. One time has one
/// spelling: where the signed text puts another field right before the timestamp, `0` moved
/// from one to the other would still verify and still parse, as a message the replay check
/// has not seen.
pub(crate) fn parse_timestamp(s: &str) -> Result<i64, VerifyError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::Malformed(
            "timestamp is not a number of seconds",
        ));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(VerifyError::Malformed("timestamp has leading zeros"));
    }
    s.parse()
        .map_err(|_| VerifyError::Malformed("timestamp is out of range"))
}

/// Checks `ts` against `now` within `tolerance` seconds, in both directions.
pub(crate) fn check_window(ts: i64, now: i64, tolerance: i64) -> Result<(), VerifyError> {
    if now.saturating_sub(ts) > tolerance {
        Err(VerifyError::TooOld)
    } else if ts.saturating_sub(now) > tolerance {
        Err(VerifyError::TooNew)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_needs_equal_length_and_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn find_match_returns_the_matching_expected_mac() {
        let expected = vec![b"one".to_vec(), b"two".to_vec()];
        assert_eq!(
            find_match(&expected, &[b"zzz".to_vec(), b"two".to_vec()]),
            Some(&b"two"[..])
        );
        assert_eq!(find_match(&expected, &[b"tw".to_vec()]), None);
        assert_eq!(find_match(&expected, &[]), None);
    }

    #[test]
    fn rfc4231_hmac_sha256_and_sha512_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        let data = [
            Cow::Borrowed(&b"what do ya want "[..]),
            Cow::Borrowed(&b"for nothing?"[..]),
        ];
        assert_eq!(
            hex::encode(hmac(Algorithm::Sha256, b"Jefe", &data)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac(Algorithm::Sha512, b"Jefe", &data)),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        // RFC 2202 §3 test case 2 for HMAC-SHA1.
        assert_eq!(
            hex::encode(hmac(Algorithm::Sha1, b"Jefe", &data)),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn window_is_checked_both_ways() {
        assert_eq!(check_window(1000, 1300, 300), Ok(()));
        assert_eq!(check_window(1000, 1301, 300), Err(VerifyError::TooOld));
        assert_eq!(check_window(1301, 1000, 300), Err(VerifyError::TooNew));
        assert_eq!(check_window(1300, 1000, 300), Ok(()));
        assert_eq!(
            check_window(i64::MAX, i64::MIN, 300),
            Err(VerifyError::TooNew)
        );
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert_eq!(parse_timestamp("1614265330"), Ok(1614265330));
        assert_eq!(parse_timestamp("0"), Ok(0));
        assert_eq!(
            parse_timestamp("01614265330"),
            Err(VerifyError::Malformed("timestamp has leading zeros"))
        );
        assert!(matches!(
            parse_timestamp("-5"),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            parse_timestamp("1.5"),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            parse_timestamp(""),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            parse_timestamp("99999999999999999999999"),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn base64_is_decoded_in_any_common_form() {
        assert_eq!(decode_base64("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_base64("***").is_none());
    }
}
