//! `[[alert]]`: counting in a sliding window, one notification per crossing, cooldown, retries
//! with backoff, never blocking requests, and every alert recorded. The receiver is a real
//! local HTTP server.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use common::*;

fn config(alert: &str, receiver: &Receiver) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{{upstream}}/hook"
[[alert]]
url = "http://{}/notify"
{alert}
"#,
        receiver.addr
    )
}

async fn not_found(gw: &Gateway) {
    send(post_json(&gw.url("/nope"), "{}"))
        .await
        .assert_error(404, "not_found");
}

/// The alert records, newest first, once `n` exist.
async fn recorded(admin: SocketAddr, n: usize) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    for _ in 0..100 {
        let got = admin_get(admin, "/api/alerts", Some(ADMIN_TOKEN)).await;
        last = got.json()["recent"].as_array().cloned().unwrap_or_default();
        if last.len() >= n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never {n} alert records: {last:#?}");
}

#[tokio::test]
async fn crossing_the_threshold_sends_one_notification_then_the_cooldown_holds() {
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[200], Duration::ZERO).await;
    let (gw, admin) = start_with_admin(
        &config(
            r#"name = "scan"
reasons = ["not_found", "method_not_allowed"]
threshold = 3
window = "1m"
cooldown = "1h"
format = "slack""#,
            &receiver,
        ),
        &up,
        &|_| None,
    )
    .await;
    not_found(&gw).await;
    not_found(&gw).await;
    assert!(
        receiver
            .wait_for(1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    // A reason the rule does not count, and an allowed request: still below the threshold.
    assert_eq!(send(post_json(&gw.url("/hook"), "{}")).await.status, 200);
    assert!(
        receiver
            .wait_for(1, Duration::from_millis(300))
            .await
            .is_empty()
    );
    send(req("GET", &gw.url("/hook")).body(Full::default()).unwrap())
        .await
        .assert_error(405, "method_not_allowed");
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/notify");
    assert_eq!(got[0].headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    let obj = body.as_object().unwrap();
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["text"],
        "Slack format is {{\"text\": …}}"
    );
    let text = obj["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "hookwarden alert \"scan\": 3 requests (not_found, method_not_allowed) within 1m."
        ),
        "{text}"
    );
    assert!(
        text.contains("method_not_allowed from 127.0.0.1 on hook"),
        "{text}"
    );

    // Cooldown: more matching events, no more notifications.
    for _ in 0..5 {
        not_found(&gw).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 1);

    let rec = recorded(admin, 1).await;
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0]["name"], "scan");
    assert_eq!(rec[0]["result"], "sent");
    assert_eq!(rec[0]["matched"], 3);
    assert_eq!(rec[0]["attempts"], 1);
    assert_eq!(rec[0]["http_status"], 200);
    let metrics = admin_get(admin, "/metrics", Some(ADMIN_TOKEN)).await.text();
    assert!(
        metrics.contains(r#"hookwarden_alerts_total{alert="scan",result="sent"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn delivery_retries_with_backoff_until_the_receiver_accepts() {
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[500, 200], Duration::ZERO).await;
    let (gw, admin) = start_with_admin(
        &config(
            r#"name = "denied"
outcome = "denied"
threshold = 1
backoff = "300ms"
format = "json""#,
            &receiver,
        ),
        &up,
        &|_| None,
    )
    .await;
    not_found(&gw).await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let gap = got[1].at.duration_since(got[0].at);
    assert!(gap >= Duration::from_millis(300), "retried after {gap:?}");
    assert_eq!(
        got[0].body, got[1].body,
        "a retry sends the same notification"
    );
    let body: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["alert"], "denied");
    assert_eq!(body["outcome"], "denied");
    assert_eq!(body["matched"], 1);
    assert_eq!(body["latest"]["reason"], "not_found");
    let rec = recorded(admin, 1).await;
    assert_eq!(rec[0]["result"], "sent");
    assert_eq!(rec[0]["attempts"], 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "nothing is sent after a success"
    );
}

