//! `[[route.limit]]` over real sockets: exact counts on the upstream side, concurrency, every
//! key kind that needs no credentials (`ip`, `ip_prefix`, `route`, `header:NAME`), IPv6,
//! several limits per route, long windows, and the IETF `RateLimit` fields.
//!
//! Client addresses come through the trusted proxy at 127.0.0.1 (`X-Forwarded-For`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookwarden::policy::Reason;
use http_body_util::Full;
use tokio::task::JoinSet;

const TRUSTED: &str = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n";

fn route(name: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\npath = \"/{name}\"\n[route.upstream]\nurl = \"{{upstream}}/{name}\"\n{extra}\n"
    )
}

fn from_client(url: &str, client: &str) -> http::Request<Full<Bytes>> {
    req("POST", url)
        .header("x-forwarded-for", client)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends `n` requests from `client` at once; returns the statuses, sorted.
async fn burst(url: &str, client: &str, n: usize) -> Vec<u16> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let r = from_client(url, client);
        set.spawn(async move { send(r).await.status.as_u16() });
    }
    let mut out = set.join_all().await;
    out.sort_unstable();
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn five_per_minute_lets_five_simultaneous_requests_through_and_refuses_the_sixth() {
    let up = Upstream::start().await;
    let cfg =
        TRUSTED.to_owned() + &route("chat", "[[route.limit]]\nkey = \"ip\"\nrate = \"5/minute\"");
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/chat");
    assert_eq!(burst(&url, "203.0.113.9", 5).await, [200; 5]);
    assert_eq!(up.count(), 5);

    let got = send(from_client(&url, "203.0.113.9")).await;
    got.assert_error(429, "rate_limited");
    assert_eq!(got.header("retry-after"), Some("12"));
    assert_eq!(got.header("ratelimit-policy"), Some("\"ip\";q=5;w=60"));
    assert_eq!(got.header("ratelimit"), Some("\"ip\";r=0;t=12"));
    assert_eq!(up.count(), 5, "the upstream received exactly five");
}

#[tokio::test]
async fn allowed_responses_carry_the_ratelimit_fields() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "chat",
            "[[route.limit]]\nkey = \"ip\"\nrate = \"10/minute\"\n[[route.limit]]\nkey = \"route\"\nrate = \"100/hour\"",
        );
    let gw = Gateway::start(&cfg, &up).await;
    let got = send(from_client(&gw.url("/chat"), "203.0.113.9")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("x-upstream"),
        Some("yes"),
        "the upstream's answer"
    );
    assert_eq!(
        got.header("ratelimit-policy"),
        Some("\"ip\";q=10;w=60, \"route\";q=100;w=3600")
    );
    assert_eq!(
        got.header("ratelimit"),
        Some("\"ip\";r=9;t=6, \"route\";r=99;t=36")
    );
    let got = send(from_client(&gw.url("/chat"), "203.0.113.10")).await;
    assert_eq!(
        got.header("ratelimit"),
        Some("\"ip\";r=9;t=6, \"route\";r=98;t=72")
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_against_a_limit_of_seven_let_exactly_seven_through() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "runs",
            "[[route.limit]]\nkey = \"route\"\nrate = \"7/minute\"",
        );
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/runs");
    let mut set = JoinSet::new();
    for i in 0..50 {
        // Fifty different callers: a route limit is shared by all of them.
        let r = from_client(&url, &format!("198.51.100.{i}"));
        set.spawn(async move { send(r).await.status.as_u16() });
    }
    let statuses = set.join_all().await;
    assert_eq!(count(&statuses, 200), 7, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 43, "{statuses:?}");
    assert_eq!(up.count(), 7);
}

