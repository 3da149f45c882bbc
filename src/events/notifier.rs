//! Alert delivery: POST the notification to the rule's `url`, retry with exponential backoff,
//! record the outcome.
//!
//! Every firing is delivered in its own task, so one slow receiver never delays another
//! rule's alert, and nothing here is on the request path. A delivery is retried on connection
//! failures, timeouts, 429 and 5xx answers (a 4xx other than 429 will not get better and ends
//! it). Whatever the result, one row goes into the store's `alerts` table (`sent` or
//! `failed`, the attempts made, the last status) and one log line is written. Neither ever
//! contains the URL: webhook URLs carry their token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::alerts::Firing;
use super::metrics::Metrics;
use crate::config::{AlertFormat, AlertMatch};
use crate::forward::{ForwardError, UpstreamClient};
use crate::policy::Reason;
use crate::store::Store;
use crate::store::events::{AlertRecord, record_alert};

/// Time a receiver has to answer one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts the notifier: delivers every firing from `rx`.
pub fn start(
    mut rx: mpsc::Receiver<Firing>,
    client: UpstreamClient,
    store: Store,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    // Deliveries run side by side, but at most MAX_DELIVERIES at once: each may hold a socket
    // for minutes (attempts, timeouts, backoff), and a rule with no cooldown against a receiver
    // that never answers must not take the file descriptors clients and upstreams need. While
    // all are busy, firings wait in the channel, and the emitter drops (and counts) what does
    // not fit there.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_DELIVERIES));
    tokio::spawn(async move {
        while let Some(firing) = rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let client = client.clone();
            let store = store.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                deliver(firing, &client, store, &metrics).await;
                drop(slot);
            });
        }
    })
}

/// Alert deliveries in progress at most.
pub const MAX_DELIVERIES: usize = 16;

async fn deliver(firing: Firing, client: &UpstreamClient, store: Store, metrics: &Metrics) {
    let rule = &firing.rule;
    let body = Bytes::from(payload(&firing));
    let mut attempts = 0u32;
    let mut http_status = None;
    let mut error = None;
    let mut sent = false;
    while attempts < rule.attempts {
        if attempts > 0 {
            tokio::time::sleep(backoff(rule.backoff, attempts)).await;
        }
        attempts += 1;
        let req = Request::builder()
            .method(Method::POST)
            .uri(rule.url.expose())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("hookwarden/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()));
        let Ok(req) = req else {
            error = Some("the URL cannot be requested".to_owned());
            break;
        };
        match client.send(req, ATTEMPT_TIMEOUT).await {
            Ok(resp) => {
                let status = resp.status();
                http_status = Some(status.as_u16());
                if status.is_success() {
                    sent = true;
                    error = None;
                    break;
                }
                error = Some(format!("the receiver answered {}", status.as_u16()));
                if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
            }
            Err(e) => {
                http_status = None;
                error = Some(
                    match e {
                        ForwardError::Connect(_) => "cannot connect to the receiver",
                        ForwardError::Timeout(_) => "the receiver did not answer in time",
                        ForwardError::Broken(_) => "the receiver broke the exchange",
                    }
                    .to_owned(),
                );
            }
        }
    }
    let result = if sent { "sent" } else { "failed" };
    metrics.alert(&rule.name, result);
    if sent {
        tracing::info!(alert = %rule.name, matched = firing.matched, attempts, "alert sent");
    } else {
        tracing::warn!(
            alert = %rule.name,
            matched = firing.matched,
            attempts,
            error = error.as_deref().unwrap_or("-"),
            "alert could not be delivered"
        );
    }
    let record = AlertRecord {
        time: firing.time.to_string(),
        name: rule.name.clone(),
        matched: i64::from(firing.matched),
        threshold: i64::from(rule.threshold),
        window_seconds: rule.window.as_secs() as i64,
        route: rule.route.clone(),
        result: result.to_owned(),
        attempts: i64::from(attempts),
        http_status,
        error,
    };
    let time_ms = firing.time.as_millisecond();
    let saved =
        tokio::task::spawn_blocking(move || record_alert(&store.lock(), &record, time_ms)).await;
    if !matches!(saved, Ok(Ok(()))) {
        tracing::error!(alert = %rule.name, "cannot record the alert in the store");
    }
}

/// The wait before attempt `done + 1`: `base` doubled per attempt made, plus up to 20 %
/// jitter so that several gateways do not retry in step.
pub fn backoff(base: Duration, done: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << (done - 1).min(16));
    let capped = exp.min(MAX_BACKOFF);
    let mut b = [0u8; 2];
    let jitter = if getrandom::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 0.2
    } else {
        0.0
    };
    capped.mul_f64(1.0 + jitter)
}

