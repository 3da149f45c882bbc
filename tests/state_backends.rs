//! The shared-state behaviour, written once and run against every backend: the in-memory
//! table (on a hand-driven clock), Redis (the real one on 127.0.0.1:6379, a fresh key prefix
//! per test; afterwards every key it left must have an expiry), and a Redis instance that is
//! down with `on_error = "local"` (so the fallback answers everything). Then what only Redis
//! does: the Lua GCRA against the Rust one, state shared between instances, key names,
//! `on_error` when Redis goes away and comes back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis_util::{
    OwnRedis, SHARED_REDIS, assert_all_expire_then_clean, keys_with_ttl, unique_prefix,
};
use hookwarden::config::{OnError, RedisConfig};
use hookwarden::secret::Secret;
use hookwarden::state::gcra::Gcra;
use hookwarden::state::{MemoryState, Rate, RedisState, State, StateError};

const MS: Duration = Duration::from_millis(1);
const SECRET: &str = "state-suite-secret-0123456789abcdef";

fn redis_config(url: &str, prefix: &str, on_error: OnError) -> RedisConfig {
    RedisConfig {
        url: Secret::new(url),
        ca_file: None,
        password: None,
        endpoint: url.trim_start_matches("redis://").into(),
        on_error,
        prefix: prefix.into(),
        timeout: Duration::from_millis(250),
        connect_timeout: Duration::from_millis(500),
    }
}

/// A backend under test and how time passes for it.
struct Backend {
    state: State,
    clock: Clock,
    /// Redis URL and prefix to check and clean afterwards.
    redis: Option<(String, String)>,
}

enum Clock {
    /// The memory table's own clock, moved by hand: exact.
    Manual(Arc<MemoryState>),
    /// Real time (Redis expires keys on its own clock).
    Real,
}

impl Backend {
    async fn advance(&self, d: Duration) {
        match &self.clock {
            Clock::Manual(m) => m.advance(d),
            Clock::Real => tokio::time::sleep(d).await,
        }
    }

    async fn finish(self) {
        if let Some((url, prefix)) = &self.redis {
            assert_all_expire_then_clean(url, prefix).await;
        }
        if let State::Redis(r) = &self.state {
            let stats = r.stats();
            match r.on_error() {
                OnError::Deny => {
                    assert!(stats.up, "Redis was marked down during the test");
                    assert_eq!(stats.errors, 0);
                }
                OnError::Local => {
                    assert!(!stats.up);
                    assert!(stats.local_fallback);
                    assert!(stats.fallback_operations > 0);
                }
            }
        }
    }
}

fn memory() -> Backend {
    let m = Arc::new(MemoryState::new(100_000));
    m.set_manual_clock(Duration::from_secs(1000));
    Backend {
        state: State::Memory(m.clone()),
        clock: Clock::Manual(m),
        redis: None,
    }
}

async fn redis(test: &str) -> Backend {
    let prefix = unique_prefix(test);
    let cfg = redis_config(SHARED_REDIS, &prefix, OnError::Deny);
    let r = RedisState::connect(&cfg, &Secret::new(SECRET), 10_000)
        .await
        .unwrap();
    assert!(
        r.is_up(),
        "no Redis on 127.0.0.1:6379 (scripts/test starts one)"
    );
    Backend {
        state: State::Redis(Arc::new(r)),
        clock: Clock::Real,
        redis: Some((SHARED_REDIS.into(), prefix)),
    }
}

/// Redis configured with `on_error = "local"` at an address where nothing listens.
async fn redis_down_local(test: &str) -> Backend {
    let url = format!("redis://127.0.0.1:{}/0", common::free_port());
    let cfg = redis_config(&url, &unique_prefix(test), OnError::Local);
    let r = RedisState::connect(&cfg, &Secret::new(SECRET), 10_000)
        .await
        .unwrap();
    assert!(!r.is_up());
    Backend {
        state: State::Redis(Arc::new(r)),
        clock: Clock::Real,
        redis: None,
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::memory();
                    super::$name(&b).await;
                    b.finish().await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::redis(stringify!($name)).await;
                    super::$name(&b).await;
                    b.finish().await;
                }
            )*
        }
        mod redis_down_local_fallback {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::redis_down_local(stringify!($name)).await;
                    super::$name(&b).await;
                    b.finish().await;
                }
            )*
        }
    };
}