#[tokio::test]
async fn ip_prefix_counts_a_whole_ipv4_24_and_ipv6_64() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "chat",
            "[[route.limit]]\nkey = \"ip_prefix\"\nrate = \"2/minute\"",
        );
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/chat");
    // IPv4: the /24 shares two requests.
    assert_eq!(send(from_client(&url, "203.0.113.1")).await.status, 200);
    assert_eq!(send(from_client(&url, "203.0.113.254")).await.status, 200);
    send(from_client(&url, "203.0.113.77"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(send(from_client(&url, "203.0.114.1")).await.status, 200);
    // IPv6: the /64 shares two requests; the next /64 has its own.
    assert_eq!(send(from_client(&url, "2001:db8:1:2::1")).await.status, 200);
    assert_eq!(
        send(from_client(&url, "2001:db8:1:2:ffff::9")).await.status,
        200
    );
    send(from_client(&url, "2001:db8:1:2:abcd::5"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(send(from_client(&url, "2001:db8:1:3::1")).await.status, 200);
    assert_eq!(up.count(), 6);
}

#[tokio::test]
async fn ip_counts_ipv6_clients_by_their_64_and_prefix_lengths_are_configurable() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "per-ip",
            "[[route.limit]]\nkey = \"ip\"\nrate = \"1/minute\"",
        )
        + &route(
            "per-48",
            "[[route.limit]]\nkey = \"ip_prefix\"\nrate = \"1/minute\"\nprefix_v4 = 16\nprefix_v6 = 48",
        );
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/per-ip");
    // Rotating through addresses of one /64 does not escape an `ip` limit.
    assert_eq!(send(from_client(&url, "2001:db8:1:2::1")).await.status, 200);
    send(from_client(&url, "2001:db8:1:2::2"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(send(from_client(&url, "2001:db8:1:3::1")).await.status, 200);
    // IPv4 addresses are counted one by one.
    assert_eq!(send(from_client(&url, "203.0.113.1")).await.status, 200);
    assert_eq!(send(from_client(&url, "203.0.113.2")).await.status, 200);

    let url = gw.url("/per-48");
    assert_eq!(send(from_client(&url, "2001:db8:1:2::1")).await.status, 200);
    send(from_client(&url, "2001:db8:1:ffff::1"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(send(from_client(&url, "2001:db8:2::1")).await.status, 200);
    assert_eq!(send(from_client(&url, "203.0.1.1")).await.status, 200);
    send(from_client(&url, "203.0.255.1"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(up.count(), 7);
}

#[tokio::test]
async fn header_limits_count_each_value_and_the_missing_header_together() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "bot",
            "[[route.limit]]\nkey = \"header:X-User-Id\"\nrate = \"2/minute\"\nname = \"per-user\"",
        );
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/bot");
    let as_user = |user: Option<&str>| {
        let mut b = req("POST", &url).header("x-forwarded-for", "203.0.113.9");
        if let Some(u) = user {
            b = b.header("x-user-id", u);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    for _ in 0..2 {
        assert_eq!(send(as_user(Some("alice"))).await.status, 200);
    }
    let got = send(as_user(Some("alice"))).await;
    got.assert_error(429, "rate_limited");
    assert_eq!(got.header("ratelimit"), Some("\"per-user\";r=0;t=30"));
    assert_eq!(send(as_user(Some("bob"))).await.status, 200);
    // Leaving the header out is one more caller, not a way around the limit.
    for _ in 0..2 {
        assert_eq!(send(as_user(None)).await.status, 200);
    }
    send(as_user(None)).await.assert_error(429, "rate_limited");
    assert_eq!(up.count(), 5);
    // The exhausted value again beside a fresh one: not a new caller, refused as malformed.
    let twice = req("POST", &url)
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-user-id", "alice")
        .header("x-user-id", "carol")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(twice).await.assert_error(400, "bad_request");
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn every_limit_must_pass_and_a_refused_request_spends_only_what_ran_before() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "chat",
            r#"[[route.limit]]
key = "route"
rate = "3/minute"
[[route.limit]]
key = "ip"
rate = "2/minute"
[[route.limit]]
key = "ip"
rate = "100/day"
name = "daily""#,
        );
    let mut o = Gateway::start_observed(&cfg, &up).await;
    let url = o.gw.url("/chat");
    // A refused by its per-IP limit on the third request.
    assert_eq!(send(from_client(&url, "203.0.113.1")).await.status, 200);
    assert_eq!(send(from_client(&url, "203.0.113.1")).await.status, 200);
    let got = send(from_client(&url, "203.0.113.1")).await;
    let id = got.assert_error(429, "rate_limited");
    assert_eq!(got.header("ratelimit"), Some("\"ip\";r=0;t=30"));
    let e = o.event_for(&id).await;
    assert_eq!(e.reason, Some(Reason::RateLimited));
    assert_eq!(e.detail, Some("ip limit exhausted"));
    // ... which neither spent the route's budget (it runs later) nor A's daily one (same
    // group, all or nothing): the route still has one request, for B.
    let got = send(from_client(&url, "203.0.113.2")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("ratelimit"),
        Some("\"ip\";r=1;t=30, \"daily\";r=99;t=864, \"route\";r=0;t=60")
    );
    // The route's budget is spent: C is refused by the route limit twice. Per-IP limits count
    // every request that reaches them, refused ones included, so those two refusals used up
    // C's own 2/minute and its third request is refused by its per-IP limit.
    let got = send(from_client(&url, "203.0.113.3")).await;
    let id = got.assert_error(429, "rate_limited");
    assert_eq!(o.event_for(&id).await.detail, Some("route limit exhausted"));
    let got = send(from_client(&url, "203.0.113.3")).await;
    let id = got.assert_error(429, "rate_limited");
    assert_eq!(o.event_for(&id).await.detail, Some("route limit exhausted"));
    let got = send(from_client(&url, "203.0.113.3")).await;
    let id = got.assert_error(429, "rate_limited");
    assert_eq!(o.event_for(&id).await.detail, Some("ip limit exhausted"));
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn requests_refused_by_earlier_guards_do_not_spend_the_routes_budget() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + r#"
[[route]]
name = "runs"
path = "/runs"
content_types = ["application/json"]
[route.upstream]
url = "{upstream}/runs"
[route.ip]
deny = ["198.51.100.0/24"]
[[route.limit]]
key = "route"
rate = "2/minute"
"#;
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/runs");
    // An attacker sends garbage: a denied address, then a wrong content type.
    for i in 0..20 {
        send(from_client(&url, &format!("198.51.100.{i}")))
            .await
            .assert_error(403, "forbidden");
        let r = req("POST", &url)
            .header("x-forwarded-for", "192.0.2.1")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        send(r).await.assert_error(415, "unsupported_media_type");
    }
    assert_eq!(up.count(), 0);
    // The legitimate caller still has its two runs.
    let ok = || {
        req("POST", &url)
            .header("x-forwarded-for", "203.0.113.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    assert_eq!(send(ok()).await.status, 200);
    assert_eq!(send(ok()).await.status, 200);
    send(ok()).await.assert_error(429, "rate_limited");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_daily_budget_of_200_holds_and_says_when_to_come_back() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "chat",
            "[[route.limit]]\nkey = \"ip\"\nrate = \"200/day\"\nname = \"daily\"",
        );
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/chat");
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.extend(burst(&url, "203.0.113.9", 20).await);
    }
    assert_eq!(statuses, [200; 200]);
    let got = send(from_client(&url, "203.0.113.9")).await;
    got.assert_error(429, "rate_limited");
    // One request is earned back every 86400 / 200 = 432 s.
    let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
    assert!((431..=432).contains(&retry), "{retry}");
    assert_eq!(
        got.header("ratelimit-policy"),
        Some("\"daily\";q=200;w=86400")
    );
    assert_eq!(up.count(), 200);
    // Another caller has its own budget.
    assert_eq!(send(from_client(&url, "203.0.113.10")).await.status, 200);
}

#[tokio::test]
async fn a_refused_caller_gets_through_again_after_retry_after() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned() + &route("chat", "[[route.limit]]\nkey = \"ip\"\nrate = \"2/1s\"");
    let gw = Gateway::start(&cfg, &up).await;
    let url = gw.url("/chat");
    assert_eq!(burst(&url, "203.0.113.9", 3).await, [200, 200, 429]);
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(send(from_client(&url, "203.0.113.9")).await.status, 200);
    send(from_client(&url, "203.0.113.9"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(up.count(), 3);
}

#[test]
fn check_warns_about_routes_without_limits_and_limits_without_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookwarden.toml");
    std::fs::write(
        &path,
        r#"
[[route]]
name = "open"
path = "/open"
[route.upstream]
url = "http://127.0.0.1:5678/open"

[[route]]
name = "bot"
path = "/bot"
[route.upstream]
url = "http://127.0.0.1:5678/bot"
[[route.limit]]
key = "key"
rate = "100/day"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "warning: route[open].limit: route has no [[route.limit]]: a leaked URL can be called without bound"
        ),
        "{text}"
    );
    assert!(
        text.contains("warning: route[bot].limit[key]: is keyed by the API key, but the route has no api_key auth"),
        "{text}"
    );
    assert!(text.contains("ok (2 routes, 2 warnings)"), "{text}");
}

/// On a route whose only credential is a signature over the body, unsigned garbage must not
/// spend the route's budget: the `route` limit counts only requests whose signature passed.
#[tokio::test]
async fn unsigned_garbage_does_not_spend_the_budget_of_a_signed_route() {
    let up = Upstream::start().await;
    let cfg = r#"
[[route]]
name = "github"
path = "/github"
[route.upstream]
url = "{upstream}/github"
[[route.auth]]
type = "signature"
provider = "github"
secrets = ["It's a Secret to Everybody"]
[[route.limit]]
key = "route"
rate = "2/minute"
"#;
    let gw = Gateway::start(cfg, &up).await;
    let signed =
        |body: &'static str| github_signed(&gw.url("/github"), "It's a Secret to Everybody", body);
    for i in 0..5 {
        let forged = req("POST", &gw.url("/github"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
            .body(Full::new(Bytes::from(format!("{{\"n\":{i}}}"))))
            .unwrap();
        let got = send(forged).await;
        gw.assert_refused(&got, 401, "unauthorized", Reason::SignatureInvalid)
            .await;
    }
    assert_eq!(send(signed(r#"{"delivery":1}"#)).await.status, 200);
    assert_eq!(send(signed(r#"{"delivery":2}"#)).await.status, 200);
    let third = send(signed(r#"{"delivery":3}"#)).await;
    gw.assert_refused(&third, 429, "rate_limited", Reason::RateLimited)
        .await;
    assert_eq!(up.count(), 2);
}

/// A request the second group refuses lists only the refusing limit, not the one of the first
/// group that let it through, as the README says; the refused request reaches nothing.
#[tokio::test]
async fn a_refusal_by_the_later_group_names_only_its_limit() {
    let up = Upstream::start().await;
    let cfg = TRUSTED.to_owned()
        + &route(
            "chat",
            "[[route.limit]]\nkey = \"ip\"\nrate = \"10/minute\"\n[[route.limit]]\nkey = \"route\"\nrate = \"1/hour\"",
        );
    let gw = Gateway::start(&cfg, &up).await;
    assert_eq!(
        send(from_client(&gw.url("/chat"), "203.0.113.9"))
            .await
            .status,
        200
    );
    let got = send(from_client(&gw.url("/chat"), "203.0.113.9")).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.header("ratelimit-policy"), Some("\"route\";q=1;w=3600"));
    let fields = got.header("ratelimit").unwrap();
    assert!(fields.starts_with("\"route\";r=0;t="), "{fields}");
    assert!(!fields.contains("\"ip\""), "{fields}");
    assert_eq!(up.count(), 1);
}
