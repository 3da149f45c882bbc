//! API keys through a real gateway: header, URL secret and bearer keys, static and issued
//! keys (created, revoked, expired and rotated while the gateway runs), the consumed credential
//! never forwarded, the key's id in the event, and the key itself nowhere.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookwarden::store::Store;
use http_body_util::Full;

const K1: &str = "static-key-one-0123456789abcdef";
const K2: &str = "static-key-two-0123456789abcdef";

fn env(name: &str) -> Option<String> {
    match name {
        "K1" => Some(K1.into()),
        "K2" => Some(K2.into()),
        _ => None,
    }
}

const CONFIG: &str = r#"
[server]
body_timeout = "5s"

[[route]]
name = "header"
path = "/header"
[route.upstream]
url = "{upstream}/header?fixed=1"
[[route.auth]]
type = "api_key"
header = "x-make-apikey"
keys = ["${K1}", "${K2}"]

[[route]]
name = "query"
path = "/query"
[route.upstream]
url = "{upstream}/query"
[[route.auth]]
type = "api_key"
query = "secret-key"
keys = ["${K1}", "a+b/c=d&e static key"]

[[route]]
name = "bearer"
path = "/bearer"
[route.upstream]
url = "{upstream}/bearer"
[[route.auth]]
type = "api_key"
bearer = true
keys = ["${K1}"]

[[route]]
name = "issued"
path = "/issued"
[route.upstream]
url = "{upstream}/issued"
[[route.auth]]
type = "api_key"
header = "x-api-key"

[[route]]
name = "other"
path = "/other"
[route.upstream]
url = "{upstream}/other"
[[route.auth]]
type = "api_key"
header = "x-api-key"

# Two credentials required: the provider's static URL secret and a partner's issued key.
[[route]]
name = "two"
path = "/two"
[route.upstream]
url = "{upstream}/two"
[[route.auth]]
type = "api_key"
query = "secret-key"
keys = ["${K1}"]
[[route.auth]]
type = "api_key"
header = "x-api-key"
"#;

async fn setup() -> (Upstream, Gateway, Events) {
    let up = Upstream::start().await;
    let (gw, events) = Gateway::start_with_events(CONFIG, &up, &env).await;
    (up, gw, events)
}

