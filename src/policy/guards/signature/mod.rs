//! Provider signatures (`[[route.auth]] type = "signature"`): one file per scheme, a shared
//! constant-time comparison, and the guard that runs them in the body phase.
//!
//! Every scheme is split the same way, after the Standard Webhooks reference library:
//! `extract` reads what the request presents (signatures, signed content, timestamp, id)
//! without any secret; [`Verifier::verify`] computes the MAC under every configured secret,
//! compares it with every presented signature in constant time, and only then checks the
//! timestamp against `now`, which is a parameter so tests need no clock. Each scheme also has a
//! `sign` function, used by `hookwarden sign` and checked against the providers' published
//! vectors (`tests/vectors/`).
//!
//! The signature is checked before the timestamp on purpose: `timestamp_out_of_window` then
//! always means "genuinely signed, but stale or early" (a replay or a skewed clock), while
//! `signature_invalid` means a forgery or a wrong secret. Both are refused either way.

mod compare;
mod generic;
mod github;
mod shopify;
mod slack;
mod standard;
mod stripe;
mod twilio;

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

pub use compare::ct_eq;
use compare::{Content, find_match, hmac};

use super::replay::ReplayGuard;
use crate::config::{Algorithm, Provider, SignatureConfig};
use crate::policy::{Denial, Exchange, Reason, Services};
use crate::secret::Secret;

/// The parts of a request a verifier reads.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The request headers, as received.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
    /// The path as received (still percent-encoded).
    pub path: &'a str,
    /// The query as received.
    pub query: Option<&'a str>,
}

/// Why a signature was refused. One variant per cause, each mapping to one reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// A required header is absent or empty (`signature_missing`); the text names it.
    Missing(&'static str),
    /// A header is present but unreadable (`signature_invalid`); the text says how.
    Malformed(&'static str),
    /// No presented signature matches any secret (`signature_invalid`).
    Mismatch,
    /// Correctly signed, but the timestamp is older than `tolerance`
    /// (`timestamp_out_of_window`).
    TooOld,
    /// Correctly signed, but the timestamp is further ahead than `tolerance`
    /// (`timestamp_out_of_window`).
    TooNew,
}

impl VerifyError {
    /// The reason code recorded in the audit log.
    pub const fn reason(self) -> Reason {
        match self {
            VerifyError::Missing(_) => Reason::SignatureMissing,
            VerifyError::Malformed(_) | VerifyError::Mismatch => Reason::SignatureInvalid,
            VerifyError::TooOld | VerifyError::TooNew => Reason::TimestampOutOfWindow,
        }
    }

    /// Audit-log detail (never a secret or a signature).
    pub const fn detail(self) -> &'static str {
        match self {
            VerifyError::Missing(d) | VerifyError::Malformed(d) => d,
            VerifyError::Mismatch => "no signature matches",
            VerifyError::TooOld => "timestamp older than tolerance",
            VerifyError::TooNew => "timestamp further ahead than tolerance",
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for VerifyError {}

/// What replay protection remembers of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayId {
    /// A signed message id (Standard Webhooks, Svix, `hmac` with `{id}`).
    Message(String),
    /// The SHA-256 of the signed content, for schemes without a signed id. (Not the matching
    /// signature: a sender rotating secrets sends one signature per secret, and a replay
    /// carrying only the other one would otherwise count as a new message.)
    Content(Vec<u8>),
}

/// What a successful verification proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The identity replay protection claims.
    pub replay_id: ReplayId,
    /// The signed timestamp, for schemes that have one.
    pub timestamp: Option<i64>,
}

/// What a scheme found in a request, before any secret is involved.
pub(crate) struct Presented<'a> {
    alg: Algorithm,
    /// The signed content; several candidates when the sender's view of the request is
    /// ambiguous (Twilio's URL with or without the default port).
    contents: Vec<Content<'a>>,
    /// The presented signatures, decoded; undecodable ones are left out.
    signatures: Vec<Vec<u8>>,
    timestamp: Option<i64>,
    id: Option<String>,
}

/// A signing key, as bytes. `Debug` redacts it.
#[derive(Clone)]
struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Decodes a Standard Webhooks secret: optional `whsec_` prefix, then base64. `None` when it
/// is not base64 or decodes to nothing.
pub fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    compare::decode_base64(b64).filter(|k| !k.is_empty())
}

/// The key bytes a provider signs with: decoded `whsec_` base64 for Standard Webhooks and
/// Svix, the secret's own bytes for everyone else.
fn key_bytes(provider: &Provider, secret: &Secret) -> Vec<u8> {
    if provider.base64_secrets()
        && let Some(k) = decode_whsec(secret.expose())
    {
        return k;
    }
    secret.as_bytes().to_vec()
}

