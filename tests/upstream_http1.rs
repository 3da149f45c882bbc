//! The HTTP/1.1 client that carries requests to plain-`http` upstreams (`forward::h1`), against
//! an upstream that writes exact bytes: connection reuse, every way a response body can be
//! framed, responses that must never be trusted (a smuggling shape, conflicting lengths, a
//! body cut short), and pooled connections the upstream closed while idle.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the raw upstream does after writing a response.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Then {
    /// Waits for the next request on the same connection.
    KeepOpen,
    /// Closes the connection at once.
    Close,
    /// Closes the connection this long after answering, unless a request comes first.
    CloseAfter(Duration),
    /// Writes these bytes this long after answering, then waits for the next request.
    SendLater(&'static [u8], Duration),
}

/// One request as the raw upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection (from 1) carried it.
    conn: usize,
    head: String,
    body: Vec<u8>,
}

/// An upstream that reads HTTP/1.1 requests (Content-Length bodies) and answers the n-th
/// request (from 1) with the exact bytes `script(n)` gives.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    async fn start(script: impl Fn(usize) -> (Vec<u8>, Then) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script = Arc::new(script);
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut conn_no = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conn_no += 1;
                tokio::spawn(serve(stream, conn_no, s.clone(), script.clone()));
            }
        });
        RawUpstream { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.seen().iter().map(|s| s.conn).max().unwrap_or(0)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<impl Fn(usize) -> (Vec<u8>, Then) + Send + Sync + ?Sized>,
) {
    let mut buf = Vec::new();
    let mut then = Then::KeepOpen;
    loop {
        let read_more = async {
            let mut chunk = [0u8; 8192];
            stream.read(&mut chunk).await.map(|n| chunk[..n].to_vec())
        };
        // Wait for a whole request, or for the close deadline of the last answer.
        let got = match then {
            Then::CloseAfter(d) if buf.is_empty() => match tokio::time::timeout(d, read_more).await
            {
                Ok(r) => r,
                Err(_) => return,
            },
            _ => read_more.await,
        };
        match got {
            Ok(bytes) if !bytes.is_empty() => buf.extend_from_slice(&bytes),
            _ => return,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let n = {
                let mut s = seen.lock().unwrap();
                s.push(Seen { conn, head, body });
                s.len()
            };
            let (answer, next) = script(n);
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            then = next;
            if then == Then::Close {
                let _ = stream.shutdown().await;
                return;
            }
            if let Then::SendLater(bytes, after) = then {
                tokio::time::sleep(after).await;
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
                then = Then::KeepOpen;
            }
        }
    }
}

fn route(upstream_url: &str, methods: &str) -> String {
    format!(
        r#"
# One listener thread: upstream connections are pooled per thread, and the counts below
# assume every request meets the same pool.
[server]
workers = 1

[[route]]
name = "hook"
path = "/hook"
methods = {methods}
max_body = "1MiB"
[route.upstream]
url = "{upstream_url}"
timeout = "2s"
idle_timeout = "1s"
headers = {{ "X-Auth" = "upstream-secret" }}
"#
    )
}

