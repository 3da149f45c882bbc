//! `State`: the shared counters the guards need, and nothing more.
//!
//! Four operations: a GCRA check for a key and rate (or several keys at once, all or
//! nothing), "claim this id once for a ttl" (spent tokens, seen message ids), a failure counter
//! with a window, and bans. `State` is an enum of backends so dispatch is static; every backend
//! runs the same [`gcra`] arithmetic, and `rate_many` is one atomic step in each (the memory
//! backend holds the locks of all the keys' shards; the Redis backend runs the GCRA for all
//! keys in one Lua script). Both backends pass the same behavioural test suite
//! (`tests/state_backends.rs`).

pub mod gcra;
pub mod memory;
pub mod redis;
mod siphash;

use std::sync::Arc;
use std::time::Duration;

pub use self::redis::{RedisState, RedisStats};

/// The start of the keys of counters that only requests past the credential checks make
/// (limits keyed by `key`, `session`, `header:…` and `route`). The in-memory table evicts them
/// only when no other counter is left to evict: a flood of unauthenticated requests from many
/// addresses fills it with per-address counters, and evicting a caller's budget among those
/// would hand the caller a fresh one. (Redis evicts nothing: its keys expire.)
pub const PROTECTED_PREFIX: &str = "rk:";
pub use gcra::{Rate, RateDecision};
pub use memory::MemoryState;

use crate::config::{StateBackend, StateConfig};
use crate::secret::Secret;

/// The state of a delivery claim (see [`State::claim_pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed now: deliver it.
    New,
    /// Claimed by a delivery still in progress.
    InFlight,
    /// Claimed by a delivery that succeeded.
    Done,
}

/// Why the shared state could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The backend is unreachable or too slow.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// The backend cannot be set up as configured.
    #[error("shared state: {0}")]
    Config(String),
}

impl From<memory::TableFull> for StateError {
    fn from(_: memory::TableFull) -> Self {
        // Failing closed: refusing the request is safer than forgetting a spent token or a ban.
        StateError::Unavailable("the state table is full of live claims and bans".into())
    }
}

/// The shared-state backend. Cheap to clone.
#[derive(Debug, Clone)]
pub enum State {
    /// This process only.
    Memory(Arc<MemoryState>),
    /// Redis, shared by every instance pointed at it.
    Redis(Arc<RedisState>),
}

/// What the metrics show about the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// The Redis backend's health and counters; `None` with the memory backend.
    pub redis: Option<RedisStats>,
}

impl State {
    /// An in-memory state holding at most about `max_entries` keys.
    pub fn memory(max_entries: usize) -> State {
        State::Memory(Arc::new(MemoryState::new(max_entries)))
    }

    /// The state `[state]` asks for. `secret` is `server.secret`, which the Redis backend
    /// requires (the config check makes sure it is set). A Redis that does not answer yet is
    /// not an error (see [`RedisState::connect`]).
    pub async fn from_config(
        cfg: &StateConfig,
        secret: Option<&Secret>,
    ) -> Result<State, StateError> {
        match &cfg.backend {
            StateBackend::Memory => Ok(State::memory(cfg.max_entries)),
            StateBackend::Redis(r) => {
                let secret = secret.ok_or_else(|| {
                    StateError::Config(
                        "server.secret is required with [state] backend = \"redis\"".into(),
                    )
                })?;
                let redis = RedisState::connect(r, secret, cfg.max_entries).await?;
                Ok(State::Redis(Arc::new(redis)))
            }
        }
    }

    /// Counts a request against `rate` for `key`.
    pub async fn rate(&self, key: &str, rate: Rate) -> Result<RateDecision, StateError> {
        match self {
            State::Memory(m) => Ok(m.rate(key, rate)?),
            State::Redis(r) => {
                let mut d = r.rate_many(&[(key, rate)]).await?;
                d.pop()
                    .ok_or_else(|| StateError::Unavailable("no decision".into()))
            }
        }
    }

