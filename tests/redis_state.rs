//! Several gateway instances, one Redis: limits, spent browser tokens, seen message ids and
//! bans hold across instances, expire on time, and leave no key without an expiry; then
//! `on_error` with a Redis of the test's own that is stopped mid-test and started again:
//! `deny` answers 503 `state_unavailable` while it is down, `local` keeps serving from each
//! instance's memory (logged once, visible in the metrics), and both use Redis again without
//! a restart.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use common::redis_util::{OwnRedis, SHARED_REDIS, assert_all_expire_then_clean, unique_prefix};
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use hookwarden::policy::Reason;
use http_body_util::Full;
use sha2::Sha256;

const SECRET: &str = "redis-state-test-secret-0123456789abcdef";
const CALLER_KEY: &str = "caller-key-0123456789abcdef";
const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const ORIGIN: &str = "https://shop.example.com";

/// Every instance's config: the same secret, Redis and prefix.
const CONFIG: &str = r#"
[server]
secret = "{secret}"

[state]
backend = "redis"
url = "{redis}"
prefix = "{prefix}"
on_error = "{on_error}"
timeout = "200ms"

[[route]]
name = "limited"
path = "/limited"
[route.upstream]
url = "{upstream}/limited"
[[route.limit]]
key = "route"
rate = "5/minute"

[[route]]
name = "fast"
path = "/fast"
[route.upstream]
url = "{upstream}/fast"
[[route.limit]]
key = "ip"
rate = "2/second"

[[route]]
name = "chat"
path = "/chat"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
[route.upstream]
url = "{upstream}/chat"

[[route]]
name = "hooks"
path = "/hooks"
[route.upstream]
url = "{upstream}/hooks"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["{webhook_secret}"]

[[route]]
name = "slowhooks"
path = "/slowhooks"
[route.upstream]
url = "{upstream}/slow-headers"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["{webhook_secret}"]

[[route]]
name = "keyed"
path = "/keyed"
[route.upstream]
url = "{upstream}/keyed"
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["{caller_key}"]
[route.ban]
after_failures = 3
within = "1m"
duration = "2s"

[[route]]
name = "open"
path = "/open"
[route.upstream]
url = "{upstream}/open"
"#;

fn config(redis: &str, prefix: &str, on_error: &str) -> String {
    CONFIG
        .replace("{secret}", SECRET)
        .replace("{redis}", redis)
        .replace("{prefix}", prefix)
        .replace("{on_error}", on_error)
        .replace("{webhook_secret}", WEBHOOK_SECRET)
        .replace("{caller_key}", CALLER_KEY)
}

/// Two gateways sharing the Redis on 127.0.0.1:6379 under a fresh prefix, one upstream.
async fn pair(test: &str) -> (Gateway, Gateway, Upstream, String) {
    let prefix = unique_prefix(test);
    let text = config(SHARED_REDIS, &prefix, "deny");
    let up = Upstream::start().await;
    let a = Gateway::start(&text, &up).await;
    let b = Gateway::start(&text, &up).await;
    (a, b, up, prefix)
}

fn post(gw: &Gateway, path: &str) -> http::Request<Full<Bytes>> {
    post_json(&gw.url(path), r#"{"n":1}"#)
}

#[tokio::test]
async fn two_instances_share_a_limit_exactly() {
    let (a, b, up, prefix) = pair("limit").await;
    // Ten requests at once, half to each instance.
    let sends = (0..10).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        send(post(gw, "/limited"))
    });
    let got = futures_join(sends).await;
    let ok = got.iter().filter(|g| g.status == 200).count();
    let limited: Vec<&Got> = got.iter().filter(|g| g.status == 429).collect();
    assert_eq!(ok, 5, "exactly five across both");
    assert_eq!(limited.len(), 5);
    assert_eq!(up.count(), 5, "exactly five reached the upstream");
    for g in limited {
        g.assert_error(429, "rate_limited");
        let retry: u64 = g.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=12).contains(&retry), "{retry}");
    }
    // Still refused on both.
    for gw in [&a, &b] {
        let got = send(post(gw, "/limited")).await;
        gw.assert_refused(&got, 429, "rate_limited", Reason::RateLimited)
            .await;
    }
    assert_eq!(up.count(), 5);
    assert!(assert_all_expire_then_clean(SHARED_REDIS, &prefix).await >= 1);
}

