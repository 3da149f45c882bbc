//! `hookwarden demo`: the gateway in front of a built-in test upstream, no config needed.
//!
//! The demo config is ordinary TOML, loaded through the same code as a user's file, so what
//! the demo shows is what a config does.

mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use upstream::DemoUpstream;

use crate::app::{App, StartError};
use crate::config::{self, ConfigError};

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The test upstream could not bind a port.
    #[error("cannot start the demo upstream: {0}")]
    Upstream(std::io::Error),
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
    admin_token: String,
}

/// The secret the demo injects upstream; the echo endpoint shows it arriving there, while the
/// client never sends it.
const DEMO_UPSTREAM_SECRET: &str = "demo-upstream-secret";

fn demo_config(
    listen: SocketAddr,
    upstream: SocketAddr,
    admin: SocketAddr,
    admin_token: &str,
) -> String {
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
"#
    )
}

impl Demo {
    /// Starts the test upstream on a free local port, the gateway on `listen` and the admin
    /// listener on a free local port.
    pub async fn start(listen: SocketAddr) -> Result<Demo, DemoError> {
        Demo::start_with_admin(listen, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like [`Demo::start`], with the admin listener (dashboard) on `admin`. The admin token is
    /// generated for this run.
    pub async fn start_with_admin(
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Demo, DemoError> {
        let upstream = DemoUpstream::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(DemoError::Upstream)?;
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| DemoError::Upstream(std::io::Error::other(e)))?;
        let admin_token = hex::encode(raw);
        let text = demo_config(listen, upstream.addr(), admin, &admin_token);
        let loaded = config::load_str(&text, "<demo>", Path::new("."), &|_| None)?;
        let app = App::start(&loaded.config).await?;
        Ok(Demo {
            app,
            upstream,
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

impl Demo {
    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.app.local_addr()
    }

    /// What to try, printed at start.
    pub fn instructions(&self) -> String {
        let gw = self.addr();
        format!(
            r#"hookwarden demo
  gateway:  http://{gw}
  upstream: http://{up} (built-in test upstream; only the gateway talks to it)

Try it:
  # forwarded; the upstream's echo shows the X-Upstream-Secret the gateway injected
  curl -s http://{gw}/echo -H 'content-type: application/json' -d '{{"hello":"world"}}'

  # a streamed reply (Server-Sent Events), word by word
  curl -N http://{gw}/chat -d '{{"message":"hi"}}'

  # refused by the gateway, never reaching the upstream:
  curl -si http://{gw}/echo -X GET                                      # 405
  curl -si http://{gw}/echo -H 'content-type: text/plain' -d 'x'         # 415
  head -c 70000 /dev/zero | curl -si http://{gw}/echo -H 'content-type: application/json' --data-binary @-  # 413
  curl -si http://{gw}/nope                                             # 404
  curl -si --path-as-is http://{gw}/echo/../admin                       # 400

Dashboard (admin listener; the token is in the URL's #fragment, never sent to a server):
  {dashboard}
  admin token: {token}
  curl -s -H 'authorization: Bearer {token}' http://{admin}/api/events?outcome=denied
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
    }
}
