//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 of the body with the app's client
//! secret. No timestamp and no signed id (`X-Shopify-Webhook-Id` is not signed), so replay
//! protection keys on the signature. See
//! <https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook>.

use std::borrow::Cow;

use super::compare::{self, encode_base64, hmac};
use super::{Presented, SignInput, SignedRequest, VerifyError, header};
use crate::config::Algorithm;

const HEADER: &str = "x-shopify-hmac-sha256";

pub(super) fn extract<'a>(req: &SignedRequest<'a>) -> Result<Presented<'a>, VerifyError> {
    let value = header(req, HEADER, "X-Shopify-Hmac-Sha256 header missing")?;
    let sig = compare::decode_base64(value).ok_or(VerifyError::Malformed(
        "X-Shopify-Hmac-Sha256 is not base64",
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
    vec![("X-Shopify-Hmac-Sha256".to_owned(), encode_base64(&mac))]
}