/// `join_all` without another dependency: spawn and collect in order.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<Got>
where
    F: std::future::Future<Output = Got> + Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_limit_earns_requests_back_on_time_across_instances() {
    let (a, b, up, prefix) = pair("expiry").await;
    // 2/second per address: two pass, the third is refused wherever it goes.
    assert_eq!(send(post(&a, "/fast")).await.status, 200);
    assert_eq!(send(post(&b, "/fast")).await.status, 200);
    let got = send(post(&a, "/fast")).await;
    a.assert_refused(&got, 429, "rate_limited", Reason::RateLimited)
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(send(post(&b, "/fast")).await.status, 200, "one earned back");
    let got = send(post(&a, "/fast")).await;
    a.assert_refused(&got, 429, "rate_limited", Reason::RateLimited)
        .await;
    assert_eq!(up.count(), 3);
    assert_all_expire_then_clean(SHARED_REDIS, &prefix).await;
}

#[tokio::test]
async fn a_token_minted_on_one_instance_is_spent_on_the_other_then_refused_on_both() {
    let (a, b, up, prefix) = pair("token").await;
    let token = chat_token(&a).await;
    let with_token = |gw: &Gateway| chat_message(gw, &token);
    let got = send(with_token(&b)).await;
    assert_eq!(got.status, 200, "minted on A, spent on B: {}", got.text());
    assert!(got.header("x-hookwarden-token").is_some(), "B rotates it");
    assert_eq!(up.count(), 1);
    for gw in [&a, &b] {
        let got = send(with_token(gw)).await;
        gw.assert_refused(&got, 403, "forbidden", Reason::TokenReused)
            .await;
    }
    assert_eq!(up.count(), 1, "the reused token reached nothing");
    assert_all_expire_then_clean(SHARED_REDIS, &prefix).await;
}

