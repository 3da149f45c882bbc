//! The real client address over real sockets: only a trusted proxy's `X-Forwarded-For` is
//! believed, walked from the right; a client that writes its own header gains nothing.
//!
//! The test client plays two parts: connecting from 127.0.0.1 it is the trusted proxy, from
//! 127.0.0.2 it is a client on the internet that talks to the gateway directly.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]

[[route]]
name = "open"
path = "/open"
[route.upstream]
url = "{upstream}/open"
[[route.limit]]
key = "ip"
rate = "1/minute"

[[route]]
name = "partners"
path = "/partners"
[route.upstream]
url = "{upstream}/partners"
[route.ip]
allow = ["203.0.113.0/24", "2001:db8::/32"]
"#;

const PROXY: &str = "127.0.0.1";
const DIRECT: &str = "127.0.0.2";

fn request(url: &str, xff: &[&str]) -> http::Request<Full<Bytes>> {
    let mut b = req("POST", url);
    for v in xff {
        b = b.header("x-forwarded-for", *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

async fn from(local: &str, url: &str, xff: &[&str]) -> Got {
    send_with(&client_from(local.parse().unwrap()), request(url, xff)).await
}

fn forwarded_for(r: &Recorded) -> &str {
    r.headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn a_direct_client_cannot_claim_an_allowed_address() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    // Spoofed headers of every shape: leftmost, rightmost, several headers.
    for xff in [
        &["203.0.113.50"][..],
        &["6.6.6.6, 203.0.113.50"],
        &["203.0.113.50", "203.0.113.51"],
    ] {
        let got = from(DIRECT, &gw.url("/partners"), xff).await;
        got.assert_error(403, "forbidden");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_direct_clients_header_is_replaced_not_passed_on() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    let got = from(DIRECT, &gw.url("/open"), &["203.0.113.50, 10.0.0.1"]).await;
    assert_eq!(got.status, 200);
    assert_eq!(forwarded_for(&up.only()), DIRECT);
}

#[tokio::test]
async fn behind_the_trusted_proxy_the_rightmost_untrusted_entry_is_the_client() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    // The client wrote 6.6.6.6; the proxy appended the address it saw, 203.0.113.50.
    let got = from(PROXY, &gw.url("/partners"), &["6.6.6.6, 203.0.113.50"]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(forwarded_for(&up.only()), "203.0.113.50, 127.0.0.1");
    // The other way round the client is 6.6.6.6, which is not a partner.
    let got = from(PROXY, &gw.url("/partners"), &["203.0.113.50, 6.6.6.6"]).await;
    got.assert_error(403, "forbidden");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn several_headers_and_trusted_hops_are_walked_as_one_list() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    // Two headers (the client's, then the proxies'), and an internal hop in 10.0.0.0/8.
    let got = from(
        PROXY,
        &gw.url("/partners"),
        &["203.0.113.1", "6.6.6.6, 203.0.113.50, 10.1.2.3"],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        forwarded_for(&up.only()),
        "203.0.113.50, 10.1.2.3, 127.0.0.1",
        "the forged 6.6.6.6 and 203.0.113.1 are not passed on"
    );
}

#[tokio::test]
async fn an_invalid_entry_where_the_client_should_be_is_a_400_not_a_fallback() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    for xff in [
        "203.0.113.50, garbage",
        "203.0.113.50, 0.0.0.0",
        "203.0.113.50, ::",
        "203.0.113.50, 203.0.113.51.7",
    ] {
        let got = from(PROXY, &gw.url("/partners"), &[xff]).await;
        got.assert_error(400, "bad_request");
    }
    assert_eq!(up.count(), 0);
    // Garbage left of the client is the client's own business.
    let got = from(PROXY, &gw.url("/partners"), &["garbage, 203.0.113.50"]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn mapped_ipv6_and_ports_are_the_same_address() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    for (xff, seen) in [
        ("::ffff:203.0.113.50", "203.0.113.50, 127.0.0.1"),
        ("[::ffff:203.0.113.51]:4711", "203.0.113.51, 127.0.0.1"),
        ("203.0.113.52:4711", "203.0.113.52, 127.0.0.1"),
        ("[2001:db8::7]:443", "2001:db8::7, 127.0.0.1"),
        ("2001:db8::8", "2001:db8::8, 127.0.0.1"),
    ] {
        let got = from(PROXY, &gw.url("/partners"), &[xff]).await;
        assert_eq!(got.status, 200, "{xff}: {}", got.text());
        assert_eq!(forwarded_for(&up.requests().pop().unwrap()), seen, "{xff}");
    }
    let got = from(PROXY, &gw.url("/partners"), &["2001:db9::1"]).await;
    got.assert_error(403, "forbidden");
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn a_spoofer_spends_its_own_limit_not_its_victims() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    let victim = "203.0.113.50";
    // The direct client claims to be the victim: its requests count as its own.
    assert_eq!(from(DIRECT, &gw.url("/open"), &[victim]).await.status, 200);
    from(DIRECT, &gw.url("/open"), &[victim])
        .await
        .assert_error(429, "rate_limited");
    // The victim, arriving through the proxy, still has its whole limit.
    assert_eq!(from(PROXY, &gw.url("/open"), &[victim]).await.status, 200);
    from(PROXY, &gw.url("/open"), &[victim])
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(up.count(), 2);
}
