//! Replay protection: a verified message is forwarded once. A second request with the same
//! signed message id (or, for schemes without one, the same signature) within the window is
//! refused with `duplicate`, which the client sees as `200 {"status":"duplicate"}` (the sender
//! already delivered it; a non-2xx would make it retry forever).
//!
//! The claim goes through [`State::claim_once`], so several gateway instances sharing a Redis
//! state refuse the duplicate too. Claims are keyed per route by a SHA-256 of the id, so
//! memory per claim is bounded whatever length a sender's ids have. A claimed message whose
//! forwarding then fails (no 2xx from the upstream) is released by the gateway
//! ([`Exchange::replay_claims`]), so the sender's retry is forwarded instead of being called a
//! duplicate of a delivery that never happened. While the first copy is still in flight, a
//! second one is answered `409` with `Retry-After` (`in_flight`): only a settled claim (the
//! upstream answered 2xx, or the message was queued) makes a copy a `duplicate`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::signature::{ReplayId, Verified};
use crate::policy::{Denial, Exchange, Reason};
use crate::state::{Claim, State};

/// Refuses a message accepted before within the window (`duplicate`).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    route: Arc<str>,
    tolerance: Duration,
}

impl ReplayGuard {
    /// Replay protection for `route` with the signature's `tolerance`.
    pub fn new(route: Arc<str>, tolerance: Duration) -> Self {
        ReplayGuard { route, tolerance }
    }

    /// The state key for a message.
    pub fn key(&self, id: &ReplayId) -> String {
        let mut h = Sha256::new();
        match id {
            ReplayId::Message(m) => {
                h.update(b"m:");
                h.update(m.as_bytes());
            }
            ReplayId::Content(s) => {
                h.update(b"s:");
                h.update(s);
            }
        }
        format!(
            "replay:{}:{}",
            self.route,
            URL_SAFE_NO_PAD.encode(h.finalize())
        )
    }

    /// How long a claim must live: as long as the message could still be accepted. With a
    /// timestamp that is until `timestamp + tolerance` (a later copy is refused as stale
    /// anyway); without one, `tolerance` from now.
    pub fn ttl(&self, timestamp: Option<i64>, now: i64) -> Duration {
        // Capped so a state backend can always add it to its clock in nanoseconds.
        const MAX: Duration = Duration::from_secs(u32::MAX as u64);
        let ttl = match timestamp {
            Some(ts) => {
                let tol = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
                let left = ts.saturating_add(tol).saturating_sub(now);
                // One extra second covers the rounding of `now` to whole seconds.
                Duration::from_secs(u64::try_from(left).unwrap_or(0).saturating_add(1))
            }
            None => self.tolerance,
        };
        ttl.min(MAX)
    }

    /// Claims `verified`'s message for this route; refuses a duplicate. A successful claim is
    /// recorded in the exchange so the gateway can release it if forwarding fails.
    pub async fn claim(
        &self,
        ex: &mut Exchange,
        state: &State,
        verified: &Verified,
        now: i64,
    ) -> Result<(), Denial> {
        let key = self.key(&verified.replay_id);
        let ttl = self.ttl(verified.timestamp, now);
        match state.claim_pending(&key, ttl).await {
            Ok(Claim::New) => {
                ex.replay_claims.push((key, ttl));
                Ok(())
            }
            Ok(Claim::Done) => Err(Denial::new(Reason::Duplicate)
                .with_detail("message already accepted within the tolerance window")),
            // The first copy is still being delivered: whether it succeeds is not known yet,
            // so the sender must try again rather than be told it was delivered.
            Ok(Claim::InFlight) => {
                let mut d = Denial::new(Reason::InFlight)
                    .with_detail("the same message is being delivered right now");
                d.retry_after = Some(Duration::from_secs(5));
                Err(d)
            }
            Err(_) => Err(Denial::new(Reason::StateUnavailable)
                .with_detail("replay check: shared state unavailable")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> ReplayGuard {
        ReplayGuard::new("hooks".into(), Duration::from_secs(300))
    }

    #[test]
    fn keys_separate_routes_kinds_and_ids() {
        let g = guard();
        let m = g.key(&ReplayId::Message("msg_1".into()));
        assert!(m.starts_with("replay:hooks:"));
        assert_eq!(m, g.key(&ReplayId::Message("msg_1".into())));
        assert_ne!(m, g.key(&ReplayId::Message("msg_2".into())));
        assert_ne!(m, g.key(&ReplayId::Content(b"msg_1".to_vec())));
        let other = ReplayGuard::new("other".into(), Duration::from_secs(300));
        assert_ne!(m, other.key(&ReplayId::Message("msg_1".into())));
        // Bounded length whatever the id's.
        assert_eq!(g.key(&ReplayId::Message("x".repeat(10_000))).len(), m.len());
    }

    #[test]
    fn ttl_lasts_while_the_message_could_be_accepted() {
        let g = guard();
        assert_eq!(g.ttl(Some(1000), 1000), Duration::from_secs(301));
        assert_eq!(g.ttl(Some(1000), 1300), Duration::from_secs(1));
        // A message stamped in the future stays acceptable longer.
        assert_eq!(g.ttl(Some(1300), 1000), Duration::from_secs(601));
        assert_eq!(g.ttl(None, 1000), Duration::from_secs(300));
        let huge = ReplayGuard::new("h".into(), Duration::from_secs(u64::MAX));
        assert_eq!(huge.ttl(None, 0), Duration::from_secs(u32::MAX as u64));
        assert_eq!(huge.ttl(Some(0), 0), Duration::from_secs(u32::MAX as u64));
    }
}
