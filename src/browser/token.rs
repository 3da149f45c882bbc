//! Browser tokens: short-lived, single-use, HMAC-SHA256-signed credentials for one chat
//! session on one route, from one origin and one network.
//!
//! A token is `base64url(payload || tag)` without padding, where `tag` is
//! HMAC-SHA256(token key, payload) and the payload (version 1) is:
//!
//! ```text
//! u8      version = 1
//! [u8;16] id          random; spent in State as "tok:<hex id>" so it works once
//! [u8;16] session     random at /_hookwarden/token, kept by every rotated token
//! u64 BE  expires     Unix time in milliseconds
//! u8      bind        0 = any address, 4 = IPv4 network, 6 = IPv6 network
//!         (u8 prefix length, 4 or 16 address bytes)   when bind is 4 or 6
//! u8      route length,  route name bytes
//! u16 BE  origin length, origin bytes (canonical scheme://host[:port])
//! ```
//!
//! The token key is HMAC-SHA256(`server.secret`, "hookwarden browser token v1"), so the
//! configured secret is never used directly and could key other things later. Verification
//! checks the tag first (in constant time, before anything in the payload is believed), then
//! the expiry against a `now` the caller passes, then route, origin and address. Nothing in a
//! token is secret; it only has to be unforgeable.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha2::Sha256;

use crate::config::TokenBind;
use crate::secret::Secret;
use crate::store::{Store, StoreError};

/// How much longer than its token a spent token's id is remembered: covers the wall clock
/// being stepped back by up to a minute (an NTP correction) after the spend, and rounding.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(60);

/// The payload format this code writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// Longer `X-Hookwarden-Token` values are refused without decoding.
pub const MAX_TOKEN_LEN: usize = 1024;
/// The `meta` key under which a generated secret is kept.
pub const SECRET_META_KEY: &str = "browser_token_secret";

const ID_LEN: usize = 16;
const TAG_LEN: usize = 32;
const KEY_LABEL: &[u8] = b"hookwarden browser token v1";

/// The key tokens are signed with. `Debug` never shows it.
#[derive(Clone)]
pub struct TokenKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([REDACTED])")
    }
}

/// Why the token key could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    /// The store could not keep or return the generated secret.
    #[error("cannot keep the generated browser token secret: {0}")]
    Store(#[from] StoreError),
    /// The operating system's random source failed.
    #[error("cannot generate the browser token secret: the system random source failed")]
    Random,
    /// HMAC refused the key (not expected: HMAC accepts keys of any length).
    #[error("the browser token secret cannot key HMAC-SHA256")]
    KeyLength,
    /// The stored secret is not what this code wrote.
    #[error(
        "the browser token secret in the store is damaged; set server.secret, or delete the `{SECRET_META_KEY}` row of the meta table to generate a new one"
    )]
    Corrupt,
}

/// The system random source failed while making a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomError;

fn keyed(key: &[u8]) -> Result<Hmac<Sha256>, TokenKeyError> {
    // HMAC takes keys of any length (long ones are hashed), so this does not fail in practice.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| TokenKeyError::KeyLength)
}

impl TokenKey {
    /// Derives the token key from `secret`.
    pub fn from_secret(secret: &[u8]) -> Result<TokenKey, TokenKeyError> {
        let mut derive = keyed(secret)?;
        derive.update(KEY_LABEL);
        let key = derive.finalize().into_bytes();
        Ok(TokenKey { mac: keyed(&key)? })
    }

    /// The key for `configured` (`server.secret`), or else for the secret kept in `store`,
    /// generating 32 random bytes on first use so tokens survive restarts.
    pub fn load(configured: Option<&Secret>, store: &Store) -> Result<TokenKey, TokenKeyError> {
        if let Some(s) = configured {
            return TokenKey::from_secret(s.as_bytes());
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|_| TokenKeyError::Random)?;
        let stored = store.get_or_init_meta(SECRET_META_KEY, &URL_SAFE_NO_PAD.encode(fresh))?;
        let secret = URL_SAFE_NO_PAD
            .decode(stored.as_bytes())
            .ok()
            .filter(|s| s.len() >= 32)
            .ok_or(TokenKeyError::Corrupt)?;
        TokenKey::from_secret(&secret)
    }

