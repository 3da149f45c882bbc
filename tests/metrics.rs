//! `/metrics` on the admin listener: request counters by route/outcome/reason, latency
//! histograms, connection, state-table and audit-writer gauges, in Prometheus text format.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

use common::*;

const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"
token = "test-admin-token-0123456789abcdef"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{upstream}/hook"
"#;

/// The value of the sample line `name{labels}` (exact text before the value).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}

async fn scrape(admin: std::net::SocketAddr) -> String {
    let got = admin_get(admin, "/metrics", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    got.text()
}

#[tokio::test]
async fn requests_are_counted_by_route_outcome_and_reason() {
    let up = Upstream::start().await;
    let (gw, admin) = start_with_admin(CONFIG, &up, &|_| None).await;
    for _ in 0..2 {
        assert_eq!(send(post_json(&gw.url("/hook"), "{}")).await.status, 200);
    }
    send(req("GET", &gw.url("/hook")).body(Full::default()).unwrap())
        .await
        .assert_error(405, "method_not_allowed");
    for _ in 0..3 {
        send(post_json(&gw.url("/nope"), "{}"))
            .await
            .assert_error(404, "not_found");
    }
    let text = scrape(admin).await;
    let count = |labels: &str| sample(&text, &format!("hookwarden_requests_total{{{labels}}}"));
    assert_eq!(
        count(r#"route="hook",outcome="allowed",reason="""#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        count(r#"route="hook",outcome="denied",reason="method_not_allowed""#),
        Some(1.0)
    );
    assert_eq!(
        count(r#"route="",outcome="denied",reason="not_found""#),
        Some(3.0)
    );
    assert!(text.contains("# TYPE hookwarden_requests_total counter"));

    // Upstream latency: one observation per forwarded request, in the documented buckets.
    assert_eq!(
        sample(
            &text,
            r#"hookwarden_upstream_latency_seconds_count{route="hook"}"#
        ),
        Some(2.0)
    );
    for le in ["0.005", "0.25", "1", "10", "60", "+Inf"] {
        let line =
            format!(r#"hookwarden_upstream_latency_seconds_bucket{{route="hook",le="{le}"}}"#);
        assert!(sample(&text, &line).is_some(), "missing {line} in {text}");
    }
    assert_eq!(
        sample(
            &text,
            r#"hookwarden_upstream_latency_seconds_bucket{route="hook",le="+Inf"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"hookwarden_request_duration_seconds_count{route=""}"#
        ),
        Some(3.0)
    );
    // The route's two label sets (allowed, denied) feed one duration histogram.
    assert_eq!(
        sample(
            &text,
            r#"hookwarden_request_duration_seconds_count{route="hook"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hookwarden_audit_aggregated_total"),
        Some(0.0)
    );
    assert!(
        sample(&text, "hookwarden_audit_backlog").is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "hookwarden_state_entries").is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"hookwarden_event_sink_dropped_total{sink="audit"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn active_connections_are_a_live_gauge() {
    let up = Upstream::start().await;
    let (gw, admin) = start_with_admin(CONFIG, &up, &|_| None).await;
    let before = sample(&scrape(admin).await, "hookwarden_active_connections").unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        // Half a request: the connection stays open, waiting for the rest.
        s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    let mut during = 0.0;
    for _ in 0..50 {
        during = sample(&scrape(admin).await, "hookwarden_active_connections").unwrap();
        if during >= before + 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(during >= before + 3.0, "before {before}, during {during}");
    drop(held);
    let mut after = during;
    for _ in 0..100 {
        after = sample(&scrape(admin).await, "hookwarden_active_connections").unwrap();
        if after <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(after <= before, "before {before}, after {after}");
    let _ = Bytes::new();
}

#[tokio::test]
async fn metrics_of_two_gateways_in_one_process_do_not_mix() {
    let up = Upstream::start().await;
    let (gw1, admin1) = start_with_admin(CONFIG, &up, &|_| None).await;
    let (_gw2, admin2) = start_with_admin(CONFIG, &up, &|_| None).await;
    assert_eq!(send(post_json(&gw1.url("/hook"), "{}")).await.status, 200);
    let series = r#"hookwarden_requests_total{route="hook",outcome="allowed",reason=""}"#;
    assert_eq!(sample(&scrape(admin1).await, series), Some(1.0));
    assert_eq!(sample(&scrape(admin2).await, series), None);
}
