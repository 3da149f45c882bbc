//! Alert rules: each `[[alert]]` counts the events it matches in a sliding window; crossing the
//! threshold fires once, then the rule stays quiet for its cooldown.
//!
//! Counting runs inline on the request path (an observer of the emitter), because a count that
//! silently misses events when a queue is full would be worse than no alert. It costs one
//! short lock per matching event and per rule; the window keeps at most `threshold`
//! timestamps, so memory is bounded by the config. Delivery is not inline: a firing goes to
//! the notifier over a bounded channel with `try_send` (see [`super::notifier`]).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::{Event, Observer};
use crate::config::{AlertConfig, AlertMatch};
use crate::policy::Reason;

/// Firings waiting for delivery at most; beyond it a firing is dropped and counted.
pub const FIRING_QUEUE: usize = 256;

/// The sliding window of one rule. Pure: the caller passes the clock.
#[derive(Debug, Default)]
pub struct Window {
    hits: VecDeque<Instant>,
    last_fired: Option<Instant>,
}

impl Window {
    /// Counts a matching event at `now`. Returns the number of events in the window when this
    /// one makes the rule fire: at least `threshold` within `window`, and no firing within the
    /// last `cooldown`.
    pub fn hit(
        &mut self,
        now: Instant,
        threshold: u32,
        window: Duration,
        cooldown: Duration,
    ) -> Option<u32> {
        self.hits.push_back(now);
        // Only the newest `threshold` hits can decide a crossing: keep no more.
        while self.hits.len() > threshold as usize {
            self.hits.pop_front();
        }
        if let Some(start) = now.checked_sub(window) {
            while self.hits.front().is_some_and(|t| *t <= start) {
                self.hits.pop_front();
            }
        }
        let count = self.hits.len() as u32;
        if count < threshold {
            return None;
        }
        if let Some(last) = self.last_fired
            && now.duration_since(last) < cooldown
        {
            return None;
        }
        self.last_fired = Some(now);
        Some(count)
    }
}

/// A rule that fired, on its way to the notifier.
#[derive(Debug, Clone)]
pub struct Firing {
    /// The rule.
    pub rule: Arc<AlertConfig>,
    /// Matching events in the window.
    pub matched: u32,
    /// When it fired.
    pub time: jiff::Timestamp,
    /// The event that crossed the threshold.
    pub latest: Sample,
}

/// What a notification tells about the event that crossed the threshold. No secrets: the same
/// fields the audit log has.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Request id.
    pub request_id: String,
    /// Route.
    pub route: Option<String>,
    /// Client address.
    pub client_ip: IpAddr,
    /// Reason code.
    pub reason: Option<Reason>,
    /// API key id.
    pub key_id: Option<String>,
}

struct Rule {
    cfg: Arc<AlertConfig>,
    /// Shared with the rule's successor after a reload that keeps it, so that hits counted
    /// while the rules are being swapped land in the one window both see.
    window: Arc<Mutex<Window>>,
}

impl Rule {
    fn matches(&self, e: &Event) -> bool {
        if let Some(route) = &self.cfg.route
            && e.route.as_deref() != Some(route.as_str())
        {
            return false;
        }
        match &self.cfg.matches {
            AlertMatch::Outcome(o) => e.outcome == *o,
            AlertMatch::Reasons(rs) => {
                e.reason.is_some_and(|r| rs.contains(&r)) || e.flags.iter().any(|f| rs.contains(f))
            }
        }
    }
}

/// All rules, swapped as a whole on reload.
pub struct AlertEngine {
    rules: ArcSwap<Vec<Arc<Rule>>>,
    tx: mpsc::Sender<Firing>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertEngine")
    }
}

impl AlertEngine {
    /// An engine with `rules`, and the receiving end for the notifier.
    pub fn new(rules: &[AlertConfig]) -> (Arc<AlertEngine>, mpsc::Receiver<Firing>) {
        let (tx, rx) = mpsc::channel(FIRING_QUEUE);
        let engine = AlertEngine {
            rules: ArcSwap::from_pointee(Vec::new()),
            tx,
            dropped: AtomicU64::new(0),
        };
        engine.set_rules(rules);
        (Arc::new(engine), rx)
    }

