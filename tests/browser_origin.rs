//! Origin enforcement on browser routes, over real sockets: only the exact configured
//! origins pass; everything else is 403 `origin_missing` / `origin_denied` and never reaches
//! the upstream.

mod browser_util;
mod common;

use browser_util::*;
use common::*;
use hookwarden::policy::Reason;

const CONFIG: &str = r#"
[[route]]
name = "chat"
path = "/chat"
[route.browser]
allowed_origins = ["https://shop.example.com", "http://127.0.0.1:8081"]
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "tokens"
path = "/tokens"
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "closed"
path = "/closed"
[route.browser]
token = true
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "plain"
path = "/plain"
[route.upstream]
url = "{upstream}/hook"
"#;

const BODY: &str = r#"{"message":"hi"}"#;

#[tokio::test]
async fn allowed_origins_are_forwarded_with_their_origin_echoed() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    for origin in ["https://shop.example.com", "http://127.0.0.1:8081"] {
        let got = Page::origin(origin).post(&gw.url("/chat"), BODY).await;
        assert_eq!(got.status, 200, "{origin}: {}", got.text());
        assert_eq!(got.header("access-control-allow-origin"), Some(origin));
    }
    assert_eq!(up.count(), 2);
    assert_eq!(up.requests()[0].body, BODY);
}

#[tokio::test]
async fn a_missing_origin_is_refused_and_referer_is_no_substitute() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = Page::default().post(&gw.url("/chat"), BODY).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginMissing)
        .await;

    let with_referer = req("POST", &gw.url("/chat"))
        .header("referer", "https://shop.example.com/checkout")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            BODY.as_bytes(),
        )))
        .unwrap();
    let got = send(with_referer).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginMissing)
        .await;
    assert!(!has_cors_allow(&got));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn look_alike_origins_are_denied_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let look_alikes = [
        // Suffix and prefix tricks.
        "https://shop.example.com.evil.net",
        "https://evilshop.example.com",
        "https://shop.example.co",
        "https://example.com",
        "https://sub.shop.example.com",
        // Another scheme or port.
        "http://shop.example.com",
        "https://shop.example.com:8443",
        "http://127.0.0.1:8082",
        "http://127.0.0.1",
        "http://localhost:8081",
        "http://[::1]:8081",
        // Opaque origins.
        "null",
        // Case tricks: browsers send lower case; only hand-made requests differ.
        "HTTPS://SHOP.EXAMPLE.COM",
        "https://SHOP.example.com",
        "Https://shop.example.com",
        // Default-port variants: browsers omit the default port.
        "https://shop.example.com:443",
        "http://127.0.0.1:8081:80",
        // Trailing junk.
        "https://shop.example.com/",
        "https://shop.example.com/chat",
        "https://shop.example.com:443x",
        "https://shop.example.com.",
        "https://shop.example.com?",
        "https://shop.example.com#",
        "https://user@shop.example.com",
        "https://shop.example.com, https://evil.net",
        "*",
        "",
    ];
    for origin in look_alikes {
        let got = Page::origin(origin).post(&gw.url("/chat"), BODY).await;
        assert_eq!(got.status, 403, "{origin:?} was let through");
        gw.assert_refused(&got, 403, "forbidden", Reason::OriginDenied)
            .await;
        assert!(!has_cors_allow(&got), "{origin:?}: {:?}", got.headers);
        assert_eq!(got.header("vary"), Some("Origin"));
    }
    assert_eq!(up.count(), 0, "a look-alike reached the upstream");
}

#[tokio::test]
async fn two_origin_headers_are_denied_even_when_one_is_allowed() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let r = req("POST", &gw.url("/chat"))
        .header("origin", "https://shop.example.com")
        .header("origin", "https://evil.net")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let got = send(r).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginDenied)
        .await;
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_browser_route_without_allowed_origins_refuses_everything() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    for page in [
        Page::shop(),
        Page::origin("http://127.0.0.1:8081"),
        Page::default(),
    ] {
        let got = page.post(&gw.url("/closed"), BODY).await;
        let reason = if page.origin.is_some() {
            Reason::OriginDenied
        } else {
            Reason::OriginMissing
        };
        gw.assert_refused(&got, 403, "forbidden", reason).await;
        let got = page.get_token(&gw, "closed").await;
        gw.assert_refused(&got, 403, "forbidden", reason).await;
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_origin_is_checked_before_the_token() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    // A valid token does not make up for a foreign or missing origin.
    let token = Page::shop().token_for(&gw, "tokens").await;
    let got = Page::default()
        .token(&token)
        .post(&gw.url("/tokens"), BODY)
        .await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginMissing)
        .await;
    let got = Page::origin("https://shop.example.com.evil.net")
        .token(&token)
        .post(&gw.url("/tokens"), BODY)
        .await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginDenied)
        .await;
    assert!(got.header("x-hookwarden-token").is_none());
    assert_eq!(up.count(), 0);
    // The token was not spent by those refusals.
    let got = Page::shop()
        .token(&token)
        .post(&gw.url("/tokens"), BODY)
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn the_token_endpoint_refuses_foreign_origins() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = Page::default().get_token(&gw, "tokens").await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginMissing)
        .await;
    for origin in [
        "https://shop.example.com.evil.net",
        "http://shop.example.com",
        "HTTPS://SHOP.EXAMPLE.COM",
        "null",
    ] {
        let got = Page::origin(origin).get_token(&gw, "tokens").await;
        gw.assert_refused(&got, 403, "forbidden", Reason::OriginDenied)
            .await;
        assert!(!got.text().contains("token\""), "{}", got.text());
        assert!(!has_cors_allow(&got));
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn routes_without_a_browser_section_are_unaffected() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = Page::default().post(&gw.url("/plain"), BODY).await;
    assert_eq!(got.status, 200);
    let got = Page::origin("https://evil.net")
        .post(&gw.url("/plain"), BODY)
        .await;
    assert_eq!(got.status, 200);
    assert!(got.header("access-control-allow-origin").is_none());
    assert!(got.header("vary").is_none());
    assert_eq!(up.count(), 2);
}
