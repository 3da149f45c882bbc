//! A route's delivery worker: takes the route's pending messages in arrival order, sends
//! them to the upstream, and records what happened.
//!
//! One task per async route, on the app's background runtime (never a listener thread), with
//! at most `concurrency` attempts in flight. With `concurrency = 1` only the oldest pending
//! message may be tried: while it fails, the messages behind it wait (head-of-line blocking,
//! the price of keeping the order). With more, any due message may go, in arrival order.
//!
//! The worker reads the route from the gateway's current route table before every round, so
//! a reload's new upstream or delivery settings apply to messages already queued; a route
//! that is gone or no longer async stops its worker (its messages stay in the store).

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::forward::body::UpstreamBody;
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body_util::BodyExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::Queue;
use super::backoff::{self, Verdict};
use super::store::{self, AttemptRecord, Change, Due, Stored};
use crate::config::RouteMode;
use crate::events::metrics::Metrics;
use crate::events::{Event, Outcome};
use crate::forward::headers::{X_HOOKWARDEN_ATTEMPT, X_HOOKWARDEN_DELIVERY};
use crate::gateway::Gateway;
use crate::policy::{Reason, RoutePolicy};
use crate::state::gcra::{Gcra, Rate};

/// Pending messages looked at per round (ids and times only; bodies are loaded per attempt).
const FETCH: usize = 256;
/// How often the worker re-reads the table even without news, to see what other processes
/// (`hookwarden queue retry …`) changed.
const REFRESH: Duration = Duration::from_secs(1);
/// Time in-flight attempts get to finish when the worker stops.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Most bytes of an upstream's error answer kept as the message's `last_error`.
const ERROR_SNIPPET: usize = 200;
/// Most bytes of a success answer read (so its connection can be reused); beyond, it is
/// dropped and the connection closed.
const DRAIN_MAX: usize = 64 * 1024;

/// What a worker needs besides its queue.
#[derive(Clone)]
pub(super) struct Deps {
    /// The gateway: current routes and the event emitter. Weak: the gateway holds the queue.
    pub gateway: Weak<Gateway>,
    /// The metrics recorder.
    pub metrics: Arc<Metrics>,
}

/// One attempt, finished.
struct Attempted {
    due: Due,
    /// `None`: the message was no longer pending (dropped or retried meanwhile).
    outcome: Option<AttemptOutcome>,
}

struct AttemptOutcome {
    id: String,
    method: String,
    client_ip: String,
    created_ms: i64,
    status: Option<u16>,
    verdict: Verdict,
    retry_after: Option<Duration>,
    error: Option<String>,
    latency: Duration,
}