/// A gateway in front of `raw` (the recording upstream it is given is never used).
async fn gateway(raw: &RawUpstream, methods: &str) -> (Gateway, Upstream) {
    let unused = Upstream::start().await;
    let gw = Gateway::start(&route(&raw.url("/in"), methods), &unused).await;
    (gw, unused)
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn post(gw: &Gateway, body: &str) -> Got {
    send(post_json(&gw.url("/hook"), body)).await
}

#[tokio::test]
async fn one_upstream_connection_carries_sequential_requests() {
    let raw = RawUpstream::start(|n| (ok(&format!("answer {n}")), Then::KeepOpen)).await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    for i in 1..=10 {
        let got = post(&gw, &format!(r#"{{"i":{i}}}"#)).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), format!("answer {i}"));
    }
    let seen = raw.seen();
    assert_eq!(seen.len(), 10);
    assert_eq!(
        raw.connections(),
        1,
        "every request on one pooled connection"
    );
    // The request as it went out: origin-form target, Host of the upstream, exact length,
    // the injected header, and each body whole.
    let first = &seen[0];
    let mut lines = first.head.lines();
    assert_eq!(lines.next(), Some("POST /in HTTP/1.1"));
    let head = format!("{}\r\n", first.head.to_ascii_lowercase());
    assert!(
        head.contains(&format!("\r\nhost: {}\r\n", raw.addr)),
        "{head}"
    );
    assert!(head.contains("\r\ncontent-length: 7\r\n"), "{head}");
    assert!(head.contains("\r\nx-auth: upstream-secret\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(first.body, br#"{"i":1}"#);
    assert_eq!(seen[9].body, br#"{"i":10}"#);
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_the_connection_reused() {
    let raw = RawUpstream::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec(),
            Then::KeepOpen,
        )
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    for _ in 0..3 {
        let got = post(&gw, "{}").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "hello world");
        assert!(
            got.header("transfer-encoding")
                .is_none_or(|v| v == "chunked")
        );
        assert!(got.header("x-trailer").is_none());
    }
    assert_eq!(raw.seen().len(), 3);
    assert_eq!(raw.connections(), 1);
}

#[tokio::test]
async fn an_answer_without_a_length_ends_when_the_upstream_closes() {
    let raw = RawUpstream::start(|n| {
        (
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close {n}")
                .into_bytes(),
            Then::Close,
        )
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    assert_eq!(post(&gw, "{}").await.text(), "until close 1");
    assert_eq!(post(&gw, "{}").await.text(), "until close 2");
    // Such a connection is never reused: it has ended.
    assert_eq!(raw.connections(), 2);
}

#[tokio::test]
async fn transfer_encoding_with_content_length_is_never_trusted_again() {
    // The first answer carries both framings and then bytes that would be read as the next
    // response on a reused connection: the smuggling shape (RFC 9112 §6.1). They must never
    // reach a client.
    let raw = RawUpstream::start(|n| match n {
        1 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nfirst\r\n0\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"
                .to_vec(),
            Then::KeepOpen,
        ),
        _ => (ok("second"), Then::KeepOpen),
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    assert_eq!(post(&gw, "{}").await.text(), "first");
    let second = post(&gw, "{}").await;
    assert_eq!(second.text(), "second");
    assert_eq!(
        raw.connections(),
        2,
        "the suspicious connection was dropped"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_while_idle_is_not_used() {
    // Like Node's keep-alive timeout: the upstream closes an idle connection shortly after
    // answering. A POST that came later must still be delivered, once.
    let raw = RawUpstream::start(|n| {
        (
            ok(&format!("answer {n}")),
            Then::CloseAfter(Duration::from_millis(100)),
        )
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    assert_eq!(post(&gw, "{}").await.text(), "answer 1");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = post(&gw, r#"{"second":true}"#).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "answer 2");
    let seen = raw.seen();
    assert_eq!(seen.len(), 2, "each POST reached the upstream exactly once");
    assert_eq!(seen[1].body, br#"{"second":true}"#);
    assert_eq!(raw.connections(), 2);
}

#[tokio::test]
async fn a_body_cut_short_is_not_passed_off_as_complete() {
    let raw = RawUpstream::start(|n| match n {
        1 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..".to_vec(),
            Then::Close,
        ),
        _ => (ok("whole"), Then::KeepOpen),
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    // The client sees the exchange fail (before or after the head, as the listener manages),
    // never a short body presented as complete.
    if let Ok(resp) = client().request(post_json(&gw.url("/hook"), "{}")).await {
        assert_eq!(resp.status(), 200);
        assert!(resp.into_body().collect().await.is_err());
    }
    assert_eq!(post(&gw, "{}").await.text(), "whole");
}

#[tokio::test]
async fn malformed_or_unasked_heads_are_502_and_the_connection_dropped() {
    let raw = RawUpstream::start(|n| match n {
        1 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd".to_vec(),
            Then::KeepOpen,
        ),
        2 => (b"this is not http\r\n\r\n".to_vec(), Then::KeepOpen),
        3 => (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n".to_vec(),
            Then::KeepOpen,
        ),
        4 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\n".to_vec(),
            Then::KeepOpen,
        ),
        _ => (ok("fine"), Then::KeepOpen),
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    for _ in 1..=4 {
        let got = post(&gw, "{}").await;
        let id = got.assert_error(502, "bad_gateway");
        assert_eq!(
            gw.event(&id).await.reason.map(|r| r.as_str()),
            Some("upstream_unreachable")
        );
    }
    assert_eq!(post(&gw, "{}").await.text(), "fine");
    // A connection that carried a broken answer is never reused.
    assert_eq!(raw.connections(), 5);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let raw = RawUpstream::start(|_| {
        (
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal"
                .to_vec(),
            Then::KeepOpen,
        )
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    let got = post(&gw, "{}").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "final");
    assert!(got.header("link").is_none());
}

#[tokio::test]
async fn large_bodies_arrive_whole() {
    let raw = RawUpstream::start(|_| (ok("got it"), Then::KeepOpen)).await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    // Over the size that is written together with the head.
    let big: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let body = format!(r#"{{"text":"{big}"}}"#);
    let got = post(&gw, &body).await;
    assert_eq!(got.status, 200);
    let seen = raw.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes());
}

#[tokio::test]
async fn head_and_no_content_answers_have_no_body() {
    let raw = RawUpstream::start(|n| match n {
        1 => (
            // A HEAD answer announces the length of the body it does not send.
            b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n".to_vec(),
            Then::KeepOpen,
        ),
        2 => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), Then::KeepOpen),
        _ => (ok("third"), Then::KeepOpen),
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["HEAD", "POST"]"#).await;
    let head = send(
        req("HEAD", &gw.url("/hook"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("1234"));
    let none = post(&gw, "{}").await;
    assert_eq!(none.status, 204);
    assert!(none.body.is_empty());
    assert_eq!(post(&gw, "{}").await.text(), "third");
    // The HEAD answer's connection is not reused (it declared a body, which the upstream may
    // send anyway); the 204's, which declared nothing, is.
    assert_eq!(raw.connections(), 2);
    assert!(raw.seen()[0].head.starts_with("HEAD /in HTTP/1.1\r\n"));
}

/// An upstream that answers the first request with `first`, and 300 ms later sends what its
/// head announced as a body: a whole response meant for nobody, there for whichever request
/// is sent on the connection next. Every other request gets "second".
async fn leaking_upstream(first: Vec<u8>) -> RawUpstream {
    const LEFTOVER: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 26\r\n\r\nmeant for the first client";
    RawUpstream::start(move |n| match n {
        1 => (
            first.clone(),
            Then::SendLater(LEFTOVER, Duration::from_millis(300)),
        ),
        _ => (ok("second"), Then::KeepOpen),
    })
    .await
}

/// A HEAD answer or a 304 that declares a body, and the body sent anyway a moment later (a
/// HEAD served by the GET handler): the bytes never reach the next request, which may be
/// another client's, because the connection is not reused.
#[tokio::test]
async fn a_head_or_not_modified_answer_sent_with_its_body_does_not_leak_into_the_next_request() {
    for (method, status) in [("HEAD", "200 OK"), ("POST", "304 Not Modified")] {
        let first = format!("HTTP/1.1 {status}\r\ncontent-length: 47\r\n\r\n").into_bytes();
        let raw = leaking_upstream(first).await;
        let (gw, _u) = gateway(&raw, r#"["HEAD", "POST"]"#).await;
        let got = send(
            req(method, &gw.url("/hook"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(if method == "HEAD" {
                    b""
                } else {
                    b"{}"
                })))
                .unwrap(),
        )
        .await;
        assert!(got.body.is_empty(), "{method}: {:?}", got.body);
        // At once, while the upstream is still about to send the first answer's body.
        next_answer_is_its_own(&gw, &raw, method).await;
    }
}

/// The next request gets the leaking upstream's second answer, on a new upstream connection:
/// the first connection, which held bytes of no request, was dropped.
async fn next_answer_is_its_own(gw: &Gateway, raw: &RawUpstream, case: &str) {
    let second = post(gw, "{}").await;
    assert_eq!(second.status, 200, "{case}");
    assert_eq!(second.text(), "second", "{case}");
    assert_eq!(
        raw.connections(),
        2,
        "{case}: the first connection was dropped"
    );
}

/// A 204 that declares a body (a length, or a coding) is answered without the length, and its
/// connection is not reused: bytes the upstream sends after it would otherwise be read as the
/// answer to the next client's request.
#[tokio::test]
async fn a_no_content_answer_declaring_a_body_does_not_leak_into_the_next_request() {
    for declared in ["content-length: 47\r\n", "transfer-encoding: chunked\r\n"] {
        let first = format!("HTTP/1.1 204 No Content\r\n{declared}\r\n").into_bytes();
        let raw = leaking_upstream(first).await;
        let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(
            b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 204"), "{declared:?}: {answer}");
        assert!(!answer.contains("content-length"), "{declared:?}: {answer}");
        assert!(
            !answer.contains("transfer-encoding"),
            "{declared:?}: {answer}"
        );
        assert!(answer.ends_with("\r\n\r\n"), "no body: {answer}");
        next_answer_is_its_own(&gw, &raw, &format!("{declared:?}")).await;
    }
}

#[tokio::test]
async fn an_upstream_that_accepts_but_never_answers_is_504_and_later_requests_recover() {
    let raw = RawUpstream::start(|n| match n {
        // No answer at all: the request's `timeout` (2 s) expires.
        1 => (Vec::new(), Then::KeepOpen),
        _ => (ok("back"), Then::KeepOpen),
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    let got = post(&gw, "{}").await;
    let id = got.assert_error(504, "gateway_timeout");
    assert_eq!(
        gw.event(&id).await.reason.map(|r| r.as_str()),
        Some("upstream_timeout")
    );
    // The silent connection was abandoned with the request, not pooled.
    assert_eq!(post(&gw, "{}").await.text(), "back");
    assert_eq!(raw.connections(), 2);
}

/// The upstream reads the second request on the pooled connection and closes it without a
/// word, as a server does when its keep-alive timer fires just as a request arrives.
async fn drops_second_request() -> RawUpstream {
    RawUpstream::start(|n| match n {
        2 => (Vec::new(), Then::Close),
        _ => (ok(&format!("answer {n}")), Then::KeepOpen),
    })
    .await
}

#[tokio::test]
async fn an_idempotent_request_meeting_a_dead_pooled_connection_is_sent_again() {
    let raw = drops_second_request().await;
    let (gw, _u) = gateway(&raw, r#"["GET", "POST"]"#).await;
    let get = |gw: &Gateway| {
        send(
            req("GET", &gw.url("/hook"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    };
    assert_eq!(get(&gw).await.text(), "answer 1");
    let again = get(&gw).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.text(), "answer 3");
    assert_eq!(raw.seen().len(), 3);
    assert_eq!(raw.connections(), 2);
}

#[tokio::test]
async fn a_post_meeting_a_dead_pooled_connection_is_never_sent_twice() {
    let raw = drops_second_request().await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    assert_eq!(post(&gw, "{}").await.text(), "answer 1");
    let got = post(&gw, r#"{"once":true}"#).await;
    got.assert_error(502, "bad_gateway");
    // The upstream may have acted on it: it saw it once, and only once.
    let seen = raw.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body, br#"{"once":true}"#);
}

/// Sends the same POST over HTTP/1.1 (raw bytes, to see the head exactly as written) and over
/// HTTP/2, and returns both answers.
async fn over_both(gw: &Gateway) -> (String, Got) {
    let h1 = raw_response(
        gw.addr,
        b"POST /hook HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\n\r\n{}",
        Duration::from_secs(5),
    )
    .await;
    let h2 = send_with(&h2c_client(), post_json(&gw.url("/hook"), "{}")).await;
    assert_eq!(h2.version, http::Version::HTTP_2);
    (h1, h2)
}

/// The lines of a raw HTTP/1.1 answer's head named `name` (any case), as `name: value`.
fn field_lines<'a>(answer: &'a str, name: &str) -> Vec<&'a str> {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// The upstream's end-to-end fields reach HTTP/1.1 clients as they came (passed through as
/// bytes, `forward::passed`) and HTTP/2 clients through the header map, alike: every value
/// and repeat kept, the upstream's `Date` instead of the gateway's, the framing and hop-by-hop
/// fields replaced by the listener's own.
#[tokio::test]
async fn upstream_fields_reach_http1_and_http2_clients_alike() {
    let raw = RawUpstream::start(|_| {
        (
            b"HTTP/1.1 201 Created\r\nServer: up/1\r\nSet-Cookie: a=1\r\n\
              X-Custom: Value, with spaces\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\
              set-cookie: b=2; Path=/\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\
              Proxy-Connection: keep-alive\r\nVary: Accept\r\n\r\nhello"
                .to_vec(),
            Then::KeepOpen,
        )
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    let (h1, h2) = over_both(&gw).await;

    assert!(h1.starts_with("HTTP/1.1 201 Created\r\n"), "{h1}");
    assert!(h1.ends_with("\r\n\r\nhello"), "{h1}");
    assert_eq!(
        field_lines(&h1, "set-cookie"),
        ["Set-Cookie: a=1", "set-cookie: b=2; Path=/"]
    );
    assert_eq!(
        field_lines(&h1, "x-custom"),
        ["X-Custom: Value, with spaces"]
    );
    assert_eq!(field_lines(&h1, "server"), ["Server: up/1"]);
    assert_eq!(
        field_lines(&h1, "date"),
        ["Date: Tue, 01 Dec 2026 00:00:00 GMT"]
    );
    assert_eq!(field_lines(&h1, "content-length"), ["content-length: 5"]);
    assert_eq!(field_lines(&h1, "vary"), ["Vary: Accept"]);
    for gone in [
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "connection",
    ] {
        assert_eq!(field_lines(&h1, gone), Vec::<&str>::new(), "{gone}: {h1}");
    }
    let ids = field_lines(&h1, "x-request-id");
    assert_eq!(ids.len(), 1, "{h1}");

    assert_eq!(h2.status, 201);
    assert_eq!(h2.text(), "hello");
    let h = &h2.headers;
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2; Path=/"]);
    assert_eq!(h["x-custom"], "Value, with spaces");
    assert_eq!(h["server"], "up/1");
    assert_eq!(h["date"], "Tue, 01 Dec 2026 00:00:00 GMT");
    assert_eq!(h["vary"], "Accept");
    assert!(h.get("keep-alive").is_none() && h.get("proxy-connection").is_none());
    assert_eq!(h.get_all("x-request-id").iter().count(), 1);
    assert_ne!(h["x-request-id"], ids[0].split_once(": ").unwrap().1);
    assert_eq!(raw.seen().len(), 2);
}

/// Fields a response rule reads send the head through the rules, over both protocols: a field
/// `Connection` names goes, the gateway's `X-Request-Id` replaces the upstream's, and a
/// `Location` into the upstream is removed while one to another host stays.
#[tokio::test]
async fn upstream_fields_the_rules_change_are_changed_over_both_protocols() {
    let raw = RawUpstream::start(|n| {
        let location = if n % 2 == 1 {
            "Location: /in/next"
        } else {
            "Location: https://elsewhere.example/next"
        };
        (
            format!(
                "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: secret\r\n\
                 X-Request-Id: upstream-chosen\r\n{location}\r\nX-Kept: 1\r\n\
                 Content-Length: 2\r\n\r\nok"
            )
            .into_bytes(),
            Then::KeepOpen,
        )
    })
    .await;
    let (gw, _u) = gateway(&raw, r#"["POST"]"#).await;
    for round in 0..2 {
        let (h1, h2) = over_both(&gw).await;
        assert!(h1.starts_with("HTTP/1.1 200 OK\r\n"), "{h1}");
        assert!(h1.ends_with("\r\n\r\nok"), "{h1}");
        assert_eq!(field_lines(&h1, "x-hop"), Vec::<&str>::new(), "{h1}");
        assert_eq!(field_lines(&h1, "x-kept").len(), 1, "{h1}");
        let ids = field_lines(&h1, "x-request-id");
        assert_eq!(ids.len(), 1, "{h1}");
        assert!(!ids[0].contains("upstream-chosen"), "{h1}");
        assert!(h2.headers.get("x-hop").is_none());
        assert_eq!(h2.headers["x-kept"], "1");
        assert_eq!(h2.headers.get_all("x-request-id").iter().count(), 1);
        assert_ne!(h2.headers["x-request-id"], "upstream-chosen");
        // Requests 1 and 3 (HTTP/1.1) meet the relative Location; 2 and 4 (HTTP/2) the other.
        assert_eq!(
            field_lines(&h1, "location"),
            Vec::<&str>::new(),
            "round {round}: {h1}"
        );
        assert_eq!(h2.headers["location"], "https://elsewhere.example/next");
    }
}

/// The guards' own response headers (here a limit's RateLimit fields) go out beside the
/// upstream's fields over both protocols, and replace an upstream field of the same name.
#[tokio::test]
async fn guard_headers_join_the_upstream_fields_and_replace_same_named_ones() {
    let raw = RawUpstream::start(|n| {
        let own = if n <= 2 {
            ""
        } else {
            "RateLimit: \"upstream\";r=1\r\n"
        };
        (
            format!("HTTP/1.1 200 OK\r\nX-Up: 1\r\n{own}Content-Length: 2\r\n\r\nok").into_bytes(),
            Then::KeepOpen,
        )
    })
    .await;
    let unused = Upstream::start().await;
    let config = format!(
        "{}\n[[route.limit]]\nkey = \"route\"\nrate = \"1000/minute\"\n",
        route(&raw.url("/in"), r#"["POST"]"#)
    );
    let gw = Gateway::start(&config, &unused).await;
    // Requests 1 (HTTP/1.1) and 2 (HTTP/2) meet an upstream without the field, 3 and 4 one
    // with it.
    for round in 0..2 {
        let (h1, h2) = over_both(&gw).await;
        assert!(h1.ends_with("\r\n\r\nok"), "{h1}");
        // Passed through as written while no name is shared; through the header map (which
        // spells names in lower case) once the upstream sends a RateLimit of its own.
        let x_up = if round == 0 { "X-Up: 1" } else { "x-up: 1" };
        assert_eq!(field_lines(&h1, "x-up"), [x_up], "round {round}");
        let ratelimit = field_lines(&h1, "ratelimit");
        assert_eq!(ratelimit.len(), 1, "round {round}: {h1}");
        assert!(!ratelimit[0].contains("upstream"), "round {round}: {h1}");
        assert_eq!(field_lines(&h1, "ratelimit-policy").len(), 1, "{h1}");
        assert_eq!(h2.headers["x-up"], "1");
        let ratelimit: Vec<_> = h2.headers.get_all("ratelimit").iter().collect();
        assert_eq!(ratelimit.len(), 1, "round {round}");
        assert!(!ratelimit[0].to_str().unwrap().contains("upstream"));
        assert!(h2.headers.contains_key("ratelimit-policy"));
    }
    assert_eq!(raw.seen().len(), 4);
}
