//! Test harness: a real gateway on an ephemeral port in front of a real recording upstream.
//!
//! Every test can assert both sides: what the client got, and what the upstream saw (or that
//! it saw nothing). Nothing is mocked: requests go over real sockets.
#![allow(dead_code)]

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
        let dir = tempfile::tempdir().unwrap();
        let full = complete_config(text, &upstream.base(), dir.path());
        let loaded = hookwarden::config::load_str(&full, "test", dir.path(), env)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let app = hookwarden::app::App::start(&loaded.config).await.unwrap();
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

/// Builds a request.
pub fn req(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

/// A POST with a JSON body.
pub fn post_json(url: &str, body: &str) -> Request<Full<Bytes>> {
    req("POST", url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Writes raw bytes on a new connection and reads until the server closes it or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
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
