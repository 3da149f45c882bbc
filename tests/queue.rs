//! Durable async delivery (`mode = "async"`), over real sockets: an upstream that is down and
//! comes back, `Retry-After`, permanent refusals and dead letters (with their event, alert,
//! metrics and admin API), the queue cap, a 10,000-message burst, sync routes unaffected by a
//! hanging async upstream, replay claims kept on 202, no secret in the queue, `hookwarden
//! queue`, reloads, and a gateway killed with SIGKILL right after its 202.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookwarden::config::{Provider, SignatureConfig};
use hookwarden::policy::Reason;
use hookwarden::policy::guards::signature::{SignInput, SignedRequest, Verifier, sign};
use hookwarden::secret::Secret;
use http_body_util::Full;

/// An async route to `upstream` (a base URL) with short backoffs, plus `extra` route keys.
fn async_config(upstream: &str, delivery: &str, extra: &str) -> String {
    format!(
        r#"
[[route]]
name = "hooks"
path = "/hooks"
mode = "async"
{extra}
[route.upstream]
url = "{upstream}/in"
[route.delivery]
backoff = "50ms"
max_backoff = "200ms"
{delivery}
"#
    )
}

/// Posts `body` and asserts the 202 answer; returns the message id.
async fn queue_one(url: &str, body: &str) -> String {
    let got = send(post_json(url, body)).await;
    assert_eq!(got.status, 202, "{}", got.text());
    let j = got.json();
    assert_eq!(j["status"], "queued", "{j}");
    let id = j["id"].as_str().expect("id").to_owned();
    assert_eq!(got.header("x-request-id"), Some(id.as_str()));
    assert_eq!(got.header("content-type"), Some("application/json"));
    id
}