    /// Signs `claims` into a token.
    pub fn issue(&self, claims: &Claims) -> String {
        let mut raw = claims.encode();
        let mut mac = self.mac.clone();
        mac.update(&raw);
        raw.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks `token` for a request to `expected.route` from `expected.origin` and
    /// `expected.ip` at `now_ms` (Unix milliseconds). Does not spend it.
    pub fn verify(
        &self,
        token: &str,
        expected: &Expected<'_>,
        now_ms: u64,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if raw.len() <= TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = raw.split_at(raw.len() - TAG_LEN);
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.verify_slice(tag).map_err(|_| TokenError::Signature)?;
        let claims = Claims::decode(payload).ok_or(TokenError::Malformed)?;
        if now_ms >= claims.expires_ms {
            return Err(TokenError::Expired);
        }
        if claims.route != expected.route {
            return Err(TokenError::Route);
        }
        if claims.origin != expected.origin {
            return Err(TokenError::Origin);
        }
        if !claims.bind.allows(expected.ip) {
            return Err(TokenError::Address);
        }
        Ok(claims)
    }
}

/// What a token must match to be accepted.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The route's name.
    pub route: &'a str,
    /// The request's (already allowed) `Origin`.
    pub origin: &'a str,
    /// The client address.
    pub ip: IpAddr,
}

/// Why a token was not accepted. Every variant but `Expired` is `token_invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64url, too short or too long, or an unknown payload format.
    #[error("token malformed")]
    Malformed,
    /// The tag does not match: forged, altered, truncated, or signed with another secret.
    #[error("token signature mismatch")]
    Signature,
    /// Its expiry has passed.
    #[error("token expired")]
    Expired,
    /// Issued for another route.
    #[error("token for another route")]
    Route,
    /// Issued to another origin.
    #[error("token for another origin")]
    Origin,
    /// Issued to a client outside the request's address or network.
    #[error("token from another address")]
    Address,
}

impl TokenError {
    /// The audit-log detail.
    pub const fn detail(self) -> &'static str {
        match self {
            TokenError::Malformed => "token malformed",
            TokenError::Signature => "token signature mismatch",
            TokenError::Expired => "token expired",
            TokenError::Route => "token for another route",
            TokenError::Origin => "token for another origin",
            TokenError::Address => "token from another address",
        }
    }
}

/// The address a token is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Any address (`token_bind = "none"`).
    Any,
    /// Addresses in this network (a /32 or /128 for `"ip"`, a /24 or /64 for `"prefix"`).
    Net(IpNet),
}

impl Binding {
    /// The binding of a token issued to `ip` under `bind`.
    pub fn for_client(ip: IpAddr, bind: TokenBind) -> Binding {
        let ip = ip.to_canonical();
        let prefix = match (bind, ip) {
            (TokenBind::None, _) => return Binding::Any,
            (TokenBind::Ip, IpAddr::V4(_)) => 32,
            (TokenBind::Ip, IpAddr::V6(_)) => 128,
            (TokenBind::Prefix, IpAddr::V4(_)) => 24,
            (TokenBind::Prefix, IpAddr::V6(_)) => 64,
        };
        Binding::Net(
            IpNet::new(ip, prefix)
                .map(|n| n.trunc())
                .unwrap_or_else(|_| IpNet::from(ip)),
        )
    }

    /// True when `ip` may use a token with this binding.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            Binding::Any => true,
            Binding::Net(n) => n.contains(&ip.to_canonical()),
        }
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Random; the single-use id.
    pub id: [u8; ID_LEN],
    /// Random; the chat session, kept across rotations.
    pub session: [u8; ID_LEN],
    /// Expiry, Unix milliseconds.
    pub expires_ms: u64,
    /// The route's name.
    pub route: String,
    /// The canonical origin it was issued to.
    pub origin: String,
    /// The address it was issued to.
    pub bind: Binding,
}

fn random_id() -> Result<[u8; ID_LEN], RandomError> {
    let mut id = [0u8; ID_LEN];
    getrandom::fill(&mut id).map_err(|_| RandomError)?;
    Ok(id)
}