/// Runs route `name`'s deliveries until `stop` is set or the route is no longer async.
pub(super) async fn run(
    queue: Queue,
    deps: Deps,
    name: Arc<str>,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut cache: VecDeque<Due> = VecDeque::new();
    let mut stale = true;
    let mut more_beyond = false;
    let mut last_fetch = Instant::now();
    let mut inflight: JoinSet<Attempted> = JoinSet::new();
    let mut inflight_seqs: HashSet<i64> = HashSet::new();
    let clock = Instant::now();
    let mut rate_tat: u64 = 0;
    tracing::debug!(route = %name, "delivery worker started");
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(gateway) = deps.gateway.upgrade() else {
            break;
        };
        let route = gateway.routes().by_name(&name).cloned();
        drop(gateway);
        let Some((route, cfg)) = route.and_then(|r| {
            let cfg = r.delivery.clone()?;
            (r.mode == RouteMode::Async).then_some((r, cfg))
        }) else {
            break;
        };

        if stale || last_fetch.elapsed() >= REFRESH {
            let reader = queue.inner.reader.clone();
            let n = name.clone();
            let limit = FETCH + inflight_seqs.len();
            // In order: the oldest pending messages, due or not (only the head may go). Else
            // the oldest due ones: messages waiting for a retry must not hide due ones.
            let in_order = cfg.concurrency <= 1;
            let now_ms = jiff::Timestamp::now().as_millisecond();
            match tokio::task::spawn_blocking(move || {
                if in_order {
                    store::pending(&reader.lock(), &n, limit)
                } else {
                    store::pending_due(&reader.lock(), &n, now_ms, limit)
                }
            })
            .await
            {
                Ok(Ok(rows)) => {
                    more_beyond = rows.len() == limit;
                    let fetched: HashSet<i64> = rows.iter().map(|d| d.seq).collect();
                    // Out of order, the fetch holds only due messages: keep the ones known to
                    // wait for a retry, so they are woken for at their time.
                    let waiting: Vec<Due> = if in_order {
                        Vec::new()
                    } else {
                        cache
                            .drain(..)
                            .filter(|d| d.next_ms > now_ms && !fetched.contains(&d.seq))
                            .collect()
                    };
                    let mut all: Vec<Due> = rows
                        .into_iter()
                        .chain(waiting)
                        .filter(|d| !inflight_seqs.contains(&d.seq))
                        .collect();
                    all.sort_by_key(|d| d.seq);
                    cache = all.into();
                }
                Ok(Err(e)) => {
                    tracing::warn!(route = %name, error = %e, "queue: cannot read pending messages")
                }
                Err(e) => tracing::warn!(route = %name, error = %e, "queue: read task failed"),
            }
            stale = false;
            last_fetch = Instant::now();
        }

        // Start what may start.
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let mut wake_ms: Option<i64> = None;
        let slots = cfg.concurrency.max(1) as usize;
        while inflight.len() < slots {
            let idx = if slots == 1 {
                // Arrival order: only the oldest pending message may go.
                match cache.front() {
                    Some(d) if d.next_ms <= now_ms => Some(0),
                    Some(d) => {
                        wake_ms = Some(d.next_ms);
                        None
                    }
                    None => None,
                }
            } else {
                let due = cache.iter().position(|d| d.next_ms <= now_ms);
                if due.is_none() {
                    wake_ms = cache.iter().map(|d| d.next_ms).min();
                }
                due
            };
            let Some(idx) = idx else { break };
            if let Some((count, period)) = cfg.rate {
                let rate = Rate::new(count, period, 1);
                let now_ns = clock.elapsed().as_nanos() as u64;
                let (decision, tat) = Gcra::decide(rate, rate_tat, now_ns);
                if !decision.allowed {
                    let after = decision.retry_after.as_millis() as i64 + 1;
                    wake_ms = Some(now_ms + after);
                    break;
                }
                rate_tat = tat;
            }
            let Some(due) = cache.remove(idx) else { break };
            inflight_seqs.insert(due.seq);
            let reader = queue.inner.reader.clone();
            inflight.spawn(attempt(route.clone(), reader, due));
        }
        if cache.is_empty() && more_beyond && inflight.len() < slots {
            stale = true;
        }

        let wake = wake_ms
            .map(|ms| {
                let d = ms.saturating_sub(jiff::Timestamp::now().as_millisecond());
                Duration::from_millis(d.max(0) as u64)
            })
            .unwrap_or(REFRESH)
            .min(REFRESH.saturating_sub(last_fetch.elapsed()));
        tokio::select! {
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                match done {
                    Ok(a) => {
                        inflight_seqs.remove(&a.due.seq);
                        if let Some(next) = finish(&queue, &deps, &route, &cfg, a).await {
                            let pos = cache.partition_point(|d| d.seq < next.seq);
                            cache.insert(pos, next);
                        }
                    }
                    Err(e) => {
                        // A panicked attempt: forget what was in flight and re-read the table.
                        tracing::error!(route = %name, error = %e, "queue: delivery attempt failed");
                        inflight_seqs.clear();
                        inflight.abort_all();
                        stale = true;
                    }
                }
            }
            () = notify.notified() => stale = true,
            () = tokio::time::sleep(wake) => {}
            _ = stop.changed() => {}
        }
    }
    // Let attempts in flight finish and record their results, for a little while: an attempt
    // cut short leaves its message pending, to be delivered again after the restart.
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while !inflight.is_empty() {
        match tokio::time::timeout_at(deadline, inflight.join_next()).await {
            Ok(Some(Ok(a))) => {
                if let Some(route) = deps
                    .gateway
                    .upgrade()
                    .and_then(|g| g.routes().by_name(&name).cloned())
                    && let Some(cfg) = route.delivery.clone()
                {
                    finish(&queue, &deps, &route, &cfg, a).await;
                }
            }
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    inflight.abort_all();
    tracing::debug!(route = %name, "delivery worker stopped");
}

/// Records an attempt's result; returns the message again when it is to be retried.
async fn finish(
    queue: &Queue,
    deps: &Deps,
    route: &RoutePolicy,
    cfg: &crate::config::DeliveryConfig,
    a: Attempted,
) -> Option<Due> {
    let o = a.outcome?;
    let attempts = a.due.attempts.saturating_add(1);
    let now = jiff::Timestamp::now();
    let now_ms = now.as_millisecond();
    let (change, label) = match o.verdict {
        Verdict::Delivered => (
            Change::Delivered {
                keep: !cfg.keep_delivered.is_zero(),
            },
            "delivered",
        ),
        Verdict::Permanent => (Change::Dead, "dead"),
        Verdict::Retry if attempts >= cfg.attempts => (Change::Dead, "dead"),
        Verdict::Retry => {
            let wait = backoff::delay(cfg, attempts, o.retry_after, jitter());
            let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            let next_ms = now_ms.saturating_add(wait_ms);
            (Change::Retry { next_ms }, "retry")
        }
    };
    let record = AttemptRecord {
        seq: a.due.seq,
        attempts,
        at_ms: now_ms,
        status: o.status,
        error: o.error.clone(),
        change: change.clone(),
    };
    let applied = match queue.record(route.name.clone(), record).await {
        Ok(applied) => applied,
        Err(e) => {
            // Not recorded: the message stays as it was and is tried again.
            tracing::error!(route = %route.name, id = %o.id, error = %e, "queue: cannot record a delivery attempt");
            return Some(Due {
                next_ms: now_ms + 1000,
                ..a.due
            });
        }
    };
    if !applied {
        return None;
    }
    deps.metrics.delivery(&route.name, label);
    match change {
        Change::Delivered { .. } => {
            deps.metrics
                .delivery_finished(&route.name, "delivered", attempts);
            tracing::debug!(route = %route.name, id = %o.id, attempts, "delivered");
            None
        }
        Change::Retry { next_ms } => {
            tracing::info!(
                route = %route.name,
                id = %o.id,
                attempts,
                status = o.status.unwrap_or(0),
                error = o.error.as_deref().unwrap_or("-"),
                retry_in_ms = next_ms - now_ms,
                "delivery failed; will retry"
            );
            Some(Due {
                seq: a.due.seq,
                attempts,
                next_ms,
            })
        }
        Change::Dead => {
            deps.metrics
                .delivery_finished(&route.name, "dead", attempts);
            let detail = match o.verdict {
                Verdict::Permanent => "upstream refused the message",
                _ => "attempts exhausted",
            };
            tracing::warn!(
                route = %route.name,
                id = %o.id,
                attempts,
                status = o.status.unwrap_or(0),
                error = o.error.as_deref().unwrap_or("-"),
                "delivery failed for good; message dead-lettered"
            );
            if let Some(gateway) = deps.gateway.upgrade() {
                let created = jiff::Timestamp::from_millisecond(o.created_ms).unwrap_or(now);
                let latency = Duration::try_from(now.duration_since(created)).unwrap_or_default();
                gateway.events().emit(Event {
                    time: now,
                    request_id: o.id,
                    route: Some(route.name.clone()),
                    client_ip: o.client_ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    method: o.method.into(),
                    status: Reason::DeliveryFailed.status().as_u16(),
                    outcome: Outcome::Failed,
                    reason: Some(Reason::DeliveryFailed),
                    detail: Some(detail),
                    flags: Vec::new(),
                    key_id: None,
                    session_id: None,
                    latency,
                    upstream_status: o.status,
                    upstream_latency: Some(o.latency),
                    user_agent: None,
                });
            }
            None
        }
    }
}

/// A number in `[0, 1)` for the backoff's jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    // Without randomness the backoff is still correct, only not spread.
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// One delivery attempt of message `due`.
async fn attempt(route: Arc<RoutePolicy>, reader: crate::store::Store, due: Due) -> Attempted {
    let seq = due.seq;
    let loaded =
        tokio::task::spawn_blocking(move || store::load_pending(&reader.lock(), seq)).await;
    let m: Stored = match loaded {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return Attempted { due, outcome: None },
        Ok(Err(e)) => {
            // Not an attempt: the message stays as it is and is tried on a later round.
            tracing::error!(route = %route.name, error = %e, "queue: cannot read a message");
            return Attempted { due, outcome: None };
        }
        Err(e) => {
            tracing::error!(route = %route.name, error = %e, "queue: read task failed");
            return Attempted { due, outcome: None };
        }
    };
    let attempt_no = due.attempts.saturating_add(1);
    let mut headers = m.headers;
    if let Ok(v) = HeaderValue::from_str(&m.id) {
        headers.insert(X_HOOKWARDEN_DELIVERY, v);
    }
    headers.insert(X_HOOKWARDEN_ATTEMPT, HeaderValue::from(attempt_no));
    let method = Method::from_bytes(m.method.as_bytes()).unwrap_or(Method::POST);
    let req = route
        .upstream
        .build_request(method, m.query.as_deref(), headers, m.body, &m.id);
    let started = Instant::now();
    let sent = route.upstream.send(req).await;
    let latency = started.elapsed();
    let mut o = AttemptOutcome {
        id: m.id,
        method: m.method,
        client_ip: m.client_ip,
        created_ms: m.created_ms,
        status: None,
        verdict: Verdict::Retry,
        retry_after: None,
        error: None,
        latency,
    };
    match sent {
        Ok(resp) => {
            let status = resp.status();
            o.status = Some(status.as_u16());
            o.verdict = backoff::classify(status.as_u16());
            o.retry_after = backoff::retry_after(resp.headers(), jiff::Timestamp::now());
            let body = resp.into_body();
            if o.verdict == Verdict::Delivered {
                read_some(
                    body,
                    DRAIN_MAX,
                    route.upstream.idle_timeout.min(Duration::from_secs(5)),
                )
                .await;
            } else {
                // Read past the part kept, so a secret that straddles its end is still
                // recognised whole.
                let snippet = read_some(body, 2 * ERROR_SNIPPET, Duration::from_secs(2)).await;
                let secrets = route.upstream.secret_parts();
                o.error = Some(describe_status(status, &snippet, secrets));
            }
        }
        // Connection errors, broken exchanges and timeouts are all worth another attempt.
        Err(e) => o.error = Some(e.to_string()),
    }
    Attempted {
        due,
        outcome: Some(o),
    }
}

/// Reads at most `max` bytes of `body` within `within`.
async fn read_some(mut body: UpstreamBody, max: usize, within: Duration) -> Bytes {
    let mut out = Vec::new();
    let read = async {
        while out.len() < max {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    out.truncate(max);
    Bytes::from(out)
}

/// `HTTP 503 Service Unavailable: <the start of the answer>`, printable characters only, with
/// every one of `secrets` (and a start of one at the end) replaced by `[redacted]`: automation
/// platforms name the webhook's URL in their error pages ("The requested webhook … is not
/// registered"), and this text is logged, stored and shown by `queue list` and the admin API.
fn describe_status(status: http::StatusCode, body: &[u8], secrets: &[String]) -> String {
    let mut s = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        s.push(' ');
        s.push_str(reason);
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
    }
    // A body cut where reading stopped may end with a secret's first characters. (One read
    // whole ends where the upstream ended it.)
    if body.len() >= 2 * ERROR_SNIPPET {
        for secret in secrets {
            let partial = (crate::forward::MIN_SECRET_CHARS..secret.len())
                .rev()
                .filter(|&k| secret.is_char_boundary(k))
                .find(|&k| text.ends_with(&secret[..k]));
            if let Some(k) = partial {
                text.truncate(text.len() - k);
                text.push_str(REDACTED);
            }
        }
    }
    let text: String = text.chars().take(ERROR_SNIPPET).collect();
    if !text.is_empty() {
        s.push_str(": ");
        s.push_str(&text);
    }
    s
}

const REDACTED: &str = "[redacted]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_descriptions_are_short_and_printable() {
        assert_eq!(
            describe_status(
                http::StatusCode::BAD_REQUEST,
                b"{\"error\":\n\"bad\"}\r\n",
                &[]
            ),
            "HTTP 400 Bad Request: {\"error\": \"bad\"}"
        );
        assert_eq!(
            describe_status(http::StatusCode::SERVICE_UNAVAILABLE, b"", &[]),
            "HTTP 503 Service Unavailable"
        );
        let long = vec![b'a'; 1000];
        assert_eq!(
            describe_status(http::StatusCode::BAD_REQUEST, &long, &[]).len(),
            "HTTP 400 Bad Request: ".len() + ERROR_SNIPPET
        );
    }

    /// The secret parts of the upstream of the one route in config `text`.
    fn secret_parts_of(text: &str) -> Vec<String> {
        let loaded = crate::config::load_str(text, "t", std::path::Path::new("."), &|_| None)
            .expect("config loads");
        let client = crate::forward::UpstreamClient::new(None, Duration::from_secs(1)).unwrap();
        crate::forward::Upstream::new(&loaded.config.routes[0].upstream, client)
            .secret_parts()
            .to_vec()
    }

    /// n8n's answer for a workflow that is not active names the webhook's path: the path,
    /// its id segment, query values and injected header values never reach the stored text,
    /// not even the start of one where the body was cut.
    #[test]
    fn upstream_secrets_are_redacted_from_error_texts() {
        let text = "[[route]]\nname = \"a\"\npath = \"/a\"\n[route.upstream]\nurl = \"https://n8n.example.com/webhook/3f1c-SEKRIT-webhook-id?tok=SEKRIT%2Dquery&x=1\"\nheaders = { \"X-Auth\" = \"SEKRIT-header-value\" }\n";
        let secrets = &secret_parts_of(text);
        let n8n = br#"{"code":404,"message":"The requested webhook \"POST 3f1c-SEKRIT-webhook-id\" is not registered.","hint":"echo tok=SEKRIT-query SEKRIT-header-value"}"#;
        let got = describe_status(http::StatusCode::NOT_FOUND, n8n, secrets);
        assert!(!got.contains("SEKRIT"), "{got}");
        assert!(
            got.contains("webhook \\\"POST [redacted]\\\" is not registered"),
            "{got}"
        );
        // Cut, where reading stopped, after the secret's first characters (the spaces
        // between shrink to one).
        let mut cut = b"webhook".to_vec();
        cut.resize(2 * ERROR_SNIPPET - 9, b' ');
        cut.extend_from_slice(b"3f1c-SEKR");
        let got = describe_status(http::StatusCode::NOT_FOUND, &cut, secrets);
        assert_eq!(got, "HTTP 404 Not Found: webhook [redacted]");
        // The same end on a body read whole is the upstream's own text, and stays.
        let whole = describe_status(http::StatusCode::NOT_FOUND, b"id 3f1c-SEKR", secrets);
        assert_eq!(whole, "HTTP 404 Not Found: id 3f1c-SEKR");
        // Short parts stay: they are not what makes the URL secret.
        assert!(
            secrets
                .iter()
                .all(|s| s.len() >= crate::forward::MIN_SECRET_CHARS),
            "{secrets:?}"
        );
        assert!(!secrets.iter().any(|s| s == "webhook"), "{secrets:?}");
    }

    /// An injected credential is secret in the spellings encoders give it (Go's JSON, an HTML
    /// page, a percent-encoded URL); a descriptive injected value such as a content type is
    /// not, unless it looks secret.
    #[test]
    fn injected_credentials_are_redacted_in_every_spelling_and_descriptions_are_not() {
        let text = "[[route]]\nname = \"a\"\npath = \"/a\"\n[route.upstream]\nurl = \"https://up.example.com/hook\"\nheaders = { \"X-Token\" = \"tok<&>en/secret\", \"Content-Type\" = \"application/json\" }\n";
        let secrets = &secret_parts_of(text);
        for spelled in [
            "tok<&>en/secret",
            r"tok\u003c\u0026\u003een/secret",
            r"tok<&>en\/secret",
            "tok&lt;&amp;&gt;en/secret",
            "tok%3C%26%3Een%2Fsecret",
        ] {
            let body = format!("expected application/json, got {spelled} in x-token");
            let got = describe_status(http::StatusCode::BAD_REQUEST, body.as_bytes(), secrets);
            assert_eq!(
                got, "HTTP 400 Bad Request: expected application/json, got [redacted] in x-token",
                "{spelled}"
            );
        }
    }

    #[test]
    fn jitter_is_in_the_unit_interval() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
