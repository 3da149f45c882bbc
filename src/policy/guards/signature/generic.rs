//! `provider = "hmac"`: any other HMAC scheme, described in the config: the header, the hash,
//! the encoding, an optional prefix before each signature, a template for the signed content
//! (`{body}`, `{timestamp}`, `{id}` and literal text) and the headers carrying the timestamp
//! and the id. Several signatures may share the header, separated by commas or spaces.

use std::borrow::Cow;

use super::compare::{self, encode_base64, hmac};
use super::{Presented, SignInput, SignedRequest, VerifyError, header};
use crate::config::{Encoding, HmacScheme, TemplatePart};

pub(super) fn extract<'a>(
    req: &SignedRequest<'a>,
    scheme: &HmacScheme,
) -> Result<Presented<'a>, VerifyError> {
    let value = header(req, scheme.header.as_str(), "signature header missing")?;
    let timestamp = match &scheme.timestamp_header {
        Some(h) => Some(header(req, h.as_str(), "timestamp header missing")?),
        None => None,
    };
    let id = match &scheme.id_header {
        Some(h) => Some(header(req, h.as_str(), "id header missing")?),
        None => None,
    };
    let ts = timestamp.map(compare::parse_timestamp).transpose()?;
    let signatures: Vec<Vec<u8>> = value
        .split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.strip_prefix(scheme.prefix.as_str()))
        .filter_map(|s| decode(scheme.encoding, s))
        .collect();
    if signatures.is_empty() {
        return Err(VerifyError::Malformed(
            "signature header holds no signature with the configured prefix and encoding",
        ));
    }
    Ok(Presented {
        alg: scheme.algorithm,
        contents: vec![content(scheme, req.body, timestamp, id)],
        signatures,
        timestamp: ts,
        id: id.map(str::to_owned),
    })
}

fn decode(encoding: Encoding, s: &str) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => compare::decode_hex(s),
        Encoding::Base64 => compare::decode_base64(s),
    }
}

fn content<'a>(
    scheme: &HmacScheme,
    body: &'a [u8],
    timestamp: Option<&str>,
    id: Option<&str>,
) -> Vec<Cow<'a, [u8]>> {
    scheme
        .template
        .iter()
        .map(|part| match part {
            TemplatePart::Text(t) => Cow::Owned(t.as_bytes().to_vec()),
            TemplatePart::Body => Cow::Borrowed(body),
            // The config guarantees the header exists when the template uses it.
            TemplatePart::Timestamp => Cow::Owned(timestamp.unwrap_or("").as_bytes().to_vec()),
            TemplatePart::Id => Cow::Owned(id.unwrap_or("").as_bytes().to_vec()),
        })
        .collect()
}

pub(super) fn sign(
    scheme: &HmacScheme,
    keys: &[Vec<u8>],
    input: &SignInput<'_>,
) -> Vec<(String, String)> {
    let ts = input.timestamp.to_string();
    let ts_used = scheme.timestamp_header.as_ref().map(|_| ts.as_str());
    let id_used = scheme.id_header.as_ref().map(|_| input.id);
    let content = content(scheme, input.body, ts_used, id_used);
    let sigs: Vec<String> = keys
        .iter()
        .map(|k| {
            let mac = hmac(scheme.algorithm, k, &content);
            let enc = match scheme.encoding {
                Encoding::Hex => hex::encode(mac),
                Encoding::Base64 => encode_base64(&mac),
            };
            format!("{}{enc}", scheme.prefix)
        })
        .collect();
    let mut out = Vec::new();
    if let Some(h) = &scheme.id_header {
        out.push((h.as_str().to_owned(), input.id.to_owned()));
    }
    if let Some(h) = &scheme.timestamp_header {
        out.push((h.as_str().to_owned(), ts.clone()));
    }
    out.push((scheme.header.as_str().to_owned(), sigs.join(",")));
    out
}
