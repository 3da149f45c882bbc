//! Single-use rotating browser tokens, over real sockets: issued by `/_hookwarden/token`,
//! spent once, rotated on every response, bound to route, origin and network, and refused
//! (never forwarded) when missing, reused, foreign, expired or forged.

mod browser_util;
mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use browser_util::*;
use common::*;
use hookwarden::events::Outcome;
use hookwarden::policy::Reason;

/// The harness connects from 127.0.0.1; trusting it as a proxy lets each test choose the
/// client address with `X-Forwarded-For`.
const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[[route]]
name = "chat"
path = "/chat"
[route.browser]
allowed_origins = ["https://shop.example.com", "https://blog.example.com"]
token = true
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "other"
path = "/other"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "exact"
path = "/exact"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
token_bind = "ip"
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "anywhere"
path = "/anywhere"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
token_bind = "none"
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "short"
path = "/short"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
token_ttl = "1s"
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "failing"
path = "/failing"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
[route.upstream]
url = "{upstream}/status/500"

[[route]]
name = "unreachable"
path = "/unreachable"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
[route.upstream]
url = "http://127.0.0.1:9/nothing"
connect_timeout = "1s"

[[route]]
name = "small"
path = "/small"
max_body = "16B"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "origin-only"
path = "/origin-only"
[route.browser]
allowed_origins = ["https://shop.example.com"]
[route.upstream]
url = "{upstream}/hook"
"#;

const BODY: &str = r#"{"message":"hi"}"#;

#[tokio::test]
async fn the_token_endpoint_issues_a_token_and_answers_cors() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = Page::shop().get_token(&gw, "chat").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let j = got.json();
    assert_eq!(j["expires_in"], 600);
    assert_eq!(j["path"], "/chat");
    let token = j["token"].as_str().unwrap();
    assert!(token.len() > 100 && token.len() < 300, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not base64url: {token}"
    );
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://shop.example.com")
    );
    assert_eq!(got.header("vary"), Some("Origin"));
    let ev = gw.event_of(&got).await;
    assert_eq!(ev.route.as_deref(), Some("chat"));
    assert_eq!(ev.outcome, Outcome::Allowed);
    assert_eq!(ev.session_id.as_deref().map(str::len), Some(32));
    // Short-lived routes report their own lifetime.
    let got = Page::shop().get_token(&gw, "short").await;
    assert_eq!(got.json()["expires_in"], 1);
    assert_eq!(up.count(), 0, "issuing a token must not touch the upstream");
}

#[tokio::test]
async fn the_token_endpoint_refuses_what_it_cannot_serve() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    for route in ["nope", "origin-only"] {
        let got = Page::shop().get_token(&gw, route).await;
        gw.assert_refused(&got, 404, "not_found", Reason::NotFound)
            .await;
    }
    let got = Page::shop()
        .send("GET", &gw.url("/_hookwarden/token"))
        .await;
    gw.assert_refused(&got, 400, "bad_request", Reason::BadRequest)
        .await;
    let got = Page::shop()
        .send("POST", &gw.url("/_hookwarden/token?route=chat"))
        .await;
    gw.assert_refused(&got, 405, "method_not_allowed", Reason::MethodNotAllowed)
        .await;
    assert_eq!(got.header("allow"), Some("GET"));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_token_works_once_and_every_response_carries_the_next() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let first = Page::shop().token_for(&gw, "chat").await;

    let got = Page::shop()
        .token(&first)
        .post(&gw.url("/chat"), BODY)
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let second = next_token(&got);
    assert_ne!(second, first);
    let session = gw.event_of(&got).await.session_id.clone().unwrap();
    let seen = up.only();
    assert_eq!(seen.body, BODY);
    assert!(
        seen.headers.get("x-hookwarden-token").is_none(),
        "the token was forwarded"
    );

    // The same token again: refused, and no new token for it.
    let got = Page::shop()
        .token(&first)
        .post(&gw.url("/chat"), BODY)
        .await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenReused)
        .await;
    assert!(got.header("x-hookwarden-token").is_none());
    assert_eq!(up.count(), 1);

    // The rotated token works, in the same session, and rotates again.
    let got = Page::shop()
        .token(&second)
        .post(&gw.url("/chat"), BODY)
        .await;
    assert_eq!(got.status, 200);
    let third = next_token(&got);
    assert_eq!(
        gw.event_of(&got).await.session_id.as_deref(),
        Some(&*session)
    );
    assert_ne!(third, second);
    assert_eq!(up.count(), 2);

    // A new token from the endpoint starts a new session.
    let fresh = Page::shop().token_for(&gw, "chat").await;
    let got = Page::shop()
        .token(&fresh)
        .post(&gw.url("/chat"), BODY)
        .await;
    assert_eq!(got.status, 200);
    assert_ne!(
        gw.event_of(&got).await.session_id.as_deref(),
        Some(&*session)
    );
}