impl Claims {
    /// The first token of a new session, as `/_hookwarden/token` hands it out.
    pub fn new_session(
        route: &str,
        origin: &str,
        bind: Binding,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Claims, RandomError> {
        Ok(Claims {
            id: random_id()?,
            session: random_id()?,
            expires_ms: now_ms.saturating_add(duration_ms(ttl)),
            route: route.to_owned(),
            origin: origin.to_owned(),
            bind,
        })
    }

    /// The next token of the same session: a new id and expiry, bound to where the client
    /// is now.
    pub fn next(&self, bind: Binding, ttl: Duration, now_ms: u64) -> Result<Claims, RandomError> {
        Ok(Claims {
            id: random_id()?,
            session: self.session,
            expires_ms: now_ms.saturating_add(duration_ms(ttl)),
            route: self.route.clone(),
            origin: self.origin.clone(),
            bind,
        })
    }

    /// The session id as text (hex), for `Exchange::session_id` and the audit log.
    pub fn session_id(&self) -> String {
        hex::encode(self.session)
    }

    /// The key that spends this token in `State`.
    pub fn claim_key(&self) -> String {
        format!("tok:{}", hex::encode(self.id))
    }

    /// How long the spent id must be remembered at `now_ms`: until the token expires, plus
    /// [`CLAIM_MARGIN`]. Expiry is read on the wall clock, a claim's life on the monotonic
    /// one: were the wall clock stepped back after the spend, the token would verify for that
    /// much longer than its claim lives, and could be spent again.
    pub fn remaining(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_ms.saturating_sub(now_ms)) + CLAIM_MARGIN
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.route.len() + self.origin.len());
        out.push(TOKEN_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.session);
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        match self.bind {
            Binding::Any => out.push(0),
            Binding::Net(IpNet::V4(n)) => {
                out.push(4);
                out.push(n.prefix_len());
                out.extend_from_slice(&n.network().octets());
            }
            Binding::Net(IpNet::V6(n)) => {
                out.push(6);
                out.push(n.prefix_len());
                out.extend_from_slice(&n.network().octets());
            }
        }
        // Route names are at most 64 bytes and origins far below 64 KiB (config-checked).
        let route = &self.route.as_bytes()[..self.route.len().min(255)];
        out.push(route.len() as u8);
        out.extend_from_slice(route);
        let origin = &self.origin.as_bytes()[..self.origin.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(origin.len() as u16).to_be_bytes());
        out.extend_from_slice(origin);
        out
    }

    fn decode(payload: &[u8]) -> Option<Claims> {
        let mut r = Cursor(payload);
        if r.take(1)?[0] != TOKEN_VERSION {
            return None;
        }
        let id = r.take(ID_LEN)?.try_into().ok()?;
        let session = r.take(ID_LEN)?.try_into().ok()?;
        let expires_ms = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let bind = match r.take(1)?[0] {
            0 => Binding::Any,
            4 => {
                let prefix = r.take(1)?[0];
                let octets: [u8; 4] = r.take(4)?.try_into().ok()?;
                Binding::Net(IpNet::new(IpAddr::from(octets), prefix).ok()?)
            }
            6 => {
                let prefix = r.take(1)?[0];
                let octets: [u8; 16] = r.take(16)?.try_into().ok()?;
                Binding::Net(IpNet::new(IpAddr::from(octets), prefix).ok()?)
            }
            _ => return None,
        };
        let route_len = usize::from(r.take(1)?[0]);
        let route = String::from_utf8(r.take(route_len)?.to_vec()).ok()?;
        let origin_len = usize::from(u16::from_be_bytes(r.take(2)?.try_into().ok()?));
        let origin = String::from_utf8(r.take(origin_len)?.to_vec()).ok()?;
        if !r.0.is_empty() {
            return None;
        }
        Some(Claims {
            id,
            session,
            expires_ms,
            route,
            origin,
            bind,
        })
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `t` as Unix milliseconds (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000_000;
    const TTL: Duration = Duration::from_secs(600);

    fn key() -> TokenKey {
        TokenKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn expected<'a>(addr: &str) -> Expected<'a> {
        Expected {
            route: "chat",
            origin: "https://shop.example.com",
            ip: ip(addr),
        }
    }

    fn claims(bind: TokenBind, addr: &str) -> Claims {
        Claims::new_session(
            "chat",
            "https://shop.example.com",
            Binding::for_client(ip(addr), bind),
            TTL,
            NOW,
        )
        .unwrap()
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let c = claims(TokenBind::Prefix, "203.0.113.5");
        let t = key().issue(&c);
        assert_eq!(
            key().verify(&t, &expected("203.0.113.5"), NOW),
            Ok(c.clone())
        );
        let last = NOW + 600_000 - 1;
        assert_eq!(key().verify(&t, &expected("203.0.113.5"), last), Ok(c));
        assert_eq!(
            key().verify(&t, &expected("203.0.113.5"), NOW + 600_000),
            Err(TokenError::Expired)
        );
    }

    /// A vector computed independently with Python's `hmac` and `base64` modules from the
    /// format in the module docs:
    ///
    /// ```python
    /// k = hmac.new(b"0123456789abcdef0123456789abcdef", b"hookwarden browser token v1", sha256).digest()
    /// p = bytes([1]) + bytes(range(16)) + bytes(range(16, 32)) + (1750000600000).to_bytes(8, "big") \
    ///     + bytes([4, 24, 203, 0, 113, 0]) + bytes([4]) + b"chat" + (24).to_bytes(2, "big") \
    ///     + b"https://shop.example.com"
    /// base64.urlsafe_b64encode(p + hmac.new(k, p, sha256).digest()).rstrip(b"=")
    /// ```
    #[test]
    fn the_format_matches_an_independent_implementation() {
        let c = Claims {
            id: std::array::from_fn(|i| i as u8),
            session: std::array::from_fn(|i| (i + 16) as u8),
            expires_ms: NOW + 600_000,
            route: "chat".into(),
            origin: "https://shop.example.com".into(),
            bind: Binding::for_client(ip("203.0.113.200"), TokenBind::Prefix),
        };
        let t = key().issue(&c);
        assert_eq!(t, PYTHON_VECTOR);
        assert_eq!(key().verify(&t, &expected("203.0.113.1"), NOW), Ok(c));
    }

    const PYTHON_VECTOR: &str = "AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fAAABl3QqA8AEGMsAcQAEY2hhdAAYaHR0cHM6Ly9zaG9wLmV4YW1wbGUuY29t1PXPVXiBW5jELK_EcKL-FjCX2qF3l6BBqEygEafcGYk";

    #[test]
    fn forged_altered_and_truncated_tokens_are_refused_with_their_cause() {
        let t = key().issue(&claims(TokenBind::Prefix, "203.0.113.5"));
        let e = expected("203.0.113.5");
        let other = TokenKey::from_secret(b"another secret, also 32 chars!!!").unwrap();
        assert_eq!(other.verify(&t, &e, NOW), Err(TokenError::Signature));

        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[40] ^= 1; // inside the expiry
        let altered = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(key().verify(&altered, &e, NOW), Err(TokenError::Signature));

        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 0x80; // inside the tag
        let bad_tag = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(key().verify(&bad_tag, &e, NOW), Err(TokenError::Signature));

        // Dropping whole bytes shifts the payload/tag boundary: the tag no longer matches.
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for cut in [1, 3, 32, 40] {
            let truncated = URL_SAFE_NO_PAD.encode(&raw[..raw.len() - cut]);
            assert_eq!(
                key().verify(&truncated, &e, NOW),
                Err(TokenError::Signature),
                "cut {cut}"
            );
        }
        assert_eq!(key().verify(&t[..40], &e, NOW), Err(TokenError::Malformed));
        assert_eq!(key().verify("", &e, NOW), Err(TokenError::Malformed));
        assert_eq!(
            key().verify("not a token!", &e, NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            key().verify(&format!("{t}="), &e, NOW),
            Err(TokenError::Malformed)
        );
        let long = "A".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(key().verify(&long, &e, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn a_validly_signed_but_unknown_format_is_malformed() {
        let mut payload = claims(TokenBind::None, "203.0.113.5").encode();
        payload[0] = 2;
        let mut mac = key().mac.clone();
        mac.update(&payload);
        payload.extend_from_slice(&mac.finalize().into_bytes());
        let t = URL_SAFE_NO_PAD.encode(payload);
        assert_eq!(
            key().verify(&t, &expected("203.0.113.5"), NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn route_origin_and_address_must_match() {
        let t = key().issue(&claims(TokenBind::Prefix, "203.0.113.5"));
        let mut e = expected("203.0.113.5");
        e.route = "other";
        assert_eq!(key().verify(&t, &e, NOW), Err(TokenError::Route));
        let mut e = expected("203.0.113.5");
        e.origin = "https://evil.example";
        assert_eq!(key().verify(&t, &e, NOW), Err(TokenError::Origin));
        assert!(key().verify(&t, &expected("203.0.113.250"), NOW).is_ok());
        assert_eq!(
            key().verify(&t, &expected("203.0.114.5"), NOW),
            Err(TokenError::Address)
        );
        assert_eq!(
            key().verify(&t, &expected("2001:db8::1"), NOW),
            Err(TokenError::Address)
        );
    }

    #[test]
    fn bindings_follow_token_bind() {
        let exact = Binding::for_client(ip("203.0.113.5"), TokenBind::Ip);
        assert!(exact.allows(ip("203.0.113.5")));
        assert!(exact.allows(ip("::ffff:203.0.113.5")));
        assert!(!exact.allows(ip("203.0.113.6")));
        let v6 = Binding::for_client(ip("2001:db8:1:2:aaaa::1"), TokenBind::Prefix);
        assert!(v6.allows(ip("2001:db8:1:2:bbbb::9")));
        assert!(!v6.allows(ip("2001:db8:1:3::1")));
        let v6_exact = Binding::for_client(ip("2001:db8:1:2::1"), TokenBind::Ip);
        assert!(!v6_exact.allows(ip("2001:db8:1:2::2")));
        let any = Binding::for_client(ip("203.0.113.5"), TokenBind::None);
        assert!(any.allows(ip("198.51.100.1")));
        assert!(any.allows(ip("2001:db8::1")));
        // Each binding survives the round trip through a token.
        for bind in [exact, v6, v6_exact, any] {
            let c = Claims::new_session("chat", "https://a.example", bind, TTL, NOW).unwrap();
            assert_eq!(Claims::decode(&c.encode()), Some(c));
        }
    }

    #[test]
    fn rotation_keeps_the_session_and_renews_the_rest() {
        let first = claims(TokenBind::Prefix, "203.0.113.5");
        let bind = Binding::for_client(ip("198.51.100.7"), TokenBind::Prefix);
        let next = first.next(bind, TTL, NOW + 5_000).unwrap();
        assert_eq!(next.session, first.session);
        assert_eq!(next.session_id(), first.session_id());
        assert_ne!(next.id, first.id);
        assert_ne!(next.claim_key(), first.claim_key());
        assert_eq!(next.expires_ms, NOW + 5_000 + 600_000);
        assert_eq!(next.bind, bind);
        assert_eq!(first.remaining(NOW), Duration::from_secs(660));
        assert_eq!(first.remaining(NOW + 700_000), Duration::from_secs(60));
    }

    #[test]
    fn the_key_never_prints() {
        assert_eq!(format!("{:?}", key()), "TokenKey([REDACTED])");
    }

    #[test]
    fn a_generated_secret_is_kept_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        let store = Store::open(&path).unwrap();
        let c = claims(TokenBind::None, "203.0.113.5");
        let t = TokenKey::load(None, &store).unwrap().issue(&c);
        drop(store);
        let store = Store::open(&path).unwrap();
        let again = TokenKey::load(None, &store).unwrap();
        assert_eq!(
            again.verify(&t, &expected("203.0.113.5"), NOW),
            Ok(c.clone())
        );
        // A configured secret takes precedence over the stored one.
        let configured = TokenKey::load(Some(&Secret::new("x".repeat(32))), &store).unwrap();
        assert_eq!(
            configured.verify(&t, &expected("203.0.113.5"), NOW),
            Err(TokenError::Signature)
        );
        // A fresh store generates a different secret.
        let other = Store::open(Path::new(":memory:")).unwrap();
        let fresh = TokenKey::load(None, &other).unwrap();
        assert_eq!(
            fresh.verify(&t, &expected("203.0.113.5"), NOW),
            Err(TokenError::Signature)
        );
        store.set_meta(SECRET_META_KEY, "short").unwrap();
        assert!(matches!(
            TokenKey::load(None, &store),
            Err(TokenKeyError::Corrupt)
        ));
    }

    use std::path::Path;
}
