//! The in-memory `State`: one process's limits, claims, failure counters and bans.
//!
//! Every entry is a number and an expiry, kept in sharded hash maps (SipHash with a random key,
//! since clients choose the keys). An expired entry means the same as a missing one, so idle
//! keys are dropped without losing anything; a full shard first drops its expired entries and,
//! only if still full, the tenth of its entries closest to expiring. Memory is therefore
//! bounded by `max_entries` whatever a flood of distinct addresses does.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::gcra::{Gcra, Rate, RateDecision};

const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// GCRA: the TAT; counter: the count; claim and ban: unused.
    value: u64,
    /// Monotonic nanoseconds after which the entry is dead.
    expires_ns: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Entry>,
}

/// The process-local state backend.
pub struct MemoryState {
    start: Instant,
    /// Set in tests to drive time by hand; 0 = use the real clock.
    manual_ns: AtomicU64,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
}

impl std::fmt::Debug for MemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryState")
            .field("entries", &self.len())
            .finish()
    }
}

impl MemoryState {
    /// A state holding at most about `max_entries` keys.
    pub fn new(max_entries: usize) -> Self {
        MemoryState {
            start: Instant::now(),
            manual_ns: AtomicU64::new(0),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: (max_entries / SHARDS).max(16),
        }
    }

    /// Switches to a hand-driven clock starting at `at` (tests only need this).
    pub fn set_manual_clock(&self, at: Duration) {
        self.manual_ns
            .store(at.as_nanos().max(1) as u64, Ordering::Relaxed);
    }

    /// Advances the hand-driven clock.
    pub fn advance(&self, by: Duration) {
        self.manual_ns
            .fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }

    fn now_ns(&self) -> u64 {
        match self.manual_ns.load(Ordering::Relaxed) {
            0 => self.start.elapsed().as_nanos() as u64 + 1,
            n => n,
        }
    }

