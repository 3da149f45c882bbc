//! The admin listener: Bearer token on everything but /healthz (and the dashboard's static
//! files), never served on the public port, the events/stats/routes API, and `[admin]` config.

mod common;

use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;

use common::*;

const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"
token = "test-admin-token-0123456789abcdef"
[[route]]
name = "hook"
path = "/hook"
content_types = ["application/json"]
[route.upstream]
url = "{upstream}/webhook/path-secret-9d2c?token=query-secret-77ab"
headers = { "X-N8N-Auth" = "injected-secret-4e1f" }
[[route]]
name = "other"
path = "/other"
[route.upstream]
url = "{upstream}/other"
"#;

#[tokio::test]
async fn admin_endpoints_need_the_bearer_token_except_healthz() {
    let up = Upstream::start().await;
    let (_gw, admin) = start_with_admin(CONFIG, &up, &|_| None).await;

    for path in [
        "/metrics",
        "/api/events",
        "/api/stats",
        "/api/routes",
        "/api/alerts",
        "/api/nothing-here",
    ] {
        let missing = admin_get(admin, path, None).await;
        assert_eq!(missing.status, 401, "{path} without token");
        assert_eq!(missing.json()["error"], "unauthorized");
        assert_eq!(
            missing.header("www-authenticate"),
            Some("Bearer realm=\"hookwarden-admin\"")
        );
        let wrong = admin_get(admin, path, Some("test-admin-token-0123456789abcdeX")).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let prefix = admin_get(admin, path, Some("test-admin-token")).await;
        assert_eq!(prefix.status, 401, "{path} with a prefix of the token");
    }
    let basic = send(
        req("GET", &format!("http://{admin}/api/events"))
            .header("authorization", format!("Basic {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, 401, "only the Bearer scheme is accepted");
    assert_eq!(admin_post(admin, "/api/reload", None).await.status, 401);

    for path in [
        "/metrics",
        "/api/events",
        "/api/stats",
        "/api/routes",
        "/api/alerts",
    ] {
        let ok = admin_get(admin, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(ok.status, 200, "{path}: {}", ok.text());
    }
    let unknown = admin_get(admin, "/api/nothing-here", Some(ADMIN_TOKEN)).await;
    assert_eq!(unknown.status, 404);

    let health = admin_get(admin, "/healthz", None).await;
    assert_eq!(
        (health.status.as_u16(), health.text().as_str()),
        (200, "ok")
    );
    let page = admin_get(admin, "/", None).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<script src=\"/assets/app.js\""));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    for asset in ["/assets/app.js", "/assets/app.css"] {
        assert_eq!(admin_get(admin, asset, None).await.status, 200, "{asset}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_admin_api_is_never_served_on_the_public_port() {
    let up = Upstream::start().await;
    let (gw, _admin) = start_with_admin(CONFIG, &up, &|_| None).await;
    for path in [
        "/api/events",
        "/metrics",
        "/healthz",
        "/",
        "/api/reload",
        "/assets/app.js",
    ] {
        for method in ["GET", "POST"] {
            let got = send(
                req(method, &gw.url(path))
                    .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
            got.assert_error(404, "not_found");
        }
    }
    assert_eq!(up.count(), 0, "an admin path reached the upstream");
}

#[tokio::test]
async fn api_events_filters_like_the_cli() {
    let up = Upstream::start().await;
    let (gw, admin) = start_with_admin(CONFIG, &up, &|_| None).await;
    let ok = send(post_json(&gw.url("/hook"), "{}")).await;
    assert_eq!(ok.status, 200);
    let ok_id = ok.header("x-request-id").unwrap().to_owned();
    let nf = send(post_json(&gw.url("/nope"), "{}"))
        .await
        .assert_error(404, "not_found");
    let mna = send(req("GET", &gw.url("/hook")).body(Full::default()).unwrap())
        .await
        .assert_error(405, "method_not_allowed");
    let other = send(req("GET", &gw.url("/other")).body(Full::default()).unwrap())
        .await
        .assert_error(405, "method_not_allowed");

    let all = wait_events(admin, "", |e| e.len() == 4).await;
    // Newest first.
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [other.as_str(), mna.as_str(), nf.as_str(), ok_id.as_str()]
    );

    let ids_for = |q: &'static str| async move {
        let got = admin_get(admin, &format!("/api/events?{q}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(got.status, 200, "{q}: {}", got.text());
        got.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids_for("outcome=denied").await,
        [other.as_str(), mna.as_str(), nf.as_str()]
    );
    assert_eq!(ids_for("outcome=allowed").await, [ok_id.as_str()]);
    assert_eq!(ids_for("reason=not_found").await, [nf.as_str()]);
    assert_eq!(ids_for("route=hook").await, [mna.as_str(), ok_id.as_str()]);
    assert_eq!(
        ids_for("route=hook&reason=method_not_allowed").await,
        [mna.as_str()]
    );
    assert_eq!(
        ids_for("ip=127.0.0.1&since=1h&limit=2").await,
        [other.as_str(), mna.as_str()]
    );
    assert!(ids_for("ip=10.9.8.7").await.is_empty());
    // More than a page holds is read as a page, however large the number.
    for huge in [
        "limit=5000",
        "limit=99999999999",
        "limit=999999999999999999999999",
    ] {
        assert_eq!(ids_for(huge).await.len(), 4, "{huge}");
    }
    let by_id = admin_get(
        admin,
        &format!("/api/events?request_id={nf}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    let found = by_id.json()["events"].as_array().unwrap().clone();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["request_id"], nf.as_str());

    for (q, needle) in [
        (
            "reason=keyinvalid",
            "reason \"keyinvalid\" is not a reason code",
        ),
        ("outcome=maybe", "outcome \"maybe\" is not one of"),
        ("since=yesterday", "since:"),
        ("ip=localhost", "ip \"localhost\" is not an IP address"),
        ("request_id=a%27b", "request_id is not a request id"),
        ("limit=abc", "whole numbers"),
        ("limit=-1", "whole numbers"),
        ("before=1e5", "whole numbers"),
        ("limit=0", "limit must be 1 or more"),
        ("before=-5", "before must be an event id (1 or more)"),
        ("before=0", "before must be an event id (1 or more)"),
        ("after=-1", "after must be an event id, or 0"),
    ] {
        let got = admin_get(admin, &format!("/api/events?{q}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(got.status, 400, "{q}");
        let msg = got.json()["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    let e = all
        .iter()
        .find(|e| e["request_id"] == mna.as_str())
        .unwrap();
    assert_eq!(e["route"], "hook");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["status"], 405);
    assert_eq!(e["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn api_stats_counts_by_reason_and_names_the_top_offenders() {
    let up = Upstream::start().await;
    let (gw, admin) = start_with_admin(CONFIG, &up, &|_| None).await;
    for _ in 0..3 {
        send(post_json(&gw.url("/nope"), "{}"))
            .await
            .assert_error(404, "not_found");
    }
    send(req("GET", &gw.url("/hook")).body(Full::default()).unwrap())
        .await
        .assert_error(405, "method_not_allowed");
    assert_eq!(send(post_json(&gw.url("/hook"), "{}")).await.status, 200);
    wait_events(admin, "", |e| e.len() == 5).await;

    let got = admin_get(admin, "/api/stats?window=1h", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200);
    let s = got.json();
    assert_eq!(s["window_seconds"], 3600);
    assert_eq!(s["bucket_seconds"], 60);
    // 60 minutes from a time inside a minute touch 61 one-minute buckets; the first holds the
    // events of its part of the window, so the series adds up to the totals.
    assert_eq!(s["series"].as_array().unwrap().len(), 61);
    assert_eq!(s["totals"]["allowed"], 1);
    assert_eq!(s["totals"]["denied"], 4);
    let in_series = |outcome: &str| -> i64 {
        s["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[outcome].as_i64().unwrap_or(0))
            .sum()
    };
    assert_eq!((in_series("allowed"), in_series("denied")), (1, 4));
    assert_eq!(
        s["denials_by_reason"],
        serde_json::json!([
            {"name": "not_found", "count": 3},
            {"name": "method_not_allowed", "count": 1}
        ])
    );
    assert_eq!(
        s["top_ips"],
        serde_json::json!([{"name": "127.0.0.1", "count": 4}])
    );
    assert_eq!(s["top_keys"], serde_json::json!([]));
    let counts = s["counts"].as_array().unwrap();
    assert!(counts.contains(&serde_json::json!(
        {"route": "hook", "outcome": "allowed", "reason": "", "count": 1}
    )));
    let series_denied: i64 = s["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["denied"].as_i64().unwrap())
        .sum();
    assert_eq!(series_denied, 4);
    let bad = admin_get(admin, "/api/stats?window=soon", Some(ADMIN_TOKEN)).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn api_routes_shows_policies_but_no_upstream_secret() {
    let up = Upstream::start().await;
    let (_gw, admin) = start_with_admin(CONFIG, &up, &|_| None).await;
    let got = admin_get(admin, "/api/routes", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200);
    let text = got.text();
    for secret in [
        "path-secret-9d2c",
        "query-secret-77ab",
        "injected-secret-4e1f",
        "webhook",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let routes = got.json()["routes"].as_array().unwrap().clone();
    let hook = routes.iter().find(|r| r["name"] == "hook").unwrap();
    assert_eq!(hook["path"], "/hook");
    assert_eq!(hook["methods"], serde_json::json!(["POST"]));
    assert_eq!(
        hook["guards"]["head"],
        serde_json::json!(["method", "body_size", "content_type", "read_body"])
    );
    assert_eq!(hook["upstream"]["host"], up.addr.to_string());
    assert_eq!(
        hook["upstream"]["injected_headers"],
        serde_json::json!(["x-n8n-auth"])
    );
}

fn issues(text: &str) -> Vec<hookwarden::config::Issue> {
    match hookwarden::config::load_str(text, "t", Path::new("/tmp"), &|_| None) {
        Ok(l) => l.warnings,
        Err(e) => e.issues().to_vec(),
    }
}

const ROUTE: &str = r#"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "http://127.0.0.1:9/x"
[[route.limit]]
key = "ip"
rate = "60/minute"
"#;

#[test]
fn admin_config_requires_a_long_token_and_its_own_port() {
    let i = issues(&format!("[admin]\nlisten = \"127.0.0.1:9900\"\n{ROUTE}"));
    assert_eq!(i[0].key, "admin.token");
    assert!(i[0].problem.contains("required"), "{:?}", i[0]);
    let i = issues(&format!("[admin]\ntoken = \"short\"\n{ROUTE}"));
    assert_eq!(i[0].key, "admin.token");
    assert!(i[0].problem.contains("shorter than 16"), "{:?}", i[0]);
    assert!(
        !i[0].problem.contains("short\""),
        "the token is echoed: {:?}",
        i[0]
    );
    let i = issues(&format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\ntoken = \"{ADMIN_TOKEN}\"\n{ROUTE}"
    ));
    assert_eq!(i[0].key, "admin.listen");
    assert!(i[0].problem.contains("public port"), "{:?}", i[0]);
    let i = issues(&format!(
        "[admin]\nlisten = \"0.0.0.0:9900\"\ntoken = \"{ADMIN_TOKEN}\"\n{ROUTE}"
    ));
    assert_eq!(i[0].severity, hookwarden::config::Severity::Warning);
    assert_eq!(i[0].key, "admin.listen");
    let i = issues(&format!(
        "[admin]\ntokn = \"{ADMIN_TOKEN}\"\ntoken = \"{ADMIN_TOKEN}\"\n{ROUTE}"
    ));
    assert_eq!(i[0].key, "admin.tokn");
    assert_eq!(i[0].fix, "did you mean `token`?");
}

#[test]
fn storage_retention_keys_are_read_with_defaults() {
    let l = hookwarden::config::load_str(ROUTE, "t", Path::new("/tmp"), &|_| None).unwrap();
    assert_eq!(
        l.config.storage.keep,
        std::time::Duration::from_secs(30 * 86400)
    );
    assert_eq!(l.config.storage.max_events, 1_000_000);
    assert!(l.config.admin.is_none());
    let l = hookwarden::config::load_str(
        &format!("[storage]\nkeep = \"7d\"\nmax_events = 5000\n{ROUTE}"),
        "t",
        Path::new("/tmp"),
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        l.config.storage.keep,
        std::time::Duration::from_secs(7 * 86400)
    );
    assert_eq!(l.config.storage.max_events, 5000);
    let i = issues(&format!(
        "[storage]\nkeep = \"10s\"\nmax_events = 3\n{ROUTE}"
    ));
    let keys: Vec<&str> = i.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["storage.keep", "storage.max_events"]);
}

/// A client that connects to the admin port and sends nothing, or half a request head, is
/// closed after the admin header timeout, and the admin port still answers meanwhile.
#[tokio::test]
async fn idle_and_trickling_admin_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let (_gw, admin) = start_with_admin(CONFIG, &up, &|_| None).await;
    let mut idle = tokio::net::TcpStream::connect(admin).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(admin).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert_eq!(admin_get(admin, "/healthz", None).await.status, 200);
    let limit = hookwarden::admin::ADMIN_HEADER_TIMEOUT + std::time::Duration::from_secs(3);
    for (what, s) in [("idle", &mut idle), ("partial head", &mut partial)] {
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(limit, s.read(&mut b))
            .await
            .unwrap_or_else(|_| panic!("{what} connection still open"));
        assert!(matches!(n, Ok(0) | Err(_)), "{what}: {n:?}");
    }
}
