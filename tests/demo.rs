//! `hookwarden demo`: the no-config demo forwards, injects its upstream secret, streams, and
//! refuses what it should.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

mod common;
use common::*;

#[tokio::test]
async fn the_demo_forwards_streams_and_refuses() {
    let demo = hookwarden::demo::Demo::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = demo.addr();
    let text = demo.instructions();
    let instructions = text.clone();
    assert!(text.contains(&format!("http://{addr}/echo")), "{text}");
    let task = tokio::spawn(demo.run(std::future::pending()));

    let got = send(post_json(
        &format!("http://{addr}/echo"),
        r#"{"hello":"world"}"#,
    ))
    .await;
    assert_eq!(got.status, 200);
    let j = got.json();
    assert_eq!(j["body"], r#"{"hello":"world"}"#);
    assert_eq!(j["headers"]["x-upstream-secret"], "demo-upstream-secret");

    let resp = client()
        .request(
            req("POST", &format!("http://{addr}/chat"))
                .body(Full::new(Bytes::from_static(br#"{"message":"hi"}"#)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut frames = 0;
    let mut text = String::new();
    while let Some(f) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap()
    {
        if let Ok(d) = f.unwrap().into_data() {
            frames += 1;
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(
        frames > 5,
        "reply was not streamed word by word ({frames} frames)"
    );
    assert!(text.contains(r#"{"delta":"You "}"#), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    let got = send(
        req("GET", &format!("http://{addr}/echo"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    got.assert_error(405, "method_not_allowed");

    // The API key route: the key opens it and is not forwarded; no key or a wrong one is 401.
    assert!(
        instructions.contains(&format!("x-api-key: {}", hookwarden::demo::DEMO_API_KEY)),
        "{instructions}"
    );
    let agent = format!("http://{addr}/agent");
    let got = send(
        req("POST", &agent)
            .header("x-api-key", hookwarden::demo::DEMO_API_KEY)
            .body(Full::new(Bytes::from_static(br#"{"task":"summarise"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let j = got.json();
    assert_eq!(j["body"], r#"{"task":"summarise"}"#);
    assert!(j["headers"].get("x-api-key").is_none(), "{j}");
    assert_eq!(j["headers"]["x-upstream-secret"], "demo-upstream-secret");
    send(post_json(&agent, "{}"))
        .await
        .assert_error(401, "unauthorized");
    let got = send(
        req("POST", &agent)
            .header("x-api-key", "guessed")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    got.assert_error(401, "unauthorized");
    task.abort();
}

#[tokio::test]
async fn the_demo_serves_a_chat_page_whose_origin_may_use_the_widget_route() {
    let demo = hookwarden::demo::Demo::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gw = demo.addr();
    let page_url = demo.page_url();
    let page_origin = page_url.trim_end_matches('/').to_owned();
    assert!(demo.instructions().contains(&page_url));
    let task = tokio::spawn(demo.run(std::future::pending()));

    let got = send(req("GET", &page_url).body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200);
    let html = got.text();
    assert!(
        html.contains(&format!("http://{gw}/_hookwarden/client.js")),
        "{html}"
    );
    assert!(html.contains(r#"route: "widget""#), "{html}");

    // Without the page's origin, or without a token, the widget route refuses.
    let got = send(post_json(
        &format!("http://{gw}/widget"),
        r#"{"message":"hi"}"#,
    ))
    .await;
    got.assert_error(403, "forbidden");
    let token_url = format!("http://{gw}/_hookwarden/token?route=widget");
    let got = send(
        req("GET", &token_url)
            .header("origin", &page_origin)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let token = got.json()["token"].as_str().unwrap().to_owned();
    let resp = client()
        .request(
            req("POST", &format!("http://{gw}/widget"))
                .header("origin", &page_origin)
                .header("x-hookwarden-token", &token)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(br#"{"message":"hi"}"#)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        page_origin.as_str()
    );
    assert!(resp.headers().contains_key("x-hookwarden-token"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(r#"{"delta":"You "}"#));
    task.abort();
}

#[tokio::test]
async fn the_demo_shows_the_dashboard_and_fills_it_with_denied_traffic() {
    let demo = hookwarden::demo::Demo::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = demo.addr();
    let admin = demo.admin_addr().unwrap();
    let token = demo.admin_token().to_owned();
    let text = demo.instructions();
    assert!(
        text.contains(&format!("http://{admin}/#token={token}")),
        "{text}"
    );
    let task = tokio::spawn(demo.run(std::future::pending()));
    let (allowed, denied) = hookwarden::demo::generate_traffic(addr).await;
    assert_eq!((allowed, denied), (3, 9));

    let mut stats = serde_json::Value::Null;
    for _ in 0..50 {
        let got = admin_get(admin, "/api/stats?window=15m", Some(&token)).await;
        assert_eq!(got.status, 200);
        stats = got.json();
        if stats["totals"]["denied"] == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["totals"]["denied"], 9, "{stats}");
    assert_eq!(stats["totals"]["allowed"], 3, "{stats}");
    let reasons: Vec<&str> = stats["denials_by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for r in [
        "not_found",
        "method_not_allowed",
        "unsupported_media_type",
        "body_too_large",
        "bad_request",
    ] {
        assert!(reasons.contains(&r), "{r} missing from {reasons:?}");
    }
    let page = admin_get(admin, "/", None).await;
    assert_eq!(page.status, 200);
    task.abort();
}
