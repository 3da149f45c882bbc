//! `hookwarden demo`: the gateway in front of a built-in test upstream, no config needed.
//!
//! The demo config is ordinary TOML, loaded through the same code as a user's file, so what
//! the demo shows is what a config does.

mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

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
}

/// The secret the demo injects upstream; the echo endpoint shows it arriving there, while the
/// client never sends it.
const DEMO_UPSTREAM_SECRET: &str = "demo-upstream-secret";

/// The API key the demo's `/agent` route asks for (a static key; issued keys need a store file).
pub const DEMO_API_KEY: &str = "hw_demo_key_not_for_production";

fn demo_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[storage]
path = ":memory:"

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
"#
    )
}

impl Demo {
    /// Starts the test upstream on a free local port and the gateway on `listen`.
    pub async fn start(listen: SocketAddr) -> Result<Demo, DemoError> {
        let upstream = DemoUpstream::start("127.0.0.1:0".parse().expect("literal address"))
            .await
            .map_err(DemoError::Upstream)?;
        let text = demo_config(listen, upstream.addr());
        let loaded = config::load_str(&text, "<demo>", Path::new("."), &|_| None)?;
        let app = App::start(&loaded.config).await?;
        Ok(Demo { app, upstream })
    }

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

Health: curl http://{gw}/_hookwarden/healthz
Stop with Ctrl-C."#,
            up = self.upstream.addr()
        )
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.app.run(shutdown).await;
        self.upstream.stop();
    }
}