#[tokio::test]
async fn delivery_gives_up_after_its_attempts_and_records_the_failure() {
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[503], Duration::ZERO).await;
    let (gw, admin) = start_with_admin(
        &config(
            r#"name = "down"
outcome = "denied"
threshold = 1
attempts = 3
backoff = "100ms""#,
            &receiver,
        ),
        &up,
        &|_| None,
    )
    .await;
    not_found(&gw).await;
    let rec = recorded(admin, 1).await;
    assert_eq!(rec[0]["result"], "failed");
    assert_eq!(rec[0]["attempts"], 3);
    assert_eq!(rec[0]["http_status"], 503);
    assert_eq!(rec[0]["error"], "the receiver answered 503");
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn a_client_error_from_the_receiver_is_not_retried() {
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[404], Duration::ZERO).await;
    let (gw, admin) = start_with_admin(
        &config(
            "name = \"gone\"\noutcome = \"denied\"\nthreshold = 1\nbackoff = \"100ms\"",
            &receiver,
        ),
        &up,
        &|_| None,
    )
    .await;
    not_found(&gw).await;
    let rec = recorded(admin, 1).await;
    assert_eq!(
        (rec[0]["result"].as_str(), rec[0]["attempts"].as_i64()),
        (Some("failed"), Some(1))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_stuck_receiver_never_slows_requests_down() {
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[200], Duration::from_secs(8)).await;
    let (gw, _admin) = start_with_admin(
        &config(
            "name = \"every\"\noutcome = \"denied\"\nthreshold = 1\ncooldown = \"1ms\"",
            &receiver,
        ),
        &up,
        &|_| None,
    )
    .await;
    for _ in 0..20 {
        let t = Instant::now();
        not_found(&gw).await;
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert!(
        !receiver
            .wait_for(1, Duration::from_secs(2))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_route_filter_counts_only_that_route() {
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[200], Duration::ZERO).await;
    let (gw, _admin) = start_with_admin(
        &config(
            "name = \"hook-denied\"\noutcome = \"denied\"\nroute = \"hook\"\nthreshold = 2",
            &receiver,
        ),
        &up,
        &|_| None,
    )
    .await;
    for _ in 0..3 {
        not_found(&gw).await;
    }
    assert!(
        receiver
            .wait_for(1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    for _ in 0..2 {
        send(
            req("PUT", &gw.url("/hook"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .assert_error(405, "method_not_allowed");
    }
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).await.len(), 1);
}

#[test]
fn alert_config_errors_name_the_key_and_never_echo_the_url() {
    let load = |alert: &str| {
        let text = format!(
            "[[route]]\nname = \"hook\"\npath = \"/hook\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/x\"\n[[route.limit]]\nkey = \"ip\"\nrate = \"60/minute\"\n[[alert]]\n{alert}"
        );
        hookwarden::config::load_str(&text, "t", std::path::Path::new("/tmp"), &|_| None)
    };
    let err = load("name = \"a\"\nreasons = [\"key_invalid\"]\noutcome = \"denied\"\nurl = \"https://hooks.example.com/x\"").unwrap_err();
    assert_eq!(err.issues()[0].key, "alert[a].outcome");
    let err = load("name = \"a\"\nreasons = [\"key_invalid\", \"sig_invalid\"]\nurl = \"https://hooks.example.com/x\"").unwrap_err();
    assert_eq!(err.issues()[0].key, "alert[a].reasons");
    assert_eq!(
        err.issues()[0].problem,
        "\"sig_invalid\" is not a reason code"
    );
    let err = load(
        "name = \"a\"\noutcome = \"denied\"\nroute = \"chat\"\nurl = \"ftp://tok-en-secret@x\"",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.issues().iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["alert[a].route", "alert[a].url"]);
    assert!(!err.to_string().contains("tok-en-secret"), "{err}");
    let err = load("name = \"a\"\nurl = \"https://x.example\"\nformat = \"teams\"").unwrap_err();
    let keys: Vec<&str> = err.issues().iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["alert[a].reasons", "alert[a].format"]);
    let ok =
        load("name = \"a\"\nreasons = [\"key_invalid\"]\nurl = \"https://x.example\"").unwrap();
    let a = &ok.config.alerts[0];
    assert_eq!(
        (a.threshold, a.window, a.cooldown),
        (1, Duration::from_secs(300), Duration::from_secs(900))
    );
    assert_eq!(a.format, hookwarden::config::AlertFormat::Json);
}

/// A rule without cooldown against a receiver that accepts and never answers: deliveries
/// hold their connections, but at most `MAX_DELIVERIES` of them at once, and requests are
/// answered as fast as ever meanwhile.
#[tokio::test]
async fn a_receiver_that_never_answers_holds_a_bounded_number_of_connections() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            sockets.push(s);
        }
    });
    let up = Upstream::start().await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{{upstream}}/hook"
[[alert]]
url = "http://{addr}/notify"
name = "every-miss"
reasons = ["not_found"]
threshold = 1
window = "1m"
cooldown = "0s"
"#
    );
    let (gw, _admin) = start_with_admin(&text, &up, &|_| None).await;
    let started = Instant::now();
    for _ in 0..60 {
        not_found(&gw).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = accepted.load(Ordering::SeqCst);
    assert!(n >= 1, "no delivery started");
    assert!(
        n <= hookwarden::events::notifier::MAX_DELIVERIES,
        "{n} deliveries at once"
    );
    held.abort();
}
