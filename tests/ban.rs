//! `[route.ban]` over real sockets: an address that fails credentials `after_failures` times
//! within `within` is refused with 403 `banned` for `duration`, and then let in again.
//!
//! The gateway reports every refusal of a route request to `RoutePolicy::record_denial`,
//! which counts the credential failures among them. Most tests report failures through that
//! entry point directly (to vary the reason and address freely) and check everything after it
//! over real requests; the last one goes the whole way with wrong API keys.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookwarden::events::Outcome;
use hookwarden::policy::{Denial, Exchange, Reason};
use http_body_util::Full;

const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.1"]

[[route]]
name = "login"
path = "/login"
content_types = ["application/json"]
[route.upstream]
url = "{upstream}/login"
[route.ip]
deny = ["198.51.100.0/24"]
[[route.limit]]
key = "ip"
rate = "2/minute"
[route.ban]
after_failures = 3
within = "1m"
duration = "1s"
"#;

/// An exchange as the gateway builds it for `client` arriving through the proxy.
fn exchange(client: &str) -> Exchange {
    let ip: IpAddr = client.parse().unwrap();
    let mut ex = Exchange::new(
        http::Method::POST,
        "/login",
        None,
        http::HeaderMap::new(),
        SocketAddr::from(([127, 0, 0, 1], 40000)),
    );
    ex.client_ip = ip;
    ex.forwarded_for = format!("{ip}, 127.0.0.1");
    ex.has_body = true;
    ex
}

/// Reports one credential failure of `client` on the route, as the gateway does after a
/// credential guard refused it; returns the flags its event would carry.
async fn credential_failure(o: &Observed, client: &str, reason: Reason) -> Vec<Reason> {
    assert!(reason.is_auth_failure());
    let routes = o.core.routes();
    let route = routes.by_name("login").unwrap();
    let mut ex = exchange(client);
    route
        .record_denial(&mut ex, &Denial::new(reason), o.core.services())
        .await;
    ex.flags
}

