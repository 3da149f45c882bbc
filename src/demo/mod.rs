//! `hookwarden demo`: the gateway in front of a built-in test upstream, no config needed, a
//! chat page on its own port (an allowed origin of the `widget` route) to see the browser flow,
//! and the admin dashboard with some generated traffic.
//!
//! The demo config is ordinary TOML, loaded through the same code as a user's file, so what
//! the demo shows is what a config does.

mod page;
mod upstream;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use page::DemoPage;
pub use upstream::DemoUpstream;

use crate::app::{App, StartError};
use crate::config::{self, ConfigError};

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The test upstream could not bind a port.
    #[error("cannot start the demo upstream: {0}")]
    Upstream(std::io::Error),
    /// The chat page could not bind its port.
    #[error("cannot serve the demo chat page on {addr}: {source}")]
    Page {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The demo's own config is broken (a bug).
    #[error("demo config: {0}")]
    Config(#[from] ConfigError),
    /// The gateway could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A running demo.
pub struct Demo {
    app: App,
    upstream: DemoUpstream,
    page: DemoPage,
    admin_token: String,
}

/// The demo's browser route.
const WIDGET_ROUTE: &str = "widget";
/// Its path.
const WIDGET_PATH: &str = "/widget";

/// The secret the demo injects upstream; the echo endpoint shows it arriving there, while the
/// client never sends it.
const DEMO_UPSTREAM_SECRET: &str = "demo-upstream-secret";

/// The API key the demo's `/agent` route asks for (a static key; issued keys need a store file).
pub const DEMO_API_KEY: &str = "hw_demo_key_not_for_production";

/// How a browser on this machine reaches `addr` (a wildcard address means loopback).
fn browser_host(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// The origins a browser may show for the page at `page`.
fn page_origins(page: SocketAddr) -> Vec<String> {
    let page = browser_host(page);
    let mut origins = vec![format!("http://{page}")];
    if page.ip().is_loopback() {
        origins.push(format!("http://localhost:{}", page.port()));
    }
    origins
}

fn demo_config(
    listen: SocketAddr,
    upstream: SocketAddr,
    page: SocketAddr,
    admin: SocketAddr,
    admin_token: &str,
) -> String {
    let origins = page_origins(page)
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[server]
listen = "{listen}"

[storage]
path = ":memory:"

[admin]
listen = "{admin}"
token = "{admin_token}"

[[route]]
name = "echo"
path = "/echo"
methods = ["POST"]
max_body = "64KiB"
content_types = ["application/json"]
[route.upstream]
url = "http://{upstream}/echo"
headers = {{ "X-Upstream-Secret" = "{DEMO_UPSTREAM_SECRET}" }}

[[route]]
name = "chat"
path = "/chat"
methods = ["POST"]
max_body = "16KiB"
[route.upstream]
url = "http://{upstream}/stream"

[[route]]
name = "agent"
path = "/agent"
methods = ["POST"]
max_body = "16KiB"
[route.upstream]
url = "http://{upstream}/echo"
headers = {{ "X-Upstream-Secret" = "{DEMO_UPSTREAM_SECRET}" }}
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["{DEMO_API_KEY}"]

[[route]]
name = "{WIDGET_ROUTE}"
path = "{WIDGET_PATH}"
methods = ["POST"]
max_body = "16KiB"
content_types = ["application/json"]
[route.browser]
allowed_origins = [{origins}]
token = true
token_ttl = "10m"
[route.upstream]
url = "http://{upstream}/stream"
"#
    )
}

impl Demo {
    /// Starts the test upstream on a free local port, the gateway on `listen`, and the chat
    /// page and the admin listener on free local ports.
    pub async fn start(listen: SocketAddr) -> Result<Demo, DemoError> {
        let page = SocketAddr::new(browser_host(listen).ip(), 0);
        Self::start_with(listen, page, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Like [`Demo::start`], with the chat page on `page_listen` and the admin listener
    /// (dashboard) on `admin`. The admin token is generated for this run.
    pub async fn start_with(
        listen: SocketAddr,
        page_listen: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Demo, DemoError> {
        let page_listener = tokio::net::TcpListener::bind(page_listen)
            .await
            .map_err(|source| DemoError::Page {
                addr: page_listen,
                source,
            })?;
        let page_addr = page_listener
            .local_addr()
            .map_err(|source| DemoError::Page {
                addr: page_listen,
                source,
            })?;
        let upstream = DemoUpstream::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(DemoError::Upstream)?;
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| DemoError::Upstream(std::io::Error::other(e)))?;
        let admin_token = hex::encode(raw);
        let text = demo_config(listen, upstream.addr(), page_addr, admin, &admin_token);
        let loaded = config::load_str(&text, "<demo>", Path::new("."), &|_| None)?;
        let app = App::start(&loaded.config).await?;
        let gateway = format!("http://{}", browser_host(app.local_addr()));
        let html = page::render(&gateway, WIDGET_ROUTE, WIDGET_PATH);
        let page = DemoPage::serve(page_listener, html).map_err(|source| DemoError::Page {
            addr: page_addr,
            source,
        })?;
        Ok(Demo {
            app,
            upstream,
            page,
            admin_token,
        })
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.app.admin_addr()
    }

    /// The dashboard's URL; the token travels in the fragment, which browsers never send.
    pub fn dashboard_url(&self) -> String {
        match self.admin_addr() {
            Some(a) => format!("http://{a}/#token={}", self.admin_token),
            None => String::new(),
        }
    }

    /// The generated admin token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The chat page's URL.
    pub fn page_url(&self) -> String {
        format!("http://{}/", browser_host(self.page.addr()))
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.app.local_addr()
    }

    /// What to try, printed at start.
    pub fn instructions(&self) -> String {
        let gw = browser_host(self.addr());
        let page = browser_host(self.page.addr());
        format!(
            r#"hookwarden demo
  gateway:   http://{gw}
  upstream:  http://{up} (built-in test upstream; only the gateway talks to it)
  chat page: http://{page}/ (open it in a browser: a widget on an allowed origin, with tokens)

Try it:
  # forwarded; the upstream's echo shows the X-Upstream-Secret the gateway injected
  curl -s http://{gw}/echo -H 'content-type: application/json' -d '{{"hello":"world"}}'

  # a streamed reply (Server-Sent Events), word by word
  curl -N http://{gw}/chat -d '{{"message":"hi"}}'

  # needs an API key; the gateway consumes it, so the echo shows no x-api-key upstream
  curl -s http://{gw}/agent -H 'x-api-key: {DEMO_API_KEY}' -d '{{"task":"summarise"}}'

  # refused by the gateway, never reaching the upstream:
  curl -si http://{gw}/echo -X GET                                      # 405
  curl -si http://{gw}/echo -H 'content-type: text/plain' -d 'x'         # 415
  head -c 70000 /dev/zero | curl -si http://{gw}/echo -H 'content-type: application/json' --data-binary @-  # 413
  curl -si http://{gw}/agent -d '{{"task":"summarise"}}'                  # 401, no key
  curl -si http://{gw}/agent -H 'x-api-key: guessed' -d '{{}}'            # 401, wrong key
  curl -si http://{gw}/nope                                             # 404
  curl -si --path-as-is http://{gw}/echo/../admin                       # 400

The chat page's route, /widget, only answers pages on its allowed origins, with a token:
  curl -si http://{gw}/widget -H 'content-type: application/json' -d '{{"message":"hi"}}'    # 403 origin_missing
  curl -si http://{gw}/widget -H 'origin: http://{page}' -H 'content-type: application/json' -d '{{"message":"hi"}}'    # 403 token_missing
  TOKEN=$(curl -s -H 'origin: http://{page}' 'http://{gw}/_hookwarden/token?route=widget' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  curl -si -N http://{gw}/widget -H 'origin: http://{page}' -H "x-hookwarden-token: $TOKEN" -H 'content-type: application/json' -d '{{"message":"hi"}}'    # 200, streamed, with the next token
  curl -si http://{gw}/widget -H 'origin: http://{page}' -H "x-hookwarden-token: $TOKEN" -H 'content-type: application/json' -d '{{"message":"hi"}}'    # 403 token_reused
(A forged Origin gets curl past the first check, but each call still costs a fresh single-use token.)

Dashboard (admin listener; the token is in the URL's #fragment, never sent to a server):
  {dashboard}
  admin token: {token}
  curl -s -H 'authorization: Bearer {token}' 'http://{admin}/api/events?outcome=denied'
  curl -s -H 'authorization: Bearer {token}' http://{admin}/metrics

Health: curl http://{gw}/_hookwarden/healthz
Some allowed and refused requests are sent now, so the dashboard has data.
Stop with Ctrl-C."#,
            up = self.upstream.addr(),
            dashboard = self.dashboard_url(),
            token = self.admin_token,
            admin = self.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
        )
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.app.run(shutdown).await;
        self.upstream.stop();
        self.page.stop();
    }
}

/// Sends a few allowed and refused requests through the gateway at `gw`, so the dashboard's
/// charts and tables have something to show. The gateway must be running (spawn this next to
/// [`Demo::run`]). Returns how many were (allowed, refused).
pub async fn generate_traffic(gw: SocketAddr) -> (usize, usize) {
    {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let big = "x".repeat(70_000);
        let requests: [(&str, &str, Option<&str>, &str); 12] = [
            (
                "POST",
                "/echo",
                Some("application/json"),
                r#"{"hello":"world"}"#,
            ),
            ("POST", "/echo", Some("application/json"), r#"{"order":42}"#),
            ("POST", "/chat", None, r#"{"message":"hi"}"#),
            ("GET", "/echo", None, ""),
            ("DELETE", "/echo", None, ""),
            ("POST", "/echo", Some("text/plain"), "x"),
            ("POST", "/echo", Some("application/xml"), "<x/>"),
            ("POST", "/echo", Some("application/json"), &big),
            ("GET", "/wp-login.php", None, ""),
            ("GET", "/.env", None, ""),
            ("POST", "/admin", None, ""),
            ("GET", "/echo/../admin", None, ""),
        ];
        let (mut allowed, mut denied) = (0, 0);
        for (method, path, ct, body) in requests {
            let mut b = http::Request::builder()
                .method(method)
                .uri(format!("http://{gw}{path}"))
                .header("user-agent", "hookwarden-demo-traffic");
            if let Some(ct) = ct {
                b = b.header("content-type", ct);
            }
            let Ok(req) = b.body(Full::new(Bytes::from(body.to_owned()))) else {
                continue;
            };
            if let Ok(resp) = client.request(req).await {
                if resp.status().is_success() {
                    allowed += 1;
                } else {
                    denied += 1;
                }
                // Read streamed replies to the end so the event is complete.
                let _ = resp.into_body().collect().await;
            }
        }
        (allowed, denied)
    }
}
