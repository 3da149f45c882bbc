//! The demo's chat page: a static page on its own port, which is an allowed origin of the
//! demo's browser route, so the whole widget flow (origin check, tokens, CORS, streaming) runs
//! in a real browser against the gateway.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const TEMPLATE: &str = include_str!("page.html");

/// Renders the page for a gateway at `gateway` (an origin) and the route `route` at `path`.
pub fn render(gateway: &str, route: &str, path: &str) -> String {
    TEMPLATE
        .replace("{{GATEWAY}}", gateway)
        .replace("{{ROUTE}}", route)
        .replace("{{PATH}}", path)
}

/// A running page server.
pub struct DemoPage {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DemoPage {
    /// Serves `html` at `/` from `listener` in the background.
    pub fn serve(listener: TcpListener, html: String) -> std::io::Result<DemoPage> {
        let addr = listener.local_addr()?;
        let html = Bytes::from(html);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Typically out of file descriptors: wait instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let html = html.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let html = html.clone();
                        async move { Ok::<_, Infallible>(answer(&req, html)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(DemoPage { addr, task })
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

fn answer(req: &Request<Incoming>, html: Bytes) -> Response<Full<Bytes>> {
    let mut r = if req.uri().path() == "/" {
        let mut r = Response::new(Full::new(html));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}
