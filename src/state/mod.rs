//! `State`: the shared counters the guards need, and nothing more.
//!
//! Four operations: a GCRA check for a key and rate (or several keys at once, all or nothing), "claim this id once for a ttl" (spent
//! tokens, seen message ids), a failure counter with a window, and bans. `State` is an enum of
//! backends so dispatch is static; every backend runs the same [`gcra`] arithmetic, and
//! `rate_many` is one atomic step in each (the memory backend holds the locks of all the keys'
//! shards; a Redis backend runs the GCRA for all keys in one Lua script).

pub mod gcra;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

pub use gcra::{Rate, RateDecision};
pub use memory::MemoryState;

/// Why the shared state could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The backend is unreachable or too slow.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
}

/// The shared-state backend. Cheap to clone.
#[derive(Debug, Clone)]
pub enum State {
    /// This process only.
    Memory(Arc<MemoryState>),
}

impl State {
    /// An in-memory state holding at most about `max_entries` keys.
    pub fn memory(max_entries: usize) -> State {
        State::Memory(Arc::new(MemoryState::new(max_entries)))
    }

    /// Counts a request against `rate` for `key`.
    pub async fn rate(&self, key: &str, rate: Rate) -> Result<RateDecision, StateError> {
        match self {
            State::Memory(m) => Ok(m.rate(key, rate)),
        }
    }

    /// Counts a request against several limits as one atomic step: against all of them when
    /// every one allows it, against none otherwise (so a request refused by one limit does
    /// not spend the others). The decisions come back in the order of `items`.
    pub async fn rate_many(&self, items: &[(&str, Rate)]) -> Result<Vec<RateDecision>, StateError> {
        match self {
            State::Memory(m) => Ok(m.rate_many(items)),
        }
    }

    /// True the first time `key` is claimed within `ttl`.
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        match self {
            State::Memory(m) => Ok(m.claim_once(key, ttl)),
        }
    }

    /// Counts a failure for `key`; returns the count in the current window.
    pub async fn count_failure(&self, key: &str, window: Duration) -> Result<u32, StateError> {
        match self {
            State::Memory(m) => Ok(m.count_failure(key, window)),
        }
    }

    /// Forgets `key`.
    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        match self {
            State::Memory(m) => {
                m.remove(key);
                Ok(())
            }
        }
    }

    /// Bans `key` for `duration`.
    pub async fn ban(&self, key: &str, duration: Duration) -> Result<(), StateError> {
        match self {
            State::Memory(m) => {
                m.ban(key, duration);
                Ok(())
            }
        }
    }

    /// Time left on a ban of `key`.
    pub async fn ban_remaining(&self, key: &str) -> Result<Option<Duration>, StateError> {
        match self {
            State::Memory(m) => Ok(m.ban_remaining(key)),
        }
    }

    /// The most entries this process holds (the in-memory table's cap).
    pub fn local_capacity(&self) -> usize {
        match self {
            State::Memory(m) => m.max_entries(),
        }
    }

    /// Entries held in this process (for the metrics).
    pub fn local_entries(&self) -> usize {
        match self {
            State::Memory(m) => m.len(),
        }
    }

    /// Periodic housekeeping: drops expired entries.
    pub fn sweep(&self) {
        match self {
            State::Memory(m) => m.sweep(),
        }
    }
}