#[tokio::test]
async fn a_missing_or_empty_token_is_refused() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = Page::shop().post(&gw.url("/chat"), BODY).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenMissing)
        .await;
    // The refusal is readable by the page (CORS) but carries no token.
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://shop.example.com")
    );
    assert!(got.header("x-hookwarden-token").is_none());
    let got = Page::shop().token("").post(&gw.url("/chat"), BODY).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenMissing)
        .await;
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_token_for_another_route_or_origin_is_invalid() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let for_other = Page::shop().token_for(&gw, "other").await;
    let got = Page::shop()
        .token(&for_other)
        .post(&gw.url("/chat"), BODY)
        .await;
    let id = got.assert_error(403, "forbidden");
    let ev = gw.event(&id).await;
    assert_eq!(ev.reason, Some(Reason::TokenInvalid));
    assert_eq!(ev.detail, Some("token for another route"));

    // Both origins are allowed on /chat, but a token belongs to the one it was issued to.
    let for_blog = Page::origin("https://blog.example.com")
        .token_for(&gw, "chat")
        .await;
    let got = Page::shop()
        .token(&for_blog)
        .post(&gw.url("/chat"), BODY)
        .await;
    let id = got.assert_error(403, "forbidden");
    let ev = gw.event(&id).await;
    assert_eq!(ev.reason, Some(Reason::TokenInvalid));
    assert_eq!(ev.detail, Some("token for another origin"));
    assert_eq!(up.count(), 0);

    // Neither refusal spent the tokens: each still works where it belongs.
    let got = Page::shop()
        .token(&for_other)
        .post(&gw.url("/other"), BODY)
        .await;
    assert_eq!(got.status, 200);
    let got = Page::origin("https://blog.example.com")
        .token(&for_blog)
        .post(&gw.url("/chat"), BODY)
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_token_from_another_network_is_invalid() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    // Default binding: the /24 (IPv4) or /64 (IPv6) the token was issued to.
    let t = Page::shop().xff("203.0.113.5").token_for(&gw, "chat").await;
    let got = Page::shop()
        .xff("198.51.100.5")
        .token(&t)
        .post(&gw.url("/chat"), BODY)
        .await;
    let id = got.assert_error(403, "forbidden");
    let ev = gw.event(&id).await;
    assert_eq!(ev.reason, Some(Reason::TokenInvalid));
    assert_eq!(ev.detail, Some("token from another address"));
    assert_eq!(up.count(), 0);
    // Another address in the same /24 (a carrier NAT pool, say) may use it.
    let got = Page::shop()
        .xff("203.0.113.77")
        .token(&t)
        .post(&gw.url("/chat"), BODY)
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    // The next token is bound to where the client is now.
    let next = next_token(&got);
    let got = Page::shop()
        .xff("203.0.114.77")
        .token(&next)
        .post(&gw.url("/chat"), BODY)
        .await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenInvalid)
        .await;

    let v6 = Page::shop()
        .xff("2001:db8:1:2::1")
        .token_for(&gw, "chat")
        .await;
    let got = Page::shop()
        .xff("2001:db8:1:3::1")
        .token(&v6)
        .post(&gw.url("/chat"), BODY)
        .await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenInvalid)
        .await;
    let got = Page::shop()
        .xff("2001:db8:1:2:abcd::9")
        .token(&v6)
        .post(&gw.url("/chat"), BODY)
        .await;
    assert_eq!(got.status, 200);

    // token_bind = "ip": the exact address only.
    let t = Page::shop()
        .xff("203.0.113.5")
        .token_for(&gw, "exact")
        .await;
    let got = Page::shop()
        .xff("203.0.113.6")
        .token(&t)
        .post(&gw.url("/exact"), BODY)
        .await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenInvalid)
        .await;
    let got = Page::shop()
        .xff("203.0.113.5")
        .token(&t)
        .post(&gw.url("/exact"), BODY)
        .await;
    assert_eq!(got.status, 200);

    // token_bind = "none": any address.
    let t = Page::shop()
        .xff("203.0.113.5")
        .token_for(&gw, "anywhere")
        .await;
    let got = Page::shop()
        .xff("2001:db8::1")
        .token(&t)
        .post(&gw.url("/anywhere"), BODY)
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let t = Page::shop().token_for(&gw, "short").await;
    let fresh = Page::shop().token_for(&gw, "short").await;
    let got = Page::shop()
        .token(&fresh)
        .post(&gw.url("/short"), BODY)
        .await;
    assert_eq!(got.status, 200, "a fresh token works");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = Page::shop().token(&t).post(&gw.url("/short"), BODY).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenExpired)
        .await;
    assert!(got.header("x-hookwarden-token").is_none());
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn forged_tokens_are_invalid() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let real = Page::shop().token_for(&gw, "chat").await;
    let raw = URL_SAFE_NO_PAD.decode(&real).unwrap();

    let mut bad_sig = raw.clone();
    let n = bad_sig.len();
    bad_sig[n - 1] ^= 0x01;
    let mut altered = raw.clone();
    altered[40] ^= 0x01; // the expiry's last byte: a later expiry, same signature
    let truncated = &raw[..raw.len() - 8];
    // A token for route "other" with the route name inside edited (same signature).
    let mut renamed = URL_SAFE_NO_PAD
        .decode(Page::shop().token_for(&gw, "other").await)
        .unwrap();
    let pos = renamed
        .windows(5)
        .position(|w| w == b"other")
        .expect("route name in payload");
    renamed[pos] = b'O';

    // A token signed with another secret (another gateway) for the same route and origin.
    let up2 = Upstream::start().await;
    let elsewhere = Gw::start(CONFIG, &up2).await;
    let foreign = Page::shop().token_for(&elsewhere, "chat").await;

    let forged = [
        ("bad signature", URL_SAFE_NO_PAD.encode(&bad_sig)),
        ("altered payload", URL_SAFE_NO_PAD.encode(&altered)),
        ("truncated", URL_SAFE_NO_PAD.encode(truncated)),
        ("truncated text", real[..real.len() / 2].to_owned()),
        ("renamed route", URL_SAFE_NO_PAD.encode(&renamed)),
        ("another secret", foreign),
        ("padded", format!("{real}=")),
        ("space inside", format!("{} {}", &real[..20], &real[20..])),
        ("garbage", "hello".to_owned()),
        ("huge", "A".repeat(4000)),
    ];
    for (what, token) in &forged {
        let got = Page::shop().token(token).post(&gw.url("/chat"), BODY).await;
        assert_eq!(got.status, 403, "{what} was accepted");
        gw.assert_refused(&got, 403, "forbidden", Reason::TokenInvalid)
            .await;
        assert!(got.header("x-hookwarden-token").is_none(), "{what}");
    }
    assert_eq!(up.count(), 0, "a forged token reached the upstream");
    // The genuine token is untouched by all that.
    let got = Page::shop().token(&real).post(&gw.url("/chat"), BODY).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn of_two_simultaneous_uses_of_one_token_exactly_one_passes() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let rounds = 25;
    for round in 0..rounds {
        let t = Page::shop().token_for(&gw, "chat").await;
        let url = gw.url("/chat");
        let a = Page::shop().token(&t).build("POST", &url, BODY);
        let b = Page::shop().token(&t).build("POST", &url, BODY);
        let (ca, cb) = (client(), client());
        let (ra, rb) = tokio::join!(send_with(&ca, a), send_with(&cb, b));
        let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 403], "round {round}");
        let refused = if ra.status == 403 { &ra } else { &rb };
        gw.assert_refused(refused, 403, "forbidden", Reason::TokenReused)
            .await;
        assert_eq!(up.count(), round + 1, "round {round}");
    }
}

