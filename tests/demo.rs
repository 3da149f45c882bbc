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
