//! The listener's defences and lifecycle: slow headers and bodies, the connection cap,
//! graceful shutdown (in-process and SIGTERM to the real binary), and the request log.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CFG: &str = r#"
[server]
listen = "127.0.0.1:0"
header_timeout = "1s"
body_timeout = "1s"
max_connections = 2
shutdown_timeout = "10s"

[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{upstream}/target"

[[route]]
name = "sse"
path = "/sse"
[route.upstream]
url = "{upstream}/sse"
"#;

#[tokio::test]
async fn slow_headers_are_cut_after_the_header_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // Trickle a header byte now and then, slowloris style.
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "connection still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("silent connection was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("idle keep-alive connection was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

// A body that is not there at the first read is waited for (the body timer is made then),
// up to `body_timeout`.
#[tokio::test]
async fn a_body_sent_after_its_head_is_waited_for_and_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"{\"late\":1}").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(&up.only().body[..], b"{\"late\":1}");
}

#[tokio::test]
async fn a_slow_body_is_408_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CFG, &up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"partial\":")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains(r#""error":"request_timeout""#), "{out}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_a_slot_frees() {
    let up = Upstream::start().await;
    // One listener thread, so which socket the kernel hands each connection to cannot decide
    // whether the two silent connections are accepted first.
    let cfg = CFG.replace("max_connections = 2", "max_connections = 2\nworkers = 1");
    let gw = Gateway::start(&cfg, &up).await;
    // Two silent connections take both slots until the header timeout closes them.
    let _a = TcpStream::connect(gw.addr).await.unwrap();
    let _b = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let got = send(post_json(&gw.url("/hook"), "{}")).await;
    let waited = started.elapsed();
    assert_eq!(got.status, 200);
    assert!(
        waited >= Duration::from_millis(700),
        "served after {waited:?}, cap not applied"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_streams_finish_and_refuses_new_connections() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start(CFG, &up).await;
    let resp = client()
        .request(post_json(&gw.url("/sse"), "{}"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"data: event 1\n\n"));
    gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New connections are no longer accepted.
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "listener still accepting during shutdown"
    );
    // The in-flight stream completes.
    let mut rest = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.expect("stream cut during graceful shutdown").into_data() {
            rest.extend_from_slice(&d);
        }
    }
    assert_eq!(rest, b"data: event 2\n\ndata: event 3\n\n");
    gw.finished().await;
}

/// Runs the real binary with `config` and returns the child and the address it listens on.
fn spawn_binary(config: &str, args: &[&str]) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookwarden.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("UPSTREAM_SECRET", "very-secret-upstream-value")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    (cmd.spawn().unwrap(), dir)
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() {
    let up = Upstream::start().await;
    let port = free_port();
    let cfg = CFG
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace("{upstream}", &up.base());
    let (mut child, _dir) = spawn_binary(&cfg, &[]);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_healthy(addr).await;
    let resp = client()
        .request(post_json(&format!("http://{addr}/sse"), "{}"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.expect("stream cut by SIGTERM").into_data() {
            rest.extend_from_slice(&d);
        }
    }
    assert_eq!(rest, b"data: event 2\n\ndata: event 3\n\n");
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_and_no_secrets() {
    let up = Upstream::start().await;
    let port = free_port();
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
path = ":memory:"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{}/secret-path-abc?token=query-secret-xyz"
headers = {{ "X-Api-Key" = "${{UPSTREAM_SECRET}}" }}
"#,
        up.base()
    );
    let (mut child, _dir) = spawn_binary(&cfg, &["--log-format", "json"]);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_healthy(addr).await;
    let c = client();
    let r = req("POST", &format!("http://{addr}/hook"))
        .header("authorization", "Bearer client-bearer-secret")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"body":"body-secret"}"#)))
        .unwrap();
    let got = send_with(&c, r).await;
    assert_eq!(got.status, 200);
    let got = send_with(&c, post_json(&format!("http://{addr}/missing"), "{}")).await;
    assert_eq!(got.status, 404);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stderr = child.stderr.take().unwrap();
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
    .await
    .unwrap();
    let _ = child.wait();
    let all = lines.join("\n");
    for secret in [
        "very-secret-upstream-value",
        "client-bearer-secret",
        "body-secret",
        "secret-path-abc",
        "query-secret-xyz",
    ] {
        assert!(!all.contains(secret), "log contains {secret}:\n{all}");
    }
    let requests: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    assert_eq!(requests.len(), 2, "{all}");
    assert_eq!(requests[0]["route"], "hook");
    assert_eq!(requests[0]["status"], 200);
    assert_eq!(requests[0]["request_id"].as_str().unwrap().len(), 32);
    assert!(requests[0]["latency_ms"].is_number());
    // No key and no browser session: the placeholder, as in the text format.
    assert_eq!(requests[0]["key_id"], "-");
    assert_eq!(requests[0]["session_id"], "-");
    assert_eq!(requests[1]["status"], 404);
    assert_eq!(requests[1]["reason"], "not_found");
}

/// A second `serve` on the store a running one uses is refused at start, naming the key and
/// the way out, each cause once: both would run the delivery queue (every queued message
/// delivered twice), and with the ports shared the kernel would split the traffic between
/// them. Once the first has exited, the store is free again.
#[tokio::test]
async fn a_second_server_on_the_same_store_is_refused_until_the_first_exits() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("shared.db");
    // The same file through a symlink, and through a symlinked directory, is the same store.
    let alias = dir.path().join("alias.db");
    std::os::unix::fs::symlink(&store, &alias).unwrap();
    let linked_dir = dir.path().join("linked");
    std::os::unix::fs::symlink(dir.path(), &linked_dir).unwrap();
    let config_at = |port: u16, path: &std::path::Path| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"{}\"\n\
             [[route]]\nname = \"hook\"\npath = \"/hook\"\n[route.upstream]\nurl = \"{}/x\"\n",
            path.display(),
            up.base()
        )
    };
    let config = |port: u16| config_at(port, &store);
    let first_port = free_port();
    let (mut first, _d1) = spawn_binary(&config(first_port), &[]);
    wait_healthy(format!("127.0.0.1:{first_port}").parse().unwrap()).await;

    for path in [store.clone(), alias, linked_dir.join("shared.db")] {
        let (second, _d2) = spawn_binary(&config_at(free_port(), &path), &[]);
        let out = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is in use by another `hookwarden serve`"),
            "{err}"
        );
        assert!(err.contains("[storage] path"), "{err}");
        assert_eq!(err.matches("in use by another").count(), 1, "{err}");
    }

    first.kill().unwrap();
    first.wait().unwrap();
    let third_port = free_port();
    let (mut third, _d3) = spawn_binary(&config(third_port), &[]);
    wait_healthy(format!("127.0.0.1:{third_port}").parse().unwrap()).await;
    third.kill().unwrap();
    third.wait().unwrap();
}
