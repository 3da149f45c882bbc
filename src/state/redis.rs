//! The Redis `State`: limits, single-use ids, failure counters and bans shared by every
//! gateway instance pointed at the same Redis (and the same `prefix` and `server.secret`).
//!
//! Each operation is one round trip: the GCRA of [`super::gcra`] as a Lua script (`gcra.lua`,
//! several limits in one atomic call) that reads the server's own clock (`TIME`), so instances
//! whose clocks disagree still agree on every limit; claims with `SET NX PX`; failure counters
//! with `INCR` and an expiry set at the first failure (`failure.lua`); bans with `SET PX` and
//! `PTTL`. Every key gets an expiry when it is written, so Redis never fills with dead keys.
//!
//! Key names do not carry client data: a state key (which holds addresses, session ids, …) is
//! reduced to `prefix` + 22 characters of an HMAC-SHA256 under a key derived from
//! `server.secret`. Names are therefore short and of one size, the same on every instance,
//! and say nothing to whoever can list the keys (`SCAN`).
//!
//! Every call has a short timeout (a call whose connection turns out to be closed, as Redis
//! or a proxy does to idle clients, is retried once on a new connection within it). A failed
//! or slow call marks Redis down: from then on no
//! call is tried on the request path (no request waits for a dead server), and the background
//! task ([`RedisState::recheck`], every [`RECHECK_EVERY`]) pings until it answers. While it is
//! down, `on_error = "deny"` refuses (the guards answer 503 `state_unavailable`) and
//! `on_error = "local"` answers from this instance's own [`MemoryState`]; both are logged once
//! per outage, not per request, and visible in the metrics ([`RedisStats`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{ErrorKind, IntoConnectionInfo, RedisError, RedisResult, Script, ServerErrorKind};
use sha2::Sha256;

use super::Claim;
use super::StateError;
use super::gcra::{Rate, RateDecision};
use super::memory::MemoryState;
use crate::config::{OnError, RedisConfig};
use crate::secret::Secret;

/// How often a Redis marked down is pinged.
pub const RECHECK_EVERY: Duration = Duration::from_millis(500);
/// How long after its last operation answered from memory an instance still reports
/// `local_fallback` while Redis is up (it answered with errors).
const FALLBACK_RECENT: Duration = Duration::from_secs(10);

/// A connection with data unacknowledged this long is dead (Linux `TCP_USER_TIMEOUT`), so a
/// Redis that vanished without closing its connections is noticed and reconnected to.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);

/// Server errors (Redis answering, but with an error) are logged at most this often.
const SERVER_ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Counters and flags for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Redis answers (not marked down).
    pub up: bool,
    /// This instance answers from its own memory (`on_error = "local"` while Redis is down).
    pub local_fallback: bool,
    /// Calls that failed or timed out.
    pub errors: u64,
    /// Operations answered from this instance's memory instead of Redis.
    pub fallback_operations: u64,
}

/// The shared-state backend on Redis. See the module docs.
pub struct RedisState {
    /// Replaced by a fresh one when the server turns out to be a read-only replica.
    conn: ArcSwap<ConnectionManager>,
    client: redis::Client,
    manager_cfg: ConnectionManagerConfig,
    endpoint: String,
    prefix: String,
    key_mac: Hmac<Sha256>,
    timeout: Duration,
    connect_timeout: Duration,
    on_error: OnError,
    local: Option<MemoryState>,
    up: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    errors: AtomicU64,
    fallback_ops: AtomicU64,
    /// When an operation was last answered from memory (milliseconds since `start`, 0:
    /// never): Redis can be up and still refuse (full, or a wrong password), and the gauge
    /// must show that this instance is on its own then too.
    last_fallback_ms: AtomicU64,
    start: Instant,
    /// Milliseconds after `start` when a server error was last logged (0 = never).
    server_error_logged_ms: AtomicU64,
    gcra: Script,
    failure: Script,
    claim: Script,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("on_error", &self.on_error)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish()
    }
}

