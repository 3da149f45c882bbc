//! Defences against clients that hold resources without using them: idle HTTP/2 connections
//! (`keepalive_timeout`), clients that stop reading (`send_timeout`), many connections from
//! one address (`max_connections_per_ip`) and many bodies buffered at once
//! (`max_buffered_body`). Each test shows the resource is given back and that other clients
//! are still served.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use hookwarden::policy::Reason;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame (length 0, type 4, no flags, stream 0).
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn cfg(server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
{server}

[[route]]
name = "hook"
path = "/hook"
max_body = "1KiB"
[route.upstream]
url = "{{upstream}}/target"

[[route]]
name = "flood"
path = "/flood"
[route.upstream]
url = "{{upstream}}/flood"
"#
    )
}

/// Reads until the server closes the connection (EOF or reset); returns when it did.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_keepalive_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &cfg("max_connections = 1\nkeepalive_timeout = \"1s\"\nheader_timeout = \"10s\""),
        &up,
    )
    .await;
    // An HTTP/2 client that says hello and then nothing: no stream is ever opened. HTTP/2
    // pings would keep it alive for ever; the idle rule must not.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(EMPTY_SETTINGS).await.unwrap();
    let took = closed_within(&mut s, Duration::from_secs(6))
        .await
        .expect("the idle HTTP/2 connection was never closed");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // Its slot (the only one) is free again.
    let got = tokio::time::timeout(
        Duration::from_secs(3),
        send(post_json(&gw.url("/hook"), "{}")),
    )
    .await
    .expect("the slot was not given back");
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn a_busy_http2_connection_is_not_closed_as_idle() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&cfg("keepalive_timeout = \"1s\""), &up).await;
    let c = h2c_client();
    for _ in 0..4 {
        let got = send_with(&c, post_json(&gw.url("/hook"), "{}")).await;
        assert_eq!(got.status, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_by_the_send_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&cfg("send_timeout = \"1s\""), &up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /flood HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    // Do not read: the upstream streams for ever, the socket buffers fill, writes block.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reading now drains what was buffered, then the connection must be gone; without the
    // send timeout the stream would go on and on.
    assert!(
        closed_within(&mut s, Duration::from_secs(8))
            .await
            .is_some(),
        "the stalled client kept its connection"
    );
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &cfg("max_connections_per_ip = 2\nheader_timeout = \"10s\""),
        &up,
    )
    .await;
    let _a = TcpStream::connect(gw.addr).await.unwrap();
    let _b = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third connection from the same address is closed at once.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    let _ = third
        .write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    let took = closed_within(&mut third, Duration::from_secs(3))
        .await
        .expect("the third connection was served");
    assert!(took < Duration::from_secs(1));
    // Another address is served meanwhile.
    let other = client_from("127.0.0.2".parse().unwrap());
    let got = send_with(&other, post_json(&gw.url("/hook"), "{}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn bodies_beyond_the_global_budget_are_refused_with_503() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &cfg("max_buffered_body = \"2KiB\"\nmax_body = \"1KiB\"\nbody_timeout = \"5s\"\nmax_connections_per_ip = 0"),
        &up,
    )
    .await;
    // Two slow clients each reserve a whole 1 KiB body and send only part of it.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n{\"partial")
            .await
            .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = req("POST", &gw.url("/hook"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
        .unwrap();
    let got = send(r).await;
    gw.assert_refused(&got, 503, "service_unavailable", Reason::Overloaded)
        .await;
    assert_eq!(got.header("retry-after"), Some("1"));
    // Requests without a body need no budget.
    let got = send(
        req("POST", &gw.url("/hook"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    // When the slow clients go, the budget comes back.
    drop(slow);
    let ok = eventually(Duration::from_secs(3), "budget given back", || async {
        let r = req("POST", &gw.url("/hook"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
            .unwrap();
        send(r).await.status == 200
    })
    .await;
    assert!(ok < Duration::from_secs(3));
}

/// A client that sends part of the HTTP/2 preface and stops (or leaves) is closed at the
/// header timeout and gives its slot back; the bytes waiting unread must not keep the
/// connection alive, as they once did for ever.
#[tokio::test]
async fn a_partial_http2_preface_is_closed_at_the_header_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&cfg("max_connections = 1\nheader_timeout = \"1s\""), &up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&H2_PREFACE[..1]).await.unwrap();
    let took = closed_within(&mut s, Duration::from_secs(4))
        .await
        .expect("a partial preface kept its connection");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // One that sends a few bytes and hangs up: the slot (the only one) comes back too.
    let mut gone = TcpStream::connect(gw.addr).await.unwrap();
    gone.write_all(&H2_PREFACE[..16]).await.unwrap();
    drop(gone);
    let got = tokio::time::timeout(
        Duration::from_secs(4),
        send(post_json(&gw.url("/hook"), "{}")),
    )
    .await
    .expect("the slot was not given back");
    assert_eq!(got.status, 200);
    assert_eq!(up.count(), 1);
}

/// An HTTP/2 client that takes a response's head and grants no flow-control window for its
/// body (while its connection stays alive) is disconnected after `send_timeout`: the stream
/// would otherwise hold its upstream connection for ever, since the socket never blocks and
/// the upstream's idle timeout does not count the client's time.
#[tokio::test]
async fn an_http2_client_that_grants_no_window_is_cut_by_the_send_timeout() {
    use http_body_util::BodyExt;
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &cfg("send_timeout = \"1s\"\nkeepalive_timeout = \"30s\""),
        &up,
    )
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(0)
        .http2_initial_connection_window_size(65_535)
        .build_http::<Full<Bytes>>();
    let resp = client
        .request(
            req("POST", &gw.url("/flood"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reading now opens the window; the gateway must have given up on the stream by then.
    let mut body = resp.into_body();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled stream was still flowing");
}

/// An HTTP/2 request whose headers never finish (a HEADERS frame without END_HEADERS, then
/// silence) opens no stream: the connection is closed after `header_timeout`, as an HTTP/1.1
/// head that never ends is, not after the longer `keepalive_timeout`.
#[tokio::test]
async fn an_http2_request_head_that_never_ends_is_closed_at_the_header_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &cfg("header_timeout = \"1s\"\nkeepalive_timeout = \"30s\""),
        &up,
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(EMPTY_SETTINGS).await.unwrap();
    // HEADERS, 1 byte (`:method: GET`, indexed), no flags, stream 1.
    s.write_all(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82])
        .await
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(6))
        .await
        .expect("the unfinished request head kept its connection");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert_eq!(up.count(), 0);
}

/// HTTP/2 carries many requests on one connection: an address gets as many requests in flight
/// over HTTP/2, across its connections, as `max_connections_per_ip` lets it have over
/// HTTP/1.1 (one each), and the rest are refused at once (503 `overloaded`) without
/// reaching the upstream. Once they finish, its requests are served again.
#[tokio::test]
async fn http2_streams_from_one_address_are_capped_like_its_connections() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &cfg("max_connections_per_ip = 3\nheader_timeout = \"10s\"").replace(
            "url = \"{upstream}/target\"",
            "url = \"{upstream}/slow-headers\"\ntimeout = \"10s\"",
        ),
        &up,
    )
    .await;
    let mut answers = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
        conns.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut h2 = h2.ready().await.unwrap();
        for _ in 0..3 {
            let req = http::Request::builder()
                .method("POST")
                .uri(gw.url("/hook"))
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let (answer, _) = h2.send_request(req, true).unwrap();
            answers.push(answer);
            h2 = h2.ready().await.unwrap();
        }
    }
    let started = Instant::now();
    let answers: Vec<_> = answers
        .into_iter()
        .map(|a| tokio::spawn(async move { (a.await.unwrap(), started.elapsed()) }))
        .collect();
    let mut statuses = Vec::new();
    let mut quick = 0;
    let mut refused_id = None;
    for a in answers {
        let (resp, took) = a.await.unwrap();
        if resp.status() == 503 && took < Duration::from_secs(1) {
            quick += 1;
        }
        if resp.status() == 503 {
            assert_eq!(resp.headers()["retry-after"], "1");
            refused_id = resp.headers()["x-request-id"]
                .to_str()
                .ok()
                .map(str::to_owned);
        }
        statuses.push(resp.status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 503, 503, 503], "{statuses:?}");
    assert_eq!(up.count(), 3, "a refused stream reached the upstream");
    assert_eq!(quick, 3, "the refusals waited for the slow ones");
    let ev = gw.event(&refused_id.expect("a refusal's id")).await;
    assert_eq!(ev.reason, Some(Reason::Overloaded), "{ev:?}");
    // Their slots are free again.
    let got = send_with(&h2c_client(), post_json(&gw.url("/hook"), "{}")).await;
    assert_eq!(got.status, 200);
    for c in conns {
        c.abort();
    }
}
