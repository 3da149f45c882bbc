//! Redis helpers for the shared-state tests: a unique key prefix per test (so tests run in
//! parallel against the one Redis on 127.0.0.1:6379 and leave nothing behind), a scan of a
//! prefix that checks every key expires, and a Redis of the test's own, on a free port, that
//! the test stops and starts.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;

/// The Redis `scripts/test` makes sure of.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("hwtest:{test}:{}:{nanos}:", std::process::id())
}

/// A connection to `url`.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("no Redis at {url} (scripts/test starts one): {e}"))
}

/// Every key under `prefix`, with its remaining time to live in milliseconds (-1: none).
pub async fn keys_with_ttl(url: &str, prefix: &str) -> Vec<(String, i64)> {
    let mut c = connect(url).await;
    let mut keys: Vec<String> = Vec::new();
    {
        let mut iter: redis::AsyncIter<String> = c.scan_match(format!("{prefix}*")).await.unwrap();
        while let Some(k) = iter.next_item().await {
            keys.push(k.unwrap());
        }
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let ttl: i64 = c.pttl(&k).await.unwrap();
        out.push((k, ttl));
    }
    out
}

/// Asserts that every key under `prefix` expires on its own (PTTL > 0), then deletes them.
/// Returns how many there were.
pub async fn assert_all_expire_then_clean(url: &str, prefix: &str) -> usize {
    let keys = keys_with_ttl(url, prefix).await;
    let forever: Vec<&(String, i64)> = keys.iter().filter(|(_, ttl)| *ttl <= 0).collect();
    assert!(forever.is_empty(), "keys without an expiry: {forever:?}");
    if !keys.is_empty() {
        let mut c = connect(url).await;
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let _: i64 = c.del(&names).await.unwrap();
    }
    keys.len()
}

/// A `redis-server` of the test's own on a free port, stopped and started by the test.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    tls: Option<OwnTls>,
}

/// The files of a TLS-only server, and the CA that signed its certificate.
struct OwnTls {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl OwnRedis {
    /// Starts one and waits until it answers.
    pub async fn start() -> OwnRedis {
        let port = super::free_port();
        let mut r = OwnRedis {
            port,
            child: None,
            tls: None,
        };
        r.resume().await;
        r
    }

    /// Starts one that speaks TLS only, with `cert_pem`/`key_pem` (signed by `ca_pem`).
    pub async fn start_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> OwnRedis {
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in [
            ("ca.pem", ca_pem),
            ("cert.pem", cert_pem),
            ("key.pem", key_pem),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let mut r = OwnRedis {
            port: super::free_port(),
            child: None,
            tls: Some(OwnTls {
                dir,
                ca_pem: ca_pem.to_owned(),
            }),
        };
        r.resume().await;
        r
    }

    /// Its URL (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url()),
            Some(t) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(t.ca_pem.clone().into_bytes()),
                },
            ),
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(t) => {
                let file = |n: &str| t.dir.path().join(n).display().to_string();
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .args(["--tls-cert-file", &file("cert.pem")])
                    .args(["--tls-key-file", &file("key.pem")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(client) = self.client()
                && let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} never answered", self.port);
    }

    /// Runs `redis-cli` against this server (a plain one) with `args`; panics if it fails.
    pub fn cli(&self, args: &[&str]) {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    }

    /// Kills the server (connections drop at once) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
