//! The ban guard: `[route.ban]`, a temporary ban of an address after repeated credential
//! failures.
//!
//! The gateway reports every refusal whose reason is a credential failure
//! ([`Reason::is_auth_failure`]: a missing or wrong key, signature or token) to
//! [`BanGuard::record_failure`]. The failures of one address are counted in a window that opens
//! at its first failure; the one that reaches `after_failures` bans the address for
//! `duration`, and from then on [`BanGuard::check`] refuses it (`banned`, 403) until the ban
//! expires on its own. Counter and ban live in the shared `State`, so several instances ban
//! together. Bans are per route, like the config that sets them, and key an IPv6 client by its
//! /64 like the `ip` limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::BanConfig;
use crate::config::units::format_duration;
use crate::policy::guards::limit::address_key;
use crate::policy::{Denial, Exchange, Reason, Services};

/// Failures and bans the state could not record, since the start.
static UNRECORDED: AtomicU64 = AtomicU64::new(0);
/// When one was last logged (Unix seconds).
static UNRECORDED_LOGGED: AtomicU64 = AtomicU64::new(0);

/// Counts one failure or ban the state could not take; returns the running total when it is
/// worth a log line. A flood against a full or unreachable state fails on every request, and
/// a line each would cost more than the request: the 1st, 2nd, 4th, 8th… are logged, and one
/// every 10 s at most otherwise (so a new outage long after a large flood is still told).
fn note_unrecorded() -> Option<u64> {
    let total = UNRECORDED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = u64::try_from(super::signature::unix_now()).unwrap_or(0);
    let last = UNRECORDED_LOGGED.load(Ordering::Relaxed);
    let due = now >= last.saturating_add(10)
        && UNRECORDED_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    (due || total.is_power_of_two()).then_some(total)
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct BanGuard {
    route: Arc<str>,
    cfg: BanConfig,
}

impl BanGuard {
    /// A guard for `cfg` on route `route`.
    pub fn new(route: &str, cfg: BanConfig) -> Self {
        BanGuard {
            route: route.into(),
            cfg,
        }
    }

    fn ban_key(&self, ex: &Exchange) -> String {
        format!("ban:{}:{}", self.route, address_key(ex.client_ip))
    }

    fn failures_key(&self, ex: &Exchange) -> String {
        format!("fail:{}:{}", self.route, address_key(ex.client_ip))
    }

    /// Refuses a banned address.
    pub async fn check(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        match services.state.ban_remaining(&self.ban_key(ex)).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(Denial::new(Reason::Banned)),
            Err(_) => {
                Err(Denial::new(Reason::StateUnavailable).with_detail("ban state unavailable"))
            }
        }
    }

    /// Counts one credential failure of the exchange's address; returns true when it started a
    /// ban. The exchange's event is then flagged `banned`, and a warning is logged. A state
    /// that cannot be reached is logged and otherwise ignored: the request is refused anyway.
    pub async fn record_failure(&self, ex: &mut Exchange, services: &Services) -> bool {
        let state = &services.state;
        let failures_key = self.failures_key(ex);
        let count = match state.count_failure(&failures_key, self.cfg.within).await {
            Ok(n) => n,
            Err(e) => {
                if let Some(total) = note_unrecorded() {
                    tracing::warn!(route = %self.route, error = %e, unrecorded_total = total, "cannot count a failure for [route.ban]");
                }
                return false;
            }
        };
        if count < self.cfg.after_failures {
            return false;
        }
        if let Err(e) = state.ban(&self.ban_key(ex), self.cfg.duration).await {
            if let Some(total) = note_unrecorded() {
                tracing::warn!(route = %self.route, error = %e, unrecorded_total = total, "cannot record a ban");
            }
            return false;
        }
        // A fresh count after the ban: the next ban needs as many failures again.
        let _ = state.remove(&failures_key).await;
        ex.flag(Reason::Banned);
        tracing::warn!(
            target: "hookwarden::ban",
            request_id = %ex.request_id,
            route = %self.route,
            client_ip = %ex.client_ip,
            failures = count,
            within = %format_duration(self.cfg.within),
            duration = %format_duration(self.cfg.duration),
            "address banned after repeated credential failures"
        );
        true
    }

    /// The settings.
    pub fn config(&self) -> BanConfig {
        self.cfg
    }

    /// Time left on the ban of `ex`'s address, if any (for tooling and tests).
    pub async fn remaining(&self, ex: &Exchange, services: &Services) -> Option<Duration> {
        services
            .state
            .ban_remaining(&self.ban_key(ex))
            .await
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::guards::testing::exchange;
    use crate::state::{MemoryState, State};

    fn setup() -> (BanGuard, Services, Arc<MemoryState>) {
        let m = Arc::new(MemoryState::new(10_000));
        m.set_manual_clock(Duration::from_secs(1_000));
        let g = BanGuard::new(
            "chat",
            BanConfig {
                after_failures: 3,
                within: Duration::from_secs(60),
                duration: Duration::from_secs(900),
            },
        );
        (
            g,
            crate::policy::guards::testing::services(State::Memory(m.clone())),
            m,
        )
    }

    #[tokio::test]
    async fn the_failure_that_reaches_the_count_bans_and_is_flagged() {
        let (g, s, _) = setup();
        let mut ex = exchange("203.0.113.9");
        assert!(!g.record_failure(&mut ex, &s).await);
        assert!(!g.record_failure(&mut ex, &s).await);
        assert!(ex.flags.is_empty());
        assert_eq!(g.check(&mut ex, &s).await, Ok(()));
        assert!(g.record_failure(&mut ex, &s).await);
        assert_eq!(ex.flags, [Reason::Banned]);
        assert_eq!(
            g.check(&mut ex, &s).await.map_err(|d| d.reason),
            Err(Reason::Banned)
        );
        // Another address is not affected.
        assert_eq!(g.check(&mut exchange("203.0.113.10"), &s).await, Ok(()));
    }

    #[tokio::test]
    async fn failures_outside_the_window_do_not_add_up() {
        let (g, s, m) = setup();
        let mut ex = exchange("203.0.113.9");
        g.record_failure(&mut ex, &s).await;
        g.record_failure(&mut ex, &s).await;
        m.advance(Duration::from_secs(61));
        assert!(!g.record_failure(&mut ex, &s).await);
        assert!(!g.record_failure(&mut ex, &s).await);
        assert!(g.record_failure(&mut ex, &s).await);
    }

    #[tokio::test]
    async fn bans_expire_and_need_a_full_count_again() {
        let (g, s, m) = setup();
        let mut ex = exchange("2001:db8:1:2::9");
        for _ in 0..3 {
            g.record_failure(&mut ex, &s).await;
        }
        assert_eq!(g.remaining(&ex, &s).await, Some(Duration::from_secs(900)));
        // The whole /64 is banned.
        let mut neighbour = exchange("2001:db8:1:2:ffff::1");
        assert!(g.check(&mut neighbour, &s).await.is_err());
        assert!(g.check(&mut exchange("2001:db8:1:3::1"), &s).await.is_ok());
        m.advance(Duration::from_secs(900));
        assert_eq!(g.check(&mut ex, &s).await, Ok(()));
        assert!(
            !g.record_failure(&mut ex, &s).await,
            "one failure after the ban"
        );
    }

    #[tokio::test]
    async fn bans_are_per_route() {
        let (g, s, _) = setup();
        let other = BanGuard::new("other", g.config());
        let mut ex = exchange("203.0.113.9");
        for _ in 0..3 {
            g.record_failure(&mut ex, &s).await;
        }
        assert!(g.check(&mut ex, &s).await.is_err());
        assert_eq!(other.check(&mut ex, &s).await, Ok(()));
    }
}
