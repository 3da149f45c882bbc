//! Slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`,
//! HMAC-SHA256 with the app's signing secret. No signed id, so replay protection keys on the
//! signature. See <https://api.slack.com/authentication/verifying-requests-from-slack>.

use std::borrow::Cow;

use super::compare::{self, hmac};
use super::{Presented, SignInput, SignedRequest, VerifyError, header};
use crate::config::Algorithm;

const SIGNATURE: &str = "x-slack-signature";
const TIMESTAMP: &str = "x-slack-request-timestamp";

pub(super) fn extract<'a>(req: &SignedRequest<'a>) -> Result<Presented<'a>, VerifyError> {
    let value = header(req, SIGNATURE, "X-Slack-Signature header missing")?;
    let ts_raw = header(req, TIMESTAMP, "X-Slack-Request-Timestamp header missing")?;
    let ts = compare::parse_timestamp(ts_raw)?;
    let sig = value
        .strip_prefix("v0=")
        .and_then(compare::decode_hex)
        .ok_or(VerifyError::Malformed("X-Slack-Signature is not v0=<hex>"))?;
    Ok(Presented {
        alg: Algorithm::Sha256,
        // Slack's own SDKs sign the header's text as sent.
        contents: vec![content(ts_raw, req.body)],
        signatures: vec![sig],
        timestamp: Some(ts),
        id: None,
    })
}

fn content<'a>(ts: &str, body: &'a [u8]) -> Vec<Cow<'a, [u8]>> {
    vec![
        Cow::Owned(format!("v0:{ts}:").into_bytes()),
        Cow::Borrowed(body),
    ]
}

pub(super) fn sign(key: &[u8], input: &SignInput<'_>) -> Vec<(String, String)> {
    let ts = input.timestamp.to_string();
    let mac = hmac(Algorithm::Sha256, key, &content(&ts, input.body));
    vec![
        ("X-Slack-Request-Timestamp".to_owned(), ts),
        (
            "X-Slack-Signature".to_owned(),
            format!("v0={}", hex::encode(mac)),
        ),
    ]
}
