//! The in-memory `State`: one process's limits, claims, failure counters and bans.
//!
//! Every entry is a number and an expiry, kept in sharded hash maps. Keys are not stored as
//! text: each key is reduced to a 128-bit SipHash under a random per-process key, so an
//! entry has a fixed size (32 bytes plus the hash table's overhead, whatever the key's length) and
//! clients, who choose many of the keys, can neither predict nor force collisions. An expired
//! entry means the same as a missing one, so idle keys are dropped without losing anything; a
//! full shard first drops its expired entries and, only if still full, the tenth of its
//! entries closest to expiring, per-address counters before the budgets of callers past the
//! credential checks ([`super::PROTECTED_PREFIX`]), which go only where the former do not
//! make up the tenth. Memory is therefore bounded by
//! `max_entries` whatever a flood of distinct addresses does, and such a flood cannot reset an
//! authenticated caller's budget by pushing it out.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::gcra::{Gcra, Rate, RateDecision};
use super::siphash::{SipKey, siphash13_128};

const SHARDS: usize = 64;

/// The `value` of claims and bans: entries that must never be evicted while they live, since
/// forgetting one would let a spent token or seen message through again, or lift a ban.
/// (Rate-limit TATs are clamped below it; failure counts never get near it.)
const PINNED: u64 = u64::MAX;
/// The `value` of a pending delivery claim (pinned too).
const PENDING: u64 = u64::MAX - 1;

/// Why an entry could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// GCRA: the TAT; counter: the count; claim and ban: [`PINNED`].
    value: u64,
    /// Monotonic nanoseconds after which the entry is dead.
    expires_ns: u64,
}

/// A key as stored: 127 bits of keyed hash, and [`PROTECTED_BIT`].
type KeyHash = u128;

/// Set in the hash of a key that starts with [`super::PROTECTED_PREFIX`].
const PROTECTED_BIT: KeyHash = 1 << 127;

/// The map's own hasher: the keys are already uniformly random, so it passes their low bits
/// through instead of hashing them a second time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else in so the hasher stays correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<KeyHash, Entry, BuildHasherDefault<PassThrough>>,
    /// Entries in `map` that may not be evicted ([`Entry::is_pinned`]), live or not.
    pinned: usize,
    /// When a claim or ban last found the pinned share full and swept the shard for expired
    /// entries (monotonic ns).
    pinned_swept_ns: u64,
}

/// How often a shard whose pinned share is full is swept for expired claims and bans. Without
/// a pause, every refused claim (a flood against a full table) scanned the whole shard twice
/// under its lock.
const PINNED_SWEEP_EVERY_NS: u64 = 100_000_000;

impl Entry {
    /// Claims and bans: never evicted while they live.
    fn is_pinned(&self) -> bool {
        self.value >= PENDING
    }
}

impl Shard {
    fn recount_pinned(&mut self) {
        self.pinned = self.map.values().filter(|e| e.is_pinned()).count();
    }
}

/// The process-local state backend.
pub struct MemoryState {
    start: Instant,
    /// Set in tests to drive time by hand; 0 = use the real clock.
    manual_ns: AtomicU64,
    hash_key: SipKey,
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
}

impl std::fmt::Debug for MemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryState")
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries())
            .finish()
    }
}

