//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body with the webhook
//! secret. No timestamp and no signed id, so replay protection keys on the signature. See
//! <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>.

use std::borrow::Cow;

use super::compare::{self, hmac};
use super::{Presented, SignInput, SignedRequest, VerifyError, header};
use crate::config::Algorithm;

const HEADER: &str = "x-hub-signature-256";

pub(super) fn extract<'a>(req: &SignedRequest<'a>) -> Result<Presented<'a>, VerifyError> {
    let value = header(req, HEADER, "X-Hub-Signature-256 header missing")?;
    let sig = value
        .strip_prefix("sha256=")
        .and_then(compare::decode_hex)
        .ok_or(VerifyError::Malformed(
            "X-Hub-Signature-256 is not sha256=<hex>",
        ))?;
    Ok(Presented {
        alg: Algorithm::Sha256,
        contents: vec![vec![Cow::Borrowed(req.body)]],
        signatures: vec![sig],
        timestamp: None,
        id: None,
    })
}

pub(super) fn sign(key: &[u8], input: &SignInput<'_>) -> Vec<(String, String)> {
    let mac = hmac(Algorithm::Sha256, key, &[Cow::Borrowed(input.body)]);
    vec![(
        "X-Hub-Signature-256".to_owned(),
        format!("sha256={}", hex::encode(mac)),
    )]
}