#[tokio::test]
async fn refusals_and_failures_after_the_token_was_spent_carry_the_next_token() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;

    // The upstream answers 500: passed through, with the next token.
    let t = Page::shop().token_for(&gw, "failing").await;
    let got = Page::shop().token(&t).post(&gw.url("/failing"), BODY).await;
    assert_eq!(got.status, 500);
    let next = next_token(&got);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://shop.example.com")
    );
    let got = Page::shop()
        .token(&next)
        .post(&gw.url("/failing"), BODY)
        .await;
    assert_eq!(got.status, 500);
    assert!(got.header("x-hookwarden-token").is_some());
    assert_eq!(up.count(), 2);

    // The upstream is unreachable: 502, with the next token.
    let t = Page::shop().token_for(&gw, "unreachable").await;
    let got = Page::shop()
        .token(&t)
        .post(&gw.url("/unreachable"), BODY)
        .await;
    gw.assert_refused(&got, 502, "bad_gateway", Reason::UpstreamUnreachable)
        .await;
    let next = next_token(&got);
    let got = Page::shop()
        .token(&next)
        .post(&gw.url("/unreachable"), BODY)
        .await;
    assert_eq!(got.status, 502);
    assert!(got.header("x-hookwarden-token").is_some());

    // A chunked body over max_body is refused while reading, after the token was spent.
    let t = Page::shop().token_for(&gw, "small").await;
    let big = "x".repeat(64);
    let raw_req = format!(
        "POST /small HTTP/1.1\r\nhost: x\r\norigin: https://shop.example.com\r\nx-hookwarden-token: {t}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n40\r\n{big}\r\n0\r\n\r\n"
    );
    let answer = raw(gw.addr, raw_req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-hookwarden-token: "),
        "{answer}"
    );
    assert_eq!(up.count(), 2, "nothing more reached the upstream");
}