fn header<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn upstream_down_then_up_delivers_every_message_once_in_arrival_order() {
    let addr = down_addr();
    let base = format!("http://{addr}");
    let mut gw = Gateway::start_observed(
        &async_config(&base, "attempts = 1000", ""),
        &Upstream::start().await,
    )
    .await;
    let url = gw.gw.url("/hooks");
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(queue_one(&url, &format!(r#"{{"n":{n}}}"#)).await);
    }
    let ev = gw.event_for(&ids[0]).await;
    assert_eq!(ev.status, 202);
    assert_eq!(ev.outcome, hookwarden::events::Outcome::Allowed);
    let queue = gw.core.queue().unwrap().clone();
    assert_eq!(queue.pending("hooks"), 30);
    // The upstream is down for a while: the head message is retried, the others wait.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let up = addr.start(vec![Reply::status(200)]).await;
    let got = up.wait_for(30, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(5), "queue drained", || {
        let q = queue.clone();
        async move { q.pending("hooks") == 0 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = up.requests();
    assert_eq!(got_after.len(), 30, "a message was delivered twice");
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let expected: Vec<String> = (0..30).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    assert_eq!(bodies, expected, "not in arrival order");
    let delivered: Vec<&str> = got
        .iter()
        .map(|r| header(r, "x-hookwarden-delivery"))
        .collect();
    assert_eq!(
        delivered,
        ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for r in &got {
        assert_eq!(
            header(r, "x-request-id"),
            header(r, "x-hookwarden-delivery")
        );
        assert_eq!(r.path, "/in");
        assert_eq!(r.method, "POST");
        assert_eq!(header(r, "content-type"), "application/json");
        assert_eq!(header(r, "x-forwarded-for"), "127.0.0.1");
    }
    // The first message had failed attempts before the upstream came up; later ones did not.
    assert!(
        header(&got[0], "x-hookwarden-attempt")
            .parse::<u32>()
            .unwrap()
            >= 2
    );
    assert_eq!(header(&got[29], "x-hookwarden-attempt"), "1");
    gw.gw.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_every_attempt_carries_the_same_ids_and_a_valid_signature() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let up = Scripted::start(vec![
        Reply::status(503).header("retry-after", "1"),
        Reply::status(429).header("retry-after", "1"),
        Reply::status(204),
    ])
    .await;
    let cfg = format!(
        r#"
[[route]]
name = "hooks"
path = "/hooks"
mode = "async"
[route.upstream]
url = "{}/in"
sign = {{ scheme = "standard", secret = "{secret}" }}
[route.delivery]
backoff = "10ms"
max_backoff = "20ms"
"#,
        up.base()
    );
    let gw = Gateway::start(&cfg, &Upstream::start().await).await;
    let id = queue_one(&gw.url("/hooks"), r#"{"pay":1}"#).await;
    let got = up.wait_for(3, Duration::from_secs(10)).await;
    let times = up.times();
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        // The backoff alone would be 10-20 ms: the upstream's Retry-After: 1 wins.
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }
    let verifier = Verifier::new(&SignatureConfig {
        provider: Provider::Standard,
        secrets: vec![Secret::new(secret)],
        tolerance: Duration::from_secs(300),
        replay: false,
    });
    for (n, r) in got.iter().enumerate() {
        assert_eq!(header(r, "x-hookwarden-delivery"), id);
        assert_eq!(header(r, "x-request-id"), id);
        assert_eq!(header(r, "x-hookwarden-attempt"), (n + 1).to_string());
        assert_eq!(header(r, "webhook-id"), format!("msg_{id}"));
        let req = SignedRequest {
            headers: &r.headers,
            body: &r.body,
            path: "/in",
            query: None,
        };
        assert!(
            verifier
                .verify(&req, jiff::Timestamp::now().as_second())
                .is_ok(),
            "attempt {} is not signed correctly",
            n + 1
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 3, "delivered again after a 2xx");
    gw.stop().await;
}

const ALERT_AND_ADMIN: &str = r#"
[admin]
listen = "127.0.0.1:0"
token = "test-admin-token-0123456789abcdef"
"#;

#[tokio::test]
async fn a_permanent_refusal_is_dead_lettered_with_an_event_an_alert_metrics_and_admin_operations()
{
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[200], Duration::ZERO).await;
    let cfg = format!(
        r#"
{ALERT_AND_ADMIN}
[[alert]]
name = "lost-deliveries"
reasons = ["delivery_failed"]
threshold = 1
url = "{}"

[[route]]
name = "hooks"
path = "/hooks"
mode = "async"
[route.upstream]
url = "{{upstream}}/status/400"
[route.delivery]
backoff = "10ms"
"#,
        receiver.url("/alert")
    );
    let (gw, admin) = start_with_admin(&cfg, &up, &|_| None).await;
    let id = queue_one(&gw.url("/hooks"), r#"{"bad":true}"#).await;

    // The audit log gets the dead letter's event, under the message's id.
    let events = wait_events(admin, "reason=delivery_failed", |e| !e.is_empty()).await;
    let ev = &events[0];
    assert_eq!(ev["request_id"], id.as_str());
    assert_eq!(ev["outcome"], "failed");
    assert_eq!(ev["route"], "hooks");
    assert_eq!(ev["upstream_status"], 400);
    assert_eq!(ev["detail"], "upstream refused the message");
    // A 4xx is not retried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 1);
    // The alert rule matched it.
    let alerts = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(alerts.len(), 1);
    let alert: serde_json::Value = serde_json::from_slice(&alerts[0].body).unwrap();
    assert_eq!(alert["alert"], "lost-deliveries");
    assert_eq!(alert["latest"]["reason"], "delivery_failed");

    // A limit of 0 is a mistake, as for /api/events.
    let zero = admin_get(admin, "/api/queue?limit=0", Some(ADMIN_TOKEN)).await;
    assert_eq!(zero.status, 400, "{}", zero.text());
    assert!(zero.text().contains("limit must be 1 or more"));
    // One over any page is read as a page, however large.
    let huge = admin_get(
        admin,
        "/api/queue?state=dead&limit=999999999999999999999999",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(huge.status, 200, "{}", huge.text());
    assert_eq!(huge.json()["messages"].as_array().unwrap().len(), 1);
    // The admin API lists it with its last error; never its headers or body.
    let got = admin_get(admin, "/api/queue?state=dead", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let j = got.json();
    assert_eq!(j["summary"][0]["route"], "hooks");
    assert_eq!(j["summary"][0]["dead"], 1);
    assert_eq!(j["summary"][0]["pending"], 0);
    let m = &j["messages"][0];
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["state"], "dead");
    assert_eq!(m["attempts"], 1);
    assert_eq!(m["last_status"], 400);
    assert_eq!(m["last_error"], r#"HTTP 400 Bad Request: {"ok":true}"#);
    assert_eq!(m["size"], 12);
    assert!(!got.text().contains("bad\":true"), "the body is shown");

    // Metrics: depth by state, deliveries by outcome, the attempts histogram.
    let metrics = admin_get(admin, "/metrics", Some(ADMIN_TOKEN)).await.text();
    for line in [
        r#"hookwarden_queue_depth{route="hooks",state="dead"} 1"#,
        r#"hookwarden_queue_depth{route="hooks",state="pending"} 0"#,
        r#"hookwarden_deliveries_total{route="hooks",outcome="dead"} 1"#,
        r#"hookwarden_delivery_attempts_bucket{route="hooks",outcome="dead",le="1"} 1"#,
        r#"hookwarden_queue_oldest_age_seconds{route="hooks"} 0"#,
        r#"hookwarden_requests_total{route="hooks",outcome="failed",reason="delivery_failed"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }
    let routes = admin_get(admin, "/api/routes", Some(ADMIN_TOKEN))
        .await
        .json();
    assert_eq!(routes["routes"][0]["mode"], "async");
    assert_eq!(routes["routes"][0]["delivery"]["attempts"], 12);

    // Retry: delivered again (and refused again).
    let got = admin_call(
        admin,
        "POST",
        &format!("/api/queue/{id}/retry"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["was"], "dead");
    eventually(Duration::from_secs(5), "second attempt", || async {
        up.count() == 2
    })
    .await;
    let m = &admin_get(admin, "/api/queue?state=dead", Some(ADMIN_TOKEN))
        .await
        .json()["messages"][0];
    assert_eq!(m["attempts"], 1, "attempts were not reset");
    // Retry every dead letter of the route.
    let got = admin_call(
        admin,
        "POST",
        "/api/queue/retry?route=hooks",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(got.json()["retried"], 1);
    eventually(Duration::from_secs(5), "third attempt", || async {
        up.count() == 3
    })
    .await;
    let got = admin_call(admin, "POST", "/api/queue/retry", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 400);

    // Without the token: 401, and nothing changes.
    let got = admin_call(admin, "DELETE", &format!("/api/queue/{id}"), None).await;
    assert_eq!(got.status, 401);
    let got = admin_call(admin, "POST", &format!("/api/queue/{id}/retry"), None).await;
    assert_eq!(got.status, 401);
    // Drop.
    eventually(Duration::from_secs(5), "dead again", || async {
        admin_get(admin, "/api/queue?state=dead", Some(ADMIN_TOKEN))
            .await
            .json()["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    })
    .await;
    let got = admin_call(
        admin,
        "DELETE",
        &format!("/api/queue/{id}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["was"], "dead");
    let got = admin_call(
        admin,
        "DELETE",
        &format!("/api/queue/{id}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(got.status, 404);
    let got = admin_call(
        admin,
        "POST",
        &format!("/api/queue/{id}/retry"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(got.status, 404);
    let j = admin_get(admin, "/api/queue", Some(ADMIN_TOKEN))
        .await
        .json();
    assert_eq!(j["messages"].as_array().unwrap().len(), 0);
    assert_eq!(j["summary"][0]["dead"], 0);
    let got = admin_get(admin, "/api/queue?state=lost", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 400);
    // A malformed number gets the API's JSON error too, not the framework's plain text.
    let got = admin_get(admin, "/api/queue?limit=abc", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 400);
    let j = got.json();
    assert_eq!(j["error"], "bad_request");
    assert!(
        j["message"].as_str().unwrap().contains("whole numbers"),
        "{j}"
    );
    assert_eq!(up.count(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn exhausted_attempts_dead_letter_the_message_after_exactly_attempts_tries() {
    let up = Scripted::start(vec![Reply::status(500)]).await;
    let (gw, events) = Gateway::start_with_events(
        &async_config(&up.base(), "attempts = 3", ""),
        &Upstream::start().await,
        &|_| None,
    )
    .await;
    let id = queue_one(&gw.url("/hooks"), "{}").await;
    eventually(Duration::from_secs(10), "dead-letter event", || {
        let events = events.clone();
        let id = id.clone();
        async move {
            events
                .all()
                .iter()
                .any(|e| e.request_id == id && e.reason == Some(Reason::DeliveryFailed))
        }
    })
    .await;
    let ev = events
        .all()
        .into_iter()
        .find(|e| e.reason == Some(Reason::DeliveryFailed))
        .unwrap();
    assert_eq!(ev.detail, Some("attempts exhausted"));
    assert_eq!(ev.upstream_status, Some(500));
    assert_eq!(ev.client_ip.to_string(), "127.0.0.1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn beyond_max_queued_the_gateway_answers_503_queue_full_and_keeps_what_it_took() {
    let addr = down_addr();
    let gw = Gateway::start(
        &async_config(&format!("http://{addr}"), "max_queued = 3", ""),
        &Upstream::start().await,
    )
    .await;
    let url = gw.url("/hooks");
    for n in 0..3 {
        queue_one(&url, &format!(r#"{{"n":{n}}}"#)).await;
    }
    let got = send(post_json(&url, r#"{"n":3}"#)).await;
    let ev = gw
        .assert_refused(&got, 503, "service_unavailable", Reason::QueueFull)
        .await;
    assert_eq!(ev.outcome, hookwarden::events::Outcome::Denied);
    assert_eq!(got.header("retry-after"), Some("30"));
    let up = addr.start(vec![Reply::status(200)]).await;
    let got = up.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 3, "the refused message was delivered");
    let bodies: Vec<&[u8]> = got.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [&b"{\"n\":0}"[..], b"{\"n\":1}", b"{\"n\":2}"]);
    // Room again once delivered.
    eventually(Duration::from_secs(5), "room in the queue", || async {
        send(post_json(&url, r#"{"n":4}"#)).await.status == 202
    })
    .await;
    up.wait_for(4, Duration::from_secs(5)).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_burst_of_10000_messages_while_the_upstream_is_down_is_delivered_in_full() {
    const N: usize = 10_000;
    let addr = down_addr();
    let gw = Gateway::start(
        &async_config(
            &format!("http://{addr}"),
            "attempts = 1000\nconcurrency = 8",
            "",
        ),
        &Upstream::start().await,
    )
    .await;
    let url = gw.url("/hooks");
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..32 {
        let url = url.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let c = client();
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= N {
                    return ids;
                }
                let got = send_with(&c, post_json(&url, &format!(r#"{{"n":{n}}}"#))).await;
                assert_eq!(got.status, 202, "{}", got.text());
                ids.push(got.json()["id"].as_str().unwrap().to_owned());
            }
        });
    }
    let mut ids = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.unwrap());
    }
    let accepted_in = started.elapsed();
    assert_eq!(ids.len(), N);
    let up = addr.start(vec![Reply::status(200)]).await;
    let got = up.wait_for(N, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up.count(), N, "more deliveries than messages");
    let delivered: HashSet<String> = got
        .iter()
        .map(|r| header(r, "x-hookwarden-delivery").to_owned())
        .collect();
    assert_eq!(
        delivered, ids,
        "some message was not delivered, or delivered twice"
    );
    eprintln!(
        "{N} accepted in {accepted_in:?}, delivered in {:?}",
        started.elapsed() - accepted_in
    );
    gw.stop().await;
}

#[tokio::test]
async fn sync_routes_stay_fast_while_an_async_upstream_hangs() {
    let hanging = Scripted::start(vec![Reply::status(200).after(Duration::from_secs(30))]).await;
    let up = Upstream::start().await;
    let cfg = format!(
        r#"
[[route]]
name = "fast"
path = "/fast"
[route.upstream]
url = "{{upstream}}/ok"

{}"#,
        async_config(&hanging.base(), "concurrency = 4", "")
    );
    let gw = Gateway::start(&cfg, &up).await;
    for n in 0..20 {
        queue_one(&gw.url("/hooks"), &format!(r#"{{"n":{n}}}"#)).await;
    }
    hanging.wait_for(4, Duration::from_secs(5)).await;
    // Four deliveries hang in the upstream; sync traffic and new accepts are unaffected.
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let got = send(post_json(&gw.url("/fast"), "{}")).await;
        assert_eq!(got.status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "sync request took {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        queue_one(&gw.url("/hooks"), "{}").await;
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "accept took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(up.count(), 20);
    assert_eq!(
        hanging.count(),
        4,
        "more than `concurrency` deliveries in flight"
    );
    let mut gw = gw;
    gw.begin_shutdown();
    gw.finished().await;
}

#[tokio::test]
async fn an_in_memory_store_queues_and_delivers_too() {
    let up = Scripted::start(vec![Reply::status(503), Reply::status(200)]).await;
    let cfg = format!(
        "[storage]\npath = \":memory:\"\n{}",
        async_config(&up.base(), "backoff = \"10ms\"", "").replace("backoff = \"50ms\"\n", "")
    );
    let gw = Gateway::start(&cfg, &Upstream::start().await).await;
    let id = queue_one(&gw.url("/hooks"), "{}").await;
    let got = up.wait_for(2, Duration::from_secs(5)).await;
    assert!(got.iter().all(|r| header(r, "x-hookwarden-delivery") == id));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.count(), 2);
    gw.stop().await;
}

/// An upstream that fails the message whose body is `{"bad":true}` its first `fails` times
/// (every time with `fails = usize::MAX`) and takes every other at once.
async fn picky(fails: usize) -> Scripted {
    let bad_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Scripted::start_fn("127.0.0.1:0".parse().unwrap(), move |r, _| {
        if &r.body[..] == br#"{"bad":true}"# {
            let n = bad_seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < fails {
                return Reply::status(503);
            }
        }
        Reply::status(200)
    })
    .await
}

#[tokio::test]
async fn with_concurrency_1_a_failing_message_holds_back_the_ones_behind_it() {
    let up = picky(3).await;
    let gw = Gateway::start(
        &async_config(&up.base(), "attempts = 100", ""),
        &Upstream::start().await,
    )
    .await;
    queue_one(&gw.url("/hooks"), r#"{"bad":true}"#).await;
    for n in 0..3 {
        queue_one(&gw.url("/hooks"), &format!(r#"{{"n":{n}}}"#)).await;
    }
    let got = up.wait_for(7, Duration::from_secs(10)).await;
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    // Four tries of the head (three 503s, then 200), and only then the others, in order.
    assert_eq!(
        bodies,
        [
            r#"{"bad":true}"#,
            r#"{"bad":true}"#,
            r#"{"bad":true}"#,
            r#"{"bad":true}"#,
            r#"{"n":0}"#,
            r#"{"n":1}"#,
            r#"{"n":2}"#
        ]
    );
    gw.stop().await;
}

#[tokio::test]
async fn with_concurrency_above_1_a_failing_message_does_not_hold_back_the_others() {
    let up = picky(usize::MAX).await;
    let gw = Gateway::start(
        &async_config(&up.base(), "attempts = 100\nconcurrency = 2", ""),
        &Upstream::start().await,
    )
    .await;
    queue_one(&gw.url("/hooks"), r#"{"bad":true}"#).await;
    for n in 0..5 {
        queue_one(&gw.url("/hooks"), &format!(r#"{{"n":{n}}}"#)).await;
    }
    eventually(
        Duration::from_secs(5),
        "the good messages delivered",
        || async {
            up.requests()
                .iter()
                .filter(|r| &r.body[..] != br#"{"bad":true}"#)
                .count()
                == 5
        },
    )
    .await;
    eventually(Duration::from_secs(5), "the bad one retried", || async {
        up.requests()
            .iter()
            .filter(|r| &r.body[..] == br#"{"bad":true}"#)
            .count()
            >= 3
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn a_delivery_rate_spaces_the_deliveries_evenly() {
    let up = Scripted::start(vec![Reply::status(200)]).await;
    let gw = Gateway::start(
        &async_config(&up.base(), "rate = \"10/second\"\nconcurrency = 4", ""),
        &Upstream::start().await,
    )
    .await;
    for n in 0..5 {
        queue_one(&gw.url("/hooks"), &format!(r#"{{"n":{n}}}"#)).await;
    }
    up.wait_for(5, Duration::from_secs(5)).await;
    let times = up.times();
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(90), "deliveries {gap:?} apart");
    }
    gw.stop().await;
}

const SIGNED: &str = r#"
[[route]]
name = "hooks"
path = "/hooks"
mode = "async"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[route.upstream]
url = "UPSTREAM/in"
[route.delivery]
backoff = "50ms"
max_backoff = "100ms"
attempts = 1000
"#;

/// The Standard Webhooks headers of `body` as message `id` sent at `ts`, under [`SIGNED`]'s
/// secret.
fn standard_headers(body: &str, id: &str, ts: i64) -> Vec<(String, String)> {
    sign(
        &Provider::Standard,
        &[Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        &SignInput {
            body: body.as_bytes(),
            timestamp: ts,
            id,
            url: None,
        },
    )
    .unwrap()
}

/// A JSON POST of `body` to `url` with `headers`.
fn signed_post(url: &str, headers: &[(String, String)], body: &str) -> http::Request<Full<Bytes>> {
    let mut b = req("POST", url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

#[tokio::test]
async fn a_resent_signed_message_is_a_duplicate_once_queued_and_is_delivered_once() {
    let addr = down_addr();
    let gw = Gateway::start(
        &SIGNED.replace("UPSTREAM", &format!("http://{addr}")),
        &Upstream::start().await,
    )
    .await;
    let body = r#"{"event":"paid"}"#;
    let ts = jiff::Timestamp::now().as_second();
    let headers = standard_headers(body, "msg_once", ts);
    let signed = || signed_post(&gw.url("/hooks"), &headers, body);
    let first = send(signed()).await;
    assert_eq!(first.status, 202, "{}", first.text());
    // The upstream has not taken it yet, but "queued" means accepted: the sender's retry is a
    // duplicate, not a second copy.
    let again = send(signed()).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["status"], "duplicate");
    let up = addr.start(vec![Reply::status(200)]).await;
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(up.count(), 1);
    assert_eq!(&got[0].body[..], body.as_bytes());
    // The sender's own signature headers are forwarded as received.
    assert_eq!(header(&got[0], "webhook-id"), "msg_once");
    gw.stop().await;
}

/// An HTTP/2 sender that resets its stream while its message is being queued gets no `202`,
/// but the queue's writer stores the message all the same: the claim on its id is kept, so the
/// sender's retry is a duplicate and the upstream gets the message once. The exchange is
/// recorded as `client_closed`.
#[tokio::test]
async fn a_message_whose_sender_resets_while_it_is_queued_is_delivered_once() {
    let addr = down_addr();
    let (gw, events) = Gateway::start_with_events(
        &SIGNED.replace("UPSTREAM", &format!("http://{addr}")),
        &Upstream::start().await,
        &|_| None,
    )
    .await;
    let body = r#"{"event":"reset"}"#;
    let ts = jiff::Timestamp::now().as_second();
    let headers = standard_headers(body, "msg_reset_queued", ts);

    // Another connection holds the store's write lock: the queue's writer waits for it (its
    // busy timeout is 5 s), and so does the accept.
    let lock = rusqlite::Connection::open(gw.store_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut h2 = h2_connect(gw.addr).await;
    let mut head = http::Request::builder()
        .method("POST")
        .uri(gw.url("/hooks"))
        .header("content-type", "application/json");
    for (k, v) in &headers {
        head = head.header(k.as_str(), v.as_str());
    }
    let (answer, mut stream) = h2.send_request(head.body(()).unwrap(), false).unwrap();
    stream.send_data(Bytes::from(body), true).unwrap();
    // Waiting for the writer: no answer yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), answer)
            .await
            .is_err(),
        "answered although the store is locked"
    );
    stream.send_reset(h2::Reason::CANCEL);
    let closed =
        |e: &&std::sync::Arc<hookwarden::events::Event>| e.reason == Some(Reason::ClientClosed);
    eventually(
        Duration::from_secs(5),
        "the reset exchange's event",
        || async { events.all().iter().any(|e| closed(&e)) },
    )
    .await;
    let all = events.all();
    let e = all.iter().find(closed).unwrap();
    assert_eq!(e.status, 499);
    assert_eq!(
        e.detail,
        Some(
            "dropped while the message was being queued (it is queued unless the queue refused it)"
        )
    );
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);

    // The retry, on HTTP/1.1 now: a duplicate, since the first copy is queued.
    let signed = || signed_post(&gw.url("/hooks"), &headers, body);
    let mut again = send(signed()).await;
    // The claim is settled by a task the dropped handler starts.
    for _ in 0..50 {
        if again.status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        again = send(signed()).await;
    }
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["status"], "duplicate");
    let up = addr.start(vec![Reply::status(200)]).await;
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(up.count(), 1, "delivered once");
    assert_eq!(&got[0].body[..], body.as_bytes());
    gw.stop().await;
}

#[tokio::test]
async fn queued_messages_hold_no_secrets_and_get_the_injected_headers_at_delivery() {
    let addr = down_addr();
    let injected = "upstream-secret-value-0123456789";
    let key = "caller-key-0123456789abcdef";
    let cfg = format!(
        r#"
[[route]]
name = "hooks"
path = "/hooks"
mode = "async"
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["{key}"]
[route.upstream]
url = "http://{addr}/in"
headers = {{ "X-Upstream-Auth" = "{injected}" }}
[route.delivery]
backoff = "50ms"
max_backoff = "100ms"
attempts = 1000
"#
    );
    let gw = Gateway::start(&cfg, &Upstream::start().await).await;
    let got = send(
        req("POST", &gw.url("/hooks?a=1"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .header("x-custom", "kept")
            .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 202, "{}", got.text());
    // On disk: the message, but neither the caller's key nor the upstream's secret.
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(gw.dir.path()).unwrap() {
        on_disk.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let hay = String::from_utf8_lossy(&on_disk);
    assert!(
        hay.contains("x-custom: kept"),
        "the message is not in the store files"
    );
    assert!(!hay.contains(key), "the caller's API key is in the store");
    assert!(
        !hay.contains(injected),
        "an injected upstream secret is in the store"
    );
    let up = addr.start(vec![Reply::status(200)]).await;
    let r = &up.wait_for(1, Duration::from_secs(10)).await[0];
    assert_eq!(header(r, "x-upstream-auth"), injected);
    assert_eq!(header(r, "x-custom"), "kept");
    assert!(r.headers.get("x-api-key").is_none());
    assert_eq!(r.query.as_deref(), Some("a=1"));
    gw.stop().await;
}

#[tokio::test]
async fn hookwarden_queue_lists_retries_and_drops_while_the_gateway_runs() {
    let up = Upstream::start().await;
    let text = r#"
[[route]]
name = "hooks"
path = "/hooks"
mode = "async"
[route.upstream]
url = "{upstream}/status/422"
[route.delivery]
backoff = "10ms"
"#;
    let gw = Gateway::start(text, &up).await;
    let config = gw.write_config(text, &up);
    let a = queue_one(&gw.url("/hooks"), r#"{"n":"a"}"#).await;
    let b = queue_one(&gw.url("/hooks"), r#"{"n":"b"}"#).await;
    eventually(Duration::from_secs(5), "both dead", || async {
        up.count() == 2
    })
    .await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["list", "--state", "dead"]);
    assert!(ok, "{err}");
    assert!(out.contains("hooks"), "{out}");
    assert!(out.contains(&a) && out.contains(&b), "{out}");
    assert!(out.contains("HTTP 422 Unprocessable Entity"), "{out}");
    let (ok, out, _) = cli(&["list", "--json"]);
    assert!(ok);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], a.as_str());
    assert_eq!(lines[0]["state"], "dead");
    assert_eq!(lines[0]["last_status"], 422);

    // Retry one: the running gateway delivers it again within about a second.
    let (ok, out, err) = cli(&["retry", &a]);
    assert!(ok, "{err}");
    assert!(out.contains("pending again"), "{out}");
    eventually(Duration::from_secs(5), "retried delivery", || async {
        up.count() == 3
    })
    .await;
    assert_eq!(header(&up.requests()[2], "x-hookwarden-delivery"), a);
    // Retry all dead letters of the route.
    eventually(Duration::from_secs(5), "dead again", || async move {
        cli(&["list", "--state", "pending", "--json"]).1.is_empty()
    })
    .await;
    // A mistyped route acts on nothing: an error naming the routes the queue holds.
    let (ok, _, err) = cli(&["retry", "--all", "--route", "hoks"]);
    assert!(!ok);
    assert!(
        err.contains("no message of route \"hoks\"; routes in the queue: hooks"),
        "{err}"
    );
    let (ok, out, _) = cli(&["retry", "--all", "--route", "hooks"]);
    assert!(ok);
    assert!(out.starts_with("2 dead message(s)"), "{out}");
    eventually(Duration::from_secs(5), "two more deliveries", || async {
        up.count() == 5
    })
    .await;

    // Drop.
    eventually(Duration::from_secs(5), "dead again", || async move {
        cli(&["list", "--state", "pending", "--json"]).1.is_empty()
    })
    .await;
    let (ok, out, _) = cli(&["drop", &b]);
    assert!(ok);
    assert!(out.contains("dropped"), "{out}");
    let (ok, _, err) = cli(&["drop", &b]);
    assert!(!ok);
    assert!(err.contains("no queued message has the id"), "{err}");
    let (ok, out, _) = cli(&["drop", "--all", "--route", "hooks", "--state", "dead"]);
    assert!(ok);
    assert!(out.starts_with("1 dead message(s)"), "{out}");
    let (ok, out, _) = cli(&["list"]);
    assert!(ok);
    assert!(out.contains("(the queue is empty)"), "{out}");
    let (ok, _, err) = cli(&["list", "--state", "lost"]);
    assert!(!ok);
    assert!(err.contains("not one of pending, dead, delivered"), "{err}");
    let (ok, _, err) = cli(&["retry"]);
    assert!(!ok, "retry without an id or --all succeeded");
    assert!(!err.is_empty());
    assert_eq!(up.count(), 5);
    gw.stop().await;
}

const SERVED: &str = r#"
[server]
listen = "{listen}"
[storage]
path = "{dir}/hookwarden.db"
[admin]
listen = "{admin}"
token = "test-admin-token-0123456789abcdef"
"#;

fn served_route(name: &str, upstream: &str) -> String {
    format!(
        r#"
[[route]]
name = "{name}"
path = "/{name}"
mode = "async"
[route.upstream]
url = "{upstream}/in"
[route.delivery]
backoff = "50ms"
max_backoff = "100ms"
attempts = 1000
"#
    )
}

#[tokio::test]
async fn a_gateway_killed_right_after_its_202_delivers_the_message_after_restart() {
    let addr = down_addr();
    let cfg = format!(
        "{SERVED}{}",
        served_route("hooks", &format!("http://{addr}"))
    );
    let mut gw = Served::start(&cfg, "", &[]).await;
    let id = queue_one(&gw.url("/hooks"), r#"{"n":"survives"}"#).await;
    gw.kill_hard();
    gw.respawn(&[]).await;
    let up = addr.start(vec![Reply::status(200)]).await;
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up.count(), 1, "delivered more than once");
    assert_eq!(header(&got[0], "x-hookwarden-delivery"), id);
    assert_eq!(&got[0].body[..], br#"{"n":"survives"}"#);
    gw.stop().await;
}

#[tokio::test]
async fn a_reload_starts_workers_for_new_async_routes_and_keeps_messages_of_removed_ones() {
    let down = down_addr();
    let up_b = Scripted::start(vec![Reply::status(200)]).await;
    let with_a = format!("{SERVED}{}", served_route("a", &format!("http://{down}")));
    let mut gw = Served::start(&with_a, "", &[]).await;
    let admin = gw.admin.unwrap();
    let a1 = queue_one(&gw.url("/a"), r#"{"m":1}"#).await;
    let a2 = queue_one(&gw.url("/a"), r#"{"m":2}"#).await;

    // Route a goes, route b comes.
    let only_b = format!("{SERVED}{}", served_route("b", &up_b.base()))
        .replace("{listen}", &gw.addr.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{dir}", &gw.dir.path().display().to_string());
    std::fs::write(&gw.config, &only_b).unwrap();
    let got = admin_post(admin, "/api/reload", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let b1 = queue_one(&gw.url("/b"), r#"{"m":3}"#).await;
    let got = up_b.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(header(&got[0], "x-hookwarden-delivery"), b1);
    // a's upstream comes up, but a is no longer a route: its messages wait in the store.
    let up_a = down.start(vec![Reply::status(200)]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(up_a.count(), 0);
    let j = admin_get(admin, "/api/queue?route=a", Some(ADMIN_TOKEN))
        .await
        .json();
    let pending: Vec<&str> = j["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "pending")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(pending, [a1.as_str(), a2.as_str()]);

    // Route a is back: its messages go out, in order.
    let both = format!("{only_b}{}", served_route("a", &up_a.base()));
    std::fs::write(&gw.config, &both).unwrap();
    let got = admin_post(admin, "/api/reload", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let got = up_a.wait_for(2, Duration::from_secs(5)).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| header(r, "x-hookwarden-delivery"))
        .collect();
    assert_eq!(ids, [a1.as_str(), a2.as_str()]);
    gw.stop().await;
}

/// Every 202 is a committed message, whether each message is committed on its own or many
/// share a transaction (group commit), with one client and with 32 at once: after the burst
/// the store holds exactly the messages that were accepted. The rate (202/s) is printed for
/// docs/benchmarks.md, not asserted; `bench/accept-rate` runs this in release with more
/// requests (`HOOKWARDEN_BENCH_N`, default 300 per case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accept_is_committed_with_and_without_group_commit() {
    let n: usize = std::env::var("HOOKWARDEN_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let addr = down_addr();
    eprintln!("| commit batch | clients | requests | 202/s |");
    eprintln!("|---:|---:|---:|---:|");
    for clients in [1usize, 32] {
        for batch in [1usize, 256] {
            let cfg = format!(
                "[storage]\nqueue_commit_batch = {batch}\n{}",
                // Attempts enough that no message is given up on while the test runs, however
                // slow the machine (12, the default, took 2 s with these backoffs).
                async_config(&format!("http://{addr}"), "attempts = 10000", "")
            );
            let gw = Gateway::start(&cfg, &Upstream::start().await).await;
            let url = gw.url("/hooks");
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let started = std::time::Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients {
                let url = url.clone();
                let next = next.clone();
                tasks.spawn(async move {
                    let c = client();
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                        let got =
                            send_with(&c, post_json(&url, r#"{"event":"call.ended","id":12345}"#))
                                .await;
                        assert_eq!(got.status, 202);
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
            let rate = n as f64 / started.elapsed().as_secs_f64();
            eprintln!("| {batch} | {clients} | {n} | {rate:.0} |");
            // The upstream is down: every accepted message is still pending in the store.
            let store = hookwarden::store::Store::open(&gw.store_path()).unwrap();
            let pending = hookwarden::queue::store::pending_counts(&store.lock()).unwrap();
            assert_eq!(
                pending.get("hooks").copied(),
                Some(n as u64),
                "batch {batch}, {clients} clients"
            );
            gw.stop().await;
        }
    }
}

#[test]
fn the_readme_example_is_a_valid_config_with_the_documented_defaults() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Async delivery")
        .nth(1)
        .expect("README has an Async delivery section");
    let section = section.split("\n## ").next().unwrap();
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "the route and the alert rule");
    let text = blocks.join("\n");
    let loaded =
        hookwarden::config::load_str(&text, "README", std::path::Path::new("/tmp"), &|v| {
            Some(match v {
                "ALERT_WEBHOOK_URL" => "https://hooks.slack.com/services/T000/B000/XXXX".into(),
                _ => "a-secret-of-reasonable-length-0123456789".into(),
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let route = &loaded.config.routes[0];
    assert_eq!(route.mode, hookwarden::config::RouteMode::Async);
    // The example spells out the defaults: they must be the defaults.
    assert_eq!(
        route.delivery.as_ref().unwrap(),
        &hookwarden::config::DeliveryConfig::default()
    );
    assert_eq!(loaded.config.alerts[0].name, "lost-deliveries");
}

/// Starts the gateway with an async route `/hooks` whose `[route.upstream]` (and delivery) are
/// `route`, an upstream that refuses for good, queues one message and waits for it to be
/// dead-lettered: the gateway, the admin API's listing of dead letters as text, and the
/// message's last error there.
async fn one_dead_letter(route: &str, up: &Upstream) -> (Gateway, String, String) {
    let cfg = format!(
        "{ALERT_AND_ADMIN}\n[[route]]\nname = \"hooks\"\npath = \"/hooks\"\nmode = \"async\"\n{route}"
    );
    let (gw, admin) = start_with_admin(&cfg, up, &|_| None).await;
    let id = queue_one(&gw.url("/hooks"), r#"{"n":1}"#).await;
    let events = wait_events(admin, "reason=delivery_failed", |e| !e.is_empty()).await;
    assert_eq!(events[0]["request_id"], id.as_str());
    let got = admin_get(admin, "/api/queue?state=dead", Some(ADMIN_TOKEN)).await;
    let error = got.json()["messages"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (gw, got.text(), error)
}

/// An upstream that refuses a message by echoing the headers it got, as JSON with `/` escaped
/// (PHP's default): the injected values are secret whatever they look like (a lower-case
/// password), also in that spelling and without their `Bearer` scheme, so the last error in
/// the admin API shows none of them.
#[tokio::test]
async fn a_dead_letter_error_never_repeats_an_injected_header_value() {
    let up = Upstream::start().await;
    let route = r#"
[route.upstream]
url = "{upstream}/echo-headers-401"
headers = { "X-N8n-Auth" = "lowercaseonlysecretpw", "X-Key" = "Zk9v/YmFy+QmF6/MTIzNDU2Nzg5MA==", "Authorization" = "Bearer tok-abcdefgh-0123" }
[route.delivery]
attempts = 1
"#;
    let (gw, text, error) = one_dead_letter(route, &up).await;
    // The upstream did get them.
    let seen = &up.requests()[0].headers;
    assert_eq!(seen["x-n8n-auth"], "lowercaseonlysecretpw");
    assert!(error.starts_with("HTTP 401 Unauthorized: "), "{error}");
    assert!(error.contains("\"x-n8n-auth\":\"[redacted]\""), "{error}");
    for leaked in ["lowercaseonlysecretpw", "Zk9v", "YmFy", "tok-abcdefgh"] {
        assert!(!text.contains(leaked), "{leaked} in {text}");
    }
    gw.stop().await;
}

/// An upstream that refuses a message with a page naming its own URL (what n8n answers for a
/// workflow that is not active): the message's last error, in the admin API and the log,
/// keeps the status and the text but not the webhook's secret path. (The log lines about the
/// delivery carry the same text.)
#[tokio::test]
async fn a_dead_letter_error_never_repeats_the_upstream_secret_path() {
    let up = Upstream::start().await;
    let route = r#"
[route.upstream]
url = "{upstream}/webhook/3f1c9a7e-secret-webhook-id/missing"
[route.delivery]
backoff = "10ms"
"#;
    let (gw, text, error) = one_dead_letter(route, &up).await;
    assert!(error.starts_with("HTTP 404 Not Found: "), "{error}");
    assert!(error.contains("is not registered"), "{error}");
    assert!(error.contains("[redacted]"), "{error}");
    assert!(!text.contains("secret-webhook-id"), "{text}");
    gw.stop().await;
}