/// The notification body in the rule's format.
pub fn payload(f: &Firing) -> String {
    let rule = &f.rule;
    let text = summary(f);
    match rule.format {
        AlertFormat::Slack => json!({ "text": text }).to_string(),
        AlertFormat::Json => {
            let (reasons, outcome) = match &rule.matches {
                AlertMatch::Reasons(rs) => (
                    Some(rs.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
                    None,
                ),
                AlertMatch::Outcome(o) => (None, Some(o.as_str())),
            };
            json!({
                "alert": rule.name,
                "text": text,
                "time": f.time.to_string(),
                "matched": f.matched,
                "threshold": rule.threshold,
                "window_seconds": rule.window.as_secs(),
                "route": rule.route,
                "reasons": reasons,
                "outcome": outcome,
                "latest": {
                    "request_id": f.latest.request_id,
                    "route": f.latest.route,
                    "client_ip": f.latest.client_ip.to_string(),
                    "reason": f.latest.reason.map(Reason::as_str),
                    "key_id": f.latest.key_id,
                },
            })
            .to_string()
        }
    }
}

/// One line a person reads in a chat channel.
pub fn summary(f: &Firing) -> String {
    let rule = &f.rule;
    let what = match &rule.matches {
        AlertMatch::Reasons(rs) => rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        AlertMatch::Outcome(o) => format!("outcome {}", o.as_str()),
    };
    let route = match &rule.route {
        Some(r) => format!(" on route {r}"),
        None => String::new(),
    };
    let latest = &f.latest;
    let mut s = format!(
        "hookwarden alert \"{}\": {} requests ({what}){route} within {}. Latest: {} from {}",
        rule.name,
        f.matched,
        human(rule.window),
        latest.reason.map(Reason::as_str).unwrap_or("allowed"),
        latest.client_ip,
    );
    if let Some(k) = &latest.key_id {
        s.push_str(&format!(" with key {k}"));
    }
    if let Some(r) = &latest.route {
        s.push_str(&format!(" on {r}"));
    }
    s.push_str(&format!(" (request {}).", latest.request_id));
    s
}

/// `300s` → `5m`, `5400s` → `1h30m`.
pub fn human(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertConfig;
    use crate::events::alerts::Sample;
    use crate::secret::Secret;

    fn firing(format: AlertFormat) -> Firing {
        Firing {
            rule: Arc::new(AlertConfig {
                name: "bad-keys".into(),
                matches: AlertMatch::Reasons(vec![Reason::KeyInvalid, Reason::SignatureInvalid]),
                route: Some("chat".into()),
                threshold: 20,
                window: Duration::from_secs(300),
                cooldown: Duration::from_secs(900),
                url: Secret::new("https://hooks.slack.com/services/T000/B000/XXXX"),
                format,
                attempts: 3,
                backoff: Duration::from_secs(1),
            }),
            matched: 20,
            time: "2025-01-02T03:04:05Z".parse().unwrap(),
            latest: Sample {
                request_id: "0193abc".into(),
                route: Some("chat".into()),
                client_ip: "203.0.113.9".parse().unwrap(),
                reason: Some(Reason::KeyInvalid),
                key_id: None,
            },
        }
    }

    #[test]
    fn slack_format_is_a_text_object_only() {
        let v: serde_json::Value =
            serde_json::from_str(&payload(&firing(AlertFormat::Slack))).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 1);
        assert_eq!(
            obj["text"],
            "hookwarden alert \"bad-keys\": 20 requests (key_invalid, signature_invalid) on route chat within 5m. Latest: key_invalid from 203.0.113.9 on chat (request 0193abc)."
        );
    }

    #[test]
    fn json_format_carries_the_rule_and_the_latest_event_but_not_the_url() {
        let text = payload(&firing(AlertFormat::Json));
        assert!(!text.contains("hooks.slack.com"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["alert"], "bad-keys");
        assert_eq!(v["matched"], 20);
        assert_eq!(v["window_seconds"], 300);
        assert_eq!(v["reasons"], json!(["key_invalid", "signature_invalid"]));
        assert_eq!(v["outcome"], serde_json::Value::Null);
        assert_eq!(v["latest"]["client_ip"], "203.0.113.9");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_secs(1);
        let first = backoff(b, 1);
        assert!(first >= b && first <= b.mul_f64(1.2), "{first:?}");
        let third = backoff(b, 3);
        assert!(third >= 4 * b && third <= (4 * b).mul_f64(1.2), "{third:?}");
        assert!(backoff(b, 30) <= MAX_BACKOFF.mul_f64(1.2));
    }

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
