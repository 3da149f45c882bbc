//! Standard Webhooks (and Svix, the same scheme under `svix-*` headers).
//!
//! `webhook-signature: v1,<base64> [v1,<base64> …]` over `{id}.{timestamp}.{body}`, HMAC-SHA256
//! with the decoded `whsec_` secret. Several space-separated signatures let senders rotate
//! secrets; entries of other versions (`v1a`, …) are ignored. See
//! <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>.

use std::borrow::Cow;

use super::compare::{self, encode_base64, hmac};
use super::{Presented, SignInput, SignedRequest, VerifyError, header};
use crate::config::Algorithm;

/// The header names of one branding of the scheme.
pub(super) struct Names {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
    missing_id: &'static str,
    missing_timestamp: &'static str,
    missing_signature: &'static str,
}

/// Standard Webhooks' own headers.
pub(super) const WEBHOOK: Names = Names {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
    missing_id: "webhook-id header missing",
    missing_timestamp: "webhook-timestamp header missing",
    missing_signature: "webhook-signature header missing",
};

/// Svix's headers.
pub(super) const SVIX: Names = Names {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
    missing_id: "svix-id header missing",
    missing_timestamp: "svix-timestamp header missing",
    missing_signature: "svix-signature header missing",
};

pub(super) fn extract<'a>(
    req: &SignedRequest<'a>,
    names: &Names,
) -> Result<Presented<'a>, VerifyError> {
    let signature = header(req, names.signature, names.missing_signature)?;
    let id = header(req, names.id, names.missing_id)?;
    let ts = compare::parse_timestamp(header(req, names.timestamp, names.missing_timestamp)?)?;
    let signatures = signature
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| compare::decode_base64(sig))
        .collect();
    Ok(Presented {
        alg: Algorithm::Sha256,
        contents: vec![content(id, ts, req.body)],
        signatures,
        timestamp: Some(ts),
        id: Some(id.to_owned()),
    })
}

fn content<'a>(id: &str, ts: i64, body: &'a [u8]) -> Vec<Cow<'a, [u8]>> {
    // The reference libraries sign the parsed integer, so "0123" is signed as "123".
    vec![
        Cow::Owned(format!("{id}.{ts}.").into_bytes()),
        Cow::Borrowed(body),
    ]
}

/// One `v1,<base64>` signature.
pub(crate) fn signature(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        encode_base64(&hmac(Algorithm::Sha256, key, &content(id, ts, body)))
    )
}

pub(super) fn sign(
    names: &Names,
    keys: &[Vec<u8>],
    input: &SignInput<'_>,
) -> Vec<(String, String)> {
    let sigs: Vec<String> = keys
        .iter()
        .map(|k| signature(k, input.id, input.timestamp, input.body))
        .collect();
    vec![
        (names.id.to_owned(), input.id.to_owned()),
        (names.timestamp.to_owned(), input.timestamp.to_string()),
        (names.signature.to_owned(), sigs.join(" ")),
    ]
}