suite!(
    claims_are_single_use_until_they_expire,
    a_removed_claim_can_be_made_again,
    failure_window_starts_at_first_failure,
    bans_expire_on_their_own_and_a_new_ban_replaces_the_old,
    a_limit_lets_exactly_its_burst_through_then_says_when,
    one_request_is_earned_back_per_interval,
    rate_many_counts_all_or_nothing,
    rate_many_is_exact_under_contention,
    keys_of_any_length_are_distinct_keys,
    a_delivery_claim_is_pending_then_settled_or_released,
);

async fn claims_are_single_use_until_they_expire(b: &Backend) {
    let s = &b.state;
    let ttl = Duration::from_secs(1);
    assert!(s.claim_once("tok:a", ttl).await.unwrap());
    assert!(!s.claim_once("tok:a", ttl).await.unwrap());
    assert!(s.claim_once("tok:b", ttl).await.unwrap());
    b.advance(300 * MS).await;
    assert!(
        !s.claim_once("tok:a", ttl).await.unwrap(),
        "still within its ttl"
    );
    b.advance(800 * MS).await;
    assert!(s.claim_once("tok:a", ttl).await.unwrap(), "expired");
}

async fn a_removed_claim_can_be_made_again(b: &Backend) {
    let s = &b.state;
    let ttl = Duration::from_secs(60);
    assert!(s.claim_once("replay:x", ttl).await.unwrap());
    s.remove("replay:x").await.unwrap();
    assert!(s.claim_once("replay:x", ttl).await.unwrap());
    assert!(!s.claim_once("replay:x", ttl).await.unwrap());
    // Removing what is not there is fine.
    s.remove("replay:never").await.unwrap();
}

async fn a_delivery_claim_is_pending_then_settled_or_released(b: &Backend) {
    use hookwarden::state::Claim;
    let s = &b.state;
    let ttl = Duration::from_secs(1);
    assert_eq!(s.claim_pending("replay:a", ttl).await.unwrap(), Claim::New);
    assert_eq!(
        s.claim_pending("replay:a", ttl).await.unwrap(),
        Claim::InFlight
    );
    s.settle("replay:a", ttl).await.unwrap();
    assert_eq!(s.claim_pending("replay:a", ttl).await.unwrap(), Claim::Done);
    // Released (delivery failed): the next copy is new.
    assert_eq!(s.claim_pending("replay:b", ttl).await.unwrap(), Claim::New);
    s.remove("replay:b").await.unwrap();
    assert_eq!(s.claim_pending("replay:b", ttl).await.unwrap(), Claim::New);
    // Settling keeps the claim's lifetime: it still expires.
    b.advance(1100 * MS).await;
    assert_eq!(s.claim_pending("replay:a", ttl).await.unwrap(), Claim::New);
}

async fn failure_window_starts_at_first_failure(b: &Backend) {
    let s = &b.state;
    let w = Duration::from_secs(1);
    assert_eq!(s.count_failure("fail:a", w).await.unwrap(), 1);
    b.advance(400 * MS).await;
    assert_eq!(s.count_failure("fail:a", w).await.unwrap(), 2);
    assert_eq!(
        s.count_failure("fail:b", w).await.unwrap(),
        1,
        "another key"
    );
    b.advance(700 * MS).await;
    assert_eq!(
        s.count_failure("fail:a", w).await.unwrap(),
        1,
        "a new window, not a sliding one"
    );
    assert_eq!(s.count_failure("fail:a", w).await.unwrap(), 2);
    s.remove("fail:a").await.unwrap();
    assert_eq!(s.count_failure("fail:a", w).await.unwrap(), 1);
}

