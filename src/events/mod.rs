//! Events: one record per request, allowed or denied, fanned out to the sinks.
//!
//! The request path builds an [`Event`] and hands it to the [`Emitter`], which writes the
//! request log line and offers the event to every subscriber over a bounded channel without
//! waiting: a slow sink can never hold up a request.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::policy::Reason;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Passed every guard and was forwarded (whatever the upstream answered).
    Allowed,
    /// Refused by a guard or by routing.
    Denied,
    /// Allowed, but the upstream could not be reached or was too slow.
    Failed,
}

impl Outcome {
    /// The stable code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// Parses a stable code.
    pub fn from_code(code: &str) -> Option<Outcome> {
        [Outcome::Allowed, Outcome::Denied, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == code)
    }
}

/// The longest User-Agent kept in an event.
pub const USER_AGENT_MAX: usize = 200;

/// One request, as the audit log records it. Never holds a secret, a token or a body.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the request's headers arrived.
    pub time: jiff::Timestamp,
    /// The request id (also in the error body and `X-Request-Id`).
    pub request_id: String,
    /// The route, when the path matched one.
    pub route: Option<Arc<str>>,
    /// The client address.
    pub client_ip: IpAddr,
    /// The method.
    pub method: String,
    /// The status sent to the client.
    pub status: u16,
    /// Allowed, denied or failed.
    pub outcome: Outcome,
    /// Why it was denied or failed.
    pub reason: Option<Reason>,
    /// Which step failed, for reasons with several (never a secret).
    pub detail: Option<&'static str>,
    /// Findings that did not decide the outcome: alert-mode mismatches on an allowed request,
    /// or `banned` on the refusal that started a ban.
    pub flags: Vec<Reason>,
    /// The API key that authenticated the request (its id, never the key).
    pub key_id: Option<String>,
    /// The browser session.
    pub session_id: Option<String>,
    /// Time from request headers to response headers.
    pub latency: Duration,
    /// The upstream's status, when it answered.
    pub upstream_status: Option<u16>,
    /// Time the upstream took to send response headers.
    pub upstream_latency: Option<Duration>,
    /// The client's User-Agent, truncated.
    pub user_agent: Option<String>,
}

/// Truncates a User-Agent to [`USER_AGENT_MAX`] characters.
pub fn truncate_user_agent(ua: &str) -> String {
    match ua.char_indices().nth(USER_AGENT_MAX) {
        Some((i, _)) => ua[..i].to_owned(),
        None => ua.to_owned(),
    }
}

/// Fans events out: the request log line, then every subscriber.
#[derive(Debug, Default)]
pub struct Emitter {
    subscribers: Mutex<Vec<Subscriber>>,
}

#[derive(Debug)]
struct Subscriber {
    name: &'static str,
    tx: mpsc::Sender<Arc<Event>>,
}

impl Emitter {
    /// An emitter with no subscribers.
    pub fn new() -> Self {
        Emitter::default()
    }

    /// Adds a subscriber with a queue of `capacity` events. Events that do not fit are not
    /// waited for; the subscriber learns of them through [`Emitter::emit`]'s return.
    pub fn subscribe(&self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity);
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber { name, tx });
        rx
    }

    /// Logs `event` and offers it to every subscriber without waiting.
    pub fn emit(&self, event: Event) {
        log_event(&event);
        let event = Arc::new(event);
        let subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        for s in subs.iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(event.clone()) {
                tracing::debug!(sink = s.name, "event sink is behind; event not queued");
            }
        }
    }
}

fn log_event(e: &Event) {
    let latency_ms = e.latency.as_secs_f64() * 1000.0;
    let route = e.route.as_deref().unwrap_or("-");
    let reason = e.reason.map(Reason::as_str).unwrap_or("-");
    match e.outcome {
        Outcome::Allowed => tracing::info!(
            target: "hookwarden::request",
            request_id = %e.request_id,
            route,
            method = %e.method,
            status = e.status,
            outcome = e.outcome.as_str(),
            latency_ms,
            client_ip = %e.client_ip,
            "request"
        ),
        Outcome::Denied | Outcome::Failed => tracing::warn!(
            target: "hookwarden::request",
            request_id = %e.request_id,
            route,
            method = %e.method,
            status = e.status,
            outcome = e.outcome.as_str(),
            reason,
            detail = e.detail.unwrap_or("-"),
            latency_ms,
            client_ip = %e.client_ip,
            "request"
        ),
    }
}