    /// Replaces the rules. A rule whose name, threshold and window are unchanged keeps its
    /// window and cooldown, so a reload neither forgets an ongoing attack nor re-alerts on it.
    pub fn set_rules(&self, rules: &[AlertConfig]) {
        let old = self.rules.load_full();
        let new = rules
            .iter()
            .map(|cfg| {
                let carried = old.iter().find(|r| {
                    r.cfg.name == cfg.name
                        && r.cfg.threshold == cfg.threshold
                        && r.cfg.window == cfg.window
                        && r.cfg.matches == cfg.matches
                        && r.cfg.route == cfg.route
                });
                let window = match carried {
                    Some(r) => r.window.clone(),
                    None => Arc::default(),
                };
                Arc::new(Rule {
                    cfg: Arc::new(cfg.clone()),
                    window,
                })
            })
            .collect();
        self.rules.store(Arc::new(new));
    }

    /// Counts `e` against every rule; fires the ones that cross their threshold.
    pub fn observe(&self, e: &Event, now: Instant) {
        let rules = self.rules.load();
        for rule in rules.iter() {
            if !rule.matches(e) {
                continue;
            }
            let fired = rule.window.lock().unwrap_or_else(|p| p.into_inner()).hit(
                now,
                rule.cfg.threshold,
                rule.cfg.window,
                rule.cfg.cooldown,
            );
            let Some(matched) = fired else { continue };
            let firing = Firing {
                rule: rule.cfg.clone(),
                matched,
                time: jiff::Timestamp::now(),
                latest: Sample {
                    request_id: e.request_id.clone(),
                    route: e.route.as_deref().map(str::to_owned),
                    client_ip: e.client_ip,
                    reason: e.reason,
                    key_id: e.key_id.clone(),
                },
            };
            if self.tx.try_send(firing).is_err() {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // A flood that drops one a request would write a log line a request: say it
                // at the 1st, 2nd, 4th, 8th… drop, with the running count.
                if dropped.is_power_of_two() {
                    tracing::warn!(alert = %rule.cfg.name, dropped_total = dropped, "alert queue full; notifications dropped");
                }
            }
        }
    }

    /// An observer for the emitter.
    pub fn observer(self: &Arc<Self>) -> Observer {
        let engine = self.clone();
        Arc::new(move |e: &Event| {
            // The clock is read only when a rule counts the event; most events match none.
            if engine.rules.load().iter().any(|r| r.matches(e)) {
                engine.observe(e, Instant::now());
            }
        })
    }

    /// Firings dropped because the notifier's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn fires_once_when_the_threshold_is_reached_within_the_window() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.hit(t0, 3, 10 * S, 60 * S), None);
        assert_eq!(w.hit(t0 + S, 3, 10 * S, 60 * S), None);
        assert_eq!(w.hit(t0 + 2 * S, 3, 10 * S, 60 * S), Some(3));
        // Still above the threshold, but in cooldown.
        assert_eq!(w.hit(t0 + 3 * S, 3, 10 * S, 60 * S), None);
    }

    #[test]
    fn hits_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.hit(t0, 3, 10 * S, 60 * S), None);
        assert_eq!(w.hit(t0 + S, 3, 10 * S, 60 * S), None);
        // The first hit slid out of the window (it is (now - 10 s, now]): 2 in it.
        assert_eq!(w.hit(t0 + 10 * S, 3, 10 * S, 60 * S), None);
        // t0 + 1 s, t0 + 10 s and now are all within the last 10 s.
        let now = t0 + 10 * S + Duration::from_millis(500);
        assert_eq!(w.hit(now, 3, 10 * S, 60 * S), Some(3));
    }

    #[test]
    fn fires_again_after_the_cooldown_if_still_above_threshold() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.hit(t0, 1, 10 * S, 5 * S), Some(1));
        assert_eq!(w.hit(t0 + 4 * S, 1, 10 * S, 5 * S), None);
        assert_eq!(w.hit(t0 + 5 * S, 1, 10 * S, 5 * S), Some(1));
    }

    #[test]
    fn the_window_never_holds_more_than_threshold_hits() {
        let t0 = Instant::now();
        let mut w = Window::default();
        for i in 0..1000 {
            w.hit(t0 + Duration::from_millis(i), 5, 10 * S, 3600 * S);
        }
        assert_eq!(w.hits.len(), 5);
    }
}
