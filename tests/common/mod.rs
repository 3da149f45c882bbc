//! Test harness: a real gateway on an ephemeral port in front of a real recording upstream.
//!
//! Every test can assert both sides: what the client got, and what the upstream saw (or that
//! it saw nothing). Nothing is mocked: requests go over real sockets.
#![allow(dead_code)]

pub mod redis_util;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, channel::Channel};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

type UpBody = http_body_util::Either<Full<Bytes>, Channel<Bytes, Infallible>>;

/// A real HTTP server that records every request and answers by path:
/// - `/sse`: three Server-Sent Events, `SSE_PAUSE` apart;
/// - `/slow-headers`: waits 3 s before answering;
/// - `/stall`: sends headers and one chunk, then nothing;
/// - `/flood`: streams 64 KiB chunks for as long as anyone reads;
/// - `/redirect?to=URL`: 302 to URL (and a `Content-Location` under `/webhook/`);
/// - `/webhook/…/missing`: n8n's 404 for an inactive workflow, naming the path;
/// - `/status/NNN`: answers NNN;
/// - anything else: 200 `{"ok":true}` with an `X-Upstream` header and hop-by-hop headers.
pub struct Upstream {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

pub const SSE_PAUSE: Duration = Duration::from_millis(400);

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recs = records.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let recs = recs.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let recs = recs.clone();
                        async move { Ok::<_, Infallible>(answer(req, recs).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            records,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// The single request received; panics unless exactly one arrived.
    pub fn only(&self) -> Recorded {
        let r = self.requests();
        assert_eq!(
            r.len(),
            1,
            "expected exactly one upstream request, got {}",
            r.len()
        );
        r.into_iter().next().unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(req: Request<Incoming>, recs: Arc<Mutex<Vec<Recorded>>>) -> Response<UpBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    recs.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body,
        version: parts.version,
    });
    if path == "/sse" {
        let (mut tx, chan) = Channel::<Bytes, Infallible>::new(1);
        tokio::spawn(async move {
            for i in 1..=3 {
                if i > 1 {
                    tokio::time::sleep(SSE_PAUSE).await;
                }
                let ev = format!("data: event {i}\n\n");
                if tx.send_data(Bytes::from(ev)).await.is_err() {
                    return;
                }
            }
        });
        let mut r = Response::new(UpBody::Right(chan));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return r;
    }
    if path == "/flood" {
        // An endless stream, for clients that stop reading.
        let (mut tx, chan) = Channel::<Bytes, Infallible>::new(1);
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            while tx.send_data(chunk.clone()).await.is_ok() {}
        });
        return Response::new(UpBody::Right(chan));
    }
    if path == "/redirect" {
        // 302 to the URL in `?to=`, like a trailing-slash or login redirect of an upstream.
        let to = parts
            .uri
            .query()
            .and_then(|q| hookwarden::urlenc::query_param(q, "to"))
            .unwrap_or_default();
        let mut r = Response::new(UpBody::Left(Full::new(Bytes::new())));
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut().insert("location", to.parse().unwrap());
        r.headers_mut()
            .insert("content-location", "/webhook/secret-id".parse().unwrap());
        flow_fields(r.headers_mut());
        return r;
    }
    if path == "/cookies" {
        // The same fields on an answer without a Location.
        let mut r = Response::new(UpBody::Left(Full::new(Bytes::from_static(b"{}"))));
        flow_fields(r.headers_mut());
        return r;
    }
    if path.starts_with("/webhook/") && path.ends_with("/missing") {
        // What n8n answers for an inactive workflow: the message names the webhook path.
        let msg = format!(
            r#"{{"code":404,"message":"The requested webhook \"POST {path}\" is not registered."}}"#
        );
        let mut r = Response::new(UpBody::Left(Full::new(Bytes::from(msg))));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return r;
    }
    if path == "/echo-headers-401" {
        // A refusal that echoes the credentials it got, written by PHP's `json_encode` (which
        // escapes `/` as `\/`).
        let fields: Vec<String> = ["authorization", "x-key", "x-n8n-auth"]
            .iter()
            .filter_map(|name| Some((name, parts.headers.get(*name)?)))
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes())
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('/', "\\/");
                format!(r#""{name}":"{value}""#)
            })
            .collect();
        let msg = format!(
            r#"{{"error":"unauthorized","headers":{{{}}}}}"#,
            fields.join(",")
        );
        let mut r = Response::new(UpBody::Left(Full::new(Bytes::from(msg))));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    if path == "/slow-headers" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path == "/stall" {
        let (mut tx, chan) = Channel::<Bytes, Infallible>::new(1);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(b"first chunk\n")).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        return Response::new(UpBody::Right(chan));
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut r = Response::new(UpBody::Left(Full::new(Bytes::from_static(
        br#"{"ok":true}"#,
    ))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-upstream", "yes".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    r
}

/// A gateway started in-process from config text. Its events are kept so tests can assert
/// the exact audit reason of a refusal ([`Gateway::assert_refused`]).
pub struct Gateway {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    events: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Arc<hookwarden::events::Event>>>,
}

/// Completes config text for tests: `{upstream}` becomes the upstream's base URL, the listener
/// gets an ephemeral port and the store a temporary file, unless the text sets them.
pub fn complete_config(text: &str, upstream: &str, dir: &std::path::Path) -> String {
    let text = text.replace("{upstream}", upstream);
    let mut table: toml::Table = text.parse().expect("test config is TOML");
    let server = table
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    server
        .entry("listen")
        .or_insert_with(|| toml::Value::String("127.0.0.1:0".into()));
    let storage = table
        .entry("storage")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    storage
        .entry("path")
        .or_insert_with(|| toml::Value::String(dir.join("hookwarden.db").display().to_string()));
    toml::to_string(&table).unwrap()
}

impl Gateway {
    /// Starts a gateway from `text` (see [`complete_config`]).
    pub async fn start(text: &str, upstream: &Upstream) -> Gateway {
        Self::start_with_env(text, upstream, &|_| None).await
    }

    /// Like [`Gateway::start`] with `${VAR}` values from `env`.
    pub async fn start_with_env(
        text: &str,
        upstream: &Upstream,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Gateway {
        let (app, dir) = Self::prepare(text, upstream, env).await;
        Self::spawn(app, dir)
    }

    /// Loads the completed config and starts the app (not yet serving).
    async fn prepare(
        text: &str,
        upstream: &Upstream,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (hookwarden::app::App, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let full = complete_config(text, &upstream.base(), dir.path());
        let loaded = hookwarden::config::load_str(&full, "test", dir.path(), env)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let app = hookwarden::app::App::start(&loaded.config).await.unwrap();
        (app, dir)
    }

    /// Serves `app` in the background until [`Gateway::stop`].
    fn spawn(app: hookwarden::app::App, dir: tempfile::TempDir) -> Gateway {
        let addr = app.local_addr();
        let events = app.gateway().events().subscribe("test", 100_000);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run(async {
                let _ = rx.await;
            })
            .await;
        });
        Gateway {
            addr,
            dir,
            shutdown: Some(tx),
            task: Some(task),
            events: tokio::sync::Mutex::new(events),
        }
    }

    /// The event of request `id`. Events are emitted before the response is sent, so the
    /// event of a request whose response arrived is always there.
    pub async fn event(&self, id: &str) -> Arc<hookwarden::events::Event> {
        let mut rx = self.events.lock().await;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no event for request {id}"))
                .expect("event channel closed");
            if ev.request_id == id {
                return ev;
            }
        }
    }

    /// Asserts a refusal: the status, the public error code, and the audit reason.
    pub async fn assert_refused(
        &self,
        got: &Got,
        status: u16,
        code: &str,
        reason: hookwarden::policy::Reason,
    ) -> Arc<hookwarden::events::Event> {
        let id = got.assert_error(status, code);
        let ev = self.event(&id).await;
        assert_eq!(ev.reason, Some(reason), "request {id}: {ev:?}");
        ev
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers a graceful shutdown and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
        }
    }

    /// Starts the shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for a shutdown begun with [`Gateway::begin_shutdown`].
    pub async fn finished(&mut self) {
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A response with its body read.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, in order (those that are not text left out).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Asserts the gateway's JSON error format and returns the request id.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let j = self.json();
        assert_eq!(j["error"], code, "{j}");
        let id = j["request_id"].as_str().expect("request_id").to_owned();
        assert_eq!(self.header("x-request-id"), Some(id.as_str()));
        id
    }
}