async fn bans_expire_on_their_own_and_a_new_ban_replaces_the_old(b: &Backend) {
    let s = &b.state;
    assert_eq!(s.ban_remaining("ban:ip").await.unwrap(), None);
    s.ban("ban:ip", Duration::from_secs(1)).await.unwrap();
    let left = s.ban_remaining("ban:ip").await.unwrap().unwrap();
    assert!(
        left <= Duration::from_secs(1) && left > 800 * MS,
        "{left:?}"
    );
    assert_eq!(s.ban_remaining("ban:other").await.unwrap(), None);
    b.advance(500 * MS).await;
    s.ban("ban:ip", Duration::from_secs(1)).await.unwrap();
    let left = s.ban_remaining("ban:ip").await.unwrap().unwrap();
    assert!(left > 800 * MS, "the new ban counts from now: {left:?}");
    b.advance(1100 * MS).await;
    assert_eq!(s.ban_remaining("ban:ip").await.unwrap(), None);
}

async fn a_limit_lets_exactly_its_burst_through_then_says_when(b: &Backend) {
    let s = &b.state;
    let r = Rate::new(5, Duration::from_secs(60), 5);
    let mut remaining = vec![];
    for _ in 0..5 {
        let d = s.rate("rl:k", r).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.retry_after, Duration::ZERO);
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let refused = s.rate("rl:k", r).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    let secs = |d: Duration| d.as_secs_f64();
    assert!(
        secs(refused.retry_after) <= 12.0 && secs(refused.retry_after) > 11.0,
        "one interval: {:?}",
        refused.retry_after
    );
    assert!(
        secs(refused.reset_after) <= 60.0 && secs(refused.reset_after) > 59.0,
        "{:?}",
        refused.reset_after
    );
    // A refusal spends nothing, and other keys are untouched.
    assert!(!s.rate("rl:k", r).await.unwrap().allowed);
    assert_eq!(s.rate("rl:other", r).await.unwrap().remaining, 4);
}

async fn one_request_is_earned_back_per_interval(b: &Backend) {
    let s = &b.state;
    // Two per second: one every 500 ms, two at once.
    let r = Rate::new(2, Duration::from_secs(1), 2);
    assert!(s.rate("rl:e", r).await.unwrap().allowed);
    assert!(s.rate("rl:e", r).await.unwrap().allowed);
    let refused = s.rate("rl:e", r).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after <= 500 * MS, "{:?}", refused.retry_after);
    b.advance(600 * MS).await;
    assert!(s.rate("rl:e", r).await.unwrap().allowed, "one earned back");
    assert!(!s.rate("rl:e", r).await.unwrap().allowed, "and only one");
}

async fn rate_many_counts_all_or_nothing(b: &Backend) {
    let s = &b.state;
    let wide = Rate::new(10, Duration::from_secs(60), 10);
    let narrow = Rate::new(2, Duration::from_secs(60), 2);
    let both = [("rl:ip:a", wide), ("rl:route", narrow)];
    assert!(s.rate_many(&both).await.unwrap().iter().all(|d| d.allowed));
    assert!(s.rate_many(&both).await.unwrap().iter().all(|d| d.allowed));
    // The narrow limit refuses: the wide one must not be charged for it.
    let third = s.rate_many(&both).await.unwrap();
    assert_eq!(
        third.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(third[0].remaining, 7, "reported as if checked alone");
    assert_eq!(
        s.rate("rl:ip:a", wide).await.unwrap().remaining,
        7,
        "8 of 10 were left before"
    );
    assert!(s.rate_many(&[]).await.unwrap().is_empty());
}

async fn rate_many_is_exact_under_contention(b: &Backend) {
    let r = Rate::new(7, Duration::from_secs(60), 7);
    let other = Rate::new(1000, Duration::from_secs(60), 1000);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = b.state.clone();
            tokio::spawn(async move {
                let own = format!("rl:ip:{i}");
                s.rate_many(&[(own.as_str(), other), ("rl:route", r)])
                    .await
                    .unwrap()
                    .iter()
                    .all(|d| d.allowed)
            })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 7);
}