impl MemoryState {
    /// A state holding at most `max_entries` keys (rounded down to a multiple of the shard
    /// count, and at least 16 per shard).
    pub fn new(max_entries: usize) -> Self {
        MemoryState {
            start: Instant::now(),
            manual_ns: AtomicU64::new(0),
            hash_key: SipKey::random(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: (max_entries / SHARDS).max(16),
        }
    }

    /// The most entries this state will hold.
    pub fn max_entries(&self) -> usize {
        self.cap_per_shard * SHARDS
    }

    /// Switches to a hand-driven clock starting at `at` (tests only need this).
    pub fn set_manual_clock(&self, at: Duration) {
        self.manual_ns.store(nanos(at).max(1), Ordering::Relaxed);
    }

    /// Advances the hand-driven clock.
    pub fn advance(&self, by: Duration) {
        self.manual_ns.fetch_add(nanos(by), Ordering::Relaxed);
    }

    fn now_ns(&self) -> u64 {
        match self.manual_ns.load(Ordering::Relaxed) {
            0 => self.start.elapsed().as_nanos() as u64 + 1,
            n => n,
        }
    }

    fn key_hash(&self, key: &str) -> KeyHash {
        let h = siphash13_128(self.hash_key, key.as_bytes());
        // The top bit carries the key's class; neither the shard (the high half modulo the
        // shard count) nor the bucket (the low half) reads it.
        if key.starts_with(super::PROTECTED_PREFIX) {
            h | PROTECTED_BIT
        } else {
            h & !PROTECTED_BIT
        }
    }

    fn shard_of(h: KeyHash) -> usize {
        // The high half picks the shard, the low half the bucket inside it.
        ((h >> 64) as usize) % SHARDS
    }

    fn lock(&self, idx: usize) -> MutexGuard<'_, Shard> {
        // A poisoned lock only means another request panicked mid-update of plain numbers;
        // the data is still consistent enough to go on with.
        self.shards[idx]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_shard<R>(&self, key: &str, f: impl FnOnce(&mut Shard, KeyHash, u64) -> R) -> R {
        let h = self.key_hash(key);
        let now = self.now_ns();
        let mut shard = self.lock(Self::shard_of(h));
        f(&mut shard, h, now)
    }

    /// Makes room for one more entry (`pinned`: a claim or a ban) when the shard is full: dead
    /// entries go first, then a tenth of the evictable ones (rate-limit buckets and failure
    /// counters) closest to expiring, protected ones only where the exposed ones do not make
    /// up the tenth. Live claims and bans are never evicted, and they may fill at most three
    /// quarters of a shard ([`max_pinned`]): a flood of spent tokens can then only make further
    /// claims fail, while every route's limits keep their room.
    fn make_room(shard: &mut Shard, now: u64, cap: usize, pinned: bool) -> Result<(), TableFull> {
        let pinned_full = || pinned && shard.pinned >= max_pinned(cap);
        if shard.map.len() < cap && !pinned_full() {
            return Ok(());
        }
        if pinned_full() {
            // The pinned share is full: sweep for expired claims and bans now and then, not
            // per refused claim (whether the shard is at its cap too or not).
            if now.saturating_sub(shard.pinned_swept_ns) < PINNED_SWEEP_EVERY_NS {
                return Err(TableFull);
            }
            shard.pinned_swept_ns = now;
        }
        shard.map.retain(|_, e| e.expires_ns > now);
        shard.recount_pinned();
        if pinned && shard.pinned >= max_pinned(cap) {
            return Err(TableFull);
        }
        if shard.map.len() >= cap * 9 / 10 {
            // A tenth of the evictable entries (and one) go, the exposed ones (per-address
            // counters anyone can make) before any protected one, and among them those
            // closest to expiring.
            let (mut exposed, mut protected) = (Vec::new(), Vec::new());
            for (k, e) in &shard.map {
                if e.value < PENDING {
                    if k & PROTECTED_BIT == 0 {
                        exposed.push(e.expires_ns);
                    } else {
                        protected.push(e.expires_ns);
                    }
                }
            }
            let want = (exposed.len() + protected.len()) / 10 + 1;
            // Exposed ones first; protected ones only to make up what they cannot.
            let from_exposed = want.min(exposed.len());
            let from_protected = (want - from_exposed).min(protected.len());
            let cut = |pool: &mut Vec<u64>, n: usize| match n {
                0 => 0,
                n => *pool.select_nth_unstable(n - 1).1,
            };
            let (exposed_cut, protected_cut) = (
                cut(&mut exposed, from_exposed),
                cut(&mut protected, from_protected),
            );
            // Exactly so many go: when many entries share the threshold expiry, a plain
            // `expires <= threshold` would drop them all.
            let mut budget = [from_exposed, from_protected];
            shard.map.retain(|k, e| {
                if e.value >= PENDING {
                    return true;
                }
                let (class, threshold) = if k & PROTECTED_BIT == 0 {
                    (0, exposed_cut)
                } else {
                    (1, protected_cut)
                };
                if budget[class] > 0 && e.expires_ns <= threshold {
                    budget[class] -= 1;
                    false
                } else {
                    true
                }
            });
        }
        if shard.map.capacity() > cap * 2 {
            shard.map.shrink_to(cap);
        }
        if shard.map.len() >= cap {
            return Err(TableFull);
        }
        Ok(())
    }

    fn live(shard: &Shard, key: KeyHash, now: u64) -> Option<Entry> {
        shard.map.get(&key).copied().filter(|e| e.expires_ns > now)
    }

    fn put(
        &self,
        shard: &mut Shard,
        key: KeyHash,
        entry: Entry,
        now: u64,
    ) -> Result<(), TableFull> {
        let pinned = entry.is_pinned();
        if let Some(e) = shard.map.get_mut(&key) {
            let was = e.is_pinned();
            *e = entry;
            match (was, pinned) {
                (false, true) => shard.pinned += 1,
                (true, false) => shard.pinned = shard.pinned.saturating_sub(1),
                _ => {}
            }
            return Ok(());
        }
        Self::make_room(shard, now, self.cap_per_shard, pinned)?;
        shard.map.insert(key, entry);
        if pinned {
            shard.pinned += 1;
        }
        Ok(())
    }

    /// Runs the GCRA for `key`.
    pub fn rate(&self, key: &str, rate: Rate) -> Result<RateDecision, TableFull> {
        Ok(self.rate_many(&[(key, rate)])?[0])
    }

    /// Runs the GCRA for several keys as one atomic step: the request is counted against
    /// every key when all of them allow it, and against none otherwise. Each decision is
    /// reported as if its key had been checked alone.
    pub fn rate_many(&self, items: &[(&str, Rate)]) -> Result<Vec<RateDecision>, TableFull> {
        // A group of one limit (the usual case): one shard and no lists to build, which cost
        // four allocations a request.
        if let [(key, rate)] = items {
            return self.with_shard(key, |shard, h, now| {
                let tat = Self::live(shard, h, now).map_or(0, |e| e.value);
                let (decision, new_tat) = Gcra::decide(*rate, tat, now);
                if decision.allowed {
                    let entry = Entry {
                        value: new_tat.min(PENDING - 1),
                        expires_ns: new_tat,
                    };
                    self.put(shard, h, entry, now)?;
                }
                Ok(vec![decision])
            });
        }
        let hashes: Vec<KeyHash> = items.iter().map(|(k, _)| self.key_hash(k)).collect();
        // Lock every shard involved, in index order so that two requests can never wait for
        // each other.
        let mut shard_ids: Vec<usize> = hashes.iter().map(|h| Self::shard_of(*h)).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> =
            shard_ids.iter().map(|i| self.lock(*i)).collect();
        // Position of a key's shard among the locked ones (always found: built from them).
        let slot = |h: &KeyHash| {
            shard_ids
                .binary_search(&Self::shard_of(*h))
                .unwrap_or_else(|i| i)
        };
        let now = self.now_ns();
        let mut decisions = Vec::with_capacity(items.len());
        let mut new_tats = Vec::with_capacity(items.len());
        for ((_, rate), h) in items.iter().zip(&hashes) {
            let tat = Self::live(&guards[slot(h)], *h, now).map_or(0, |e| e.value);
            let (decision, new_tat) = Gcra::decide(*rate, tat, now);
            decisions.push(decision);
            new_tats.push(new_tat);
        }
        if decisions.iter().all(|d| d.allowed) {
            for (h, new_tat) in hashes.iter().zip(new_tats) {
                let entry = Entry {
                    value: new_tat.min(PENDING - 1),
                    expires_ns: new_tat,
                };
                self.put(&mut guards[slot(h)], *h, entry, now)?;
            }
        }
        Ok(decisions)
    }

    /// Claims `key` as a pending delivery for `ttl`, or reports the state of its live claim.
    pub fn claim_pending(&self, key: &str, ttl: Duration) -> Result<super::Claim, TableFull> {
        self.with_shard(key, |shard, h, now| {
            match Self::live(shard, h, now) {
                Some(e) if e.value == PENDING => return Ok(super::Claim::InFlight),
                Some(_) => return Ok(super::Claim::Done),
                None => {}
            }
            let expires_ns = now.saturating_add(nanos(ttl));
            self.put(
                shard,
                h,
                Entry {
                    value: PENDING,
                    expires_ns,
                },
                now,
            )?;
            Ok(super::Claim::New)
        })
    }

    /// Marks the claim `key` as delivered; a claim that has gone is recorded again for `ttl`.
    pub fn settle(&self, key: &str, ttl: Duration) -> Result<(), TableFull> {
        self.with_shard(key, |shard, h, now| {
            let expires_ns = Self::live(shard, h, now)
                .map_or_else(|| now.saturating_add(nanos(ttl)), |e| e.expires_ns);
            self.put(
                shard,
                h,
                Entry {
                    value: PINNED,
                    expires_ns,
                },
                now,
            )
        })
    }

    /// Claims `key` for `ttl`: true the first time, false while the claim lives.
    pub fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, TableFull> {
        self.with_shard(key, |shard, h, now| {
            if Self::live(shard, h, now).is_some() {
                return Ok(false);
            }
            let expires_ns = now.saturating_add(nanos(ttl));
            self.put(
                shard,
                h,
                Entry {
                    value: PINNED,
                    expires_ns,
                },
                now,
            )?;
            Ok(true)
        })
    }

    /// Counts one failure for `key` in a window that starts at the first failure; returns the
    /// count including this one.
    pub fn count_failure(&self, key: &str, window: Duration) -> Result<u32, TableFull> {
        self.with_shard(key, |shard, h, now| {
            let entry = match Self::live(shard, h, now) {
                Some(e) => Entry {
                    value: (e.value + 1).min(u64::from(u32::MAX)),
                    expires_ns: e.expires_ns,
                },
                None => Entry {
                    value: 1,
                    expires_ns: now.saturating_add(nanos(window)),
                },
            };
            self.put(shard, h, entry, now)?;
            Ok(entry.value as u32)
        })
    }

    /// Forgets `key` (a failure counter after a ban was set, for instance).
    pub fn remove(&self, key: &str) {
        self.with_shard(key, |shard, h, _| {
            if shard.map.remove(&h).is_some_and(|e| e.is_pinned()) {
                shard.pinned = shard.pinned.saturating_sub(1);
            }
        });
    }

    /// Bans `key` for `duration`.
    pub fn ban(&self, key: &str, duration: Duration) -> Result<(), TableFull> {
        self.with_shard(key, |shard, h, now| {
            let expires_ns = now.saturating_add(nanos(duration));
            self.put(
                shard,
                h,
                Entry {
                    value: PINNED,
                    expires_ns,
                },
                now,
            )
        })
    }

    /// Time left on a ban of `key`, if any.
    pub fn ban_remaining(&self, key: &str) -> Option<Duration> {
        self.with_shard(key, |shard, h, now| {
            Self::live(shard, h, now).map(|e| Duration::from_nanos(e.expires_ns - now))
        })
    }

    /// True while `key` has a live entry (a claim, ban, counter or limit).
    pub fn contains(&self, key: &str) -> bool {
        self.with_shard(key, |shard, h, now| Self::live(shard, h, now).is_some())
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
            shard.recount_pinned();
            if shard.map.capacity() > 2 * shard.map.len().max(16) {
                shard.map.shrink_to_fit();
            }
        }
    }
}