/// A plain HTTP/1.1 client (no pooling surprises: one fresh client per call site is fine).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request and reads the whole response.
pub async fn send(req: Request<Full<Bytes>>) -> Got {
    send_with(&client(), req).await
}

pub async fn send_with(c: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Got {
    let resp = c.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

/// A JSON POST of `body` to `url` as Standard Webhooks message `id`, sent at `ts` with `sig`.
pub fn standard_message(
    url: &str,
    id: &str,
    ts: i64,
    sig: &str,
    body: &str,
) -> http::Request<Full<Bytes>> {
    req("POST", url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Builds a request.
pub fn req(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

/// A JSON POST signed as GitHub signs webhooks (`X-Hub-Signature-256: sha256=<hex HMAC>`).
pub fn github_signed(url: &str, secret: &str, body: &str) -> Request<Full<Bytes>> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    req("POST", url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// A POST with a JSON body.
pub fn post_json(url: &str, body: &str) -> Request<Full<Bytes>> {
    req("POST", url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// An HTTP/2 (h2c) connection to `addr`, driven by a task of its own and ready for a request:
/// for tests that send frames hyper's client does not (stream resets, cut bodies).
pub async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    h2.ready().await.unwrap()
}

/// Writes raw bytes on a new connection and reads until the server closes it or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes raw bytes on a new connection and reads one response: its head, then as many body
/// bytes as its `Content-Length` says. Unlike [`raw`] it does not wait for the server to close
/// the connection (which, after a refusal of an unread body, lingers for a moment).
pub async fn raw_response(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path to the built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hookwarden"))
}

/// Waits until `GET /_hookwarden/healthz` answers 200 at `addr`.
pub async fn wait_healthy(addr: SocketAddr) {
    let c = client();
    for _ in 0..200 {
        let r = req("GET", &format!("http://{addr}/_hookwarden/healthz"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(resp) = c.request(r).await
            && resp.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway at {addr} never became healthy");
}

/// A free local port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every event a gateway emitted, collected as they come (see [`Gateway::start_with_events`]).
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Arc<hookwarden::events::Event>>>>);

impl Events {
    /// All events so far.
    pub fn all(&self) -> Vec<Arc<hookwarden::events::Event>> {
        self.0.lock().unwrap().clone()
    }

    /// The event of `request_id`, waiting up to 2 s for it (events are emitted after the
    /// response is built).
    pub async fn get(&self, request_id: &str) -> Arc<hookwarden::events::Event> {
        for _ in 0..200 {
            if let Some(e) = self.all().into_iter().find(|e| e.request_id == request_id) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no event for request {request_id}");
    }

    /// The reason code recorded for `request_id` (`"-"` for an allowed request).
    pub async fn reason(&self, request_id: &str) -> &'static str {
        self.get(request_id)
            .await
            .reason
            .map_or("-", |r| r.as_str())
    }
}

/// A client whose connections leave from `local` (any 127.0.0.0/8 address works on Linux), to
/// play a caller that is not the trusted proxy at 127.0.0.1.
pub fn client_from(local: std::net::IpAddr) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(local));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A gateway with a handle on its core (routes, shared state, events) and the events of every
/// request, subscribed before the first one.
pub struct Observed {
    pub gw: Gateway,
    pub core: Arc<hookwarden::gateway::Gateway>,
    pub events: tokio::sync::mpsc::Receiver<Arc<hookwarden::events::Event>>,
}

impl Observed {
    /// The next event, waiting up to 5 s.
    pub async fn next_event(&mut self) -> Arc<hookwarden::events::Event> {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("no event within 5 s")
            .expect("event channel closed")
    }

    /// The event of the request with `request_id` (skipping others).
    pub async fn event_for(&mut self, request_id: &str) -> Arc<hookwarden::events::Event> {
        loop {
            let e = self.next_event().await;
            if e.request_id == request_id {
                return e;
            }
        }
    }
}

impl Gateway {
    /// Like [`Gateway::start_with_env`], also collecting every event the gateway emits.
    pub async fn start_with_events(
        text: &str,
        upstream: &Upstream,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Gateway, Events) {
        let (app, dir) = Self::prepare(text, upstream, env).await;
        let events = Events::default();
        let mut rx = app.gateway().events().subscribe("test-all", 100_000);
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                sink.0.lock().unwrap().push(e);
            }
        });
        (Self::spawn(app, dir), events)
    }

    /// Writes `text` completed as the gateway's own config (same store file) to
    /// `config.toml` in its directory, for CLI commands run against it; returns the path.
    pub fn write_config(&self, text: &str, upstream: &Upstream) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(
            &path,
            complete_config(text, &upstream.base(), self.dir.path()),
        )
        .unwrap();
        path
    }

    /// The SQLite store file.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("hookwarden.db")
    }
}

/// Polls `check` every 50 ms until it returns true or `limit` passes; returns the time it
/// took, or panics with `what`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Gateway {
    /// Starts a gateway like [`Gateway::start`] and returns it with its core and events.
    pub async fn start_observed(text: &str, upstream: &Upstream) -> Observed {
        let (app, dir) = Self::prepare(text, upstream, &|_| None).await;
        let core = app.gateway().clone();
        let events = core.events().subscribe("test-observed", 100_000);
        Observed {
            gw: Self::spawn(app, dir),
            core,
            events,
        }
    }
}
/// The admin token the admin tests configure.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Like [`Gateway::start_with_env`], also returning the admin listener's address (the config
/// should have `[admin] listen = "127.0.0.1:0"`).
pub async fn start_with_admin(
    text: &str,
    upstream: &Upstream,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Gateway, SocketAddr) {
    let (app, dir) = Gateway::prepare(text, upstream, env).await;
    let admin = app.admin_addr().expect("the config has no [admin] section");
    (Gateway::spawn(app, dir), admin)
}

/// A GET on the admin listener with `token` (or none).
pub async fn admin_get(admin: SocketAddr, path: &str, token: Option<&str>) -> Got {
    let mut b = req("GET", &format!("http://{admin}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// A POST on the admin listener with `token` (or none).
pub async fn admin_post(admin: SocketAddr, path: &str, token: Option<&str>) -> Got {
    let mut b = req("POST", &format!("http://{admin}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Polls `GET /api/events` (newest first) until `pred` holds, or panics after 10 s.
pub async fn wait_events(
    admin: SocketAddr,
    query: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    for _ in 0..100 {
        let got = admin_get(admin, &format!("/api/events?{query}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(got.status, 200, "{}", got.text());
        last = got.json()["events"].as_array().cloned().unwrap_or_default();
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("events never matched; last seen: {last:#?}");
}

/// A request as an alert receiver got it, with when it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A tiny recording HTTP server for alert notifications. It answers the statuses in
/// `statuses` in turn (the last one repeats), after `delay`.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(statuses: &[u16], delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let statuses: Arc<Vec<u16>> = Arc::new(statuses.to_vec());
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let g = g.clone();
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let g = g.clone();
                        let statuses = statuses.clone();
                        async move {
                            let at = std::time::Instant::now();
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let n = {
                                let mut v = g.lock().unwrap();
                                v.push(Received {
                                    at,
                                    path: parts.uri.path().to_owned(),
                                    query: parts.uri.query().map(str::to_owned),
                                    headers: parts.headers,
                                    body,
                                });
                                v.len()
                            };
                            tokio::time::sleep(delay).await;
                            let status = statuses
                                .get(n - 1)
                                .or(statuses.last())
                                .copied()
                                .unwrap_or(200);
                            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, got, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (at most `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the real binary's `serve` with a config file; kills it on drop. stderr is captured.
pub struct Served {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `hookwarden serve` with `text` (`{listen}` and `{admin}` become free local
    /// addresses, `{upstream}` the upstream's base, `{dir}` the temp dir) and waits until healthy.
    pub async fn start(text: &str, upstream: &str, env: &[(&str, &str)]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let has_admin = text.contains("{admin}");
        let config = dir.path().join("hookwarden.toml");
        let full = text
            .replace("{listen}", &listen.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{upstream}", upstream)
            .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config, full).unwrap();
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let served = Served {
            child,
            addr: listen,
            admin: has_admin.then_some(admin),
            config,
            dir,
            stderr,
        };
        for _ in 0..200 {
            let c = client();
            let r = req("GET", &format!("http://{listen}/_hookwarden/healthz"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Ok(resp) = c.request(r).await
                && resp.status() == 200
            {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("hookwarden serve never became healthy: {}", served.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal (by number) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM and wait for the exit (the audit writer flushes on the way out). The temp dir
    /// stays until `self` is dropped.
    pub async fn stop(&mut self) -> String {
        self.signal("TERM");
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.log()
    }

    /// Waits until the log contains `needle` (at most 10 s).
    pub async fn wait_log(&self, needle: &str) -> String {
        for _ in 0..200 {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("log never contained {needle:?}:\n{}", self.log());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer of a [`Scripted`] upstream.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Wait before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A recording upstream that answers its requests from a script, in turn (the last answer
/// repeats), and can be started on a chosen address: bind nothing there first to play an
/// upstream that is down, then start it to bring the upstream up. Dropping it closes the
/// listener and every open connection.
pub struct Scripted {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<(std::time::Instant, Recorded)>>>,
    task: JoinHandle<()>,
}

/// The n-th reply of `script` for the n-th request, its last for every later one (`200` when
/// the script is empty).
fn scripted_answer(script: Vec<Reply>) -> impl Fn(&Recorded, usize) -> Reply + Send + Sync {
    let script = if script.is_empty() {
        vec![Reply::status(200)]
    } else {
        script
    };
    move |_, n| script.get(n - 1).or(script.last()).cloned().unwrap()
}

impl Scripted {
    /// On an ephemeral port.
    pub async fn start(script: Vec<Reply>) -> Scripted {
        Self::start_at("127.0.0.1:0".parse().unwrap(), script).await
    }

    /// On `addr` (retrying the bind for a while, in case the port is still being released).
    pub async fn start_at(addr: SocketAddr, script: Vec<Reply>) -> Scripted {
        Self::start_fn(addr, scripted_answer(script)).await
    }

    /// On `addr`, answering each request with `answer(request, n)` (`n` counts from 1).
    pub async fn start_fn(
        addr: SocketAddr,
        answer: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("cannot bind {addr}"));
        Self::serve(listener, answer)
    }

    /// On `listener`, answering with `script` as [`Scripted::start_at`] does.
    pub fn start_on(listener: TcpListener, script: Vec<Reply>) -> Scripted {
        Self::serve(listener, scripted_answer(script))
    }

    fn serve(
        listener: TcpListener,
        answer: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<(std::time::Instant, Recorded)>>> = Arc::default();
        let script = Arc::new(answer);
        let g = got.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let g = g.clone();
                let script = script.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let g = g.clone();
                        let script = script.clone();
                        async move {
                            let at = std::time::Instant::now();
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let reply = {
                                let mut v = g.lock().unwrap();
                                let rec = Recorded {
                                    method: parts.method.clone(),
                                    path: parts.uri.path().to_owned(),
                                    query: parts.uri.query().map(str::to_owned),
                                    headers: parts.headers,
                                    body,
                                    version: parts.version,
                                };
                                let reply = script(&rec, v.len() + 1);
                                v.push((at, rec));
                                reply
                            };
                            tokio::time::sleep(reply.delay).await;
                            let mut r =
                                Response::new(Full::new(Bytes::from_static(br#"{"ok":true}"#)));
                            *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            for (name, value) in reply.headers {
                                r.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Scripted { addr, got, task }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// When each request arrived.
    pub fn times(&self) -> Vec<std::time::Instant> {
        self.got.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.count() >= n {
                return self.requests();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "expected {n} upstream requests within {within:?}, got {}",
                    self.count()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A local address where nothing listens (yet): an upstream that is down.
pub fn down_addr() -> DownPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    DownPort { socket, addr }
}

/// A port nothing answers on yet, held by a bound socket that does not listen: connecting to
/// it is refused, as to an upstream that is down, and no other socket can take the port in
/// the meantime. A port merely found free and released could be handed by the kernel to an
/// outgoing connection as its source port, and an upstream started on it later then failed
/// to bind for as long as that connection lived.
pub struct DownPort {
    socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl std::fmt::Display for DownPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl DownPort {
    /// Brings the upstream up on the held port.
    pub async fn start(self, script: Vec<Reply>) -> Scripted {
        let listener = self.socket.listen(1024).unwrap();
        Scripted::start_on(listener, script)
    }
}

impl Served {
    /// `kill -KILL` and wait for the process to be gone: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Starts `hookwarden serve` again with the same config file, store and addresses (after
    /// [`Served::kill_hard`] or [`Served::stop`]) and waits until healthy. The log restarts.
    pub async fn respawn(&mut self, env: &[(&str, &str)]) {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        self.child = child;
        self.stderr = stderr;
        for _ in 0..200 {
            let c = client();
            let r = req("GET", &format!("http://{}/_hookwarden/healthz", self.addr))
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Ok(resp) = c.request(r).await
                && resp.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "hookwarden serve never became healthy again: {}",
            self.log()
        );
    }
}

/// A request with a method, an admin token and no body, on the admin listener.
pub async fn admin_call(admin: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Got {
    let mut b = req(method, &format!("http://{admin}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Fields that can carry an upstream's URL among other things, naming the flow id
/// `3f1c9a7e2b` that test routes put in their upstream URLs, and a cookie that does not.
fn flow_fields(h: &mut http::HeaderMap) {
    h.insert(
        "link",
        "<https://public.example.com/flows/3f1c9a7e2b/next>; rel=\"next\""
            .parse()
            .unwrap(),
    );
    h.append(
        "set-cookie",
        "flow=1; Path=/flows/3f1c9a7e2b; HttpOnly".parse().unwrap(),
    );
    h.append("set-cookie", "session=abc; Path=/".parse().unwrap());
}
