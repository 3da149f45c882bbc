//! The core proxy over real sockets: forwarding, header rules, every refusal status, streaming
//! and upstream failures. Each refusal test also asserts the upstream received nothing.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

const SECRET: &str = "n8n-header-secret-value";

fn env(name: &str) -> Option<String> {
    (name == "N8N_SECRET").then(|| SECRET.to_owned())
}

const BASIC: &str = r#"
[[route]]
name = "hook"
path = "/hook"
methods = ["POST", "PUT"]
max_body = "1KiB"
content_types = ["application/json", "application/x-www-form-urlencoded"]
[route.upstream]
url = "{upstream}/target?fixed=1"
timeout = "1s"
idle_timeout = "500ms"
headers = { "X-Auth" = "${N8N_SECRET}", "X-Static" = "s" }

[[route]]
name = "sse"
path = "/sse"
[route.upstream]
url = "{upstream}/sse"

[[route]]
name = "slow"
path = "/slow"
[route.upstream]
url = "{upstream}/slow-headers"
timeout = "500ms"

[[route]]
name = "stall"
path = "/stall"
[route.upstream]
url = "{upstream}/stall"
idle_timeout = "500ms"

[[route]]
name = "status"
path = "/status"
[route.upstream]
url = "{upstream}/status/503"
"#;

async fn setup() -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(BASIC, &up, &env).await;
    (up, gw)
}