/// A scheme with its secrets and tolerance, ready to verify requests.
#[derive(Debug, Clone)]
pub struct Verifier {
    provider: Provider,
    keys: Vec<Key>,
    tolerance: i64,
    twilio_bases: Vec<String>,
}

impl Verifier {
    /// A verifier for one `[[route.auth]] type = "signature"` entry.
    pub fn new(cfg: &SignatureConfig) -> Self {
        let twilio_bases = match &cfg.provider {
            Provider::Twilio { public_url } => twilio::url_variants(public_url),
            _ => Vec::new(),
        };
        Verifier {
            keys: cfg
                .secrets
                .iter()
                .map(|s| Key(key_bytes(&cfg.provider, s)))
                .collect(),
            provider: cfg.provider.clone(),
            tolerance: i64::try_from(cfg.tolerance.as_secs()).unwrap_or(i64::MAX),
            twilio_bases,
        }
    }

    /// Verifies `req` at Unix time `now` (seconds).
    pub fn verify(&self, req: &SignedRequest<'_>, now: i64) -> Result<Verified, VerifyError> {
        let p = match &self.provider {
            Provider::Standard => standard::extract(req, &standard::WEBHOOK)?,
            Provider::Svix => standard::extract(req, &standard::SVIX)?,
            Provider::Github => github::extract(req)?,
            Provider::Stripe => stripe::extract(req)?,
            Provider::Slack => slack::extract(req)?,
            Provider::Shopify => shopify::extract(req)?,
            Provider::Twilio { .. } => twilio::extract(req, &self.twilio_bases)?,
            Provider::Hmac(scheme) => generic::extract(req, scheme)?,
        };
        let expected: Vec<Vec<u8>> = self
            .keys
            .iter()
            .flat_map(|k| p.contents.iter().map(|c| hmac(p.alg, &k.0, c)))
            .collect();
        let matched = find_match(&expected, &p.signatures).ok_or(VerifyError::Mismatch)?;
        if let Some(ts) = p.timestamp {
            compare::check_window(ts, now, self.tolerance)?;
        }
        Ok(Verified {
            replay_id: match p.id {
                Some(id) => ReplayId::Message(id),
                None => {
                    // `expected` is keys × contents; the matching entry tells which content
                    // (of the ambiguous candidates) the sender signed.
                    let index = expected
                        .iter()
                        .position(|e| e.as_slice() == matched)
                        .unwrap_or(0);
                    let content = &p.contents[index % p.contents.len().max(1)];
                    use sha2::Digest;
                    let mut digest = sha2::Sha256::new();
                    for part in content {
                        digest.update(part.as_ref());
                    }
                    ReplayId::Content(digest.finalize().to_vec())
                }
            },
            timestamp: p.timestamp,
        })
    }
}

/// A header's value: `Missing(missing)` when absent or blank, `Malformed` when not text or
/// sent again with another value: the gateway checks one copy and forwards them all, and an
/// upstream that checks again, or reads the id or timestamp, may take the other.
fn header<'a>(
    req: &SignedRequest<'a>,
    name: &str,
    missing: &'static str,
) -> Result<&'a str, VerifyError> {
    let mut copies = req.headers.get_all(name).iter();
    let Some(v) = copies.next() else {
        return Err(VerifyError::Missing(missing));
    };
    if copies.any(|other| other != v) {
        return Err(VerifyError::Malformed(
            "a signature header is repeated with another value",
        ));
    }
    let v = v
        .to_str()
        .map_err(|_| VerifyError::Malformed("a signature header is not visible ASCII"))?
        .trim();
    if v.is_empty() {
        return Err(VerifyError::Missing(missing));
    }
    Ok(v)
}

/// What a sender signs, for [`sign`].
#[derive(Debug, Clone, Copy)]
pub struct SignInput<'a> {
    /// The body, exactly as it will be sent.
    pub body: &'a [u8],
    /// Unix seconds, for schemes with a timestamp.
    pub timestamp: i64,
    /// The message id, for schemes with one.
    pub id: &'a str,
    /// Twilio: the full URL the sender calls, with path and query.
    pub url: Option<&'a str>,
}

