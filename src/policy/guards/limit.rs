//! The limit guard: a group of `[[route.limit]]` checked as one, with the IETF `RateLimit`
//! fields on the way back.
//!
//! A route has up to two groups. Limits keyed by the caller's address (`ip`, `ip_prefix`) run
//! before the credential checks: they protect the gateway, so failed and unauthenticated
//! requests count too. Limits keyed by `key`, `session`, `header:NAME` or `route` run after
//! them: they protect the upstream's budget, which garbage from an attacker must not be able
//! to spend. Within a group every limit must allow the request, and the request is counted
//! against all of them or none ([`State::rate_many`](crate::state::State::rate_many)), so a
//! request refused by one limit spends nothing of the others.
//!
//! Responses carry the fields of draft-ietf-httpapi-ratelimit-headers-11:
//!
//! ```text
//! RateLimit-Policy: "ip";q=10;w=60, "route";q=100;w=60
//! RateLimit: "ip";r=9;t=6, "route";r=99;t=1
//! ```
//!
//! `q`/`w` are the configured count and period; `r` is the exact number of requests that
//! would still pass now; `t` is the number of seconds until the limit is fully restored (on a
//! refusal: until the next request would pass, the same moment as `Retry-After`). A refused
//! response lists only the limits that refused it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::config::{LimitConfig, LimitKey};
use crate::policy::{Denial, Exchange, Reason, Services};
use crate::state::Rate;

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Which requests a limit group counts: the route's own, or the route's token endpoint
/// (`/_hookwarden/token?route=NAME`), whose per-IP limits are the route's but counted apart so
/// that fetching a token does not use up a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// Requests to the route.
    Route,
    /// Requests to the token endpoint for the route.
    TokenEndpoint,
}

#[derive(Debug, Clone)]
struct LimitRule {
    name: String,
    key: LimitKey,
    rate: Rate,
    /// `"name";q=…;w=…`, ready for `RateLimit-Policy`.
    policy_item: String,
    /// The state key of this limit, to which the caller's own part is appended.
    state_prefix: String,
}

/// One group of limits; see the module docs.
#[derive(Debug, Clone)]
pub struct LimitGuard {
    rules: Arc<[LimitRule]>,
    /// The `RateLimit-Policy` items of all the rules, for a request every rule applies to
    /// (`None` when they do not make a header value).
    policy: Option<HeaderValue>,
}

impl LimitGuard {
    /// A guard for `limits` of route `route`.
    pub fn new(route: &str, limits: &[&LimitConfig], scope: LimitScope) -> Self {
        let scope = match scope {
            LimitScope::Route => "",
            LimitScope::TokenEndpoint => "token:",
        };
        let rules = limits
            .iter()
            .map(|l| {
                let rate = l.rate();
                // The rate is part of the key: after a reload with another rate, the old
                // arrival times (which only mean something for their rate) are not reused.
                // Budgets of callers past the credential checks are evicted last by the
                // in-memory table (see `state::PROTECTED_PREFIX`).
                let class = if l.key.is_per_ip() {
                    "rl:"
                } else {
                    crate::state::PROTECTED_PREFIX
                };
                let state_prefix = format!(
                    "{class}{route}:{}:{}x{}:{scope}",
                    l.name, rate.interval_ns, rate.burst
                );
                let w = ceil_secs(l.period).max(1);
                LimitRule {
                    name: l.name.clone(),
                    key: l.key.clone(),
                    rate,
                    policy_item: format!("\"{}\";q={};w={w}", l.name, l.count),
                    state_prefix,
                }
            })
            .collect::<Arc<[LimitRule]>>();
        let policy = join_items(rules.iter().map(|r| r.policy_item.as_str()));
        LimitGuard { rules, policy }
    }