fn login(url: &str, client: &str) -> http::Request<Full<Bytes>> {
    req("POST", url)
        .header("x-forwarded-for", client)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

#[tokio::test]
async fn repeated_credential_failures_ban_the_address_until_the_ban_expires() {
    let up = Upstream::start().await;
    let mut o = Gateway::start_observed(CONFIG, &up).await;
    let url = o.gw.url("/login");
    let attacker = "203.0.113.66";

    assert!(
        credential_failure(&o, attacker, Reason::KeyInvalid)
            .await
            .is_empty()
    );
    assert!(
        credential_failure(&o, attacker, Reason::SignatureInvalid)
            .await
            .is_empty()
    );
    assert_eq!(
        send(login(&url, attacker)).await.status,
        200,
        "two failures: no ban yet"
    );
    // The third failure within the window starts the ban and is flagged on its event.
    assert_eq!(
        credential_failure(&o, attacker, Reason::TokenInvalid).await,
        [Reason::Banned]
    );

    let got = send(login(&url, attacker)).await;
    let id = got.assert_error(403, "forbidden");
    let e = o.event_for(&id).await;
    assert_eq!(e.outcome, Outcome::Denied);
    assert_eq!(e.reason, Some(Reason::Banned));
    assert_eq!(e.client_ip.to_string(), attacker);
    assert_eq!(up.count(), 1, "nothing of the banned address was forwarded");
    // Other callers are not affected.
    assert_eq!(send(login(&url, "203.0.113.67")).await.status, 200);

    // The ban expires on its own. The refused request did not spend the address's rate
    // limit (2/minute; one used before the ban): the ban runs before the limits.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = send(login(&url, attacker)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.count(), 3);
    // A new ban needs the full count again.
    assert!(
        credential_failure(&o, attacker, Reason::KeyInvalid)
            .await
            .is_empty()
    );
    let routes = o.core.routes();
    let ban = routes.by_name("login").unwrap().ban.as_ref().unwrap();
    assert_eq!(
        ban.remaining(&exchange(attacker), o.core.services()).await,
        None
    );
}

#[tokio::test]
async fn a_banned_ipv6_client_is_banned_with_its_whole_64() {
    let up = Upstream::start().await;
    let o = Gateway::start_observed(CONFIG, &up).await;
    let url = o.gw.url("/login");
    for _ in 0..3 {
        credential_failure(&o, "2001:db8:1:2::1", Reason::KeyInvalid).await;
    }
    for client in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::2"] {
        send(login(&url, client))
            .await
            .assert_error(403, "forbidden");
    }
    assert_eq!(send(login(&url, "2001:db8:1:3::1")).await.status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn refusals_that_are_not_credential_failures_never_ban() {
    let up = Upstream::start().await;
    let mut o = Gateway::start_observed(
        &CONFIG.replace("after_failures = 3", "after_failures = 1"),
        &up,
    )
    .await;
    let url = o.gw.url("/login");
    // Real refusals through the gateway, each reported to the ban guard: wrong content type,
    // rate limited, denied address. With after_failures = 1 any counted one would ban.
    let text = req("POST", &url)
        .header("x-forwarded-for", "203.0.113.5")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    send(text).await.assert_error(415, "unsupported_media_type");
    assert_eq!(send(login(&url, "203.0.113.5")).await.status, 200);
    assert_eq!(send(login(&url, "203.0.113.5")).await.status, 200);
    let id = send(login(&url, "203.0.113.5"))
        .await
        .assert_error(429, "rate_limited");
    let e = o.event_for(&id).await;
    assert_eq!(e.reason, Some(Reason::RateLimited));
    assert!(e.flags.is_empty());
    send(login(&url, "198.51.100.1"))
        .await
        .assert_error(403, "forbidden");

    let routes = o.core.routes();
    let route = routes.by_name("login").unwrap();
    let ban = route.ban.as_ref().unwrap();
    for client in ["203.0.113.5", "198.51.100.1"] {
        assert_eq!(
            ban.remaining(&exchange(client), o.core.services()).await,
            None,
            "{client} was banned"
        );
    }
    // One credential failure does ban here.
    credential_failure(&o, "203.0.113.5", Reason::CredentialMissing).await;
    assert!(
        ban.remaining(&exchange("203.0.113.5"), o.core.services())
            .await
            .is_some()
    );
}

/// The whole path with a real credential guard: wrong API keys from one address ban it.
#[tokio::test]
async fn wrong_api_keys_ban_the_address_end_to_end() {
    let up = Upstream::start().await;
    let cfg = r#"
[server]
trusted_proxies = ["127.0.0.1"]
[[route]]
name = "login"
path = "/login"
[route.upstream]
url = "{upstream}/login"
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["the-right-key-0123456789abcdef"]
[[route.limit]]
key = "ip"
rate = "100/minute"
[route.ban]
after_failures = 3
within = "1m"
duration = "1s"
"#;
    let mut o = Gateway::start_observed(cfg, &up).await;
    let url = o.gw.url("/login");
    let with_key = |key: &str| {
        req("POST", &url)
            .header("x-forwarded-for", "203.0.113.66")
            .header("x-api-key", key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    for _ in 0..2 {
        send(with_key("wrong"))
            .await
            .assert_error(401, "unauthorized");
    }
    let id = send(with_key("wrong"))
        .await
        .assert_error(401, "unauthorized");
    let e = o.event_for(&id).await;
    assert_eq!(e.reason, Some(Reason::KeyInvalid));
    assert_eq!(e.flags, [Reason::Banned]);
    // Banned: even the right key is refused now, and nothing is forwarded.
    send(with_key("the-right-key-0123456789abcdef"))
        .await
        .assert_error(403, "forbidden");
    assert_eq!(up.count(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        send(with_key("the-right-key-0123456789abcdef"))
            .await
            .status,
        200
    );
    assert_eq!(up.count(), 1);
}