async fn keys_of_any_length_are_distinct_keys(b: &Backend) {
    let s = &b.state;
    let long = "x".repeat(10_000);
    let r = Rate::new(1, Duration::from_secs(60), 1);
    assert!(s.rate(&long, r).await.unwrap().allowed);
    assert!(!s.rate(&long, r).await.unwrap().allowed);
    let mut other = long.clone();
    other.push('y');
    assert!(
        s.rate(&other, r).await.unwrap().allowed,
        "a longer key is another key"
    );
}

// --- Redis only ------------------------------------------------------------------------------

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[tokio::test]
async fn the_lua_gcra_decides_exactly_like_the_rust_one() {
    let b = redis("lua_gcra").await;
    let State::Redis(r) = &b.state else {
        unreachable!()
    };
    // Realistic absolute times (the script keeps nanoseconds since the epoch as text).
    let epoch_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let rates = [
        Rate::new(5, Duration::from_secs(60), 5),
        Rate::new(7, Duration::from_secs(60), 3),
        Rate::new(1, Duration::from_secs(1), 1),
        Rate::new(3, Duration::from_secs(1), 10),
        Rate::new(200, Duration::from_secs(86_400), 200),
        Rate::new(10, Duration::from_secs(3600), 1),
        Rate::new(1000, Duration::from_secs(60), 1000),
        Rate::new(60, Duration::from_secs(60), 120),
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for (i, rate) in rates.iter().enumerate() {
        // Keys expire on Redis's real clock, after their simulated time to live read as real
        // time (at least one interval, 333 ms here at the least): one key's 60 steps take a
        // few milliseconds, so no key expires before the simulation is done with it.
        let key = format!("lua:{i}");
        let mut tat: u64 = 0;
        let mut now = epoch_now.as_nanos() as u64 + rng.below(1_000_000_000);
        let tolerance = rate.interval_ns * u64::from(rate.burst);
        for step in 0..60 {
            // Bursts (same instant), small steps and long gaps, around the interval.
            now += match rng.below(4) {
                0 => 0,
                1 => rng.below(rate.interval_ns / 3 + 1),
                2 => rate.interval_ns - 1 + rng.below(3),
                _ => rng.below(tolerance + rate.interval_ns),
            };
            let (want, new_tat) = Gcra::decide(*rate, tat, now);
            tat = new_tat;
            let got = r
                .rate_many_at(&[(key.as_str(), *rate)], Duration::from_nanos(now))
                .await
                .unwrap();
            assert_eq!(got, [want], "rate #{i} step {step} at {now}");
        }
    }
    // Several keys at once: all or nothing, decisions as if alone.
    let now = Duration::from_nanos(epoch_now.as_nanos() as u64);
    let one = Rate::new(1, Duration::from_secs(60), 1);
    let two = Rate::new(2, Duration::from_secs(60), 2);
    let got = r
        .rate_many_at(&[("m:a", two), ("m:b", one)], now)
        .await
        .unwrap();
    assert!(got.iter().all(|d| d.allowed));
    let got = r
        .rate_many_at(&[("m:a", two), ("m:b", one)], now)
        .await
        .unwrap();
    let (a, _) = Gcra::decide(
        two,
        30_000_000_000 + now.as_nanos() as u64,
        now.as_nanos() as u64,
    );
    let (b_refused, _) = Gcra::decide(
        one,
        60_000_000_000 + now.as_nanos() as u64,
        now.as_nanos() as u64,
    );
    assert_eq!(got, [a, b_refused]);
    // m:a was not charged for the refusal: one more fits.
    let got = r.rate_many_at(&[("m:a", two)], now).await.unwrap();
    assert!(got[0].allowed);
    b.finish().await;
}

fn shared_backend(prefix: &str, secret: &str) -> State {
    let cfg = redis_config(SHARED_REDIS, prefix, OnError::Deny);
    State::Redis(Arc::new(
        RedisState::new(&cfg, &Secret::new(secret), 10_000).unwrap(),
    ))
}

#[tokio::test]
async fn instances_with_the_same_prefix_and_secret_share_everything() {
    let prefix = unique_prefix("shared");
    let a = shared_backend(&prefix, SECRET);
    let b = shared_backend(&prefix, SECRET);
    let ttl = Duration::from_secs(30);

    assert!(a.claim_once("tok:1", ttl).await.unwrap());
    assert!(!b.claim_once("tok:1", ttl).await.unwrap(), "spent on A");

    let r = Rate::new(3, Duration::from_secs(60), 3);
    let mut allowed = vec![];
    for s in [&a, &b, &a, &b, &a] {
        allowed.push(s.rate("rl:route", r).await.unwrap().allowed);
    }
    assert_eq!(allowed, [true, true, true, false, false]);

    assert_eq!(a.count_failure("fail:ip", ttl).await.unwrap(), 1);
    assert_eq!(b.count_failure("fail:ip", ttl).await.unwrap(), 2);
    a.ban("ban:ip", ttl).await.unwrap();
    assert!(b.ban_remaining("ban:ip").await.unwrap().is_some());
    b.remove("ban:ip").await.unwrap();
    assert_eq!(a.ban_remaining("ban:ip").await.unwrap(), None);

    // Another secret names every key differently: nothing is shared with it.
    let other = shared_backend(&prefix, "another-secret-0123456789abcdefghij");
    assert!(other.claim_once("tok:1", ttl).await.unwrap());
    assert!(other.rate("rl:route", r).await.unwrap().allowed);
    // A and B: the claim, the limit, the counter; the other secret: its claim and limit.
    assert_eq!(assert_all_expire_then_clean(SHARED_REDIS, &prefix).await, 5);
}

#[tokio::test]
async fn key_names_are_short_and_carry_no_client_data() {
    let prefix = unique_prefix("names");
    let s = shared_backend(&prefix, SECRET);
    let minute = Duration::from_secs(60);
    s.ban("ban:chat:203.0.113.9", minute).await.unwrap();
    s.count_failure("fail:chat:203.0.113.9", minute)
        .await
        .unwrap();
    s.claim_once("tok:0123456789abcdef", minute).await.unwrap();
    let long_session = format!("rl:chat:session:{}", "s".repeat(5_000));
    s.rate(&long_session, Rate::new(5, minute, 5))
        .await
        .unwrap();
    let keys = keys_with_ttl(SHARED_REDIS, &prefix).await;
    assert_eq!(keys.len(), 4);
    for (k, _) in &keys {
        assert_eq!(k.len(), prefix.len() + 22, "{k}");
        let own = &k[prefix.len()..];
        assert!(
            own.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{k}"
        );
        for leak in ["203.0.113", "chat", "ban", "tok", "session"] {
            assert!(!own.contains(leak), "{k} contains {leak}");
        }
    }
    assert_eq!(assert_all_expire_then_clean(SHARED_REDIS, &prefix).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_refuses_every_operation_while_redis_is_unreachable() {
    let url = format!("redis://127.0.0.1:{}/0", common::free_port());
    let cfg = redis_config(&url, "hwtest:deny:", OnError::Deny);
    let r = RedisState::connect(&cfg, &Secret::new(SECRET), 10_000)
        .await
        .unwrap();
    assert!(!r.is_up());
    let s = State::Redis(Arc::new(r));
    let minute = Duration::from_secs(60);
    let rate = Rate::new(5, minute, 5);
    let unavailable = |e: StateError| matches!(e, StateError::Unavailable(_));
    assert!(unavailable(s.rate("k", rate).await.unwrap_err()));
    assert!(unavailable(s.rate_many(&[("k", rate)]).await.unwrap_err()));
    assert!(unavailable(s.claim_once("k", minute).await.unwrap_err()));
    assert!(unavailable(s.count_failure("k", minute).await.unwrap_err()));
    assert!(unavailable(s.ban("k", minute).await.unwrap_err()));
    assert!(unavailable(s.ban_remaining("k").await.unwrap_err()));
    assert!(unavailable(s.remove("k").await.unwrap_err()));
    let stats = s.stats().redis.unwrap();
    assert!(!stats.up && !stats.local_fallback);
    assert_eq!(stats.fallback_operations, 0);
    assert_eq!(
        stats.errors, 1,
        "one failed check; down means no more calls"
    );
}

/// Stops the test's own Redis under a state in `on_error` mode, then starts it again.
async fn outage(on_error: OnError) -> (OwnRedis, State) {
    let redis = OwnRedis::start().await;
    let cfg = redis_config(&redis.url(), "hwtest:outage:", on_error);
    let r = RedisState::connect(&cfg, &Secret::new(SECRET), 10_000)
        .await
        .unwrap();
    assert!(r.is_up());
    (redis, State::Redis(Arc::new(r)))
}

async fn until_up(s: &State) {
    let State::Redis(r) = s else { unreachable!() };
    common::eventually(Duration::from_secs(10), "Redis used again", || async {
        r.recheck().await;
        r.is_up()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_refuses_during_an_outage_and_recovers_without_a_restart() {
    let (mut redis, s) = outage(OnError::Deny).await;
    let minute = Duration::from_secs(60);
    assert!(s.claim_once("tok:before", minute).await.unwrap());
    redis.stop();
    let err = s.claim_once("tok:during", minute).await.unwrap_err();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    let State::Redis(r) = &s else { unreachable!() };
    assert!(!r.is_up());
    r.recheck().await;
    assert!(!r.is_up(), "still down");
    assert!(matches!(
        s.ban_remaining("ban:x").await.unwrap_err(),
        StateError::Unavailable(_)
    ));
    redis.resume().await;
    until_up(&s).await;
    assert!(s.claim_once("tok:during", minute).await.unwrap());
    assert!(!s.claim_once("tok:during", minute).await.unwrap());
    let stats = s.stats().redis.unwrap();
    assert!(stats.up);
    assert_eq!(stats.fallback_operations, 0);
    assert!(stats.errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_answers_from_memory_during_an_outage_and_goes_back_to_redis() {
    let (mut redis, s) = outage(OnError::Local).await;
    let minute = Duration::from_secs(60);
    let rate = Rate::new(2, minute, 2);
    assert!(s.rate("rl:k", rate).await.unwrap().allowed);
    redis.stop();
    // Memory takes over: its own fresh count, its own claims and bans.
    assert!(s.rate("rl:k", rate).await.unwrap().allowed);
    assert!(s.rate("rl:k", rate).await.unwrap().allowed);
    assert!(!s.rate("rl:k", rate).await.unwrap().allowed);
    assert!(s.claim_once("tok:outage", minute).await.unwrap());
    assert!(!s.claim_once("tok:outage", minute).await.unwrap());
    s.ban("ban:outage", minute).await.unwrap();
    let stats = s.stats().redis.unwrap();
    assert!(!stats.up && stats.local_fallback);
    assert!(stats.fallback_operations >= 6, "{stats:?}");

    redis.resume().await; // empty: nothing was persisted
    until_up(&s).await;
    let stats = s.stats().redis.unwrap();
    assert!(stats.up && !stats.local_fallback);
    let before = stats.fallback_operations;
    // Redis again: a fresh count there (the restarted Redis is empty) ...
    assert!(s.rate("rl:k", rate).await.unwrap().allowed);
    assert!(s.rate("rl:k", rate).await.unwrap().allowed);
    assert!(!s.rate("rl:k", rate).await.unwrap().allowed);
    assert_eq!(s.stats().redis.unwrap().fallback_operations, before);
    assert_eq!(
        keys_with_ttl(&redis.url(), "hwtest:outage:").await.len(),
        1,
        "the limit is kept in Redis again"
    );
    // ... but what this instance spent or banned during the outage still holds here.
    assert!(!s.claim_once("tok:outage", minute).await.unwrap());
    assert!(s.ban_remaining("ban:outage").await.unwrap().is_some());
    assert!(s.claim_once("tok:fresh", minute).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_redis_checks_its_certificate_against_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hookwarden test Redis CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let redis = OwnRedis::start_tls(&ca.pem(), &cert.pem(), &key.serialize_pem()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let connect = |url: String, ca_file: Option<std::path::PathBuf>| async move {
        let mut cfg = redis_config(&url, "hwtest:tls:", OnError::Deny);
        cfg.ca_file = ca_file;
        RedisState::connect(&cfg, &Secret::new(SECRET), 10_000)
            .await
            .unwrap()
    };

    // Trusting the private CA: connected, and the state works.
    let r = connect(redis.url(), Some(ca_file)).await;
    assert!(r.is_up(), "TLS with ca_file");
    let minute = Duration::from_secs(60);
    assert!(r.claim_once("tok:tls", minute).await.unwrap());
    assert!(!r.claim_once("tok:tls", minute).await.unwrap());
    // The public web PKI does not vouch for this server: refused.
    let r = connect(redis.url(), None).await;
    assert!(!r.is_up(), "a certificate no trusted CA signed");
    assert!(matches!(
        r.claim_once("tok:tls", minute).await.unwrap_err(),
        StateError::Unavailable(_)
    ));
    // Plain text to the TLS port: no answer either.
    let plain = redis.url().replace("rediss://", "redis://");
    assert!(!connect(plain, None).await.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_redis_is_not_an_outage() {
    let redis = OwnRedis::start().await;
    let cfg = redis_config(&redis.url(), "hwtest:idle:", OnError::Deny);
    let r = RedisState::connect(&cfg, &Secret::new(SECRET), 10_000)
        .await
        .unwrap();
    let minute = Duration::from_secs(60);
    assert!(r.claim_once("tok:a", minute).await.unwrap());
    // What Redis's own idle `timeout`, a proxy or a NAT does to a quiet connection.
    let mut admin = common::redis_util::connect(&redis.url()).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "our connection was closed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(r.claim_once("tok:b", minute).await.unwrap());
    assert!(!r.claim_once("tok:a", minute).await.unwrap());
    assert!(r.is_up(), "not marked down");
    assert_eq!(r.stats().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_demoted_to_replica_is_left_until_a_primary_answers() {
    // A failover as a managed Redis does it: the server behind the address becomes a
    // read-only replica (then, here, the primary again).
    let redis = OwnRedis::start().await;
    let elsewhere = OwnRedis::start().await;
    let cfg = redis_config(&redis.url(), "hwtest:failover:", OnError::Deny);
    let s = State::Redis(Arc::new(
        RedisState::connect(&cfg, &Secret::new(SECRET), 10_000)
            .await
            .unwrap(),
    ));
    let State::Redis(r) = &s else { unreachable!() };
    let minute = Duration::from_secs(60);
    assert!(s.claim_once("tok:a", minute).await.unwrap());

    let mut admin = common::redis_util::connect(&redis.url()).await;
    let replicaof = |host: &str, port: &str| redis::cmd("REPLICAOF").arg(host).arg(port).clone();
    let _: String = replicaof("127.0.0.1", &elsewhere.port.to_string())
        .query_async(&mut admin)
        .await
        .unwrap();
    let err = s.claim_once("tok:b", minute).await.unwrap_err();
    assert!(
        matches!(err, StateError::Unavailable(ref m) if m.contains("read only replica")),
        "{err:?}"
    );
    assert!(!r.is_up());
    r.recheck().await;
    assert!(!r.is_up(), "a replica answers PING but is not used");

    let _: String = replicaof("NO", "ONE")
        .query_async(&mut admin)
        .await
        .unwrap();
    until_up(&s).await;
    assert!(s.claim_once("tok:b", minute).await.unwrap());
    assert!(!s.claim_once("tok:b", minute).await.unwrap());
}