    /// Counts the request against every limit of the group that applies to it.
    pub async fn check(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        let mut applied: Vec<(&LimitRule, String)> = Vec::with_capacity(self.rules.len());
        for rule in self.rules.iter() {
            // Two fields of the header a limit is keyed on would be a new caller to the limit
            // while the upstream reads one of them (often the first, already exhausted).
            if let LimitKey::Header(name) = &rule.key
                && ex.headers.get_all(name).iter().nth(1).is_some()
            {
                return Err(Denial::new(Reason::BadRequest).with_detail("limit header repeated"));
            }
            let mut key = String::with_capacity(rule.state_prefix.len() + 40);
            key.push_str(&rule.state_prefix);
            if push_caller_part(&rule.key, ex, &mut key) {
                applied.push((rule, key));
            }
        }
        if applied.is_empty() {
            return Ok(());
        }
        let items: Vec<(&str, Rate)> = applied.iter().map(|(r, k)| (k.as_str(), r.rate)).collect();
        let decisions = services.state.rate_many(&items).await.map_err(|_| {
            Denial::new(Reason::StateUnavailable).with_detail("rate limit state unavailable")
        })?;

        let allowed = decisions.iter().all(|d| d.allowed);
        // A refusal names only the limits that refused it, replacing what an earlier group
        // (which let the request through) wrote.
        let policy = if !allowed {
            join_items(
                applied
                    .iter()
                    .zip(&decisions)
                    .filter(|(_, d)| !d.allowed)
                    .map(|((r, _), _)| r.policy_item.as_str()),
            )
        } else if applied.len() == self.rules.len() {
            self.policy.clone()
        } else {
            join_items(applied.iter().map(|(r, _)| r.policy_item.as_str()))
        };
        if !allowed {
            ex.response_headers.remove(RATELIMIT_POLICY);
            ex.response_headers.remove(RATELIMIT);
        }
        extend_list(&mut ex.response_headers, RATELIMIT_POLICY, policy);
        let mut fields = String::with_capacity(32 * applied.len());
        let mut retry_after = Duration::ZERO;
        let mut first_refusal = None;
        for ((rule, _), d) in applied.iter().zip(&decisions) {
            let (r, t) = if allowed {
                (d.remaining, ceil_secs(d.reset_after))
            } else if !d.allowed {
                retry_after = retry_after.max(d.retry_after);
                first_refusal.get_or_insert(&rule.key);
                (0, ceil_secs(d.retry_after).max(1))
            } else {
                continue;
            };
            if !fields.is_empty() {
                fields.push_str(", ");
            }
            // By hand rather than `write!`: every limited request formats these.
            let mut digits = [0u8; 20];
            fields.push('"');
            fields.push_str(&rule.name);
            fields.push_str("\";r=");
            fields.push_str(crate::digits::decimal(u64::from(r), &mut digits));
            fields.push_str(";t=");
            fields.push_str(crate::digits::decimal(t, &mut digits));
        }
        // The string's buffer becomes the value's, uncopied.
        let fields = HeaderValue::from_maybe_shared(Bytes::from(fields)).ok();
        extend_list(&mut ex.response_headers, RATELIMIT, fields);
        if allowed {
            return Ok(());
        }
        let mut denial = Denial::new(Reason::RateLimited)
            .with_detail(first_refusal.map_or("limit exhausted", |k| refusal_detail(k)));
        denial.retry_after = Some(retry_after);
        Err(denial)
    }
}

/// The audit detail naming the kind of limit that refused (never the caller's value).
fn refusal_detail(key: &LimitKey) -> &'static str {
    match key {
        LimitKey::Ip => "ip limit exhausted",
        LimitKey::IpPrefix { .. } => "ip_prefix limit exhausted",
        LimitKey::Key => "key limit exhausted",
        LimitKey::Session => "session limit exhausted",
        LimitKey::Route => "route limit exhausted",
        LimitKey::Header(_) => "header limit exhausted",
    }
}

