//! Twilio: `X-Twilio-Signature: <base64>`, HMAC-SHA1 with the account's auth token over the
//! URL Twilio called (scheme, host, port, path and query, exactly as requested) followed by
//! the POST parameters of a form body, sorted by name, each name immediately followed by its
//! value. Requests with a non-form body carry a `bodySHA256` query parameter (hex SHA-256 of
//! the body) and only the URL is signed. See
//! <https://www.twilio.com/docs/usage/webhooks/webhooks-security>.
//!
//! The gateway may sit behind a proxy, so it cannot know the URL Twilio used: the route's
//! `public_url` gives the scheme, host and port, and the request's path and query are appended.
//! Like Twilio's own validators, both the URL with and without the default port are tried.

use std::borrow::Cow;

use http::header::CONTENT_TYPE;
use sha2::{Digest, Sha256};

use super::compare::{self, ct_eq, encode_base64, hmac};
use super::{Presented, SignInput, SignedRequest, VerifyError, header};
use crate::config::Algorithm;
use crate::urlenc;

const HEADER: &str = "x-twilio-signature";
const FORM: &str = "application/x-www-form-urlencoded";

/// `public_url`, plus the same URL with the default port added or removed.
pub(super) fn url_variants(public_url: &str) -> Vec<String> {
    let mut out = vec![public_url.to_owned()];
    let Ok(uri) = public_url.parse::<http::Uri>() else {
        return out;
    };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return out;
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let prefix = uri.path().trim_end_matches('/');
    match uri.port_u16() {
        Some(p) if p == default => out.push(format!("{scheme}://{host}{prefix}")),
        None => out.push(format!("{scheme}://{host}:{default}{prefix}")),
        Some(_) => {}
    }
    out
}

fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(FORM))
}

/// The sorted POST parameters, each name followed by its value.
fn sorted_params(body: &str) -> String {
    let mut pairs = urlenc::form_pairs(body);
    pairs.sort();
    pairs.into_iter().map(|(k, v)| k + &v).collect()
}

pub(super) fn extract<'a>(
    req: &SignedRequest<'a>,
    bases: &[String],
) -> Result<Presented<'a>, VerifyError> {
    let value = header(req, HEADER, "X-Twilio-Signature header missing")?;
    let sig = compare::decode_base64(value)
        .ok_or(VerifyError::Malformed("X-Twilio-Signature is not base64"))?;
    let suffix = match req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.to_owned(),
    };
    let params =
        if let Some(expected) = req.query.and_then(|q| urlenc::query_param(q, "bodySHA256")) {
            // The body is bound through its digest in the (signed) URL.
            let digest = Sha256::digest(req.body);
            if !compare::decode_hex(&expected).is_some_and(|e| ct_eq(&e, &digest)) {
                return Err(VerifyError::Mismatch);
            }
            String::new()
        } else if is_form(req.headers) {
            let body = std::str::from_utf8(req.body)
                .map_err(|_| VerifyError::Malformed("form body is not UTF-8"))?;
            sorted_params(body)
        } else if req.body.is_empty() {
            String::new()
        } else {
            // Only the URL would be signed: a signature taken from a bodiless request could
            // carry any body. Twilio binds non-form bodies with `bodySHA256`.
            return Err(VerifyError::Malformed(
                "body is neither a form nor bound by bodySHA256",
            ));
        };
    Ok(Presented {
        alg: Algorithm::Sha1,
        contents: bases
            .iter()
            .map(|b| vec![Cow::Owned(format!("{b}{suffix}{params}").into_bytes())])
            .collect(),
        signatures: vec![sig],
        timestamp: None,
        id: None,
    })
}

pub(super) fn sign(key: &[u8], url: &str, input: &SignInput<'_>) -> Vec<(String, String)> {
    let has_body_hash = url
        .split_once('?')
        .is_some_and(|(_, q)| urlenc::query_param(q, "bodySHA256").is_some());
    let params = if has_body_hash {
        String::new()
    } else {
        sorted_params(&String::from_utf8_lossy(input.body))
    };
    let mac = hmac(
        Algorithm::Sha1,
        key,
        &[Cow::Owned(format!("{url}{params}").into_bytes())],
    );
    vec![("X-Twilio-Signature".to_owned(), encode_base64(&mac))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_is_tried_both_ways() {
        assert_eq!(
            url_variants("https://hooks.example.com"),
            ["https://hooks.example.com", "https://hooks.example.com:443"]
        );
        assert_eq!(
            url_variants("https://hooks.example.com:443/base"),
            [
                "https://hooks.example.com:443/base",
                "https://hooks.example.com/base"
            ]
        );
        assert_eq!(
            url_variants("http://10.0.0.1:8080"),
            ["http://10.0.0.1:8080"]
        );
    }

    #[test]
    fn a_url_only_signature_does_not_cover_a_body_added_later() {
        use crate::config::{Provider, SignatureConfig};
        use crate::policy::guards::signature::{SignInput, Verifier, VerifyError, sign};
        use crate::secret::Secret;
        let provider = Provider::Twilio {
            public_url: "https://hooks.example.com".into(),
        };
        let secrets = [Secret::new("twilio-auth-token")];
        // A bodiless request's signature covers only the URL.
        let headers = sign(
            &provider,
            &secrets,
            &SignInput {
                body: b"",
                timestamp: 0,
                id: "",
                url: Some("https://hooks.example.com/twilio?x=1"),
            },
        )
        .unwrap();
        let verifier = Verifier::new(&SignatureConfig {
            provider,
            secrets: secrets.to_vec(),
            tolerance: std::time::Duration::from_secs(300),
            replay: true,
        });
        let mut h = http::HeaderMap::new();
        for (k, v) in &headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let bodiless = SignedRequest {
            headers: &h,
            body: b"",
            path: "/twilio",
            query: Some("x=1"),
        };
        assert!(verifier.verify(&bodiless, 0).is_ok());
        // The same signature with a JSON body the sender never signed.
        let mut json = h.clone();
        json.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        let forged = SignedRequest {
            body: br#"{"To":"+15550000000"}"#,
            headers: &json,
            ..bodiless
        };
        assert!(matches!(
            verifier.verify(&forged, 0),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn params_sort_by_name_then_value() {
        assert_eq!(sorted_params("b=2&a=1&a=0&c=%2B1"), "a0a1b2c+1");
    }
}