/// What one failed call says about the server.
enum Failure {
    /// No answer: connection refused, dropped or too slow. Redis is marked down.
    Unreachable(String),
    /// The server is a read-only replica: after a failover, the address now leads to the new
    /// primary but this connection still to the old one. Redis is marked down and the
    /// connection replaced.
    ReadOnly(String),
    /// An answer that is an error (out of memory, read-only replica, …). Only this call
    /// fails; the server is not marked down, since it answers.
    Refused(String),
}

impl RedisState {
    /// Sets up the connection to `cfg.url` and checks it once (within `connect_timeout`). A
    /// Redis that does not answer yet is not an error: the instance starts with it marked down
    /// (and `on_error` applies) and uses it as soon as it answers. `secret` is `server.secret`:
    /// the key names are derived from it, so instances sharing state need the same one.
    pub async fn connect(
        cfg: &RedisConfig,
        secret: &Secret,
        max_entries: usize,
    ) -> Result<RedisState, StateError> {
        let state = Self::new(cfg, secret, max_entries)?;
        match state.ping(cfg.connect_timeout + cfg.timeout).await {
            Ok(()) => {
                tracing::info!(
                    target: "hookwarden::state",
                    redis = %state.endpoint,
                    prefix = %state.prefix,
                    on_error = state.on_error.as_str(),
                    "shared state in Redis"
                );
                state
                    .warn_if_evicting(cfg.connect_timeout + cfg.timeout)
                    .await;
            }
            Err(e) => state.mark_down(&e),
        }
        Ok(state)
    }