#[tokio::test]
async fn a_generated_secret_survives_a_restart_and_a_configured_one_is_shared() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start_in(CONFIG, &up, dir.path()).await;
    let t = Page::shop().token_for(&gw, "chat").await;
    gw.stop().await;
    let gw = Gw::start_in(CONFIG, &up, dir.path()).await;
    let got = Page::shop().token(&t).post(&gw.url("/chat"), BODY).await;
    assert_eq!(got.status, 200, "token lost on restart: {}", got.text());

    // Two instances with one configured secret accept each other's tokens.
    let secret = "0123456789abcdef0123456789abcdef-shared";
    let with_secret = CONFIG.replace("[server]\n", &format!("[server]\nsecret = \"{secret}\"\n"));
    let a = Gw::start(&with_secret, &up).await;
    let b = Gw::start(&with_secret, &up).await;
    let t = Page::shop().token_for(&a, "chat").await;
    let got = Page::shop().token(&t).post(&b.url("/chat"), BODY).await;
    assert_eq!(got.status, 200, "{}", got.text());
    // A token carries no part of the secret.
    let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
    assert!(
        !raw.windows(16)
            .any(|w| secret.as_bytes().windows(16).any(|s| s == w))
    );
    assert!(!t.contains("0123456789abcdef"));
    // A gateway with another secret refuses it.
    let got = Page::shop().token(&t).post(&gw.url("/chat"), BODY).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::TokenInvalid)
        .await;
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn the_token_header_is_consumed_on_routes_without_tokens_too() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = Page::shop()
        .token("whatever")
        .post(&gw.url("/origin-only"), BODY)
        .await;
    assert_eq!(got.status, 200);
    assert!(got.header("x-hookwarden-token").is_none());
    assert!(up.only().headers.get("x-hookwarden-token").is_none());
}
