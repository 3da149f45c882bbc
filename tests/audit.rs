//! The audit log: one event per request with the right reason, the writer's aggregation when
//! it falls behind, retention, `hookwarden events`, and no secret ever in the store or the logs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;

use common::*;
use hookwarden::events::{Emitter, Event, Outcome};
use hookwarden::policy::Reason;
use hookwarden::store::Store;
use hookwarden::store::events::{
    AuditWriter, EventFilter, Retention, aggregated_since, apply_retention, list_events, stats,
};

fn db_events(gw: &Gateway) -> Vec<hookwarden::store::events::StoredEvent> {
    let store = Store::open(&gw.dir.path().join("hookwarden.db")).unwrap();
    let f = EventFilter {
        limit: 10_000,
        ..EventFilter::default()
    };
    list_events(&store.lock(), &f).unwrap()
}

async fn wait_db_count(gw: &Gateway, n: usize) -> Vec<hookwarden::store::events::StoredEvent> {
    for _ in 0..100 {
        let ev = db_events(gw);
        if ev.len() >= n {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the store never held {n} events: {:#?}", db_events(gw));
}

fn raw_request_id(resp: &str) -> String {
    resp.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-request-id")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no x-request-id in {resp:?}"))
}

#[tokio::test]
async fn each_kind_of_refusal_produces_exactly_one_event_with_its_reason() {
    let up = Upstream::start().await;
    let dead = free_port();
    let gw = Gateway::start(
        &format!(
            r#"
[server]
body_timeout = "1s"
[[route]]
name = "hook"
path = "/hook"
max_body = "100B"
content_types = ["application/json"]
[route.upstream]
url = "{{upstream}}/hook"
[[route]]
name = "dead"
path = "/dead"
[route.upstream]
url = "http://127.0.0.1:{dead}/x"
connect_timeout = "1s"
[[route]]
name = "slow"
path = "/slow"
[route.upstream]
url = "{{upstream}}/slow-headers"
timeout = "1s"
"#
        ),
        &up,
    )
    .await;

    let mut expected: Vec<(String, &str, Option<&str>, u16, &str)> = Vec::new();
    let long_ua = "u".repeat(300);
    let got = send(
        req("POST", &gw.url("/hook"))
            .header("content-type", "application/json")
            .header("user-agent", &long_ua)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    let allowed_id = got.header("x-request-id").unwrap().to_owned();
    expected.push((allowed_id.clone(), "allowed", None, 200, "hook"));

    let id = send(post_json(&gw.url("/nope"), "{}"))
        .await
        .assert_error(404, "not_found");
    expected.push((id, "denied", Some("not_found"), 404, ""));
    let id = send(req("GET", &gw.url("/hook")).body(Full::default()).unwrap())
        .await
        .assert_error(405, "method_not_allowed");
    expected.push((id, "denied", Some("method_not_allowed"), 405, "hook"));
    let resp = raw(
        gw.addr,
        b"GET /hook/../x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    expected.push((
        raw_request_id(&resp),
        "denied",
        Some("bad_request"),
        400,
        "",
    ));
    let id = send(post_json(
        &gw.url("/hook"),
        &format!("\"{}\"", "x".repeat(200)),
    ))
    .await
    .assert_error(413, "payload_too_large");
    expected.push((id, "denied", Some("body_too_large"), 413, "hook"));
    let id = send(
        req("POST", &gw.url("/hook"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap(),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    expected.push((id, "denied", Some("unsupported_media_type"), 415, "hook"));
    let resp = raw(
        gw.addr,
        b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"a\"",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    expected.push((
        raw_request_id(&resp),
        "denied",
        Some("body_timeout"),
        408,
        "hook",
    ));
    let id = send(post_json(&gw.url("/dead"), "{}"))
        .await
        .assert_error(502, "bad_gateway");
    expected.push((id, "failed", Some("upstream_unreachable"), 502, "dead"));
    let id = send(post_json(&gw.url("/slow"), "{}"))
        .await
        .assert_error(504, "gateway_timeout");
    expected.push((id, "failed", Some("upstream_timeout"), 504, "slow"));
    // User-Agents that are not visible ASCII are kept, not dropped: one stray byte must not
    // erase a scanner's fingerprint from the log.
    let mut odd_agents = Vec::new();
    for (ua, kept) in [
        (&b"sqlmap/1.7 \xe9"[..], "sqlmap/1.7 \u{fffd}"),
        ("curl/8.5 caf\u{e9}".as_bytes(), "curl/8.5 caf\u{e9}"),
    ] {
        let id = send(
            req("POST", &gw.url("/nowhere"))
                .header("user-agent", http::HeaderValue::from_bytes(ua).unwrap())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .assert_error(404, "not_found");
        expected.push((id.clone(), "denied", Some("not_found"), 404, ""));
        odd_agents.push((id, kept));
    }

    let events = wait_db_count(&gw, expected.len()).await;
    // Give a late duplicate the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let events = if db_events(&gw).len() == events.len() {
        events
    } else {
        db_events(&gw)
    };
    assert_eq!(events.len(), expected.len(), "{events:#?}");
    for (id, outcome, reason, status, route) in &expected {
        let matching: Vec<_> = events.iter().filter(|e| &e.request_id == id).collect();
        assert_eq!(matching.len(), 1, "request {id} ({reason:?}): {events:#?}");
        let e = matching[0];
        assert_eq!(e.reason.as_deref(), *reason, "{e:#?}");
        assert_eq!(e.outcome, *outcome, "{e:#?}");
        assert_eq!(e.status, *status, "{e:#?}");
        assert_eq!(e.route.as_deref().unwrap_or(""), *route, "{e:#?}");
        assert_eq!(e.client_ip, "127.0.0.1");
    }
    let allowed = events.iter().find(|e| e.request_id == allowed_id).unwrap();
    assert_eq!(allowed.upstream_status, Some(200));
    assert!(allowed.upstream_latency_ms.is_some());
    assert_eq!(allowed.method, "POST");
    assert_eq!(allowed.user_agent.as_deref(), Some(&long_ua[..200]));
    for (id, kept) in &odd_agents {
        let e = events.iter().find(|e| &e.request_id == id).unwrap();
        assert_eq!(e.user_agent.as_deref(), Some(*kept), "{e:#?}");
    }
    // Only the allowed request and the one the slow upstream never answered reached it.
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook", "/slow-headers"]);
}

fn event(i: u32, time: jiff::Timestamp) -> Event {
    Event {
        time,
        request_id: format!("req-{i}"),
        route: Some("hook".into()),
        client_ip: "203.0.113.7".parse().unwrap(),
        method: "POST".into(),
        status: 401,
        outcome: Outcome::Denied,
        reason: Some(Reason::KeyInvalid),
        detail: None,
        flags: Vec::new(),
        key_id: None,
        session_id: None,
        latency: Duration::from_millis(1),
        upstream_status: None,
        upstream_latency: None,
        user_agent: None,
    }
}

fn retention() -> Arc<ArcSwap<Retention>> {
    Arc::new(ArcSwap::from_pointee(Retention {
        keep: Duration::from_secs(30 * 86400),
        max_events: 1_000_000,
        audit_allowed: true,
    }))
}

#[tokio::test(flavor = "current_thread")]
async fn a_writer_that_falls_behind_aggregates_events_into_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hw.db")).unwrap();
    let emitter = Emitter::new();
    let writer = AuditWriter::start_with_capacity(store.clone(), &emitter, retention(), 4);
    let now = jiff::Timestamp::now();
    // No await in between: on this single-threaded runtime the writer cannot drain the queue,
    // exactly like a writer stuck behind a slow disk.
    for i in 0..200 {
        emitter.emit(event(i, now));
    }
    let s = &emitter.stats()[0];
    assert_eq!((s.name, s.queued, s.dropped), ("audit", 4, 196));
    writer.finish(Duration::from_secs(10)).await;

    let conn = store.lock();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 4);
    assert_eq!(
        aggregated_since(&conn, jiff::Timestamp::UNIX_EPOCH).unwrap(),
        196
    );
    let st = stats(&conn, jiff::Timestamp::now(), Duration::from_secs(3600)).unwrap();
    assert_eq!(st.totals.denied, 200, "{st:#?}");
    assert_eq!(st.aggregated, 196);
    assert_eq!(st.denials_by_reason[0].name, "key_invalid");
    assert_eq!(st.denials_by_reason[0].count, 200);
    assert_eq!(st.series.iter().map(|p| p.counts.denied).sum::<i64>(), 200);
}

#[tokio::test]
async fn with_audit_allowed_off_allowed_requests_are_counted_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hw.db")).unwrap();
    let emitter = Emitter::new();
    let retention = Arc::new(ArcSwap::from_pointee(Retention {
        keep: Duration::from_secs(30 * 86400),
        max_events: 1_000_000,
        audit_allowed: false,
    }));
    let writer = AuditWriter::start(store.clone(), &emitter, retention);
    let now = jiff::Timestamp::now();
    for i in 0..10 {
        let mut e = event(i, now);
        if i < 7 {
            e.outcome = Outcome::Allowed;
            e.reason = None;
            e.status = 200;
        }
        emitter.emit(e);
    }
    writer.finish(Duration::from_secs(10)).await;
    let conn = store.lock();
    let rows: Vec<String> = conn
        .prepare("SELECT request_id FROM events ORDER BY request_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, ["req-7", "req-8", "req-9"]);
    let st = stats(&conn, jiff::Timestamp::now(), Duration::from_secs(3600)).unwrap();
    assert_eq!((st.totals.allowed, st.totals.denied), (7, 3), "{st:#?}");
}

#[tokio::test]
async fn retention_deletes_by_age_then_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hw.db")).unwrap();
    let emitter = Emitter::new();
    let writer = AuditWriter::start(store.clone(), &emitter, retention());
    let now = jiff::Timestamp::now();
    let old = now - jiff::SignedDuration::from_hours(24 * 40);
    for i in 0..3 {
        emitter.emit(event(i, old));
    }
    for i in 3..8 {
        emitter.emit(event(i, now));
    }
    writer.finish(Duration::from_secs(10)).await;

    let r = Retention {
        keep: Duration::from_secs(30 * 86400),
        max_events: 1_000_000,
        audit_allowed: true,
    };
    assert_eq!(apply_retention(&store, now, r).unwrap(), 3);
    let r = Retention {
        keep: Duration::from_secs(30 * 86400),
        max_events: 2,
        audit_allowed: true,
    };
    assert_eq!(apply_retention(&store, now, r).unwrap(), 3);
    let left = list_events(
        &store.lock(),
        &EventFilter {
            limit: 100,
            ..EventFilter::default()
        },
    )
    .unwrap();
    let ids: Vec<&str> = left.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(ids, ["req-7", "req-6"]);
}

const CLI_CONFIG: &str = r#"
[server]
listen = "{listen}"
[storage]
path = "{dir}/audit.db"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{upstream}/hook"
headers = { "X-Auth" = "${UPSTREAM_SECRET}" }
"#;

fn events_cli(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .arg("events")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("UPSTREAM_SECRET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn the_events_command_reads_and_follows_the_store_while_the_server_runs() {
    let up = Upstream::start().await;
    let mut served =
        Served::start(CLI_CONFIG, &up.base(), &[("UPSTREAM_SECRET", "s3cret-up")]).await;
    let ok = send(post_json(&served.url("/hook"), "{}")).await;
    assert_eq!(ok.status, 200);
    let nf = send(post_json(&served.url("/missing"), "{}"))
        .await
        .assert_error(404, "not_found");
    let bad = send(
        req("GET", &served.url("/hook"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .assert_error(405, "method_not_allowed");

    // The config's secret variable is not set for the CLI: only [storage] is read.
    let mut all = Vec::new();
    for _ in 0..50 {
        let (code, out, err) = events_cli(&served.config, &["--json"]);
        assert_eq!(code, 0, "{err}");
        all = json_lines(&out);
        if all.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all.len(), 3, "{all:#?}");
    // Oldest first, like a log.
    assert_eq!(all[2]["request_id"], bad.as_str());

    let (_, out, _) = events_cli(&served.config, &["--json", "--outcome", "denied"]);
    let denied = json_lines(&out);
    let ids: Vec<&str> = denied
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [nf.as_str(), bad.as_str()]);
    let (_, out, _) = events_cli(
        &served.config,
        &["--json", "--reason", "not_found", "--since", "1h"],
    );
    assert_eq!(json_lines(&out).len(), 1);
    let (_, out, _) = events_cli(
        &served.config,
        &["--json", "--route", "hook", "--ip", "127.0.0.1"],
    );
    assert_eq!(json_lines(&out).len(), 2);
    let (_, out, _) = events_cli(&served.config, &["--json", "--ip", "10.1.2.3"]);
    assert_eq!(json_lines(&out).len(), 0);
    // The request id of an error response finds its event, as the error format promises;
    // pasted in capitals too.
    let (code, out, err) = events_cli(
        &served.config,
        &["--json", "--request-id", &nf.to_ascii_uppercase()],
    );
    assert_eq!(code, 0, "{err}");
    let found = json_lines(&out);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["request_id"], nf.as_str());
    assert_eq!(found[0]["reason"], "not_found");
    let (code, _, err) = events_cli(&served.config, &["--request-id", "' OR 1=1 --"]);
    assert_eq!(code, 1);
    assert!(err.contains("request_id is not a request id"), "{err}");

    let (code, table, _) = events_cli(&served.config, &["--outcome", "denied"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)"), "{table}");
    assert!(
        lines[1].contains("not_found") && lines[1].contains(&nf),
        "{table}"
    );
    assert!(
        lines[2].contains("method_not_allowed") && lines[2].contains("hook"),
        "{table}"
    );

    let (code, _, err) = events_cli(&served.config, &["--reason", "keyinvalid"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("reason \"keyinvalid\" is not a reason code"),
        "{err}"
    );

    // --follow prints events written after it started.
    let mut follower = std::process::Command::new(bin())
        .args([
            "events",
            "--follow",
            "--json",
            "--outcome",
            "denied",
            "--config",
        ])
        .arg(&served.config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = send(post_json(&served.url("/later"), "{}"))
        .await
        .assert_error(404, "not_found");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line.clone());
            if line.contains(&later) {
                break;
            }
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen.iter().any(|l| l.contains(&later)), "{seen:#?}");
    served.stop().await;
}

#[tokio::test]
async fn the_events_command_explains_a_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hw.toml");
    std::fs::write(&cfg, "[storage]\npath = \"nothing-here.db\"\n").unwrap();
    let (code, _, err) = events_cli(&cfg, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("there is no store at"), "{err}");
    std::fs::write(&cfg, "[storage]\npath = \":memory:\"\n").unwrap();
    let (code, _, err) = events_cli(&cfg, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("GET /api/events"), "{err}");
}

#[tokio::test]
async fn no_secret_reaches_the_store_or_the_logs() {
    let up = Upstream::start().await;
    let receiver = Receiver::start(&[200], Duration::ZERO).await;
    let secrets = [
        ("ADMIN_TOKEN", "admin-token-7d1f0c3a9b2e4f5a"),
        ("N8N_SECRET", "n8n-header-secret-5b8e2a"),
        ("PATH_SECRET", "webhookpathsecret93f1"),
        ("ALERT_TOKEN", "alert-url-token-c4e9a1"),
    ];
    let client_secrets = [
        "client-bearer-secret-11aa",
        "client-api-key-secret-22bb",
        "client-body-secret-33cc",
        "client-query-secret-44dd",
        "wrong-admin-token-55ee0000",
    ];
    let config = r#"
[server]
listen = "{listen}"
[storage]
path = "{dir}/secrets.db"
[admin]
listen = "{admin}"
token = "${ADMIN_TOKEN}"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{upstream}/hook/${PATH_SECRET}"
headers = { "X-N8N-Auth" = "${N8N_SECRET}" }
[[alert]]
name = "any-denied"
outcome = "denied"
threshold = 1
url = "RECEIVER/alert?token=${ALERT_TOKEN}"
"#
    .replace("RECEIVER", &format!("http://{}", receiver.addr));
    let mut env = secrets.to_vec();
    env.push(("RUST_LOG", "debug"));
    let mut served = Served::start(&config, &up.base(), &env).await;
    let admin = served.admin.unwrap();

    let hook = |method: &str, path: &str| {
        req(method, &served.url(path))
            .header("authorization", format!("Bearer {}", client_secrets[0]))
            .header("x-api-key", client_secrets[1])
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                "{{\"password\":\"{}\"}}",
                client_secrets[2]
            ))))
            .unwrap()
    };
    let ok = send(hook(
        "POST",
        &format!("/hook?secret-key={}", client_secrets[3]),
    ))
    .await;
    assert_eq!(ok.status, 200);
    let denied = send(hook(
        "PUT",
        &format!("/hook?secret-key={}", client_secrets[3]),
    ))
    .await
    .assert_error(405, "method_not_allowed");
    let alert = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(alert.len(), 1);
    assert_eq!(
        alert[0].query.as_deref(),
        Some("token=alert-url-token-c4e9a1")
    );
    assert_eq!(
        admin_get(admin, "/api/events", Some(secrets[0].1))
            .await
            .status,
        200
    );
    assert_eq!(
        admin_get(admin, "/api/events", Some(client_secrets[4]))
            .await
            .status,
        401
    );
    // The upstream did get the injected secret: the secrets were live, not just configured.
    let seen = up.only();
    assert_eq!(seen.headers["x-n8n-auth"], secrets[1].1);
    assert!(seen.path.ends_with(secrets[2].1));
    // Wait until the alert is recorded, then stop so the writer flushes everything.
    let mut recorded = false;
    for _ in 0..100 {
        let got = admin_get(admin, "/api/alerts", Some(secrets[0].1)).await;
        if got.json()["recent"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded);
    let log = served.stop().await;
    assert!(log.contains("alert sent"), "{log}");
    let mut store_bytes = Vec::new();
    for entry in std::fs::read_dir(served.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("secrets.db"))
        {
            store_bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    // Positive controls: the store and the log do hold these requests.
    let store_text = String::from_utf8_lossy(&store_bytes);
    assert!(
        store_text.contains(&denied),
        "the store lacks the denied request"
    );
    assert!(store_text.contains("method_not_allowed"));
    assert!(log.contains(&denied), "{log}");
    for value in secrets.iter().map(|(_, v)| *v).chain(client_secrets) {
        assert!(!store_text.contains(value), "{value} is in the store");
        assert!(!log.contains(value), "{value} is in the log:\n{log}");
    }
    drop(ok);
}