    /// Warns when Redis may evict keys to make room (a `maxmemory` with any policy but
    /// `noeviction`): an evicted claim lets a spent token or a delivered message through again,
    /// an evicted ban lifts it, and a flood of new addresses is what fills the memory. A server
    /// that refuses `CONFIG` (managed services often do) is left alone.
    async fn warn_if_evicting(&self, budget: Duration) {
        let mut c = self.connection();
        let ask = async move {
            let policy: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut c)
                .await?;
            let limit: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory")
                .query_async(&mut c)
                .await?;
            Ok::<_, RedisError>((policy, limit))
        };
        let Ok(Ok((policy, limit))) = tokio::time::timeout(budget, ask).await else {
            return;
        };
        let policy = policy.get(1).map(String::as_str).unwrap_or("noeviction");
        let limited = limit.get(1).is_some_and(|l| l.trim() != "0");
        if limited && policy != "noeviction" {
            tracing::warn!(
                target: "hookwarden::state",
                redis = %self.endpoint,
                policy,
                "Redis evicts keys when its maxmemory is reached: a flood could push out spent \
                 token ids, seen message ids and bans, letting them be used again; set \
                 `maxmemory-policy noeviction` (a full Redis then refuses writes, which \
                 on_error handles)"
            );
        }
    }

    /// Like [`RedisState::connect`] without the first check (nothing is sent until the first
    /// operation). Needs a Tokio runtime.
    pub fn new(
        cfg: &RedisConfig,
        secret: &Secret,
        max_entries: usize,
    ) -> Result<RedisState, StateError> {
        // The config check has read this URL already; the messages never echo it.
        let mut info = cfg.url.expose().into_connection_info().map_err(|_| {
            StateError::Config(
                "state.url is not a usable Redis URL (run `hookwarden check`)".into(),
            )
        })?;
        if let Some(p) = &cfg.password {
            let settings = info.redis_settings().clone().set_password(p.expose());
            info = info.set_redis_settings(settings);
        }
        let tcp = TcpSettings::default().set_nodelay(true);
        #[cfg(target_os = "linux")]
        let tcp = tcp.set_user_timeout(TCP_USER_TIMEOUT.max(cfg.connect_timeout));
        info = info.set_tcp_settings(tcp);
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if tls {
            // The Redis client builds its TLS config from the process-wide provider; ring is
            // the one this build uses (an error only means one is installed already).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &cfg.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    StateError::Config(format!("state.ca_file {}: {e}", path.display()))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, certs)
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| StateError::Config(format!("Redis client: {}", e.category())))?;
        // One connection attempt per reconnection: the recheck task is the retry loop.
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone())
            .map_err(|e| StateError::Config(format!("Redis client: {}", e.category())))?;
        let key_mac = derive_key_mac(secret);
        Ok(RedisState {
            conn: ArcSwap::from_pointee(conn),
            client,
            manager_cfg,
            endpoint: cfg.endpoint.clone(),
            prefix: cfg.prefix.clone(),
            key_mac,
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            on_error: cfg.on_error,
            local: (cfg.on_error == OnError::Local).then(|| MemoryState::new(max_entries)),
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            errors: AtomicU64::new(0),
            fallback_ops: AtomicU64::new(0),
            last_fallback_ms: AtomicU64::new(0),
            start: Instant::now(),
            server_error_logged_ms: AtomicU64::new(0),
            gcra: Script::new(include_str!("gcra.lua")),
            failure: Script::new(include_str!("failure.lua")),
            claim: Script::new(include_str!("claim.lua")),
        })
    }

    /// The Redis key of a state key: the prefix and 22 characters of keyed hash. A key's
    /// class ([`super::PROTECTED_PREFIX`], which only the in-memory table's eviction reads) is
    /// left out, so limits keep the Redis keys they had before classes existed: no budget
    /// starts afresh on an upgrade, nor counts twice while old and new instances share Redis.
    pub fn redis_key(&self, key: &str) -> String {
        let tag = key_tag(&self.key_mac, key);
        let mut out = String::with_capacity(self.prefix.len() + 22);
        out.push_str(&self.prefix);
        URL_SAFE_NO_PAD.encode_string(&tag[..16], &mut out);
        out
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What `on_error` says.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// True while Redis is not marked down.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The numbers for the metrics.
    pub fn stats(&self) -> RedisStats {
        let up = self.is_up();
        RedisStats {
            up,
            local_fallback: self.local.is_some() && (!up || self.fell_back_recently()),
            errors: self.errors.load(Ordering::Relaxed),
            fallback_operations: self.fallback_ops.load(Ordering::Relaxed),
        }
    }

    /// True when an operation was answered from memory within [`FALLBACK_RECENT`].
    fn fell_back_recently(&self) -> bool {
        let last = self.last_fallback_ms.load(Ordering::Relaxed);
        last != 0 && self.elapsed_ms() <= last.saturating_add(FALLBACK_RECENT.as_millis() as u64)
    }

    /// Milliseconds since this state was made, at least 1 (0 marks "never" in the fields
    /// that hold such times).
    fn elapsed_ms(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).max(1)
    }

    /// The fallback table (`on_error = "local"` only).
    pub fn local(&self) -> Option<&MemoryState> {
        self.local.as_ref()
    }

    // --- the operations ---------------------------------------------------------------------

    /// Runs the GCRA for several keys as one atomic step (see [`super::State::rate_many`]).
    pub async fn rate_many(&self, items: &[(&str, Rate)]) -> Result<Vec<RateDecision>, StateError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self.gcra_call(items, None).await {
            Ok(d) => Ok(d),
            Err(e) => self.fallback(e, |m| m.rate_many(items)),
        }
    }

    /// [`RedisState::rate_many`] at a given time instead of the server's clock, for tests
    /// that compare the script with [`super::gcra::Gcra::decide`]. Never falls back.
    #[doc(hidden)]
    pub async fn rate_many_at(
        &self,
        items: &[(&str, Rate)],
        now: Duration,
    ) -> Result<Vec<RateDecision>, StateError> {
        self.gcra_call(items, Some(now))
            .await
            .map_err(|f| StateError::Unavailable(f.message().to_owned()))
    }

    async fn gcra_call(
        &self,
        items: &[(&str, Rate)],
        now: Option<Duration>,
    ) -> Result<Vec<RateDecision>, Failure> {
        let mut inv = self.gcra.prepare_invoke();
        match now {
            Some(now) => inv.arg(now.as_secs()).arg(now.subsec_nanos()),
            None => inv.arg("").arg(""),
        };
        for (key, rate) in items {
            let tolerance = rate.interval_ns.saturating_mul(u64::from(rate.burst));
            inv.key(self.redis_key(key))
                .arg(rate.interval_ns)
                .arg(tolerance);
        }
        let inv = &inv;
        let raw: Vec<i64> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        if raw.len() != items.len() * 4 {
            return Err(self.refused(format!(
                "the rate limit script answered {} numbers for {} keys",
                raw.len(),
                items.len()
            )));
        }
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(raw
            .chunks_exact(4)
            .map(|c| RateDecision {
                allowed: c[0] == 1,
                remaining: u32::try_from(n(c[1])).unwrap_or(u32::MAX),
                reset_after: Duration::from_nanos(n(c[2])),
                retry_after: Duration::from_nanos(n(c[3])),
            })
            .collect())
    }

    /// True the first time `key` is claimed within `ttl`.
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        let rkey = &self.redis_key(key);
        let ms = millis_ceil(ttl);
        // The claim holds a value of this call's own: a try repeated after a dropped
        // connection (`call`) finds the claim its first try made, whose answer was lost, and
        // must not take it for someone else's (a legitimate token refused as reused).
        let nonce = &claim_nonce();
        let tried = &AtomicBool::new(false);
        let claimed = self
            .call(|mut c| async move {
                let again = tried.swap(true, Ordering::Relaxed);
                let reply: Option<String> = redis::cmd("SET")
                    .arg(rkey)
                    .arg(nonce)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                if reply.is_some() {
                    return Ok(true);
                }
                if !again {
                    return Ok(false);
                }
                let held: Option<String> = redis::cmd("GET").arg(rkey).query_async(&mut c).await?;
                Ok(held.as_deref() == Some(nonce.as_str()))
            })
            .await;
        match claimed {
            // An id spent here during an outage, while Redis did not hear of it, stays spent.
            Ok(first) => Ok(first && self.local.as_ref().is_none_or(|m| !m.contains(key))),
            Err(e) => self.fallback(e, |m| m.claim_once(key, ttl)),
        }
    }

    /// Claims `key` as pending for `ttl`, or reports the state of an existing claim.
    pub async fn claim_pending(&self, key: &str, ttl: Duration) -> Result<Claim, StateError> {
        let rkey = &self.redis_key(key);
        let ms = millis_ceil(ttl);
        // A repeated try (see `claim_once`) takes a pending claim made within the call's time
        // for the first try's own; the script tells by the claim's time to live. (Not the time
        // since the first try was sent: the repeat runs only after a new connection is made,
        // which the claim's age includes.)
        let window = millis_ceil(self.timeout).saturating_add(10);
        let tried = &AtomicBool::new(false);
        let claimed = self
            .call(|mut c| async move {
                let since = if tried.swap(true, Ordering::Relaxed) {
                    window
                } else {
                    0
                };
                let reply: String = self
                    .claim
                    .key(rkey)
                    .arg(ms)
                    .arg(since)
                    .invoke_async(&mut c)
                    .await?;
                Ok(match reply.as_str() {
                    "new" => Claim::New,
                    "p" => Claim::InFlight,
                    _ => Claim::Done,
                })
            })
            .await;
        match claimed {
            // An id spent here during an outage, while Redis did not hear of it, stays spent.
            Ok(Claim::New) if self.local.as_ref().is_some_and(|m| m.contains(key)) => {
                Ok(Claim::Done)
            }
            Ok(c) => Ok(c),
            Err(e) => self.fallback(e, |m| m.claim_pending(key, ttl)),
        }
    }

    /// Marks the pending claim `key` as delivered, keeping its lifetime.
    pub async fn settle(&self, key: &str, ttl: Duration) -> Result<(), StateError> {
        let rkey = &self.redis_key(key);
        let settled = self
            .call(|mut c| async move {
                let _: Option<String> = redis::cmd("SET")
                    .arg(rkey)
                    .arg("d")
                    .arg("XX")
                    .arg("KEEPTTL")
                    .query_async(&mut c)
                    .await?;
                Ok(())
            })
            .await;
        match settled {
            Ok(()) => Ok(()),
            Err(e) => self.fallback(e, |m| m.settle(key, ttl)),
        }
    }

    /// Counts a failure for `key` in a window that opens at the first one.
    pub async fn count_failure(&self, key: &str, window: Duration) -> Result<u32, StateError> {
        let rkey = &self.redis_key(key);
        let ms = millis_ceil(window);
        let counted = self
            .call(|mut c| async move {
                let n: i64 = self.failure.key(rkey).arg(ms).invoke_async(&mut c).await?;
                Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
            })
            .await;
        match counted {
            Ok(n) => Ok(n),
            Err(e) => self.fallback(e, |m| m.count_failure(key, window)),
        }
    }

    /// Forgets `key` (here and, with `on_error = "local"`, in the fallback table).
    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        if let Some(m) = &self.local {
            m.remove(key);
        }
        let rkey = &self.redis_key(key);
        let removed = self
            .call(|mut c| async move {
                let _: i64 = redis::cmd("DEL").arg(rkey).query_async(&mut c).await?;
                Ok(())
            })
            .await;
        match removed {
            Ok(()) => Ok(()),
            Err(e) => self.fallback(e, |_| Ok(())),
        }
    }

    /// Bans `key` for `duration`.
    pub async fn ban(&self, key: &str, duration: Duration) -> Result<(), StateError> {
        let rkey = &self.redis_key(key);
        let ms = millis_ceil(duration);
        let banned = self
            .call(|mut c| async move {
                let _: Option<String> = redis::cmd("SET")
                    .arg(rkey)
                    .arg(1)
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                Ok(())
            })
            .await;
        match banned {
            Ok(()) => Ok(()),
            Err(e) => self.fallback(e, |m| m.ban(key, duration)),
        }
    }

    /// Time left on a ban of `key`.
    pub async fn ban_remaining(&self, key: &str) -> Result<Option<Duration>, StateError> {
        let rkey = &self.redis_key(key);
        let remaining = self
            .call(|mut c| async move {
                let ms: i64 = redis::cmd("PTTL").arg(rkey).query_async(&mut c).await?;
                Ok(match ms {
                    // -2: no such key. 0: expiring this very millisecond.
                    ..=-2 | 0 => None,
                    // No expiry: never written by this backend, but it is a live entry.
                    -1 => Some(Duration::MAX),
                    ms => Some(Duration::from_millis(ms.unsigned_abs())),
                })
            })
            .await;
        match remaining {
            // A ban started here during an outage still holds on this instance.
            Ok(r) => Ok(r.max(self.local.as_ref().and_then(|m| m.ban_remaining(key)))),
            Err(e) => self.fallback(e, |m| Ok(m.ban_remaining(key))),
        }
    }

    // --- health -----------------------------------------------------------------------------

    /// Pings a Redis marked down and marks it up when it answers. The app runs this every
    /// [`RECHECK_EVERY`] on its main runtime.
    pub async fn recheck(&self) {
        if self.is_up() {
            return;
        }
        // The first call after a failure may only start a reconnection (and report the old
        // error); the second waits for it.
        let budget = self.connect_timeout + self.timeout;
        if self.ping(budget).await.is_err() && self.ping(budget).await.is_err() {
            // The next recheck tries a new connection: the client library reconnects only
            // when a connection fails, and one that stays open but never answers (a stuck
            // proxy or NAT) would keep this instance off Redis until a restart.
            self.renew_connection();
            return;
        }
        // A replica answers pings but refuses writes: wait for a primary.
        if !self.is_primary(budget).await {
            self.renew_connection();
            return;
        }
        // Connected: used again only once it answers within the calls' own timeout, so a
        // Redis that is up but too slow is not let in and out at every recheck.
        if self.ping(self.timeout).await.is_ok() {
            self.mark_up();
            // Not asked at start if Redis was down then; a restarted Redis may be set up anew.
            self.warn_if_evicting(budget).await;
        }
    }

    /// False when `ROLE` says this is a replica. A server that refuses `ROLE` (some managed
    /// services rename or disable commands) counts as a primary: its writes will tell.
    async fn is_primary(&self, budget: Duration) -> bool {
        let mut c = self.connection();
        let role = async move { redis::cmd("ROLE").query_async::<redis::Value>(&mut c).await };
        match tokio::time::timeout(budget, role).await {
            Ok(Ok(redis::Value::Array(parts))) => !matches!(
                parts.first(),
                Some(redis::Value::BulkString(b)) if b.as_slice() == b"slave" || b.as_slice() == b"replica"
            ),
            Ok(Ok(_)) => true,
            Ok(Err(e)) => !(e.is_io_error() || e.is_connection_dropped()),
            Err(_) => false,
        }
    }

    /// The current connection (cheap: a handle).
    fn connection(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.conn.load())
    }

    /// Replaces the connection by a new one (made on first use), so the server's address is
    /// resolved and connected to again.
    fn renew_connection(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager_cfg.clone())
        {
            Ok(c) => self.conn.store(Arc::new(c)),
            Err(e) => tracing::warn!(
                target: "hookwarden::state",
                redis = %self.endpoint,
                error = e.category(),
                "cannot set up a new Redis connection"
            ),
        }
    }

    async fn ping(&self, budget: Duration) -> Result<(), Failure> {
        let mut c = self.connection();
        let ping = async move {
            let pong: String = redis::cmd("PING").query_async(&mut c).await?;
            Ok::<_, RedisError>(pong)
        };
        match tokio::time::timeout(budget, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Failure::Unreachable(format!("no answer within {budget:?}"))),
        }
    }

    /// Runs one call within the timeout; a Redis marked down is not called at all. A call
    /// whose connection turns out to be closed is tried once more on a new connection (within
    /// the same timeout): Redis (or a proxy, or a NAT) closing an idle connection is not an
    /// outage.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Failure::Unreachable("marked down".into()));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut retried = false;
        let failure = loop {
            match tokio::time::timeout_at(deadline, op(self.connection())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !retried && e.is_connection_dropped() => retried = true,
                Ok(Err(e)) => break classify(&e),
                Err(_) => {
                    break Failure::Unreachable(format!("no answer within {:?}", self.timeout));
                }
            }
        };
        match &failure {
            Failure::Unreachable(_) => self.mark_down(&failure),
            Failure::ReadOnly(_) => {
                self.renew_connection();
                self.mark_down(&failure);
            }
            Failure::Refused(msg) => self.log_refusal(msg),
        }
        Err(failure)
    }

    /// A failure found in an answer, logged like a server error.
    fn refused(&self, msg: String) -> Failure {
        self.log_refusal(&msg);
        Failure::Refused(msg)
    }

    /// The answer when Redis failed: this instance's memory with `on_error = "local"`, an
    /// error (which the guards turn into 503 `state_unavailable`) with `"deny"`.
    fn fallback<T>(
        &self,
        failure: Failure,
        local: impl FnOnce(&MemoryState) -> Result<T, super::memory::TableFull>,
    ) -> Result<T, StateError> {
        match &self.local {
            Some(m) => {
                self.fallback_ops.fetch_add(1, Ordering::Relaxed);
                self.last_fallback_ms
                    .store(self.elapsed_ms(), Ordering::Relaxed);
                local(m).map_err(StateError::from)
            }
            None => Err(StateError::Unavailable(failure.message().to_owned())),
        }
    }

    fn mark_down(&self, failure: &Failure) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.up.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut since) = self.down_since.lock() {
            *since = Some(Instant::now());
        }
        let error = failure.message();
        match self.on_error {
            OnError::Deny => tracing::error!(
                target: "hookwarden::state",
                redis = %self.endpoint,
                error,
                "shared state unreachable: requests that need it are refused (503 state_unavailable) until Redis answers again (on_error = \"deny\")"
            ),
            OnError::Local => tracing::warn!(
                target: "hookwarden::state",
                redis = %self.endpoint,
                error,
                "shared state unreachable: limits, bans and single-use ids now hold for this instance alone, from its memory, until Redis answers again (on_error = \"local\")"
            ),
        }
    }

    fn mark_up(&self) {
        if self.up.swap(true, Ordering::AcqRel) {
            return;
        }
        // The outage's fallbacks are over; refusals from now on set it again.
        self.last_fallback_ms.store(0, Ordering::Relaxed);
        let down_for = self
            .down_since
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .map(|t| format!("{:.1}s", t.elapsed().as_secs_f64()))
            .unwrap_or_default();
        tracing::warn!(
            target: "hookwarden::state",
            redis = %self.endpoint,
            down_for,
            "shared state reachable again: limits, bans and single-use ids are shared again"
        );
    }

    fn log_refusal(&self, msg: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let now = self.elapsed_ms();
        let last = self.server_error_logged_ms.load(Ordering::Relaxed);
        let every = SERVER_ERROR_LOG_EVERY.as_millis() as u64;
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .server_error_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                target: "hookwarden::state",
                redis = %self.endpoint,
                error = msg,
                on_error = self.on_error.as_str(),
                "shared state answered with an error (logged at most once a minute)"
            );
        }
    }
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Unreachable(m) | Failure::ReadOnly(m) | Failure::Refused(m) => m,
        }
    }
}