    /// Counts a request against several limits as one atomic step: against all of them when
    /// every one allows it, against none otherwise (so a request refused by one limit does
    /// not spend the others). The decisions come back in the order of `items`.
    pub async fn rate_many(&self, items: &[(&str, Rate)]) -> Result<Vec<RateDecision>, StateError> {
        match self {
            State::Memory(m) => Ok(m.rate_many(items)?),
            State::Redis(r) => r.rate_many(items).await,
        }
    }

    /// Claims a message id for delivery (replay protection): `New` claims it as pending; a
    /// pending claim is a delivery in progress (`InFlight`), a settled one a delivered message
    /// (`Done`). Pending claims are settled with [`State::settle`] on delivery and removed
    /// with [`State::remove`] when delivery fails.
    pub async fn claim_pending(&self, key: &str, ttl: Duration) -> Result<Claim, StateError> {
        match self {
            State::Memory(m) => Ok(m.claim_pending(key, ttl)?),
            State::Redis(r) => r.claim_pending(key, ttl).await,
        }
    }

    /// Marks a pending claim as delivered (see [`State::claim_pending`]).
    pub async fn settle(&self, key: &str, ttl: Duration) -> Result<(), StateError> {
        match self {
            State::Memory(m) => Ok(m.settle(key, ttl)?),
            State::Redis(r) => r.settle(key, ttl).await,
        }
    }

    /// True the first time `key` is claimed within `ttl`.
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        match self {
            State::Memory(m) => Ok(m.claim_once(key, ttl)?),
            State::Redis(r) => r.claim_once(key, ttl).await,
        }
    }

    /// Counts a failure for `key`; returns the count in the current window.
    pub async fn count_failure(&self, key: &str, window: Duration) -> Result<u32, StateError> {
        match self {
            State::Memory(m) => Ok(m.count_failure(key, window)?),
            State::Redis(r) => r.count_failure(key, window).await,
        }
    }

    /// Forgets `key`.
    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        match self {
            State::Memory(m) => {
                m.remove(key);
                Ok(())
            }
            State::Redis(r) => r.remove(key).await,
        }
    }

    /// Bans `key` for `duration`.
    pub async fn ban(&self, key: &str, duration: Duration) -> Result<(), StateError> {
        match self {
            State::Memory(m) => Ok(m.ban(key, duration)?),
            State::Redis(r) => r.ban(key, duration).await,
        }
    }

    /// Time left on a ban of `key`.
    pub async fn ban_remaining(&self, key: &str) -> Result<Option<Duration>, StateError> {
        match self {
            State::Memory(m) => Ok(m.ban_remaining(key)),
            State::Redis(r) => r.ban_remaining(key).await,
        }
    }

    /// The most entries this process holds (the in-memory table's cap; with Redis, the
    /// fallback table's, 0 without one).
    pub fn local_capacity(&self) -> usize {
        match self {
            State::Memory(m) => m.max_entries(),
            State::Redis(r) => r.local().map_or(0, MemoryState::max_entries),
        }
    }

    /// Entries held in this process (for the metrics; with Redis, in the fallback table).
    pub fn local_entries(&self) -> usize {
        match self {
            State::Memory(m) => m.len(),
            State::Redis(r) => r.local().map_or(0, MemoryState::len),
        }
    }

    /// Health and counters for the metrics.
    pub fn stats(&self) -> StateStats {
        match self {
            State::Memory(_) => StateStats::default(),
            State::Redis(r) => StateStats {
                redis: Some(r.stats()),
            },
        }
    }

    /// Periodic housekeeping: drops expired entries (Redis expires its keys itself).
    pub fn sweep(&self) {
        match self {
            State::Memory(m) => m.sweep(),
            State::Redis(r) => {
                if let Some(m) = r.local() {
                    m.sweep();
                }
            }
        }
    }

    /// Background upkeep, run by the app on its main runtime until aborted: sweeps expired
    /// entries every 10 s and, with Redis, pings a Redis marked down every
    /// [`self::redis::RECHECK_EVERY`] so it is used again as soon as it answers.
    pub async fn maintain(self) {
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        let mut recheck = tokio::time::interval(self::redis::RECHECK_EVERY);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.sweep(),
                _ = recheck.tick() => {
                    if let State::Redis(r) = &self {
                        r.recheck().await;
                    }
                }
            }
        }
    }
}