/// A Standard Webhooks signature (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the
/// base64 key after `whsec_`), as the specification defines it.
fn standard_signature(id: &str, ts: i64, body: &str) -> String {
    let key = B64
        .decode(WEBHOOK_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// A browser token for the `chat` route, from `gw`'s token endpoint.
async fn chat_token(gw: &Gateway) -> String {
    let got = send(
        req("GET", &gw.url("/_hookwarden/token?route=chat"))
            .header("origin", ORIGIN)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.json()["token"].as_str().unwrap().to_owned()
}

/// A chat message to `gw`'s `chat` route, spending `token`.
fn chat_message(gw: &Gateway, token: &str) -> http::Request<Full<Bytes>> {
    req("POST", &gw.url("/chat"))
        .header("origin", ORIGIN)
        .header("content-type", "application/json")
        .header("x-hookwarden-token", token)
        .body(Full::new(Bytes::from_static(b"{\"message\":\"hi\"}")))
        .unwrap()
}

#[tokio::test]
async fn a_signed_message_accepted_by_one_instance_is_a_duplicate_on_the_other() {
    let (a, b, up, prefix) = pair("replay").await;
    let body = r#"{"type":"invoice.paid"}"#;
    let ts = jiff::Timestamp::now().as_second();
    let message = |gw: &Gateway, sig: &str, ts: i64| {
        standard_message(&gw.url("/hooks"), "msg_shared_1", ts, sig, body)
    };
    let sig = standard_signature("msg_shared_1", ts, body);
    let got = send(message(&a, &sig, ts)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.count(), 1);
    // The sender's retry lands on B, freshly signed: a duplicate, not forwarded again.
    let sig2 = standard_signature("msg_shared_1", ts + 1, body);
    let got = send(message(&b, &sig2, ts + 1)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["status"], "duplicate", "{}", got.text());
    assert_eq!(up.count(), 1);
    assert_all_expire_then_clean(SHARED_REDIS, &prefix).await;
}

/// A message being delivered is claimed in Redis as `p` and, once delivered, `d`: the values
/// gateways of earlier versions read (they take any value but `p` for delivered), so instances
/// of two versions can share one Redis during an upgrade.
#[tokio::test]
async fn claims_keep_the_values_earlier_versions_read() {
    let prefix = unique_prefix("claim-values");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(SHARED_REDIS, &prefix, "deny"), &up).await;
    let body = r#"{"type":"invoice.paid"}"#;
    let ts = jiff::Timestamp::now().as_second();
    let sig = standard_signature("msg_values", ts, body);
    let request = standard_message(&gw.url("/slowhooks"), "msg_values", ts, &sig, body);
    let sent = tokio::spawn(send(request));
    eventually(Duration::from_secs(5), "the upstream got it", || async {
        up.count() == 1
    })
    .await;
    let values = || async {
        let mut c = common::redis_util::connect(SHARED_REDIS).await;
        let mut out = Vec::new();
        for (k, _) in common::redis_util::keys_with_ttl(SHARED_REDIS, &prefix).await {
            let v: String = redis::AsyncCommands::get(&mut c, &k).await.unwrap();
            out.push(v);
        }
        out
    };
    assert_eq!(values().await, vec!["p".to_owned()], "in flight");
    let got = sent.await.unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(values().await, vec!["d".to_owned()], "delivered");
    assert_all_expire_then_clean(SHARED_REDIS, &prefix).await;
}

fn keyed(gw: &Gateway, key: &str) -> http::Request<Full<Bytes>> {
    req("POST", &gw.url("/keyed"))
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

#[tokio::test]
async fn failures_on_both_instances_add_up_to_one_ban_that_expires() {
    let (a, b, up, prefix) = pair("ban").await;
    // Three wrong keys (after_failures = 3), spread over both instances.
    for gw in [&a, &b, &a] {
        let got = send(keyed(gw, "wrong-key-0123456789abcdef")).await;
        gw.assert_refused(&got, 401, "unauthorized", Reason::KeyInvalid)
            .await;
    }
    // Banned everywhere, even with the right key.
    for gw in [&b, &a] {
        let got = send(keyed(gw, CALLER_KEY)).await;
        gw.assert_refused(&got, 403, "forbidden", Reason::Banned)
            .await;
    }
    assert_eq!(up.count(), 0);
    // duration = "2s": then let in again, on either instance.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send(keyed(&b, CALLER_KEY)).await.status, 200);
    assert_eq!(send(keyed(&a, CALLER_KEY)).await.status, 200);
    assert_eq!(up.count(), 2);
    assert_all_expire_then_clean(SHARED_REDIS, &prefix).await;
}

#[tokio::test]
async fn deny_answers_503_while_redis_is_down_and_recovers_without_a_restart() {
    let mut redis = OwnRedis::start().await;
    let up = Upstream::start().await;
    let text = config(&redis.url(), "hwtest:deny:", "deny");
    let gw = Gateway::start(&text, &up).await;
    assert_eq!(send(post(&gw, "/limited")).await.status, 200);

    redis.stop();
    for path in ["/limited", "/limited", "/fast"] {
        let got = send(post(&gw, path)).await;
        gw.assert_refused(&got, 503, "service_unavailable", Reason::StateUnavailable)
            .await;
    }
    // A token cannot be spent, a message id not recorded: refused too.
    let got = send(keyed(&gw, "wrong-key-0123456789abcdef")).await;
    gw.assert_refused(&got, 503, "service_unavailable", Reason::StateUnavailable)
        .await;
    // A route that needs no shared state is served as usual.
    assert_eq!(send(post(&gw, "/open")).await.status, 200);
    assert_eq!(up.count(), 2, "nothing refused reached the upstream");

    redis.resume().await;
    eventually(Duration::from_secs(10), "served again", || async {
        send(post(&gw, "/limited")).await.status == 200
    })
    .await;
    assert_eq!(send(post(&gw, "/fast")).await.status, 200);
    assert_eq!(up.count(), 4);
    gw.stop().await;
}

/// `hookwarden serve` (the real binary) against `redis_url` with `on_error = "local"`, with
/// an admin listener for the metrics.
async fn served_local(redis_url: &str, up: &Upstream) -> Served {
    let text = format!(
        "[admin]\nlisten = \"{{admin}}\"\ntoken = \"{ADMIN_TOKEN}\"\n[storage]\npath = \"{{dir}}/hookwarden.db\"\n{}",
        config(redis_url, "hwtest:local:", "local").replacen(
            "[server]\n",
            "[server]\nlisten = \"{listen}\"\n",
            1
        )
    );
    Served::start(&text, &up.base(), &[]).await
}

async fn metric(s: &Served, name: &str) -> f64 {
    let got = admin_get(s.admin.unwrap(), "/metrics", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200);
    let text = got.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

async fn status(s: &Served, path: &str) -> u16 {
    send(post_json(&s.url(path), r#"{"n":1}"#))
        .await
        .status
        .as_u16()
}

const DOWN_LOG: &str = "shared state unreachable";
const BACK_LOG: &str = "shared state reachable again";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_serves_from_memory_while_redis_is_down_and_shares_again_after() {
    let mut redis = OwnRedis::start().await;
    let up = Upstream::start().await;
    let a = served_local(&redis.url(), &up).await;
    let b = served_local(&redis.url(), &up).await;
    assert_eq!(metric(&a, "hookwarden_state_redis_up").await, 1.0);
    assert_eq!(metric(&a, "hookwarden_state_local_fallback").await, 0.0);

    // Shared: 5/minute for the route across both instances; two spent.
    assert_eq!(status(&a, "/limited").await, 200);
    assert_eq!(status(&b, "/limited").await, 200);

    redis.stop();
    // Each instance now counts alone, from a fresh table of its own: five each, then 429.
    for s in [&a, &b] {
        let got: Vec<u16> = futures_statuses(s, 7).await;
        assert_eq!(got.iter().filter(|c| **c == 200).count(), 5, "{got:?}");
        assert_eq!(got.iter().filter(|c| **c == 429).count(), 2, "{got:?}");
    }
    for s in [&a, &b] {
        assert_eq!(metric(s, "hookwarden_state_redis_up").await, 0.0);
        assert_eq!(metric(s, "hookwarden_state_local_fallback").await, 1.0);
        assert!(metric(s, "hookwarden_state_fallback_operations_total").await >= 7.0);
        assert!(metric(s, "hookwarden_state_redis_errors_total").await >= 1.0);
        // Said once, not once per request (the log is flushed every 100 ms).
        s.wait_log(DOWN_LOG).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.log().matches(DOWN_LOG).count(), 1, "{}", s.log());
    }

    redis.resume().await; // empty: nothing was persisted
    for s in [&a, &b] {
        eventually(Duration::from_secs(10), "Redis used again", || async {
            metric(s, "hookwarden_state_redis_up").await == 1.0
        })
        .await;
        assert_eq!(metric(s, "hookwarden_state_local_fallback").await, 0.0);
        s.wait_log(BACK_LOG).await;
    }
    // Shared again: five across both, whoever asks.
    let mut codes = Vec::new();
    for s in [&a, &b, &a, &b, &a, &b] {
        codes.push(status(s, "/limited").await);
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in [&a, &b] {
        assert_eq!(s.log().matches(DOWN_LOG).count(), 1);
        assert_eq!(s.log().matches(BACK_LOG).count(), 1);
    }
    assert_eq!(up.count(), 2 + 10 + 5);
}

async fn futures_statuses(s: &Served, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(status(s, "/limited").await);
    }
    out
}

/// A TCP relay to Redis: each accepted connection is numbered (from 1), connected to the
/// target after `open_delay`, and handed with its server side to `serve`. Stops when dropped.
struct Relay {
    addr: std::net::SocketAddr,
    /// Connections accepted so far.
    opened: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start<F, Fut>(target: std::net::SocketAddr, open_delay: Duration, serve: F) -> Relay
    where
        F: Fn(u64, tokio::net::TcpStream, tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = std::sync::Arc::new(serve);
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = opened.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let serve = serve.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(open_delay).await;
                    if let Ok(server) = tokio::net::TcpStream::connect(target).await {
                        serve(number, client, server).await;
                    }
                });
            }
        });
        Relay { addr, opened, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP relay to Redis that can go silent on the connections it already carries: their
/// commands are swallowed (read, never passed on) while the connections stay open, and new
/// connections are relayed as usual. What a stuck proxy, NAT or managed endpoint does.
struct SilentRelay {
    relay: Relay,
    /// Connections numbered at or below this are swallowed.
    silent_upto: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SilentRelay {
    async fn start(target: std::net::SocketAddr) -> SilentRelay {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let silent_upto = Arc::new(AtomicU64::new(0));
        let gate = silent_upto.clone();
        let relay = Relay::start(target, Duration::ZERO, move |mine, client, server| {
            let gate = gate.clone();
            async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if mine <= gate.load(Ordering::SeqCst) {
                        continue;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                down.abort();
            }
        })
        .await;
        SilentRelay { relay, silent_upto }
    }

    /// From now on, every connection open so far is swallowed.
    fn silence_open_connections(&self) {
        use std::sync::atomic::Ordering;
        let n = self.relay.opened.load(Ordering::SeqCst);
        self.silent_upto.store(n, Ordering::SeqCst);
    }
}

/// A connection that stops answering while Redis itself is fine (new connections work) is
/// replaced: without that, the instance refused (or, with `local`, served alone) until it was
/// restarted.
#[tokio::test]
async fn a_connection_that_stops_answering_is_replaced() {
    let redis = OwnRedis::start().await;
    let relay = SilentRelay::start(([127, 0, 0, 1], redis.port).into()).await;
    let up = Upstream::start().await;
    let url = format!("redis://{}/0", relay.relay.addr);
    let text = config(&url, &unique_prefix("silent"), "deny");
    let gw = Gateway::start(&text, &up).await;
    assert_eq!(send(post(&gw, "/fast")).await.status, 200);

    relay.silence_open_connections();
    let got = send(post(&gw, "/fast")).await;
    gw.assert_refused(&got, 503, "service_unavailable", Reason::StateUnavailable)
        .await;
    eventually(
        Duration::from_secs(10),
        "served on a new connection",
        || async { send(post(&gw, "/fast")).await.status == 200 },
    )
    .await;
    assert_eq!(
        up.count(),
        2,
        "the refused request never reached the upstream"
    );
    gw.stop().await;
}

/// A TCP relay to Redis that, once armed with a marker, passes the next command holding the
/// marker on to Redis and then closes that connection instead of relaying Redis's answer: the
/// command ran, and its caller never hears how. What a proxy, a NAT or a failover dropping a
/// connection at the wrong moment does.
struct LosingRelay {
    relay: Relay,
    armed: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    /// Answers swallowed so far.
    lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LosingRelay {
    async fn start(target: std::net::SocketAddr) -> LosingRelay {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let armed: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let lost = Arc::new(AtomicU64::new(0));
        let (marker, count) = (armed.clone(), lost.clone());
        // Connections take a moment to open, as over a network: a repeated call waits for its
        // new connection before it is sent.
        let open_delay = Duration::from_millis(50);
        let relay = Relay::start(target, open_delay, move |_, mut client, mut server| {
            let (marker, count) = (marker.clone(), count.clone());
            async move {
                let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
                let mut lose = false;
                loop {
                    tokio::select! {
                        n = client.read(&mut up) => {
                            let Ok(n @ 1..) = n else { return };
                            let chunk = &up[..n];
                            let hit = {
                                let mut m = marker.lock().unwrap();
                                let hit = m.as_ref().is_some_and(|w| {
                                    chunk.windows(w.len()).any(|c| c == w)
                                });
                                if hit {
                                    *m = None;
                                }
                                hit
                            };
                            lose |= hit;
                            if server.write_all(chunk).await.is_err() {
                                return;
                            }
                        }
                        n = server.read(&mut down) => {
                            let Ok(n @ 1..) = n else { return };
                            if lose {
                                count.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            if client.write_all(&down[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        })
        .await;
        LosingRelay { relay, armed, lost }
    }

    /// The answer to the next command that holds `marker` will be lost with its connection.
    fn lose_answer_to(&self, marker: &str) {
        *self.armed.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    fn lost(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A claim whose answer is lost with its connection ran in Redis all the same; the gateway
/// asks again on a new connection and must recognize the claim as the one it just made. Else
/// a fresh browser token is refused as reused, and a signed message's first delivery is
/// answered 409 `in_flight` (the sender retries until the claim expires) without reaching the
/// upstream.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_still_this_requests() {
    let relay = LosingRelay::start(([127, 0, 0, 1], 6379).into()).await;
    let up = Upstream::start().await;
    let prefix = unique_prefix("lost-answer");
    let text = config(&format!("redis://{}/0", relay.relay.addr), &prefix, "deny");
    let gw = Gateway::start(&text, &up).await;
    let body = r#"{"type":"invoice.paid"}"#;
    let ts = jiff::Timestamp::now().as_second();
    let message = |id: &str| {
        let sig = standard_signature(id, ts, body);
        standard_message(&gw.url("/hooks"), id, ts, &sig, body)
    };
    // One message first, so Redis has the claim script and the lost answer is the claim's.
    assert_eq!(send(message("msg_warm")).await.status, 200);
    relay.lose_answer_to(&prefix);
    let got = send(message("msg_lost_answer")).await;
    assert_eq!(relay.lost(), 1, "the claim's answer was lost");
    assert_eq!(got.status, 200, "{}", got.text());
    assert_ne!(got.json()["status"], "duplicate");
    assert_eq!(up.count(), 2, "delivered once");
    // Delivered: the claim is settled, so a copy is a duplicate.
    let again = send(message("msg_lost_answer")).await;
    assert_eq!(again.json()["status"], "duplicate", "{}", again.text());
    assert_eq!(up.count(), 2);

    // A browser token's spend, the same way.
    let token = chat_token(&gw).await;
    let spend = || chat_message(&gw, &token);
    relay.lose_answer_to(&prefix);
    let got = send(spend()).await;
    assert_eq!(relay.lost(), 2, "the spend's answer was lost");
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.count(), 3);
    let got = send(spend()).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenReused)
        .await;
    assert_eq!(up.count(), 3);
    assert_all_expire_then_clean(SHARED_REDIS, &prefix).await;
}

/// A Redis that evicts keys when full is named at start: a flood would push out spent
/// tokens, seen message ids and bans. One that never evicts (`noeviction`, or no
/// `maxmemory`) is not.
#[tokio::test]
async fn a_redis_that_evicts_keys_is_warned_about_at_start() {
    let redis = OwnRedis::start().await;
    let up = Upstream::start().await;
    let quiet = served_local(&redis.url(), &up).await;
    assert_eq!(status(&quiet, "/open").await, 200);
    redis.cli(&["CONFIG", "SET", "maxmemory", "100mb"]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"]);
    let warned = served_local(&redis.url(), &up).await;
    assert_eq!(status(&warned, "/open").await, 200);
    eventually(Duration::from_secs(5), "the eviction warning", || async {
        warned.log().contains("maxmemory-policy noeviction")
    })
    .await;
    assert!(warned.log().contains("volatile-ttl"), "{}", warned.log());
    assert!(!quiet.log().contains("evicts keys"), "{}", quiet.log());
}

/// With `on_error = "local"`, a Redis that answers but refuses (here: full, with
/// `noeviction`) is fallen back from like one that is down, and the metrics say so: Redis up,
/// but this instance answering from memory.
#[tokio::test]
async fn local_fallback_on_a_redis_that_refuses_shows_in_the_metrics() {
    let redis = OwnRedis::start().await;
    let up = Upstream::start().await;
    let s = served_local(&redis.url(), &up).await;
    assert_eq!(status(&s, "/limited").await, 200);
    assert_eq!(metric(&s, "hookwarden_state_local_fallback").await, 0.0);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    assert_eq!(status(&s, "/limited").await, 200);
    assert_eq!(metric(&s, "hookwarden_state_redis_up").await, 1.0);
    assert_eq!(metric(&s, "hookwarden_state_local_fallback").await, 1.0);
    assert!(metric(&s, "hookwarden_state_fallback_operations_total").await >= 1.0);
    s.wait_log("shared state answered with an error").await;
}
