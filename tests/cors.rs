//! CORS on browser routes, over real sockets: preflights answered before the method check,
//! the allowed origin echoed (never `*`) with `Vary: Origin`, nothing allowed for other
//! origins, `X-Hookwarden-Token` exposed, and the upstream's own CORS headers replaced.

mod browser_util;
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use browser_util::*;
use bytes::Bytes;
use common::*;
use hookwarden::policy::Reason;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const CONFIG: &str = r#"
[[route]]
name = "chat"
path = "/chat"
methods = ["GET", "POST"]
[route.browser]
allowed_origins = ["https://shop.example.com"]
token = true
[route.upstream]
url = "{upstream}/hook"

[[route]]
name = "plain"
path = "/plain"
[route.upstream]
url = "{upstream}/hook"
"#;

fn preflight(origin: Option<&str>, url: &str, method: &str) -> Request<Full<Bytes>> {
    let mut b = req("OPTIONS", url)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "content-type,x-hookwarden-token",
        );
    if let Some(o) = origin {
        b = b.header("origin", o);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_204_with_exact_headers() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = send(preflight(Some(SHOP), &gw.url("/chat"), "POST")).await;
    assert_eq!(got.status, 204, "{}", got.text());
    assert_eq!(got.header("access-control-allow-origin"), Some(SHOP));
    assert_eq!(got.header("vary"), Some("Origin"));
    assert_eq!(
        got.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        got.header("access-control-allow-headers"),
        Some("Content-Type, X-Hookwarden-Token")
    );
    assert_eq!(got.header("access-control-max-age"), Some("600"));
    assert!(got.header("access-control-allow-credentials").is_none());
    assert!(got.body.is_empty());
    assert_eq!(up.count(), 0, "a preflight is answered by the gateway");
}

#[tokio::test]
async fn a_preflight_from_another_origin_gets_403_without_any_allow_header() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    for origin in [
        "https://evil.example",
        "https://shop.example.com.evil.net",
        "null",
    ] {
        let got = send(preflight(Some(origin), &gw.url("/chat"), "POST")).await;
        gw.assert_refused(&got, 403, "forbidden", Reason::OriginDenied)
            .await;
        assert!(!has_cors_allow(&got), "{origin}: {:?}", got.headers);
        assert!(got.header("access-control-max-age").is_none());
        assert!(got.header("access-control-expose-headers").is_none());
        assert_eq!(got.header("vary"), Some("Origin"));
    }
    let got = send(preflight(None, &gw.url("/chat"), "POST")).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginMissing)
        .await;
    assert!(!has_cors_allow(&got));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn options_on_a_route_without_a_browser_section_is_still_405() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let got = send(preflight(Some(SHOP), &gw.url("/plain"), "POST")).await;
    gw.assert_refused(&got, 405, "method_not_allowed", Reason::MethodNotAllowed)
        .await;
    assert!(!has_cors_allow(&got));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_token_endpoint_answers_preflights_like_its_route_with_get_only() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let url = gw.url("/_hookwarden/token?route=chat");
    let got = send(preflight(Some(SHOP), &url, "GET")).await;
    assert_eq!(got.status, 204);
    assert_eq!(got.header("access-control-allow-origin"), Some(SHOP));
    assert_eq!(got.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(got.header("vary"), Some("Origin"));
    let got = send(preflight(Some("https://evil.example"), &url, "GET")).await;
    gw.assert_refused(&got, 403, "forbidden", Reason::OriginDenied)
        .await;
    assert!(!has_cors_allow(&got));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn responses_expose_the_token_header_to_the_page() {
    let up = Upstream::start().await;
    let gw = Gw::start(CONFIG, &up).await;
    let t = Page::shop().token_for(&gw, "chat").await;
    let ok = Page::shop().token(&t).post(&gw.url("/chat"), "{}").await;
    // A refusal after the origin check (no token) is readable by the page too.
    let refused = Page::shop().post(&gw.url("/chat"), "{}").await;
    gw.assert_refused(&refused, 403, "forbidden", Reason::TokenMissing)
        .await;
    for got in [&ok, &refused] {
        assert_eq!(got.header("access-control-allow-origin"), Some(SHOP));
        let exposed = got.header("access-control-expose-headers").unwrap();
        let names: Vec<&str> = exposed.split(',').map(str::trim).collect();
        assert!(names.contains(&"X-Hookwarden-Token"), "{exposed}");
        assert!(names.contains(&"X-Request-Id"), "{exposed}");
        assert!(names.contains(&"Retry-After"), "{exposed}");
        assert!(got.header("access-control-allow-credentials").is_none());
        assert_eq!(got.header("vary"), Some("Origin"));
    }
    assert_eq!(ok.status, 200);
    assert!(ok.header("x-hookwarden-token").is_some());
    assert_eq!(up.count(), 1);
}

/// An upstream that answers like a careless webhook: `Access-Control-Allow-Origin: *` and
/// credentials allowed, with its own `Vary`.
async fn permissive_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
                    let h = r.headers_mut();
                    h.insert("access-control-allow-origin", "*".parse().unwrap());
                    h.insert("access-control-allow-credentials", "true".parse().unwrap());
                    h.insert("access-control-expose-headers", "*".parse().unwrap());
                    h.insert("vary", "Accept-Encoding".parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_upstreams_own_cors_headers_are_replaced() {
    let up = Upstream::start().await;
    let permissive = permissive_upstream().await;
    let config = CONFIG.replace("{upstream}/hook", &format!("http://{permissive}/x"));
    let gw = Gw::start(&config, &up).await;
    let t = Page::shop().token_for(&gw, "chat").await;
    let got = Page::shop().token(&t).post(&gw.url("/chat"), "{}").await;
    assert_eq!(got.status, 200);
    let allow: Vec<_> = got
        .headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(allow, [SHOP], "never `*`");
    assert!(got.header("access-control-allow-credentials").is_none());
    assert_ne!(got.header("access-control-expose-headers"), Some("*"));
    let vary: Vec<_> = got.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    // On a route without a browser section the gateway leaves the upstream's headers alone.
    let got = Page::shop().post(&gw.url("/plain"), "{}").await;
    assert_eq!(got.header("access-control-allow-origin"), Some("*"));
}