/// Why [`sign`] could not produce headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No secret was given.
    #[error("no secret given")]
    NoSecret,
    /// A Standard Webhooks/Svix secret is not `whsec_` + base64.
    #[error("the secret is not a Standard Webhooks secret (\"whsec_\" followed by base64)")]
    BadSecret,
    /// Twilio signs the URL, which was not given.
    #[error("twilio signs the full URL it calls: give it with --url")]
    NoUrl,
    /// The scheme carries one signature, but several secrets were given.
    #[error("{0} carries a single signature: give one secret")]
    OneSecretOnly(&'static str),
}

/// The headers a sender using `provider` adds to a request (name, value), signed with every
/// secret in `secrets` where the scheme allows several signatures.
pub fn sign(
    provider: &Provider,
    secrets: &[Secret],
    input: &SignInput<'_>,
) -> Result<Vec<(String, String)>, SignError> {
    if secrets.is_empty() {
        return Err(SignError::NoSecret);
    }
    let mut keys = Vec::with_capacity(secrets.len());
    for s in secrets {
        if provider.base64_secrets() && decode_whsec(s.expose()).is_none() {
            return Err(SignError::BadSecret);
        }
        keys.push(key_bytes(provider, s));
    }
    let single = || {
        if keys.len() == 1 {
            Ok(keys[0].as_slice())
        } else {
            Err(SignError::OneSecretOnly(provider.name()))
        }
    };
    Ok(match provider {
        Provider::Standard => standard::sign(&standard::WEBHOOK, &keys, input),
        Provider::Svix => standard::sign(&standard::SVIX, &keys, input),
        Provider::Github => github::sign(single()?, input),
        Provider::Stripe => stripe::sign(&keys, input),
        Provider::Slack => slack::sign(single()?, input),
        Provider::Shopify => shopify::sign(single()?, input),
        Provider::Twilio { .. } => {
            twilio::sign(single()?, input.url.ok_or(SignError::NoUrl)?, input)
        }
        Provider::Hmac(scheme) => generic::sign(scheme, &keys, input),
    })
}

/// Refuses requests whose signature does not verify (`signature_missing`,
/// `signature_invalid`, `timestamp_out_of_window`), then hands the verified message to replay
/// protection (`duplicate`).
#[derive(Debug)]
pub struct SignatureGuard {
    verifier: Verifier,
    replay: Option<ReplayGuard>,
}

impl SignatureGuard {
    /// The guard for one signature entry of `route`.
    pub fn new(route: &Arc<str>, cfg: &SignatureConfig) -> Self {
        SignatureGuard {
            verifier: Verifier::new(cfg),
            replay: cfg
                .replay
                .then(|| ReplayGuard::new(route.clone(), cfg.tolerance)),
        }
    }

    /// Checks the exchange's body and headers.
    pub async fn check(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        let now = unix_now();
        let req = SignedRequest {
            headers: &ex.headers,
            body: &ex.body,
            path: &ex.path,
            query: ex.original_query.as_deref(),
        };
        let verified = self
            .verifier
            .verify(&req, now)
            .map_err(|e| Denial::new(e.reason()).with_detail(e.detail()))?;
        if let Some(replay) = &self.replay {
            replay.claim(ex, &services.state, &verified, now).await?;
        }
        Ok(())
    }
}

/// The wall clock in Unix seconds.
pub fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod replay_tests {
    use super::*;

    /// During a rotation a Stripe sender sends one `v1=` per secret. A replay carrying only
    /// the other signature is the same message and must get the same replay id.
    #[test]
    fn the_replay_id_is_the_signed_content_not_the_matching_signature() {
        let secrets = [
            Secret::new("whsec_old_secret"),
            Secret::new("whsec_new_secret"),
        ];
        let verifier = Verifier::new(&SignatureConfig {
            provider: Provider::Stripe,
            secrets: secrets.to_vec(),
            tolerance: std::time::Duration::from_secs(300),
            replay: true,
        });
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let now = 1_700_000_000;
        let both = sign(
            &Provider::Stripe,
            &secrets,
            &SignInput {
                body,
                timestamp: now,
                id: "",
                url: None,
            },
        )
        .unwrap();
        let (name, value) = &both[0];
        // t=…,v1=<old>,v1=<new>
        let parts: Vec<&str> = value.split(',').collect();
        assert_eq!(parts.len(), 3, "{value}");
        let ids: Vec<ReplayId> = [1, 2]
            .iter()
            .map(|i| {
                let mut h = HeaderMap::new();
                h.insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    format!("{},{}", parts[0], parts[*i]).parse().unwrap(),
                );
                let req = SignedRequest {
                    headers: &h,
                    body,
                    path: "/stripe",
                    query: None,
                };
                verifier.verify(&req, now).unwrap().replay_id
            })
            .collect();
        assert_eq!(ids[0], ids[1]);
    }
}
