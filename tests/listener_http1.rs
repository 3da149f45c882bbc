//! The gateway's own HTTP/1.1 connections (`server::h1`), spoken to in raw bytes: where a
//! request ends (the smuggling shapes refused, chunked bodies decoded, pipelined requests kept
//! apart), `100 Continue`, keep-alive after a refused body, HTTP/1.0, HEAD, and heads that are
//! malformed or too large. Every refusal is checked on the upstream's side too.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CFG: &str = r#"
[server]
header_timeout = "2s"
body_timeout = "2s"

[[route]]
name = "hook"
path = "/hook"
methods = ["POST", "GET", "HEAD"]
max_body = "1KiB"
content_types = ["application/json"]
[route.upstream]
url = "{upstream}/target"
"#;

/// Reads one response from `s` (bytes already read are in `buf`, and what follows the
/// response stays there): the head, then a body framed by Content-Length or chunked.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    read_answer(s, buf, false).await
}

/// Like [`read_response`], for the answer to a HEAD request (no body whatever its length).
async fn read_head_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    read_answer(s, buf, true).await.0
}

async fn read_answer(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> (String, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let lower = head.to_ascii_lowercase();
            let len: Option<usize> = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok());
            let rest = &buf[end + 4..];
            if lower.contains("transfer-encoding: chunked") {
                if let Some(body) = dechunk(rest) {
                    let used = body.1;
                    let body = body.0;
                    buf.drain(..end + 4 + used);
                    return (head, body);
                }
            } else {
                let len = if head.starts_with("HTTP/1.1 1") || head_request {
                    0
                } else {
                    len.unwrap_or(0)
                };
                if rest.len() >= len {
                    let body = rest[..len].to_vec();
                    buf.drain(..end + 4 + len);
                    return (head, body);
                }
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!(
                "no complete response (read: {other:?}); so far: {:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }
}

/// A complete chunked body at the start of `b`: the data and the bytes it took.
fn dechunk(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        let line_end = b[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size = usize::from_str_radix(std::str::from_utf8(&b[at..line_end]).ok()?, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (b.len() >= at + 2).then(|| (out, at + 2));
        }
        if b.len() < at + size + 2 {
            return None;
        }
        out.extend_from_slice(&b[at..at + size]);
        at += size + 2;
    }
}

/// True when the server closes `s` within `wait` (reading and dropping anything before).
async fn closes(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

const POST_HEAD: &str = "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";

#[tokio::test]
async fn the_smuggling_shapes_are_400_and_reach_nothing() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    // Each would let a front proxy and the gateway disagree on where the request ends; the
    // bytes after the "body" are a request the upstream must never see.
    let smuggled = "GET /hook?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding:\tchunked\r\nTransfer-Encoding: x\r\n",
        "Content-Length: 4\r\nContent-Length: 5\r\n",
        "Content-Length: 4, 4\r\n",
        "Content-Length: -4\r\n",
    ] {
        let raw = format!("{POST_HEAD}{framing}\r\n0\r\n\r\n{smuggled}");
        let mut s = connect(gw.addr).await;
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{framing:?}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains(r#""error":"bad_request""#), "{body}");
        assert!(closes(&mut s, Duration::from_secs(7)).await, "{framing:?}");
    }
    assert_eq!(up.count(), 0, "{:#?}", up.requests());
}

#[tokio::test]
async fn chunked_bodies_are_decoded_and_forwarded_with_their_length() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = connect(gw.addr).await;
    // Extensions and trailers, written in pieces.
    s.write_all(format!("{POST_HEAD}Transfer-Encoding: chunked\r\n\r\n").as_bytes())
        .await
        .unwrap();
    for piece in ["7;ext=1\r\n{\"a\":", "1}\r\n", "0\r\nX-Trailer: t\r\n\r\n"] {
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.write_all(piece.as_bytes()).await.unwrap();
    }
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = up.only();
    assert_eq!(&seen.body[..], br#"{"a":1}"#);
    assert_eq!(seen.headers["content-length"], "7");
    assert!(seen.headers.get("transfer-encoding").is_none());

    // Malformed chunk sizes: 400, nothing forwarded, the connection closes.
    let mut s = connect(gw.addr).await;
    s.write_all(
        format!("{POST_HEAD}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(closes(&mut s, Duration::from_secs(7)).await);
    assert_eq!(up.count(), 1);
}

/// Chunked bodies a peer could frame differently from the gateway: a trailer section ended
/// by a bare LF (with a request behind it), trailer lines that are not fields, bare CRs, NULs
/// and whitespace without an extension in chunk-size lines. Each is a 400 that closes the
/// connection, and the upstream sees neither the body nor what follows it.
#[tokio::test]
async fn chunked_bodies_that_peers_could_frame_differently_are_400_and_reach_nothing() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let smuggled = "GET /hook?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    for chunks in [
        "2\r\n{}\r\n0\r\n\n",
        "2\r\n{}\r\n0\r\nGET /hook?in-trailer=1 HTTP/1.1\r\nX: y\r\n\r\n",
        "2\r\n{}\r\n0\r\nno colon \0 here\r\n\r\n",
        "2\r\r\n{}\r\n0\r\n\r\n",
        "2;a\rb\r\n{}\r\n0\r\n\r\n",
        "2;\0\r\n{}\r\n0\r\n\r\n",
        "2 \r\n{}\r\n0\r\n\r\n",
        "2\t\r\n{}\r\n0\r\n\r\n",
        "2\r\n{}\r\n0\r\r\n\r\n",
    ] {
        let raw = format!("{POST_HEAD}Transfer-Encoding: chunked\r\n\r\n{chunks}{smuggled}");
        let mut s = connect(gw.addr).await;
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{chunks:?}: {head}");
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains(r#""error":"bad_request""#), "{body}");
        assert!(closes(&mut s, Duration::from_secs(7)).await, "{chunks:?}");
    }
    assert_eq!(up.count(), 0, "{:#?}", up.requests());
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = connect(gw.addr).await;
    let one = format!("{POST_HEAD}Content-Length: 7\r\n\r\n{{\"n\":1}}");
    let two = format!("{POST_HEAD}Content-Length: 7\r\n\r\n{{\"n\":2}}");
    let missing = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(format!("{one}{missing}{two}").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (a, _) = read_response(&mut s, &mut buf).await;
    let (b, _) = read_response(&mut s, &mut buf).await;
    let (c, _) = read_response(&mut s, &mut buf).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(b.starts_with("HTTP/1.1 404"), "{b}");
    assert!(c.starts_with("HTTP/1.1 200"), "{c}");
    let bodies: Vec<_> = up.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [&br#"{"n":1}"#[..], &br#"{"n":2}"#[..]]);
}

/// A head that arrives in pieces, its end split between them (CR LF CR | LF, LF | CR LF, and
/// bare LF LF): the head is parsed again only when new bytes could end it, so every split must
/// still be seen, and a malformed head is still refused once it ends.
#[tokio::test]
async fn a_head_in_pieces_is_read_whatever_the_split() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let full = format!(
        "{POST_HEAD}X-Pad: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "p".repeat(3000)
    );
    let end = full.find("\r\n\r\n").unwrap();
    let bare = "GET /hook HTTP/1.1\nHost: x\n\n".to_owned();
    let bare_end = bare.find("\n\n").unwrap();
    for (text, cuts) in [
        (&full, vec![5, 100, end + 3]),
        (&full, vec![end + 1]),
        (&full, vec![end + 2]),
        (&bare, vec![bare_end + 1]),
    ] {
        let mut s = connect(gw.addr).await;
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
            s.write_all(&text.as_bytes()[from..cut]).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            from = cut;
        }
        let mut buf = Vec::new();
        let (head, _) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{cuts:?}: {head}");
    }
    assert_eq!(up.count(), 4);

    // A bad request line is refused once its head ends, even sent a piece at a time.
    let mut s = connect(gw.addr).await;
    for piece in ["GET /hook HTTP/1.1\r\nHo", "st x\r\n", "\r\n"] {
        s.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(up.count(), 4);

    // Empty lines before the request line are ignored, however they arrive.
    let mut s = connect(gw.addr).await;
    for piece in [
        "\r\n",
        "\n",
        "\r\n\r\nGET /hook HTTP/1.1\r\nHost: x\r\n",
        "\r\n",
    ] {
        s.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn expect_100_continue_is_answered_only_when_the_body_is_wanted() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    // Wanted: the client waits for 100 Continue before sending its body (as curl does).
    let mut s = connect(gw.addr).await;
    s.write_all(format!("{POST_HEAD}Expect: 100-continue\r\nContent-Length: 2\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (interim, _) = read_response(&mut s, &mut buf).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue");
    assert_eq!(up.count(), 0);
    s.write_all(b"{}").await.unwrap();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(&up.only().body[..], b"{}");

    // Refused from its head: the final answer at once, no 100, and the connection closes
    // (the client may or may not send the body it was not asked for).
    let mut s = connect(gw.addr).await;
    s.write_all(
        b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 415"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(closes(&mut s, Duration::from_secs(7)).await);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_refused_body_is_read_and_the_connection_carries_the_next_request() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = connect(gw.addr).await;
    // 413 from Content-Length, while the 2 KiB body is still coming.
    let big = "x".repeat(2048);
    s.write_all(format!("{POST_HEAD}Content-Length: 2048\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    s.write_all(big.as_bytes()).await.unwrap();
    // The body's bytes are not taken for a request; the next request is.
    s.write_all(format!("{POST_HEAD}Content-Length: 2\r\n\r\n{{}}").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(&up.only().body[..], b"{}");
}

#[tokio::test]
async fn http_1_0_head_and_dates() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    // HTTP/1.0 without keep-alive: one response, then the connection closes.
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET /hook HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, br#"{"ok":true}"#);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(closes(&mut s, Duration::from_secs(3)).await);
    // Every response carries a Date (RFC 9110 §6.6.1).
    assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");

    // HEAD: the upstream's length, no body bytes; the connection stays usable.
    let mut s = connect(gw.addr).await;
    s.write_all(b"HEAD /hook HTTP/1.1\r\nHost: x\r\n\r\nGET /hook HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head_answer(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 11"),
        "{head}"
    );
    // What follows the HEAD response is the GET's response, not a body.
    let (next, body) = read_response(&mut s, &mut buf).await;
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    assert_eq!(body, br#"{"ok":true}"#);
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_an_answer_and_reach_nothing() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    for (raw, status) in [
        ("GET /hook HTTP/1.1\r\n\r\n".to_owned(), "400"),
        (
            "GET /hook HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "GET /hook HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "GET /hook HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n".to_owned(),
            "400",
        ),
        ("GET /hook HTTP/9.9\r\nHost: x\r\n\r\n".to_owned(), "400"),
        (
            format!(
                "GET /hook HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70_000)
            ),
            "431",
        ),
        (
            format!(
                "GET /hook HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..120)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
            "431",
        ),
    ] {
        let got = raw_response(gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}")),
            "{:?} -> {got}",
            &raw[..raw.len().min(60)]
        );
        // Recorded like any refusal, under the id the client was shown.
        let id = got
            .split(r#""request_id":""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no request id in {got}"));
        let ev = gw.event(id).await;
        assert_eq!(ev.reason, Some(hookwarden::policy::Reason::BadRequest));
        assert_eq!(ev.status.to_string(), status);
        assert_eq!(ev.client_ip, std::net::IpAddr::from([127, 0, 0, 1]));
        assert!(ev.detail.is_some(), "{ev:?}");
    }
    assert_eq!(up.count(), 0, "{:#?}", up.requests());
}

/// Runs curl (a real client's `Expect: 100-continue` handling) and returns its status line's
/// code and how long it took.
async fn curl(args: Vec<String>) -> (String, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--expect100-timeout",
                "5",
            ])
            .args(&args)
            .output()
            .expect("curl runs (scripts/test installs it)");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            started.elapsed(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn curl_gets_its_100_continue_or_its_refusal_without_waiting() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(600));
    // Without the interim response curl would wait its whole expect timeout (5 s) first.
    let (code, took) = curl(vec![
        "-H".into(),
        "Expect: 100-continue".into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        body.clone(),
        gw.url("/hook"),
    ])
    .await;
    assert_eq!(code, "200");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(up.only().body.len(), body.len());
    // Refused from its head: the 415 at once, and the body is never forwarded.
    let (code, took) = curl(vec![
        "-H".into(),
        "Expect: 100-continue".into(),
        "-H".into(),
        "Content-Type: text/plain".into(),
        "--data-binary".into(),
        body,
        gw.url("/hook"),
    ])
    .await;
    assert_eq!(code, "415");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn the_first_byte_does_not_buy_a_second_header_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let started = std::time::Instant::now();
    let mut s = connect(gw.addr).await;
    // Just inside the 2 s header timeout, the first byte; then a byte every 100 ms.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    s.write_all(b"P").await.unwrap();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"O").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    // One header timeout from the connection (2 s), not a fresh one from the first byte.
    assert!(took < Duration::from_millis(2800), "closed after {took:?}");
    assert_eq!(up.count(), 0);
}

/// One request with an empty JSON body on the keep-alive connection `s`, to `path`.
async fn post_on(s: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> String {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_response(s, buf).await.0
}

// The connection keeps one header timer and moves its deadline later for each request; tokio
// must then fire it at the last deadline, not at the first.
#[tokio::test]
async fn a_busy_connection_outlives_its_first_header_deadline_and_idles_out_after_the_last() {
    let up = Upstream::start().await;
    let cfg = CFG.replace("header_timeout = \"2s\"", "header_timeout = \"1s\"");
    let gw = Gateway::start(&cfg, &up).await;
    let mut s = connect(gw.addr).await;
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    // 2.4 s of requests 400 ms apart on a connection whose header timeout is 1 s.
    for i in 0..6 {
        let head = post_on(&mut s, &mut buf, "/hook").await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(started.elapsed() > Duration::from_secs(2));
    let head = post_on(&mut s, &mut buf, "/hook").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(up.count(), 7);
    // Idle now: open for most of a header timeout, closed soon after it.
    assert!(
        !closes(&mut s, Duration::from_millis(700)).await,
        "closed early"
    );
    assert!(closes(&mut s, Duration::from_secs(2)).await, "never closed");
}

// The upstream's response head is timed by a timer the connection lends each request: it must
// time every request, also after a fast one moved its deadline and after it fired once.
#[tokio::test]
async fn the_upstream_timeout_holds_for_every_request_of_a_connection() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{CFG}
[[route]]
name = \"slow\"
path = \"/slow\"
[route.upstream]
url = \"{{upstream}}/slow-headers\"
timeout = \"500ms\"
"
    );
    let gw = Gateway::start(&cfg, &up).await;
    let mut s = connect(gw.addr).await;
    let mut buf = Vec::new();
    for round in 0..2 {
        let head = post_on(&mut s, &mut buf, "/hook").await;
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        let started = std::time::Instant::now();
        let head = post_on(&mut s, &mut buf, "/slow").await;
        let took = started.elapsed();
        assert!(head.starts_with("HTTP/1.1 504"), "round {round}: {head}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(2000),
            "round {round}: 504 after {took:?}"
        );
    }
    assert_eq!(up.count(), 4);
}

/// Reads from `s` until two `200` answers have come, within 10 s, the connection open.
async fn two_oks(s: &mut TcpStream) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.windows(12).filter(|w| w == b"HTTP/1.1 200").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("both answers within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
}

/// An HTTP/1.1 client that closes its connection while the upstream is still working is
/// noticed at once (as nginx does): the exchange is recorded as `client_closed` and the
/// upstream call is let go, instead of running to the upstream's answer (or `timeout`) for a
/// client that is gone. A client that stays gets its answer; a pipelined request sent while
/// the first is handled is served after it.
#[tokio::test]
async fn a_client_that_closes_while_the_upstream_works_is_noticed() {
    let up = Upstream::start().await;
    let cfg = r#"
[[route]]
name = "slow"
path = "/slow"
[route.upstream]
url = "{upstream}/slow-headers"
timeout = "10s"

[[route]]
name = "fast"
path = "/fast"
[route.upstream]
url = "{upstream}/fast"
"#;
    let (gw, events) = Gateway::start_with_events(cfg, &up, &|_| None).await;
    let request = "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                   Content-Length: 2\r\n\r\n{}";

    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    eventually(Duration::from_secs(5), "the upstream got it", || async {
        up.count() == 1
    })
    .await;
    let closed_at = std::time::Instant::now();
    drop(s);
    let closed = |e: &&std::sync::Arc<hookwarden::events::Event>| {
        e.reason == Some(hookwarden::policy::Reason::ClientClosed)
    };
    eventually(Duration::from_secs(2), "the close noticed", || async {
        events.all().iter().any(|e| closed(&e))
    })
    .await;
    // Long before the upstream's answer (3 s).
    assert!(closed_at.elapsed() < Duration::from_millis(2500));
    let all = events.all();
    let e = all.iter().find(closed).unwrap();
    assert_eq!(e.status, 499);
    assert_eq!(e.route.as_deref(), Some("slow"));
    assert_eq!(e.detail, Some("dropped while the upstream was answering"));

    // A client that waits, with a second request pipelined behind the first: both answered.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(request.as_bytes()).await.unwrap();
    two_oks(&mut s).await;
    assert_eq!(up.count(), 3);

    // A client that pipelines a second request and then shuts down its sending side (as
    // `printf … | nc -N` does) waits for both answers: it has not gone.
    let pipelined_then_half_closed = |requests: String| async move {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(requests.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("answers within 10 s")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    let fast = request.replace("/slow", "/fast");
    let out = pipelined_then_half_closed(format!("{request}{fast}")).await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert_eq!(up.count(), 5);

    // The same when the first of them is answered at once (no route): the end of the stream
    // is then seen only while the pipelined request is handled, with nothing left to read.
    let unrouted = request.replace("/slow", "/nope");
    let out = pipelined_then_half_closed(format!("{unrouted}{request}")).await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
    assert_eq!(up.count(), 6);
    assert_eq!(
        events.all().iter().filter(|e| closed(e)).count(),
        1,
        "only the first client left"
    );

    // Pipelining once does not hide a later close: two pipelined requests answered, then one
    // sent alone (with a line end after its body, as some clients send) and the client gone.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("{fast}{fast}").as_bytes())
        .await
        .unwrap();
    two_oks(&mut s).await;
    s.write_all(format!("{request}\r\n").as_bytes())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the upstream got it", || async {
        up.count() == 9
    })
    .await;
    drop(s);
    eventually(Duration::from_secs(2), "the close noticed", || async {
        events.all().iter().filter(|e| closed(e)).count() == 2
    })
    .await;
}
