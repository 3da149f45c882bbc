//! The API key guard (`[[route.auth]] type = "api_key"`): a key in a header, a query parameter
//! (a URL secret) or `Authorization: Bearer`, checked in the head phase before the body is
//! read.
//!
//! Static keys from the config are held as SHA-256 digests and compared in constant time with
//! the digest of the presented key; keys issued with `hookwarden keys create` are looked up in
//! the in-memory [`KeyCache`]. The consumed credential is removed from what is forwarded. The
//! event records the key's id (`static:N` for the Nth static key, `key_…` for issued ones),
//! never the key.

use std::sync::Arc;

use http::header::AUTHORIZATION;

use super::signature::{ct_eq, unix_now};
use crate::config::{ApiKeyConfig, KeySource};
use crate::policy::{Denial, Exchange, Reason};
use crate::store::keys::{KeyCache, KeyCheck, digest};

/// Refuses requests without a valid key: `credential_missing`, `key_invalid` (unknown,
/// revoked or for another route) or `key_expired`.
#[derive(Debug)]
pub struct ApiKeyGuard {
    route: Arc<str>,
    source: KeySource,
    /// Each static key's digest and its id, `static:N`, made once rather than per request.
    static_keys: Vec<([u8; 32], String)>,
    /// Whether the route's issued keys count here (one entry per route, see
    /// [`ApiKeyConfig::issued`]).
    issued: bool,
}

/// The credential as presented: the header's own value when it came in a header, so taking
/// it out of the request copies nothing.
enum Presented {
    Header(http::HeaderValue),
    Owned(Vec<u8>),
}

impl Presented {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Presented::Header(v) => v.as_bytes(),
            Presented::Owned(v) => v,
        }
    }
}

impl ApiKeyGuard {
    /// The guard for one `api_key` entry of `route`.
    pub fn new(route: &Arc<str>, cfg: &ApiKeyConfig) -> Self {
        ApiKeyGuard {
            route: route.clone(),
            source: cfg.source.clone(),
            static_keys: cfg
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (digest(k.as_bytes()), format!("static:{}", i + 1)))
                .collect(),
            issued: cfg.issued,
        }
    }

    /// Takes the credential out of the exchange: the header or query parameter is removed so it
    /// is not forwarded.
    fn take(&self, ex: &mut Exchange) -> Result<Presented, Denial> {
        let missing = |detail| Err(Denial::new(Reason::CredentialMissing).with_detail(detail));
        match &self.source {
            KeySource::Header(name) => match ex.headers.remove(name) {
                Some(v) if !v.is_empty() => Ok(Presented::Header(v)),
                _ => missing("API key header missing"),
            },
            KeySource::Bearer => {
                let Some(v) = ex.headers.get(AUTHORIZATION) else {
                    return missing("Authorization header missing");
                };
                let token = v
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim().as_bytes().to_vec())
                    .filter(|t| !t.is_empty());
                match token {
                    Some(t) => {
                        ex.headers.remove(AUTHORIZATION);
                        Ok(Presented::Owned(t))
                    }
                    None => missing("Authorization is not a Bearer credential"),
                }
            }
            KeySource::Query(name) => {
                let value = ex.query_param(name);
                ex.consume_query_param(name);
                match value {
                    Some(v) if !v.is_empty() => Ok(Presented::Owned(v.into_bytes())),
                    _ => missing("API key query parameter missing"),
                }
            }
        }
    }

    /// Checks the request's key against the static keys and the issued ones.
    pub fn check(&self, ex: &mut Exchange, issued: &KeyCache) -> Result<(), Denial> {
        self.check_at(ex, issued, unix_now())
    }

    /// [`ApiKeyGuard::check`] at Unix time `now`.
    pub fn check_at(&self, ex: &mut Exchange, issued: &KeyCache, now: i64) -> Result<(), Denial> {
        let presented = digest(self.take(ex)?.as_bytes());
        // Every static key is compared, so the timing does not say which one (if any) matched.
        let mut matched = None;
        for (d, id) in &self.static_keys {
            if ct_eq(d, &presented) && matched.is_none() {
                matched = Some(id);
            }
        }
        if let Some(id) = matched {
            ex.key_id = Some(id.clone());
            return Ok(());
        }
        if !self.issued {
            return Err(Denial::new(Reason::KeyInvalid).with_detail("unknown key"));
        }
        match issued.check(&presented, &self.route, now) {
            KeyCheck::Valid(id) => {
                issued.mark_used(&id, now);
                ex.key_id = Some(id.to_string());
                Ok(())
            }
            KeyCheck::Expired(id) => {
                ex.key_id = Some(id.to_string());
                Err(Denial::new(Reason::KeyExpired).with_detail("key expired"))
            }
            KeyCheck::Revoked(id) => {
                ex.key_id = Some(id.to_string());
                Err(Denial::new(Reason::KeyInvalid).with_detail("key revoked"))
            }
            KeyCheck::OtherRoute(id) => {
                ex.key_id = Some(id.to_string());
                Err(Denial::new(Reason::KeyInvalid).with_detail("key issued for another route"))
            }
            KeyCheck::Unknown => Err(Denial::new(Reason::KeyInvalid).with_detail("unknown key")),
            KeyCheck::Stale => Err(Denial::new(Reason::StateUnavailable)
                .with_detail("issued API keys stale: the store cannot be read")),
        }
    }
}
