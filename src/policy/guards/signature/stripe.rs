//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over `{t}.{body}`, HMAC-SHA256
//! with the endpoint's signing secret used as-is (`whsec_…` included). Any `v1` may match;
//! other schemes (`v0`) are ignored. No signed id, so replay protection keys on the signature.
//! See <https://docs.stripe.com/webhooks#verify-manually>.

use std::borrow::Cow;

use super::compare::{self, hmac};
use super::{Presented, SignInput, SignedRequest, VerifyError, header};
use crate::config::Algorithm;

const HEADER: &str = "stripe-signature";

pub(super) fn extract<'a>(req: &SignedRequest<'a>) -> Result<Presented<'a>, VerifyError> {
    let value = header(req, HEADER, "Stripe-Signature header missing")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let mut any_v1 = false;
    for item in value.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" if timestamp.is_none() => timestamp = Some(compare::parse_timestamp(v)?),
            "v1" => {
                any_v1 = true;
                if let Some(sig) = compare::decode_hex(v) {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let ts = timestamp.ok_or(VerifyError::Malformed(
        "Stripe-Signature has no t= timestamp",
    ))?;
    if !any_v1 {
        return Err(VerifyError::Malformed(
            "Stripe-Signature has no v1= signature",
        ));
    }
    Ok(Presented {
        alg: Algorithm::Sha256,
        contents: vec![content(ts, req.body)],
        signatures,
        timestamp: Some(ts),
        id: None,
    })
}

fn content(ts: i64, body: &[u8]) -> Vec<Cow<'_, [u8]>> {
    vec![
        Cow::Owned(format!("{ts}.").into_bytes()),
        Cow::Borrowed(body),
    ]
}

pub(super) fn sign(keys: &[Vec<u8>], input: &SignInput<'_>) -> Vec<(String, String)> {
    let mut value = format!("t={}", input.timestamp);
    for k in keys {
        let mac = hmac(Algorithm::Sha256, k, &content(input.timestamp, input.body));
        value.push_str(",v1=");
        value.push_str(&hex::encode(mac));
    }
    vec![("Stripe-Signature".to_owned(), value)]
}
