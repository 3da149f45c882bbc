//! The demo's test upstream: `/echo` answers with what it received, `/stream` streams a reply
//! as Server-Sent Events, word by word, like an AI agent does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, channel::Channel};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type DemoBody = http_body_util::Either<Full<Bytes>, Channel<Bytes, Infallible>>;

/// A running test upstream.
pub struct DemoUpstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DemoUpstream {
    /// Binds `addr` and serves in the background.
    pub async fn start(addr: SocketAddr) -> std::io::Result<DemoUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc =
                        service_fn(|req| async move { Ok::<_, Infallible>(serve(req).await) });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(DemoUpstream { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn serve(req: Request<Incoming>) -> Response<DemoBody> {
    match req.uri().path() {
        "/echo" => echo(req).await,
        "/stream" => stream(req).await,
        _ => {
            let mut r = Response::new(DemoBody::Left(Full::new(Bytes::from_static(b"not found"))));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

async fn echo(req: Request<Incoming>) -> Response<DemoBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    let out = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = Response::new(DemoBody::Left(Full::new(Bytes::from(out.to_string()))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn stream(req: Request<Incoming>) -> Response<DemoBody> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let reply = format!(
        "You said \"{}\". This answer comes from the upstream, one word at a time, through hookwarden.",
        message.chars().take(200).collect::<String>()
    );
    let (mut tx, chan) = Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        for word in reply.split_inclusive(' ') {
            let event = format!("data: {}\n\n", json!({ "delta": word }));
            if tx.send_data(Bytes::from(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    let mut r = Response::new(DemoBody::Right(chan));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}