/// Sorts a client error into "no answer" and "an answer that is an error".
fn classify(e: &RedisError) -> Failure {
    if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
        return Failure::ReadOnly(e.to_string());
    }
    let unreachable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error();
    // The error's text holds no credentials (the URL is never part of it).
    if unreachable {
        Failure::Unreachable(e.to_string())
    } else {
        Failure::Refused(e.to_string())
    }
}

/// The key for key names: HMAC-SHA256(`server.secret`, a fixed label), so the names change
/// with the secret and reveal nothing about it.
/// The keyed hash naming `key` in Redis, with the class marker read as `rl:` (see
/// [`RedisState::redis_key`]).
fn key_tag(key_mac: &Hmac<Sha256>, key: &str) -> [u8; 32] {
    let mut mac = key_mac.clone();
    match key.strip_prefix(super::PROTECTED_PREFIX) {
        Some(rest) => {
            mac.update(b"rl:");
            mac.update(rest.as_bytes());
        }
        None => mac.update(key.as_bytes()),
    }
    mac.finalize().into_bytes().into()
}

fn derive_key_mac(secret: &Secret) -> Hmac<Sha256> {
    const LABEL: &[u8] = b"hookwarden state key names v1";
    // HMAC takes keys of any length: neither call can fail.
    let mut outer = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    outer.update(LABEL);
    let derived = outer.finalize().into_bytes();
    match <Hmac<Sha256> as KeyInit>::new_from_slice(&derived) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// A value no other claim holds: 64 random bits drawn once per process, plus a counter.
fn claim_nonce() -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without randomness, nonces are still unique within this process; another
        // instance's could then coincide, which only brings back the lost-answer case.
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    });
    let n = seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{n:016x}")
}

