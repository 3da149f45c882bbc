//! CORS for browser routes: the preflight answer, and the headers every response of a
//! browser route carries.
//!
//! CORS only tells browsers what the page may read; the gateway enforces the same rules on
//! its side (the origin guard), so a preflight here is an answer, never a decision that lets
//! anything through. Nothing opens by default: the allowed origin is echoed, never `*`;
//! credentials (cookies) are never allowed, since tokens travel in a header; the request
//! headers a page may send are exactly `Content-Type` and `X-Hookwarden-Token`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::forward::body::ResponseBody;

/// Request headers a page may send (`Access-Control-Allow-Headers`).
pub const ALLOW_HEADERS: &str = "Content-Type, X-Hookwarden-Token";
/// Response headers a page may read besides the CORS-safelisted ones
/// (`Access-Control-Expose-Headers`).
pub const EXPOSE_HEADERS: &str =
    "X-Hookwarden-Token, X-Request-Id, Retry-After, RateLimit, RateLimit-Policy";
/// How long a browser may cache a preflight answer (`Access-Control-Max-Age`), in seconds.
/// Chromium caps it at 7200; ten minutes lets a config change reach open pages soon.
pub const MAX_AGE_SECS: u32 = 600;

/// The `Access-Control-Allow-Methods` value for `methods`.
pub fn allow_methods(methods: &[Method]) -> HeaderValue {
    let list = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&list).unwrap_or(HeaderValue::from_static("POST"))
}

/// `204 No Content` answering a preflight from an allowed origin. The origin itself and
/// `Vary` are added by [`decorate`], like on every other response.
pub fn preflight(methods: &HeaderValue) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(MAX_AGE_SECS),
    );
    resp
}

/// Sets the CORS headers of a browser route's response (refusals, gateway answers and
/// upstream answers alike): `Vary: Origin` always, since the answer depends on it; the echoed
/// origin and the exposed headers only when `allowed` is the request's admitted origin.
/// Whatever CORS headers the upstream sent are dropped: on a browser route the gateway alone
/// decides what a page may read.
pub fn decorate(headers: &mut HeaderMap, allowed: Option<&HeaderValue>) {
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        headers.remove(name);
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_lists_methods_headers_and_max_age() {
        let r = preflight(&allow_methods(&[Method::GET, Method::POST]));
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(
            h["access-control-allow-headers"],
            "Content-Type, X-Hookwarden-Token"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert!(!h.contains_key("access-control-allow-origin"));
    }

    #[test]
    fn decorate_echoes_only_an_admitted_origin_and_drops_the_upstreams_cors() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        let origin = HeaderValue::from_static("https://shop.example.com");
        decorate(&mut h, Some(&origin));
        assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert_eq!(h["access-control-expose-headers"], EXPOSE_HEADERS);
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);

        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        decorate(&mut h, None);
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{h:?}"
        );
        assert_eq!(h[header::VARY], "Origin");
    }
}