    fn with_shard<R>(&self, key: &str, f: impl FnOnce(&mut Shard, u64) -> R) -> R {
        let idx = (self.hasher.hash_one(key) as usize) % SHARDS;
        let now = self.now_ns();
        // A poisoned lock only means another request panicked mid-update of plain numbers;
        // the data is still consistent enough to go on with.
        let mut shard = self.shards[idx]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut shard, now)
    }

    /// Makes room for one more entry when the shard is full.
    fn make_room(shard: &mut Shard, now: u64, cap: usize) {
        if shard.map.len() < cap {
            return;
        }
        shard.map.retain(|_, e| e.expires_ns > now);
        if shard.map.len() >= cap * 9 / 10 {
            let mut expiries: Vec<u64> = shard.map.values().map(|e| e.expires_ns).collect();
            let nth = expiries.len() / 10;
            let (_, threshold, _) = expiries.select_nth_unstable(nth);
            let threshold = *threshold;
            shard.map.retain(|_, e| e.expires_ns > threshold);
        }
        if shard.map.capacity() > cap * 2 {
            shard.map.shrink_to(cap);
        }
    }

    fn live(shard: &Shard, key: &str, now: u64) -> Option<Entry> {
        shard.map.get(key).copied().filter(|e| e.expires_ns > now)
    }

    fn put(&self, shard: &mut Shard, key: &str, entry: Entry, now: u64) {
        if let Some(e) = shard.map.get_mut(key) {
            *e = entry;
            return;
        }
        Self::make_room(shard, now, self.cap_per_shard);
        shard.map.insert(key.into(), entry);
    }

    /// Runs the GCRA for `key`.
    pub fn rate(&self, key: &str, rate: Rate) -> RateDecision {
        self.with_shard(key, |shard, now| {
            let tat = Self::live(shard, key, now).map_or(0, |e| e.value);
            let (decision, new_tat) = Gcra::decide(rate, tat, now);
            if decision.allowed {
                self.put(
                    shard,
                    key,
                    Entry {
                        value: new_tat,
                        expires_ns: new_tat,
                    },
                    now,
                );
            }
            decision
        })
    }

    /// Claims `key` for `ttl`: true the first time, false while the claim lives.
    pub fn claim_once(&self, key: &str, ttl: Duration) -> bool {
        self.with_shard(key, |shard, now| {
            if Self::live(shard, key, now).is_some() {
                return false;
            }
            let expires_ns = now.saturating_add(ttl.as_nanos() as u64);
            self.put(
                shard,
                key,
                Entry {
                    value: 0,
                    expires_ns,
                },
                now,
            );
            true
        })
    }

    /// Counts one failure for `key` in a window that starts at the first failure; returns the
    /// count including this one.
    pub fn count_failure(&self, key: &str, window: Duration) -> u32 {
        self.with_shard(key, |shard, now| {
            let entry = match Self::live(shard, key, now) {
                Some(e) => Entry {
                    value: e.value + 1,
                    expires_ns: e.expires_ns,
                },
                None => Entry {
                    value: 1,
                    expires_ns: now.saturating_add(window.as_nanos() as u64),
                },
            };
            self.put(shard, key, entry, now);
            entry.value.min(u64::from(u32::MAX)) as u32
        })
    }

    /// Forgets `key` (a failure counter after a ban was set, for instance).
    pub fn remove(&self, key: &str) {
        self.with_shard(key, |shard, _| {
            shard.map.remove(key);
        });
    }

    /// Bans `key` for `duration`.
    pub fn ban(&self, key: &str, duration: Duration) {
        self.with_shard(key, |shard, now| {
            let expires_ns = now.saturating_add(duration.as_nanos() as u64);
            self.put(
                shard,
                key,
                Entry {
                    value: 0,
                    expires_ns,
                },
                now,
            );
        });
    }

    /// Time left on a ban of `key`, if any.
    pub fn ban_remaining(&self, key: &str) -> Option<Duration> {
        self.with_shard(key, |shard, now| {
            Self::live(shard, key, now).map(|e| Duration::from_nanos(e.expires_ns - now))
        })
    }

    /// Entries held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired entries everywhere (run periodically so idle memory is returned).
    pub fn sweep(&self) {
        let now = self.now_ns();
        for s in self.shards.iter() {
            let mut shard = s.lock().unwrap_or_else(|p| p.into_inner());
            shard.map.retain(|_, e| e.expires_ns > now);
            if shard.map.capacity() > 2 * shard.map.len().max(16) {
                shard.map.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> MemoryState {
        let s = MemoryState::new(100_000);
        s.set_manual_clock(Duration::from_secs(1000));
        s
    }

    #[test]
    fn claims_are_single_use_until_they_expire() {
        let s = state();
        assert!(s.claim_once("tok:a", Duration::from_secs(10)));
        assert!(!s.claim_once("tok:a", Duration::from_secs(10)));
        assert!(s.claim_once("tok:b", Duration::from_secs(10)));
        s.advance(Duration::from_secs(11));
        assert!(s.claim_once("tok:a", Duration::from_secs(10)));
    }

    #[test]
    fn failure_window_starts_at_first_failure() {
        let s = state();
        let w = Duration::from_secs(60);
        assert_eq!(s.count_failure("f", w), 1);
        s.advance(Duration::from_secs(30));
        assert_eq!(s.count_failure("f", w), 2);
        s.advance(Duration::from_secs(31));
        assert_eq!(s.count_failure("f", w), 1);
    }

    #[test]
    fn bans_expire_on_their_own() {
        let s = state();
        assert_eq!(s.ban_remaining("ip"), None);
        s.ban("ip", Duration::from_secs(900));
        assert_eq!(s.ban_remaining("ip"), Some(Duration::from_secs(900)));
        s.advance(Duration::from_secs(899));
        assert_eq!(s.ban_remaining("ip"), Some(Duration::from_secs(1)));
        s.advance(Duration::from_secs(1));
        assert_eq!(s.ban_remaining("ip"), None);
    }

    #[test]
    fn rate_uses_the_shared_algorithm() {
        let s = state();
        let r = Rate::new(2, Duration::from_secs(60), 2);
        assert!(s.rate("k", r).allowed);
        assert!(s.rate("k", r).allowed);
        assert!(!s.rate("k", r).allowed);
        assert!(s.rate("other", r).allowed);
        s.advance(Duration::from_secs(30));
        assert!(s.rate("k", r).allowed);
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_distinct_keys() {
        let s = MemoryState::new(64 * 100);
        s.set_manual_clock(Duration::from_secs(1));
        let r = Rate::new(10, Duration::from_secs(60), 10);
        for i in 0..200_000u32 {
            s.rate(&format!("ip:{i}"), r);
        }
        assert!(s.len() <= 64 * 100, "{} entries", s.len());
    }

    #[test]
    fn eviction_prefers_dead_entries_so_live_limits_hold() {
        let s = MemoryState::new(64 * 16);
        s.set_manual_clock(Duration::from_secs(1));
        let slow = Rate::new(1, Duration::from_secs(3600), 1);
        assert!(s.rate("victim", slow).allowed);
        // Many short-lived entries that are dead a moment later.
        let fast = Rate::new(1000, Duration::from_secs(1), 1);
        for i in 0..50_000u32 {
            s.rate(&format!("ip:{i}"), fast);
            s.advance(Duration::from_millis(1));
        }
        assert!(
            !s.rate("victim", slow).allowed,
            "the live limit was forgotten"
        );
    }
}