/// The most claims and bans a shard of `cap` entries holds: the rest is kept for entries that
/// can be evicted, so that limits never find a shard they cannot use.
fn max_pinned(cap: usize) -> usize {
    cap - cap / 4
}

/// A duration in nanoseconds, saturating (a `u64` of nanoseconds is 584 years; a longer
/// configured ban or TTL means "for ever", not a wrap to a tiny value).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
        assert!(s.claim_once("tok:a", Duration::from_secs(10)).unwrap());
        assert!(!s.claim_once("tok:a", Duration::from_secs(10)).unwrap());
        assert!(s.claim_once("tok:b", Duration::from_secs(10)).unwrap());
        s.advance(Duration::from_secs(11));
        assert!(s.claim_once("tok:a", Duration::from_secs(10)).unwrap());
    }

    #[test]
    fn failure_window_starts_at_first_failure() {
        let s = state();
        let w = Duration::from_secs(60);
        assert_eq!(s.count_failure("f", w).unwrap(), 1);
        s.advance(Duration::from_secs(30));
        assert_eq!(s.count_failure("f", w).unwrap(), 2);
        s.advance(Duration::from_secs(31));
        assert_eq!(s.count_failure("f", w).unwrap(), 1);
    }

    #[test]
    fn bans_expire_on_their_own() {
        let s = state();
        assert_eq!(s.ban_remaining("ip"), None);
        s.ban("ip", Duration::from_secs(900)).unwrap();
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
        assert!(s.rate("k", r).unwrap().allowed);
        assert!(s.rate("k", r).unwrap().allowed);
        assert!(!s.rate("k", r).unwrap().allowed);
        assert!(s.rate("other", r).unwrap().allowed);
        s.advance(Duration::from_secs(30));
        assert!(s.rate("k", r).unwrap().allowed);
    }

    #[test]
    fn a_flood_of_limit_entries_never_evicts_a_spent_token_or_a_ban() {
        let s = MemoryState::new(SHARDS * 16);
        s.set_manual_clock(Duration::from_secs(1));
        assert!(s.claim_once("tok:spent", Duration::from_secs(600)).unwrap());
        s.ban("ban:203.0.113.9", Duration::from_secs(600)).unwrap();
        // Live limit entries that expire much later than the claim and the ban.
        let slow = Rate::new(1, Duration::from_secs(86_400), 1);
        for i in 0..50_000u32 {
            s.rate(&format!("rl:{i}"), slow).unwrap();
        }
        assert!(!s.claim_once("tok:spent", Duration::from_secs(600)).unwrap());
        assert!(s.ban_remaining("ban:203.0.113.9").is_some());
    }

    /// When fewer per-address counters are left than a tenth of the shard, the rest of the
    /// tenth comes from the protected entries closest to expiring: a pass frees a tenth, so
    /// full-shard scans stay one per tenth of the inserts.
    #[test]
    fn eviction_tops_up_from_protected_entries() {
        let s = MemoryState::new(SHARDS * 100);
        s.set_manual_clock(Duration::from_secs(1));
        let hourly = Rate::new(1, Duration::from_secs(3600), 1);
        // Fill every shard with protected budgets only, then keep adding: each overflow must
        // free room among them (and the table stays within its cap).
        for i in 0..(SHARDS * 150) {
            s.rate(&format!("rk:chat:key:{i}"), hourly).unwrap();
        }
        assert!(s.len() <= SHARDS * 100, "{}", s.len());
        // A few exposed counters among them go first, but do not stop the tenth.
        let before = s.len();
        for i in 0..SHARDS {
            s.rate(&format!("rl:chat:ip:{i}"), hourly).unwrap();
        }
        assert!(s.len() <= SHARDS * 100, "{} (was {before})", s.len());
    }

    /// A shard at its cap whose pinned share is also full refuses further claims without
    /// sweeping it each time, like one below its cap.
    #[test]
    fn a_shard_at_its_cap_with_a_full_pinned_share_pauses_its_sweeps() {
        let (s, full_key) = pinned_share_filled_with_short_claims();
        // Fill the rest of every shard with live counters.
        let daily = Rate::new(1, Duration::from_secs(86_400), 1);
        for n in 0..(SHARDS * 16) {
            s.rate(&format!("rl:ip:{n}"), daily).unwrap();
        }
        assert_swept_only_after_the_pause(&s, &full_key);
    }

    /// Budgets of callers past the credential checks outlive a flood of per-address counters
    /// that expire later: evicting one would give its caller a fresh budget.
    #[test]
    fn a_flood_of_per_address_counters_never_evicts_a_protected_budget() {
        let s = MemoryState::new(SHARDS * 16);
        s.set_manual_clock(Duration::from_secs(1));
        let hourly = Rate::new(1, Duration::from_secs(3600), 1);
        let budgets: Vec<String> = (0..SHARDS * 4)
            .map(|i| format!("rk:chat:key:{i}"))
            .collect();
        for b in &budgets {
            assert!(s.rate(b, hourly).unwrap().allowed);
        }
        // Per-address counters that expire much later than the budgets.
        let daily = Rate::new(1, Duration::from_secs(86_400), 1);
        for i in 0..50_000u32 {
            s.rate(&format!("rl:chat:ip:{i}"), daily).unwrap();
            s.count_failure(&format!("fail:chat:{i}"), Duration::from_secs(86_400))
                .unwrap();
        }
        for b in &budgets {
            assert!(!s.rate(b, hourly).unwrap().allowed, "{b} was evicted");
        }
        // A table of protected entries only still makes room, among them.
        let s = MemoryState::new(SHARDS * 16);
        s.set_manual_clock(Duration::from_secs(1));
        for i in 0..50_000u32 {
            assert!(s.rate(&format!("rk:chat:key:{i}"), hourly).unwrap().allowed);
        }
        assert!(s.len() <= SHARDS * 16);
    }

    #[test]
    fn a_table_full_of_live_claims_refuses_rather_than_forgets() {
        let s = MemoryState::new(SHARDS * 16);
        s.set_manual_clock(Duration::from_secs(1));
        let mut spent = Vec::new();
        let refused = (0..10_000u32).find(|i| {
            let key = format!("tok:{i}");
            match s.claim_once(&key, Duration::from_secs(600)) {
                Ok(true) => {
                    spent.push(key);
                    false
                }
                Ok(false) => panic!("{key} claimed twice"),
                Err(TableFull) => true,
            }
        });
        assert!(refused.is_some(), "the table never filled");
        for key in &spent {
            assert!(
                !s.claim_once(key, Duration::from_secs(600)).unwrap(),
                "{key} was forgotten"
            );
        }
    }

    /// Once the pinned share is full, refused claims do not each sweep the shard (a flood
    /// scanned it twice per request under its lock): expired claims are found again at most
    /// every 100 ms, and then make room.
    #[test]
    fn a_full_pinned_share_is_swept_now_and_then_not_per_claim() {
        let (s, full_key) = pinned_share_filled_with_short_claims();
        assert_swept_only_after_the_pause(&s, &full_key);
    }

    /// Lifetime of the claims that fill a pinned share in the sweep tests.
    const SHORT: Duration = Duration::from_millis(10);

    /// A state at 1 s whose claims of [`SHORT`] life fill a pinned share, and the key of the
    /// first claim it refused (swept just then, at 1 s).
    fn pinned_share_filled_with_short_claims() -> (MemoryState, String) {
        let s = MemoryState::new(SHARDS * 16);
        s.set_manual_clock(Duration::from_secs(1));
        let mut i = 0u32;
        while s.claim_once(&format!("tok:{i}"), SHORT).is_ok() {
            i += 1;
            assert!(i < 10_000, "the claims never filled their share");
        }
        (s, format!("tok:{i}"))
    }

    fn assert_swept_only_after_the_pause(s: &MemoryState, full_key: &str) {
        // Every claim has expired, but the shard was swept 50 ms ago: still refused.
        s.set_manual_clock(Duration::from_millis(1_050));
        assert!(s.claim_once(full_key, SHORT).is_err());
        // Past the pause the sweep runs and finds the room.
        s.set_manual_clock(Duration::from_millis(1_200));
        assert_eq!(s.claim_once(full_key, SHORT), Ok(true));
    }

    /// Claims that cannot be evicted (spent tokens, a flood of them) fill at most their share:
    /// once claims are refused, rate limits on fresh keys still find room and still count.
    #[test]
    fn a_flood_of_claims_leaves_room_for_limits() {
        let s = MemoryState::new(SHARDS * 16);
        s.set_manual_clock(Duration::from_secs(1));
        let mut refused = 0;
        for i in 0..10_000u32 {
            if s.claim_once(&format!("tok:{i}"), Duration::from_secs(600))
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused > 0, "the claims never filled their share");
        assert!(s.len() <= SHARDS * max_pinned(16), "{} entries", s.len());
        let once = Rate::new(1, Duration::from_secs(60), 1);
        for i in 0..2_000u32 {
            let key = format!("rl:{i}");
            assert!(s.rate(&key, once).unwrap().allowed, "{key}");
        }
        // The limits still count (the last keys are still there to refuse a second request).
        assert!(!s.rate("rl:1999", once).unwrap().allowed);
        assert!(s.ban("ban:203.0.113.9", Duration::from_secs(60)).is_err());
    }

    #[test]
    fn eviction_of_entries_with_one_expiry_drops_a_tenth_not_all() {
        let s = MemoryState::new(SHARDS * 100);
        s.set_manual_clock(Duration::from_secs(1));
        // Every counter expires at the same instant; the table just overflows (about half
        // the shards get more than their 100). Dropping everything at the shared expiry would
        // leave those shards nearly empty.
        for i in 0..(SHARDS * 105) {
            s.count_failure(&format!("fail:{i}"), Duration::from_secs(900))
                .unwrap();
        }
        let held = s.len();
        assert!(held <= SHARDS * 100, "{held}");
        assert!(
            held >= SHARDS * 100 * 8 / 10,
            "eviction dropped too much: {held}"
        );
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_distinct_keys() {
        let s = MemoryState::new(64 * 100);
        s.set_manual_clock(Duration::from_secs(1));
        let r = Rate::new(10, Duration::from_secs(60), 10);
        for i in 0..200_000u32 {
            s.rate(&format!("ip:{i}"), r).unwrap();
        }
        assert!(s.len() <= 64 * 100, "{} entries", s.len());
    }

    #[test]
    fn eviction_prefers_dead_entries_so_live_limits_hold() {
        let s = MemoryState::new(64 * 16);
        s.set_manual_clock(Duration::from_secs(1));
        let slow = Rate::new(1, Duration::from_secs(3600), 1);
        assert!(s.rate("victim", slow).unwrap().allowed);
        // Many short-lived entries that are dead a moment later.
        let fast = Rate::new(1000, Duration::from_secs(1), 1);
        for i in 0..50_000u32 {
            s.rate(&format!("ip:{i}"), fast).unwrap();
            s.advance(Duration::from_millis(1));
        }
        assert!(
            !s.rate("victim", slow).unwrap().allowed,
            "the live limit was forgotten"
        );
    }

    #[test]
    fn rate_many_counts_all_or_nothing() {
        let s = state();
        let wide = Rate::new(10, Duration::from_secs(60), 10);
        let narrow = Rate::new(2, Duration::from_secs(60), 2);
        let both = [("ip:a", wide), ("route", narrow)];
        assert!(s.rate_many(&both).unwrap().iter().all(|d| d.allowed));
        assert!(s.rate_many(&both).unwrap().iter().all(|d| d.allowed));
        // The narrow limit refuses: the wide one must not be charged for it.
        let third = s.rate_many(&both).unwrap();
        assert_eq!(
            third.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(third[0].remaining, 7, "reported as if checked alone");
        assert_eq!(
            s.rate("ip:a", wide).unwrap().remaining,
            7,
            "8 of 10 left before"
        );
    }

    #[test]
    fn one_limit_alone_decides_as_it_does_beside_others() {
        // `rate_many` takes a shorter path for a single limit: the same requests, at the same
        // times, must get the same decisions as when the limit is checked beside one that
        // never refuses.
        let alone = state();
        let beside = state();
        let r = Rate::new(3, Duration::from_secs(6), 3);
        let never = Rate::new(1_000_000, Duration::from_secs(1), 1_000_000);
        let mut refused = 0;
        for step in 0..40 {
            let a = alone.rate_many(&[("k", r)]).unwrap();
            let b = beside.rate_many(&[("k", r), ("other", never)]).unwrap();
            assert_eq!(a.len(), 1);
            assert_eq!(a[0], b[0], "step {step}");
            refused += usize::from(!a[0].allowed);
            let by = Duration::from_millis(if step % 7 == 6 { 2_500 } else { 300 });
            alone.advance(by);
            beside.advance(by);
        }
        assert!(
            refused > 5,
            "the sequence must include refusals ({refused})"
        );
        // A refusal was not counted: after the period the bucket is full again.
        alone.advance(Duration::from_secs(6));
        assert_eq!(alone.rate("k", r).unwrap().remaining, 2);
    }

    #[test]
    fn rate_many_is_exact_under_contention() {
        let s = std::sync::Arc::new(state());
        let r = Rate::new(7, Duration::from_secs(60), 7);
        let other = Rate::new(1000, Duration::from_secs(60), 1000);
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let own = format!("ip:{i}");
                    s.rate_many(&[(own.as_str(), other), ("route", r)])
                        .unwrap()
                        .iter()
                        .all(|d| d.allowed)
                })
            })
            .collect();
        let passed = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(passed, 7);
    }

    #[test]
    fn keys_of_any_length_take_the_same_room() {
        let s = state();
        let long = "x".repeat(10_000);
        let r = Rate::new(1, Duration::from_secs(60), 1);
        assert!(s.rate(&long, r).unwrap().allowed);
        assert!(!s.rate(&long, r).unwrap().allowed);
        let mut other = long.clone();
        other.push('y');
        assert!(
            s.rate(&other, r).unwrap().allowed,
            "a longer key is another key"
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn max_entries_is_what_the_table_holds_at_most() {
        let s = MemoryState::new(10_000);
        assert_eq!(s.max_entries(), 64 * 156);
        s.set_manual_clock(Duration::from_secs(1));
        let r = Rate::new(1, Duration::from_secs(3600), 1);
        for i in 0..50_000u32 {
            s.rate(&format!("ip:{i}"), r).unwrap();
        }
        assert!(s.len() <= s.max_entries(), "{}", s.len());
    }
}