#[tokio::test]
async fn forwards_method_query_body_and_injects_headers_over_client_values() {
    let (up, gw) = setup().await;
    let req = req("PUT", &gw.url("/hook?a=1&b=two"))
        .header("content-type", "application/json; charset=utf-8")
        .header("x-auth", "forged-by-client")
        .header("x-custom", "kept")
        .header("x-request-id", "client-chosen")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-http-method-override", "DELETE")
        .header("x-method-override", "DELETE")
        .body(Full::new(Bytes::from_static(br#"{"q":1}"#)))
        .unwrap();
    let got = send(req).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-upstream"), Some("yes"));
    let seen = up.only();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path, "/target");
    assert_eq!(seen.query.as_deref(), Some("fixed=1&a=1&b=two"));
    assert_eq!(seen.body, Bytes::from_static(br#"{"q":1}"#));
    assert_eq!(seen.headers["x-auth"], SECRET);
    assert_eq!(seen.headers.get_all("x-auth").iter().count(), 1);
    assert_eq!(seen.headers["x-static"], "s");
    assert_eq!(seen.headers["x-custom"], "kept");
    assert_eq!(
        seen.headers["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(seen.headers.get("forwarded").is_none());
    assert!(seen.headers.get("x-real-ip").is_none());
    assert!(seen.headers.get("x-http-method-override").is_none());
    assert!(seen.headers.get("x-method-override").is_none());
    let rid = got.header("x-request-id").unwrap();
    assert_ne!(rid, "client-chosen");
    assert_eq!(seen.headers["x-request-id"], rid);
    assert_eq!(seen.headers["host"], up.addr.to_string());
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_in_both_directions() {
    let (up, gw) = setup().await;
    let body = r#"{"a":1}"#;
    let request = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: 1\r\nKeep-Alive: timeout=9\r\n\
         TE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nUpgrade: websocket\r\n\r\n{body}",
        body.len()
    );
    let out = raw(gw.addr, request.as_bytes(), Duration::from_millis(500)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // The upstream's own Keep-Alive header does not reach the client.
    assert!(
        !out.to_ascii_lowercase().contains("keep-alive: timeout=5"),
        "{out}"
    );
    let seen = up.only();
    for h in [
        "x-hop-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(seen.headers.get(h).is_none(), "{h} was forwarded");
    }
}

/// Underscore spellings of names the gateway sets, strips or injects are what CGI-style
/// upstreams (WSGI, Rack, PHP) read as the same variable: none is forwarded, over HTTP/1.1 (the
/// gateway's own encoder) and HTTP/2 (the general path) alike. A `Connection` header cannot
/// make the checked `Content-Type` disappear either.
#[tokio::test]
async fn underscore_spellings_and_connection_tricks_do_not_reach_the_upstream() {
    let (up, gw) = setup().await;
    let body = r#"{"a":1}"#;
    let request = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: keep-alive, Content-Type\r\n\
         X_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nX_Real_IP: 6.6.6.6\r\n\
         X_Forwarded_Host: evil.example\r\nX_Auth: forged-by-client\r\nMy_Own: x\r\n\r\n{body}",
        body.len()
    );
    let out = raw(gw.addr, request.as_bytes(), Duration::from_millis(500)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let h2 = hookwarden_h2_request(&gw).await;
    assert_eq!(h2, 200);
    for seen in up.requests() {
        for (name, _) in &seen.headers {
            assert!(!name.as_str().contains('_'), "{name} was forwarded");
        }
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(seen.headers["x-forwarded-proto"], "http");
        assert_eq!(seen.headers["x-auth"], SECRET);
        assert_eq!(seen.headers["content-type"], "application/json");
    }
    assert_eq!(up.count(), 2);
}

/// The same request over HTTP/2 (prior knowledge): its status.
async fn hookwarden_h2_request(gw: &Gateway) -> u16 {
    let req = req("POST", &gw.url("/hook"))
        .header("content-type", "application/json")
        .header("x_forwarded_for", "6.6.6.6")
        .header("x_auth", "forged-by-client")
        .header("my_own", "x")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    send_with(&h2c_client(), req).await.status.as_u16()
}

#[tokio::test]
async fn unknown_path_is_404_and_never_forwarded() {
    let (up, gw) = setup().await;
    let got = send(post_json(&gw.url("/nope"), "{}")).await;
    got.assert_error(404, "not_found");
    // Neither a trailing slash nor a case change reaches a route.
    send(post_json(&gw.url("/hook/"), "{}"))
        .await
        .assert_error(404, "not_found");
    send(post_json(&gw.url("/HOOK"), "{}"))
        .await
        .assert_error(404, "not_found");
    send(post_json(&gw.url("/_hookwarden/nope"), "{}"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let (up, gw) = setup().await;
    let got = send(req("GET", &gw.url("/hook")).body(Full::default()).unwrap()).await;
    got.assert_error(405, "method_not_allowed");
    assert_eq!(got.header("allow"), Some("POST, PUT"));
    let got = send(
        req("DELETE", &gw.url("/hook"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    got.assert_error(405, "method_not_allowed");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn content_type_outside_the_list_is_415() {
    let (up, gw) = setup().await;
    for ct in [
        "text/plain",
        "application/jsonx",
        "multipart/form-data; boundary=x",
    ] {
        let r = req("POST", &gw.url("/hook"))
            .header("content-type", ct)
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        send(r).await.assert_error(415, "unsupported_media_type");
    }
    // Two Content-Type headers are refused: an upstream might read the other one.
    let two = "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\n{}";
    let out = raw_response(gw.addr, two.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 415"), "{out}");
    // A body without any content type is refused as well.
    let r = req("POST", &gw.url("/hook"))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    send(r).await.assert_error(415, "unsupported_media_type");
    assert_eq!(up.count(), 0);
    // Media types compare case-insensitively, parameters ignored.
    let r = req("POST", &gw.url("/hook"))
        .header("content-type", "Application/JSON; charset=UTF-8")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(send(r).await.status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn oversized_body_is_413_on_content_length_before_reading() {
    let (up, gw) = setup().await;
    // Headers only: the gateway must answer without waiting for the 2 KiB it was promised.
    let head = "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2048\r\n\r\n";
    let started = Instant::now();
    let out = raw_response(gw.addr, head.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains(r#""error":"payload_too_large""#), "{out}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn oversized_chunked_body_is_413_while_reading() {
    let (up, gw) = setup().await;
    let mut request = String::from(
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..5 {
        request.push_str(&format!("100\r\n{}\r\n", "a".repeat(256)));
    }
    request.push_str("0\r\n\r\n");
    let out = raw(gw.addr, request.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(up.count(), 0);
    // Exactly at the limit is fine.
    let ok = send(post_json(
        &gw.url("/hook"),
        &format!("\"{}\"", "a".repeat(1022)),
    ))
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(up.only().body.len(), 1024);
}

#[tokio::test]
async fn malformed_paths_are_400() {
    let (up, gw) = setup().await;
    for path in [
        "/hook/../hook",
        "/x/..",
        "/%2e%2e/hook",
        "/hook%2Fadmin",
        "/hook%2fadmin",
        "/hook%5Cadmin",
        "/hook%zz",
        "/hook%",
        "/hook%00",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let out = raw(gw.addr, request.as_bytes(), Duration::from_secs(2)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
        assert!(out.contains(r#""error":"bad_request""#), "{path}: {out}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn upstream_status_and_headers_pass_through() {
    let (up, gw) = setup().await;
    let got = send(post_json(&gw.url("/status"), "{}")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-upstream"), Some("yes"));
    assert_eq!(got.text(), r#"{"ok":true}"#);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn sse_events_reach_the_client_before_the_upstream_sends_the_last() {
    let (_up, gw) = setup().await;
    let started = Instant::now();
    let resp = client()
        .request(post_json(&gw.url("/sse"), "{}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(started.elapsed());
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(text, "data: event 1\n\ndata: event 2\n\ndata: event 3\n\n");
    assert_eq!(arrivals.len(), 3, "events were merged: {arrivals:?}");
    // The upstream sends event 3 two pauses after event 1; event 1 must have been delivered
    // well before that, i.e. nothing was buffered.
    let first = arrivals[0];
    let last = arrivals[2];
    assert!(
        last - first >= SSE_PAUSE * 2 - Duration::from_millis(50),
        "first {first:?}, last {last:?}"
    );
    assert!(first < SSE_PAUSE, "first event took {first:?}");
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let up = Upstream::start().await;
    let port = free_port();
    let cfg = format!(
        r#"
[[route]]
name = "dead"
path = "/dead"
[route.upstream]
url = "http://127.0.0.1:{port}/x"
"#
    );
    let gw = Gateway::start(&cfg, &up).await;
    let got = send(post_json(&gw.url("/dead"), "{}")).await;
    got.assert_error(502, "bad_gateway");
}

#[tokio::test]
async fn upstream_without_headers_in_time_is_504() {
    let (up, gw) = setup().await;
    let started = Instant::now();
    let got = send(post_json(&gw.url("/slow"), "{}")).await;
    got.assert_error(504, "gateway_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_stalled_streamed_body_is_cut_by_the_idle_timeout() {
    let (_up, gw) = setup().await;
    let started = Instant::now();
    let resp = client()
        .request(post_json(&gw.url("/stall"), "{}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"first chunk\n"));
    // The upstream never sends more; the gateway must end the body with an error (a cut
    // chunked stream), not hang.
    let next = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("stalled body was not cut");
    assert!(
        matches!(next, Some(Err(_)) | None),
        "expected the stream to be cut, got {next:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let (up, gw) = setup().await;
    let got = send(
        req("GET", &gw.url("/_hookwarden/healthz"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "ok");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn http2_cleartext_clients_are_served_and_forwarded_as_http1() {
    let (up, gw) = setup().await;
    let got = send_with(&h2c_client(), post_json(&gw.url("/hook"), "{}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.version, http::Version::HTTP_2);
    let seen = up.only();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.headers["x-auth"], SECRET);
}

#[tokio::test]
async fn error_bodies_never_contain_the_reason_or_secrets() {
    let (_up, gw) = setup().await;
    let got = send(req("GET", &gw.url("/hook")).body(Full::default()).unwrap()).await;
    let text = got.text();
    assert!(!text.contains(SECRET));
    assert!(!text.contains("/target"));
    let j = got.json();
    assert_eq!(j.as_object().unwrap().len(), 2, "{j}");
}

#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_its_413() {
    let (up, gw) = setup().await;
    // The gateway answers from Content-Length while the client is still writing 2 MiB.
    // Without reading part of the rest, the close would reset the connection and the client
    // would see an error instead of the 413.
    let big = "x".repeat(2 << 20);
    for _ in 0..10 {
        let r = req("POST", &gw.url("/hook"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(big.clone())))
            .unwrap();
        let resp = client()
            .request(r)
            .await
            .expect("the 413 was lost to a reset");
        assert_eq!(resp.status(), 413);
    }
    assert_eq!(up.count(), 0);
}

const LEAKS: &str = r#"
[[route]]
name = "redirect"
path = "/go"
[route.upstream]
url = "{upstream}/redirect?flow=3f1c9a7e2b"

[[route]]
name = "cookies"
path = "/cookies"
[route.upstream]
url = "{upstream}/cookies?flow=3f1c9a7e2b"

[[route]]
name = "n8n"
path = "/n8n"
[route.upstream]
url = "{upstream}/webhook/3f1c-secret-workflow/missing?token=configured"

[[route]]
name = "n8n-hidden"
path = "/n8n-hidden"
[route.upstream]
url = "{upstream}/webhook/3f1c-secret-workflow/missing"
error_bodies = "hide"

[[route]]
name = "widget"
path = "/widget"
[route.browser]
allowed_origins = ["https://shop.example.com"]
[route.upstream]
url = "{upstream}/webhook/3f1c-secret-workflow/missing"
"#;

#[tokio::test]
async fn redirects_that_point_at_the_upstream_are_not_passed_on() {
    let up = Upstream::start().await;
    let gw = Gateway::start(LEAKS, &up).await;
    let upstream_url = format!("{}/webhook/secret-id", up.base());
    // The route's upstream URL names the flow id `3f1c9a7e2b`: the same upstream by another
    // name or address form, or its public name, still shows it.
    let other_name = format!(
        "http://localhost:{}/redirect?flow=3f1c9a7e2b",
        up.addr.port()
    );
    let other_form = format!("http://2130706433:{}/flows/3f1c9a7e2b", up.addr.port());
    for (to, kept) in [
        (upstream_url.as_str(), false),
        ("/webhook/secret-id/next", false),
        (other_name.as_str(), false),
        (other_form.as_str(), false),
        ("https://public-name.example.com/flows/3f1c9a7e2b", false),
        ("https://elsewhere.example.com/docs", true),
    ] {
        let url = gw.url(&format!(
            "/go?to={}",
            to.replace(':', "%3A").replace('/', "%2F")
        ));
        let got = send(post_json(&url, "{}")).await;
        assert_eq!(got.status, 302);
        assert_eq!(
            got.header("location").is_some(),
            kept,
            "{to}: {:?}",
            got.headers
        );
        // The Content-Location names the upstream's path: never passed on.
        assert!(got.header("content-location").is_none());
        // Nor a Link or a cookie's Path naming it; the other cookie stays.
        assert!(got.header("link").is_none(), "{:?}", got.headers);
        assert_eq!(
            got.header_values("set-cookie"),
            ["session=abc; Path=/"],
            "{to}"
        );
    }
}

/// The same fields on an answer the gateway passes on as it came (no Location, plain-http
/// upstream), over HTTP/1.1 and HTTP/2: the ones naming the flow id go, the rest stay.
#[tokio::test]
async fn link_and_cookie_fields_naming_the_upstream_go_without_a_location_too() {
    let up = Upstream::start().await;
    let gw = Gateway::start(LEAKS, &up).await;
    for client in [client(), h2c_client()] {
        let got = send_with(&client, post_json(&gw.url("/cookies"), "{}")).await;
        assert_eq!(got.status, 200);
        assert!(got.header("link").is_none(), "{:?}", got.headers);
        assert_eq!(
            got.header_values("set-cookie"),
            ["session=abc; Path=/"],
            "{:?}",
            got.version
        );
    }
}

#[tokio::test]
async fn upstream_error_pages_are_hidden_where_configured_and_on_browser_routes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(LEAKS, &up).await;
    // A plain route passes the upstream's answer on (its callers are trusted systems) ...
    let got = send(post_json(&gw.url("/n8n"), "{}")).await;
    assert_eq!(got.status, 404);
    assert!(got.text().contains("is not registered"));
    // ... unless told otherwise,
    let got = send(post_json(&gw.url("/n8n-hidden"), "{}")).await;
    let id = got.assert_error(404, "not_found");
    assert!(
        !got.text().contains("3f1c-secret-workflow"),
        "{}",
        got.text()
    );
    let ev = gw.event(&id).await;
    assert_eq!(ev.upstream_status, Some(404));
    assert_eq!(ev.outcome, hookwarden::events::Outcome::Allowed);
    // and a browser route hides it by default.
    let r = req("POST", &gw.url("/widget"))
        .header("origin", "https://shop.example.com")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let got = send(r).await;
    got.assert_error(404, "not_found");
    assert!(
        !got.text().contains("3f1c-secret-workflow"),
        "{}",
        got.text()
    );
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn client_query_parameters_cannot_override_configured_ones() {
    let up = Upstream::start().await;
    let gw = Gateway::start(LEAKS, &up).await;
    // Also the spellings PHP, Rails and ASP.NET read as `token`: an array (which replaces a
    // plain value), another case, a dot for the underscore PHP would put there.
    send(post_json(
        &gw.url("/n8n?token=forged&page=2&token=again&token%5B%5D=arr&TOKEN=upper&token[x]=h"),
        "{}",
    ))
    .await;
    assert_eq!(up.only().query.as_deref(), Some("token=configured&page=2"));
}

/// Cookies sent as several fields (HTTP/2 clients may send one per cookie) reach the HTTP/1.1
/// upstream as one `Cookie` field, joined with "; ", over both client protocols.
#[tokio::test]
async fn several_cookie_fields_reach_the_upstream_as_one() {
    let (up, gw) = setup().await;
    let h2 = req("POST", &gw.url("/hook"))
        .header("content-type", "application/json")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(send_with(&h2c_client(), h2).await.status, 200);
    let h1 = "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Cookie: a=1\r\nCookie: b=2\r\nContent-Length: 2\r\n\r\n{}";
    let out = raw(gw.addr, h1.as_bytes(), Duration::from_millis(500)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for r in seen {
        let cookies: Vec<_> = r.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }
}

/// HTTP/1.1 heads with more than 100 fields are refused by the parser (431); HTTP/2 ones
/// were bounded only by their size. The same cap holds over both, and nothing is forwarded.
#[tokio::test]
async fn more_than_a_hundred_fields_are_refused_over_http2_too() {
    let (up, gw) = setup().await;
    let with_fields = |n: usize| {
        let mut b = req("POST", &gw.url("/hook")).header("content-type", "application/json");
        // (The client adds content-length of its own.)
        for i in 1..n {
            b = b.header(format!("x-f{i}"), "1");
        }
        b.body(Full::new(Bytes::from_static(b"{}"))).unwrap()
    };
    assert_eq!(send_with(&h2c_client(), with_fields(90)).await.status, 200);
    let got = send_with(&h2c_client(), with_fields(120)).await;
    got.assert_error(431, "request_header_fields_too_large");
    assert_eq!(up.count(), 1);
}

/// An HTTP/2 client that resets its stream with NO_ERROR halfway through the body has not
/// sent a request: nothing reaches the upstream, with or without a declared length, and on a
/// connection whose pooled upstream connection is warm (where the forward could go out in
/// the same poll as the body's end).
#[tokio::test]
async fn an_http2_body_cut_by_a_no_error_reset_is_not_forwarded() {
    let (up, gw) = setup().await;
    let mut h2 = h2_connect(gw.addr).await;
    let post = |length: Option<&str>| {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(gw.url("/hook"))
            .header("content-type", "application/json");
        if let Some(n) = length {
            b = b.header("content-length", n);
        }
        b.body(()).unwrap()
    };
    // Warm: one whole request, so the upstream connection is pooled.
    h2 = h2.ready().await.unwrap();
    let (answer, mut stream) = h2.send_request(post(None), false).unwrap();
    stream
        .send_data(Bytes::from_static(b"{\"whole\":true}"), true)
        .unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
    assert_eq!(up.count(), 1);

    for length in [Some("40"), None] {
        h2 = h2.ready().await.unwrap();
        let (answer, mut stream) = h2.send_request(post(length), false).unwrap();
        stream
            .send_data(Bytes::from_static(b"{\"transfer\": 100"), false)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.send_reset(h2::Reason::NO_ERROR);
        let _ = answer.await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            up.count(),
            1,
            "content-length {length:?}: {:?}",
            up.requests()
        );
    }
    // The connection still serves whole requests.
    h2 = h2.ready().await.unwrap();
    let (answer, mut stream) = h2.send_request(post(Some("2")), false).unwrap();
    stream.send_data(Bytes::from_static(b"{}"), true).unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
    assert_eq!(up.count(), 2);
}