/// Whole milliseconds, rounded up, at least 1 (Redis expiries are in milliseconds; a claim or
/// ban must never end early).
fn millis_ceil(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_round_up_to_whole_milliseconds() {
        assert_eq!(millis_ceil(Duration::ZERO), 1);
        assert_eq!(millis_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(250)), 250);
        assert_eq!(millis_ceil(Duration::from_micros(250_001)), 251);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX / 2);
    }

    /// The class marker of protected limits is not part of the Redis key: the same limit
    /// keeps its key across the upgrade that introduced classes.
    #[test]
    fn protected_limits_keep_their_redis_keys() {
        let mac = derive_key_mac(&Secret::new("a".repeat(32)));
        assert_eq!(
            key_tag(&mac, "rk:chat:per-key:60000000000x1:key_1"),
            key_tag(&mac, "rl:chat:per-key:60000000000x1:key_1")
        );
        assert_ne!(key_tag(&mac, "rk:a"), key_tag(&mac, "rk:b"));
        assert_ne!(key_tag(&mac, "rk:a"), key_tag(&mac, "tok:a"));
    }

    #[test]
    fn key_names_depend_on_the_secret_only() {
        let a = derive_key_mac(&Secret::new("a".repeat(32)));
        let b = derive_key_mac(&Secret::new("b".repeat(32)));
        let tag = |m: &Hmac<Sha256>| {
            let mut m = m.clone();
            m.update(b"ban:chat:203.0.113.9");
            m.finalize().into_bytes().to_vec()
        };
        assert_eq!(tag(&a), tag(&derive_key_mac(&Secret::new("a".repeat(32)))));
        assert_ne!(tag(&a), tag(&b));
    }
}