/// Appends the caller's part of a limit's state key to `out`, or returns false when the
/// request has nothing to key on (no authenticated key, no session): such a limit does not
/// apply to it, rather than lumping every such request into one bucket. A missing header is
/// the exception: it is one bucket of its own, so leaving the header out does not escape its
/// limit.
fn push_caller_part(key: &LimitKey, ex: &Exchange, out: &mut String) -> bool {
    match key {
        LimitKey::Ip => push_address_key(out, ex.client_ip),
        LimitKey::IpPrefix { v4, v6 } => {
            let len = if ex.client_ip.is_ipv4() { *v4 } else { *v6 };
            let net = IpNet::new(ex.client_ip, len)
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| ex.client_ip.to_string());
            out.push_str(&net);
        }
        LimitKey::Key | LimitKey::Session => {
            let id = match key {
                LimitKey::Key => ex.key_id.as_deref(),
                _ => ex.session_id.as_deref(),
            };
            let Some(id) = id else {
                return false;
            };
            push_bounded(out, id);
        }
        LimitKey::Route => out.push('*'),
        LimitKey::Header(name) => {
            let mut values = ex.headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                out.push('-');
                return true;
            }
            // Header values are the client's, of any length and possibly personal: keep only
            // a digest of them (all values, in order, so a second header is a second value).
            let mut h = Sha256::new();
            for v in values {
                h.update(v.as_bytes());
                h.update([0]);
            }
            out.push_str(&hex::encode(&h.finalize()[..16]));
        }
    }
    true
}

/// The key an address is counted and banned by: an IPv4 address itself, an IPv6 address by
/// its /64, the block a single subscriber is normally given (counting single IPv6 addresses
/// would let one client rotate through 2^64 of them).
pub fn address_key(ip: IpAddr) -> String {
    let mut key = String::with_capacity(15);
    push_address_key(&mut key, ip);
    key
}

/// Appends [`address_key`] to `out`.
fn push_address_key(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(_) => crate::policy::client_ip::push_ip(out, ip),
        IpAddr::V6(_) => out.push_str(
            &IpNet::new(ip, 64)
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| ip.to_string()),
        ),
    }
}

