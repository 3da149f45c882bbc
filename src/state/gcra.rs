//! The generic cell rate algorithm, as pure arithmetic over a theoretical arrival time (TAT).
//!
//! Both state backends run exactly this: the memory backend calls [`Gcra::decide`] under a
//! lock, the Redis backend runs the same steps in a Lua script with the server's clock. A key's
//! whole state is one number, the TAT in nanoseconds; a TAT in the past is the same as no
//! state at all, which is what makes eviction of idle keys lossless.
//!
//! With emission interval `T = period / rate` and burst `B`, a request at time `now` is allowed
//! when `max(tat, now) + T - B·T <= now`; then `tat := max(tat, now) + T`.

use std::time::Duration;

/// A rate: `burst` requests at once, refilling one every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Time to earn back one request (`period / count`), in nanoseconds.
    pub interval_ns: u64,
    /// Requests allowed back to back.
    pub burst: u32,
}

impl Rate {
    /// `count` per `period` with the given burst.
    pub fn new(count: u32, period: Duration, burst: u32) -> Rate {
        let count = count.max(1);
        Rate {
            interval_ns: u64::try_from((period.as_nanos() / u128::from(count)).max(1))
                .unwrap_or(u64::MAX),
            burst: burst.max(1),
        }
    }

    /// Time for a fully spent bucket to refill.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.interval_ns.saturating_mul(u64::from(self.burst)))
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// True when the request may pass (and was counted).
    pub allowed: bool,
    /// Requests that would still pass right now.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset_after: Duration,
    /// For a refusal: time until one request would pass.
    pub retry_after: Duration,
}

/// The algorithm, stateless.
pub struct Gcra;

impl Gcra {
    /// Decides a request at `now_ns` for a key whose stored TAT is `tat_ns` (0 = none).
    /// Returns the decision and the TAT to store (unchanged when refused).
    pub fn decide(rate: Rate, tat_ns: u64, now_ns: u64) -> (RateDecision, u64) {
        let t = rate.interval_ns;
        let tolerance = t.saturating_mul(u64::from(rate.burst));
        let tat = tat_ns.max(now_ns);
        let new_tat = tat.saturating_add(t);
        let allow_at = new_tat.saturating_sub(tolerance);
        if allow_at <= now_ns {
            let used = new_tat - now_ns;
            (
                RateDecision {
                    allowed: true,
                    remaining: ((tolerance - used.min(tolerance)) / t) as u32,
                    reset_after: Duration::from_nanos(used),
                    retry_after: Duration::ZERO,
                },
                new_tat,
            )
        } else {
            (
                RateDecision {
                    allowed: false,
                    remaining: 0,
                    reset_after: Duration::from_nanos(tat - now_ns),
                    retry_after: Duration::from_nanos(allow_at - now_ns),
                },
                tat_ns,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn run(rate: Rate, times: &[u64]) -> Vec<bool> {
        let mut tat = 0;
        times
            .iter()
            .map(|now| {
                let (d, t) = Gcra::decide(rate, tat, *now);
                tat = t;
                d.allowed
            })
            .collect()
    }

    #[test]
    fn five_per_minute_lets_exactly_five_through_at_once() {
        let rate = Rate::new(5, Duration::from_secs(60), 5);
        let now = 1000 * SEC;
        assert_eq!(
            run(rate, &[now; 7]),
            [true, true, true, true, true, false, false]
        );
    }

    #[test]
    fn remaining_counts_down_and_retry_after_is_one_interval() {
        let rate = Rate::new(5, Duration::from_secs(60), 5);
        let now = 1000 * SEC;
        let mut tat = 0;
        let mut remaining = vec![];
        for _ in 0..5 {
            let (d, t) = Gcra::decide(rate, tat, now);
            tat = t;
            remaining.push(d.remaining);
        }
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let (refused, _) = Gcra::decide(rate, tat, now);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(12));
        assert_eq!(refused.reset_after, Duration::from_secs(60));
    }

    #[test]
    fn one_request_is_earned_back_per_interval() {
        let rate = Rate::new(5, Duration::from_secs(60), 5);
        let t0 = 1000 * SEC;
        let mut times = vec![t0; 5];
        times.push(t0 + 11 * SEC); // too early
        times.push(t0 + 12 * SEC); // one interval later: allowed
        times.push(t0 + 12 * SEC); // and only one
        assert_eq!(
            run(rate, &times),
            [true, true, true, true, true, false, true, false]
        );
    }

    #[test]
    fn burst_smaller_than_rate_spreads_requests() {
        // 60/minute with burst 1: one per second, never two at once.
        let rate = Rate::new(60, Duration::from_secs(60), 1);
        let t0 = 10 * SEC;
        assert_eq!(
            run(rate, &[t0, t0, t0 + SEC / 2, t0 + SEC]),
            [true, false, false, true]
        );
    }

    #[test]
    fn long_windows_work() {
        // 200/day as a per-session budget.
        let rate = Rate::new(200, Duration::from_secs(86_400), 200);
        let t0 = 5 * SEC;
        let results = run(rate, &[t0; 201]);
        assert_eq!(results.iter().filter(|a| **a).count(), 200);
        assert!(!results[200]);
        let (d, _) = Gcra::decide(rate, t0 + 200 * rate.interval_ns, t0);
        assert_eq!(d.retry_after, Duration::from_secs(432));
    }

    #[test]
    fn a_tat_in_the_past_is_the_same_as_no_state() {
        let rate = Rate::new(3, Duration::from_secs(1), 3);
        let now = 100 * SEC;
        assert_eq!(
            Gcra::decide(rate, 0, now),
            Gcra::decide(rate, now - 5 * SEC, now)
        );
    }
}