fn post(url: &str, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut b = req("POST", url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from_static(br#"{"q":1}"#)))
        .unwrap()
}

fn request_id(got: &Got) -> String {
    got.header("x-request-id").unwrap().to_owned()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn header_keys_open_the_route_and_are_not_forwarded() {
    let (up, gw, events) = setup().await;
    let url = gw.url("/header");
    for (key, id) in [(K1, "static:1"), (K2, "static:2")] {
        let got = send(post(&url, &[("x-make-apikey", key), ("x-other", "kept")])).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let e = events.get(&request_id(&got)).await;
        assert_eq!(e.key_id.as_deref(), Some(id));
        assert_eq!(e.reason, None);
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert!(r.headers.get("x-make-apikey").is_none(), "{:?}", r.headers);
        assert_eq!(r.headers["x-other"], "kept");
        assert_eq!(r.query.as_deref(), Some("fixed=1"));
        assert_eq!(&r.body[..], br#"{"q":1}"#);
    }
}

#[tokio::test]
async fn missing_and_wrong_header_keys_are_refused_before_the_upstream() {
    let (up, gw, events) = setup().await;
    let url = gw.url("/header");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "credential_missing"),
        (&[("x-make-apikey", "")], "credential_missing"),
        (&[("x-api-key", K1)], "credential_missing"),
        (
            &[("x-make-apikey", "static-key-one-0123456789abcdeF")],
            "key_invalid",
        ),
        (&[("x-make-apikey", &K1[..K1.len() - 1])], "key_invalid"),
    ];
    for (headers, reason) in cases {
        let got = send(post(&url, headers)).await;
        let id = got.assert_error(401, "unauthorized");
        assert_eq!(events.reason(&id).await, reason, "{headers:?}");
        assert_eq!(events.get(&id).await.key_id, None);
        // The response says nothing about why, and never echoes the key.
        assert!(!got.text().contains("static-key"), "{}", got.text());
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_url_secret_is_read_from_the_query_and_removed_from_it() {
    let (up, gw, events) = setup().await;
    let got = send(post(
        &gw.url(&format!("/query?a=1&secret-key={K1}&b=2")),
        &[],
    ))
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        events.get(&request_id(&got)).await.key_id.as_deref(),
        Some("static:1")
    );
    assert_eq!(up.only().query.as_deref(), Some("a=1&b=2"));

    // Percent-encoded keys are decoded before comparison.
    let got = send(post(
        &gw.url("/query?secret-key=a%2Bb%2Fc%3Dd%26e+static+key"),
        &[],
    ))
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        events.get(&request_id(&got)).await.key_id.as_deref(),
        Some("static:2")
    );
    assert_eq!(up.requests()[1].query, None);

    for (q, reason) in [
        ("", "credential_missing"),
        ("?secret-key=", "credential_missing"),
        ("?secret=x", "credential_missing"),
        ("?secret-key=wrong-key-0123456789", "key_invalid"),
    ] {
        let got = send(post(&gw.url(&format!("/query{q}")), &[])).await;
        let id = got.assert_error(401, "unauthorized");
        assert_eq!(events.reason(&id).await, reason, "{q}");
    }
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn bearer_keys_are_read_from_authorization_and_removed() {
    let (up, gw, events) = setup().await;
    let url = gw.url("/bearer");
    for auth in [format!("Bearer {K1}"), format!("bearer {K1}")] {
        let got = send(post(&url, &[("authorization", &auth)])).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(
            events.get(&request_id(&got)).await.key_id.as_deref(),
            Some("static:1")
        );
    }
    for r in up.requests() {
        assert!(r.headers.get("authorization").is_none());
    }
    for (auth, reason) in [
        (format!("Basic {K1}"), "credential_missing"),
        ("Bearer".to_owned(), "credential_missing"),
        (K1.to_owned(), "credential_missing"),
        ("Bearer not-the-key-0123456789".to_owned(), "key_invalid"),
    ] {
        let got = send(post(&url, &[("authorization", &auth)])).await;
        let id = got.assert_error(401, "unauthorized");
        assert_eq!(events.reason(&id).await, reason, "{auth}");
    }
    let got = send(post(&url, &[])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "credential_missing");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn keys_are_checked_before_the_body_is_read() {
    let (up, gw, _events) = setup().await;
    // Headers promise a body that never comes: without a key the answer must not wait for it
    // (body_timeout is 5 s).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /header HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    // The answer's head arrives at once (the connection then lingers briefly, reading the
    // promised body, so the client gets the answer rather than a reset).
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("no answer while the body is missing")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        out.extend_from_slice(&buf[..n]);
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn issued_keys_follow_the_store_while_the_gateway_runs() {
    let (up, gw, events) = setup().await;
    // Another connection to the same file, as the CLI in another process would have.
    let store = Store::open(&gw.store_path()).unwrap();
    let url = gw.url("/issued");

    // Created: accepted within the refresh bound.
    let k = store
        .create_key("issued", Some("agent"), None, now())
        .unwrap();
    let key = k.key.expose().to_owned();
    let took = eventually(Duration::from_secs(3), "new key accepted", || async {
        send(post(&url, &[("x-api-key", &key)])).await.status == 200
    })
    .await;
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let accepted = up.count();
    let last = up.requests().pop().unwrap();
    assert!(last.headers.get("x-api-key").is_none());
    let ok = events
        .all()
        .into_iter()
        .rfind(|e| e.reason.is_none())
        .unwrap();
    assert_eq!(ok.key_id.as_deref(), Some(k.record.id.as_str()));

    // last_used is written in batches, off the request path.
    eventually(Duration::from_secs(3), "last_used recorded", || async {
        store.get_key(&k.record.id).unwrap().last_used.is_some()
    })
    .await;

    // A key for another route opens only that route.
    let other = store.create_key("other", None, None, now()).unwrap();
    eventually(Duration::from_secs(3), "other key known", || async {
        send(post(
            &gw.url("/other"),
            &[("x-api-key", other.key.expose())],
        ))
        .await
        .status
            == 200
    })
    .await;
    let got = send(post(&url, &[("x-api-key", other.key.expose())])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "key_invalid");
    assert_eq!(
        events.get(&id).await.key_id.as_deref(),
        Some(other.record.id.as_str())
    );

    // Revoked: refused within the bound, with the key's id in the event.
    store.revoke_key(&k.record.id, now()).unwrap();
    let took = eventually(Duration::from_secs(3), "revoked key refused", || async {
        send(post(&url, &[("x-api-key", &key)])).await.status == 401
    })
    .await;
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let got = send(post(&url, &[("x-api-key", &key)])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "key_invalid");
    assert_eq!(
        events.get(&id).await.key_id.as_deref(),
        Some(k.record.id.as_str())
    );

    // Expiring: valid, then key_expired once its time has passed.
    let short = store
        .create_key("issued", None, Some(Duration::from_secs(3)), now())
        .unwrap();
    eventually(Duration::from_secs(3), "short key accepted", || async {
        send(post(&url, &[("x-api-key", short.key.expose())]))
            .await
            .status
            == 200
    })
    .await;
    eventually(Duration::from_secs(5), "short key expired", || async {
        send(post(&url, &[("x-api-key", short.key.expose())]))
            .await
            .status
            == 401
    })
    .await;
    let got = send(post(&url, &[("x-api-key", short.key.expose())])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "key_expired");

    // Every refusal stayed at the gateway.
    let forwarded: Vec<_> = up.requests().into_iter().map(|r| r.path).collect();
    assert!(forwarded.len() >= accepted);
    assert!(events.all().iter().filter(|e| e.status == 200).count() == forwarded.len());
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_grace_period() {
    let (_up, gw, events) = setup().await;
    let store = Store::open(&gw.store_path()).unwrap();
    let url = gw.url("/issued");
    let old = store.create_key("issued", None, None, now()).unwrap();
    let (new, _) = store
        .rotate_key(&old.record.id, Duration::from_secs(3), None, now())
        .unwrap();
    eventually(Duration::from_secs(3), "both keys accepted", || async {
        send(post(&url, &[("x-api-key", old.key.expose())]))
            .await
            .status
            == 200
            && send(post(&url, &[("x-api-key", new.key.expose())]))
                .await
                .status
                == 200
    })
    .await;
    eventually(
        Duration::from_secs(6),
        "old key expired after grace",
        || async {
            send(post(&url, &[("x-api-key", old.key.expose())]))
                .await
                .status
                == 401
        },
    )
    .await;
    let got = send(post(&url, &[("x-api-key", old.key.expose())])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "key_expired");
    let got = send(post(&url, &[("x-api-key", new.key.expose())])).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        events.get(&request_id(&got)).await.key_id.as_deref(),
        Some(new.record.id.as_str())
    );
}

#[tokio::test]
async fn keys_appear_nowhere_but_in_the_callers_request() {
    let (_up, gw, events) = setup().await;
    let store = Store::open(&gw.store_path()).unwrap();
    let issued = store.create_key("issued", None, None, now()).unwrap();
    let key = issued.key.expose().to_owned();
    eventually(Duration::from_secs(3), "key accepted", || async {
        send(post(&gw.url("/issued"), &[("x-api-key", &key)]))
            .await
            .status
            == 200
    })
    .await;
    let got = send(post(&gw.url("/header"), &[("x-make-apikey", K1)])).await;
    assert_eq!(got.status, 200);
    let bad = send(post(
        &gw.url("/issued"),
        &[("x-api-key", "hw_wrong_but_plausible")],
    ))
    .await;
    bad.assert_error(401, "unauthorized");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let all = format!("{:?}", events.all());
    for secret in [key.as_str(), K1, "hw_wrong_but_plausible"] {
        assert!(!all.contains(secret), "a key is in the events");
    }
    // The store files (database, WAL) hold digests only.
    for name in ["hookwarden.db", "hookwarden.db-wal"] {
        let path = gw.dir.path().join(name);
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&key[3..]), "{name} holds the issued key");
            assert!(!text.contains(K1), "{name} holds a static key");
        }
    }
}

/// A route that requires two credentials: an issued key counts for one entry only, so a
/// partner's key cannot stand in for the provider's URL secret as well.
#[tokio::test]
async fn an_issued_key_is_one_credential_not_every_one() {
    let (up, gw, events) = setup().await;
    let store = Store::open(&gw.store_path()).unwrap();
    let k = store
        .create_key("two", Some("partner"), None, now())
        .unwrap();
    let key = k.key.expose().to_owned();
    let both = format!("{}?secret-key={}", gw.url("/two"), K1);
    eventually(Duration::from_secs(3), "issued key accepted", || async {
        send(post(&both, &[("x-api-key", &key)])).await.status == 200
    })
    .await;
    let forwarded = up.count();

    // The issued key in the URL secret's place as well.
    let twice = format!("{}?secret-key={}", gw.url("/two"), key);
    let got = send(post(&twice, &[("x-api-key", &key)])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "key_invalid");
    // The static URL secret in the header's place.
    let got = send(post(&both, &[("x-api-key", K1)])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "key_invalid");
    // Only the header.
    let got = send(post(&gw.url("/two"), &[("x-api-key", &key)])).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "credential_missing");
    assert_eq!(
        up.count(),
        forwarded,
        "a refused request reached the upstream"
    );
}