/// Ids chosen by the gateway are short; anything long is reduced to a digest so a state key
/// stays small in any backend.
fn push_bounded(out: &mut String, id: &str) {
    if id.len() <= 64 {
        out.push_str(id);
    } else {
        out.push_str(&hex::encode(&Sha256::digest(id.as_bytes())[..16]));
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `items` as one list value (`a, b`), or `None` when they do not make a header value.
fn join_items<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let mut joined = String::new();
    for item in items {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(item);
    }
    HeaderValue::from_maybe_shared(Bytes::from(joined)).ok()
}

/// Adds `items` (a list value) to a list-valued field, after what an earlier group put there.
fn extend_list(headers: &mut HeaderMap, name: HeaderName, items: Option<HeaderValue>) {
    let Some(items) = items.filter(|v| !v.is_empty()) else {
        return;
    };
    // One lookup of the name whether or not an earlier group set the field.
    match headers.entry(name) {
        http::header::Entry::Occupied(mut prev) if !prev.get().is_empty() => {
            let mut joined = Vec::with_capacity(prev.get().len() + 2 + items.len());
            joined.extend_from_slice(prev.get().as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(items.as_bytes());
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
                prev.insert(v);
            }
        }
        http::header::Entry::Occupied(mut prev) => {
            prev.insert(items);
        }
        http::header::Entry::Vacant(slot) => {
            slot.insert(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_rate;
    use crate::policy::guards::testing::exchange;
    use crate::state::State;

    fn limit(name: &str, key: LimitKey, rate: &str) -> LimitConfig {
        let (count, period) = parse_rate(rate).unwrap();
        LimitConfig {
            name: name.into(),
            key,
            count,
            period,
            burst: count,
        }
    }

    fn services() -> (Services, Arc<crate::state::MemoryState>) {
        let m = Arc::new(crate::state::MemoryState::new(100_000));
        m.set_manual_clock(Duration::from_secs(1_000));
        (
            crate::policy::guards::testing::services(State::Memory(m.clone())),
            m,
        )
    }

    /// An id as a state key holds it.
    fn bounded(id: &str) -> String {
        let mut key = String::new();
        push_bounded(&mut key, id);
        key
    }

    /// The caller's part of a limit's state key alone.
    fn caller_part(key: &LimitKey, ex: &Exchange) -> Option<String> {
        let mut part = String::new();
        push_caller_part(key, ex, &mut part).then_some(part)
    }

    fn header(ex: &Exchange, name: &HeaderName) -> String {
        ex.response_headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    async fn run(g: &LimitGuard, ex: &mut Exchange, s: &Services) -> Result<(), Reason> {
        ex.response_headers.clear();
        g.check(ex, s).await.map_err(|d| d.reason)
    }

    #[tokio::test]
    async fn fields_follow_the_draft_and_count_down_exactly() {
        let (s, _) = services();
        let l = limit("ip", LimitKey::Ip, "5/minute");
        let g = LimitGuard::new("chat", &[&l], LimitScope::Route);
        let mut ex = exchange("203.0.113.9");
        for remaining in [4, 3, 2, 1, 0] {
            assert_eq!(run(&g, &mut ex, &s).await, Ok(()));
            assert_eq!(header(&ex, &RATELIMIT_POLICY), "\"ip\";q=5;w=60");
            // 12 s per request: after n requests the bucket is full again in n·12 s.
            let t = (5 - remaining) * 12;
            assert_eq!(
                header(&ex, &RATELIMIT),
                format!("\"ip\";r={remaining};t={t}")
            );
        }
        ex.response_headers.clear();
        let d = g.check(&mut ex, &s).await.unwrap_err();
        assert_eq!(d.reason, Reason::RateLimited);
        assert_eq!(d.detail, Some("ip limit exhausted"));
        assert_eq!(d.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(header(&ex, &RATELIMIT), "\"ip\";r=0;t=12");
    }

    #[tokio::test]
    async fn key_and_session_limits_apply_only_when_there_is_one() {
        let (s, _) = services();
        let lk = limit("per-key", LimitKey::Key, "2/minute");
        let ls = limit("per-session", LimitKey::Session, "1/minute");
        let g = LimitGuard::new("chat", &[&lk, &ls], LimitScope::Route);

        // Neither an API key nor a session: nothing to key on, nothing counted, no fields.
        let mut anon = exchange("203.0.113.9");
        for _ in 0..5 {
            assert_eq!(run(&g, &mut anon, &s).await, Ok(()));
            assert!(anon.response_headers.is_empty());
        }

        // Each key has its own bucket.
        let mut a = exchange("203.0.113.9");
        a.key_id = Some("key_a".into());
        let mut b = exchange("203.0.113.9");
        b.key_id = Some("key_b".into());
        assert_eq!(run(&g, &mut a, &s).await, Ok(()));
        assert_eq!(header(&a, &RATELIMIT), "\"per-key\";r=1;t=30");
        assert_eq!(run(&g, &mut a, &s).await, Ok(()));
        assert_eq!(run(&g, &mut a, &s).await, Err(Reason::RateLimited));
        assert_eq!(run(&g, &mut b, &s).await, Ok(()));

        // Sessions likewise, and both limits must pass when both apply.
        let mut s1 = exchange("203.0.113.9");
        s1.session_id = Some("sess-1".into());
        assert_eq!(run(&g, &mut s1, &s).await, Ok(()));
        assert_eq!(run(&g, &mut s1, &s).await, Err(Reason::RateLimited));
        let mut both = exchange("203.0.113.9");
        both.key_id = Some("key_c".into());
        both.session_id = Some("sess-2".into());
        assert_eq!(run(&g, &mut both, &s).await, Ok(()));
        assert_eq!(
            header(&both, &RATELIMIT_POLICY),
            "\"per-key\";q=2;w=60, \"per-session\";q=1;w=60"
        );
        // The session limit refuses; the key limit is not charged for it.
        assert_eq!(run(&g, &mut both, &s).await, Err(Reason::RateLimited));
        assert_eq!(header(&both, &RATELIMIT), "\"per-session\";r=0;t=60");
        both.session_id = Some("sess-3".into());
        assert_eq!(run(&g, &mut both, &s).await, Ok(()));
        assert_eq!(
            header(&both, &RATELIMIT),
            "\"per-key\";r=0;t=60, \"per-session\";r=0;t=60"
        );
    }

    #[tokio::test]
    async fn long_ids_are_reduced_but_stay_distinct() {
        let long_a = format!("{}a", "k".repeat(100));
        let long_b = format!("{}b", "k".repeat(100));
        assert_eq!(bounded(&long_a).len(), 32);
        assert_ne!(bounded(&long_a), bounded(&long_b));
        assert_eq!(bounded("key_123"), "key_123");
    }

    #[tokio::test]
    async fn a_second_group_adds_to_the_first_groups_fields() {
        let (s, _) = services();
        let li = limit("ip", LimitKey::Ip, "10/minute");
        let lr = limit("route", LimitKey::Route, "100/hour");
        let g1 = LimitGuard::new("chat", &[&li], LimitScope::Route);
        let g2 = LimitGuard::new("chat", &[&lr], LimitScope::Route);
        let mut ex = exchange("203.0.113.9");
        g1.check(&mut ex, &s).await.unwrap();
        g2.check(&mut ex, &s).await.unwrap();
        assert_eq!(
            header(&ex, &RATELIMIT_POLICY),
            "\"ip\";q=10;w=60, \"route\";q=100;w=3600"
        );
        assert_eq!(
            header(&ex, &RATELIMIT),
            "\"ip\";r=9;t=6, \"route\";r=99;t=36"
        );
    }

    #[tokio::test]
    async fn the_token_endpoint_counts_apart_from_the_route() {
        let (s, _) = services();
        let l = limit("ip", LimitKey::Ip, "1/minute");
        let route = LimitGuard::new("chat", &[&l], LimitScope::Route);
        let token = LimitGuard::new("chat", &[&l], LimitScope::TokenEndpoint);
        let mut ex = exchange("203.0.113.9");
        assert_eq!(run(&token, &mut ex, &s).await, Ok(()));
        assert_eq!(run(&token, &mut ex, &s).await, Err(Reason::RateLimited));
        assert_eq!(run(&route, &mut ex, &s).await, Ok(()));
        assert_eq!(run(&route, &mut ex, &s).await, Err(Reason::RateLimited));
    }

    #[test]
    fn callers_are_keyed_by_address_network_or_digest() {
        let mut ex = exchange("2001:db8:1:2:3:4:5:6");
        assert_eq!(
            caller_part(&LimitKey::Ip, &ex).unwrap(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            caller_part(&LimitKey::IpPrefix { v4: 24, v6: 48 }, &ex).unwrap(),
            "2001:db8:1::/48"
        );
        ex.client_ip = "198.51.100.77".parse().unwrap();
        assert_eq!(caller_part(&LimitKey::Ip, &ex).unwrap(), "198.51.100.77");
        assert_eq!(
            caller_part(&LimitKey::IpPrefix { v4: 24, v6: 64 }, &ex).unwrap(),
            "198.51.100.0/24"
        );
        let h = LimitKey::Header(HeaderName::from_static("x-user"));
        assert_eq!(caller_part(&h, &ex).unwrap(), "-");
        ex.headers
            .insert("x-user", HeaderValue::from_static("alice"));
        let alice = caller_part(&h, &ex).unwrap();
        assert_eq!(alice.len(), 32);
        assert!(!alice.contains("alice"));
        ex.headers.append("x-user", HeaderValue::from_static("bob"));
        assert_ne!(caller_part(&h, &ex).unwrap(), alice);
        assert_eq!(caller_part(&LimitKey::Key, &ex), None);
        assert_eq!(caller_part(&LimitKey::Session, &ex), None);
        assert_eq!(caller_part(&LimitKey::Route, &ex).unwrap(), "*");
    }
}
