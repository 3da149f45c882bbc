//! Helpers for the browser-route tests (`browser_origin`, `browser_token`, `cors`): a gateway
//! whose events the test can read, so every refusal is asserted by its exact reason code, and
//! request builders for the Origin / token / X-Forwarded-For combinations.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookwarden::events::Event;
use hookwarden::policy::Reason;
use http_body_util::Full;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::common::{Got, Upstream, complete_config, req, send};

/// A gateway started in-process whose events are kept for the test.
pub struct Gw {
    pub addr: std::net::SocketAddr,
    events: Mutex<mpsc::Receiver<Arc<Event>>>,
    task: JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Gw {
    /// Starts a gateway from `text` (`{upstream}` = the upstream's base URL) with its store in
    /// a fresh temporary directory.
    pub async fn start(text: &str, upstream: &Upstream) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let mut gw = Self::start_in(text, upstream, dir.path()).await;
        gw._dir = Some(dir);
        gw
    }

    /// Like [`Gw::start`] with the store in `dir` (to restart on the same store).
    pub async fn start_in(text: &str, upstream: &Upstream, dir: &Path) -> Gw {
        let full = complete_config(text, &upstream.base(), dir);
        let loaded = hookwarden::config::load_str(&full, "test", dir, &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let app = hookwarden::app::App::start(&loaded.config).await.unwrap();
        let addr = app.local_addr();
        let events = app.gateway().events().subscribe("test", 10_000);
        let task = tokio::spawn(app.run(std::future::pending()));
        Gw {
            addr,
            events: Mutex::new(events),
            task,
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The event of request `id` (events are emitted before the response is sent).
    pub async fn event(&self, id: &str) -> Arc<Event> {
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
    pub async fn assert_refused(&self, got: &Got, status: u16, code: &str, reason: Reason) {
        let id = got.assert_error(status, code);
        let ev = self.event(&id).await;
        assert_eq!(ev.reason, Some(reason), "request {id}: {ev:?}");
    }

    /// The event of a response that carries an `X-Request-Id`.
    pub async fn event_of(&self, got: &Got) -> Arc<Event> {
        let id = got.header("x-request-id").expect("x-request-id").to_owned();
        self.event(&id).await
    }

    /// Stops the gateway (its store stays in the directory it was started in).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request from a page: optional `Origin`, token and `X-Forwarded-For`.
#[derive(Default, Clone)]
pub struct Page<'a> {
    pub origin: Option<&'a str>,
    pub token: Option<&'a str>,
    pub xff: Option<&'a str>,
}

pub const SHOP: &str = "https://shop.example.com";

impl<'a> Page<'a> {
    pub fn origin(origin: &'a str) -> Self {
        Page {
            origin: Some(origin),
            ..Default::default()
        }
    }

    pub fn shop() -> Self {
        Self::origin(SHOP)
    }

    pub fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    pub fn xff(mut self, xff: &'a str) -> Self {
        self.xff = Some(xff);
        self
    }

    fn apply(&self, mut b: http::request::Builder) -> http::request::Builder {
        if let Some(o) = self.origin {
            b = b.header("origin", o);
        }
        if let Some(t) = self.token {
            b = b.header("x-hookwarden-token", t);
        }
        if let Some(x) = self.xff {
            b = b.header("x-forwarded-for", x);
        }
        b
    }

    /// Builds a request without sending it.
    pub fn build(&self, method: &str, url: &str, body: &str) -> http::Request<Full<Bytes>> {
        let mut b = self.apply(req(method, url));
        if !body.is_empty() {
            b = b.header("content-type", "application/json");
        }
        b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
    }

    /// POSTs a JSON body.
    pub async fn post(&self, url: &str, body: &str) -> Got {
        send(self.build("POST", url, body)).await
    }

    /// `GET /_hookwarden/token?route=ROUTE`.
    pub async fn get_token(&self, gw: &Gw, route: &str) -> Got {
        let url = gw.url(&format!("/_hookwarden/token?route={route}"));
        send(self.build("GET", &url, "")).await
    }

    /// A token for `route`, asserting the endpoint's answer.
    pub async fn token_for(&self, gw: &Gw, route: &str) -> String {
        let got = self.get_token(gw, route).await;
        assert_eq!(got.status, 200, "token request: {}", got.text());
        got.json()["token"].as_str().expect("token").to_owned()
    }

    /// Any request.
    pub async fn send(&self, method: &str, url: &str) -> Got {
        send(self.build(method, url, "")).await
    }
}

/// The next token a response carries.
pub fn next_token(got: &Got) -> String {
    got.header("x-hookwarden-token")
        .unwrap_or_else(|| panic!("no next token; status {} {}", got.status, got.text()))
        .to_owned()
}

/// True when the response carries any `Access-Control-Allow-*` header.
pub fn has_cors_allow(got: &Got) -> bool {
    got.headers
        .keys()
        .any(|k| k.as_str().starts_with("access-control-allow-"))
}
