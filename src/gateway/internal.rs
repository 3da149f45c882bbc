//! The gateway's own endpoints under `/_hookwarden/` on the public listener.
//!
//! - `GET /_hookwarden/healthz`: `200 ok`.
//! - `GET /_hookwarden/client.js`: the browser client ([`crate::browser::CLIENT_JS`]).
//! - `GET /_hookwarden/token?route=NAME`: the first token of a new browser session, for a
//!   route with `token = true`, after that route's token-endpoint guards (origin, and the
//!   ban/IP/per-IP-limit guards when configured). It answers CORS like the route, with `GET`
//!   as the only method.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::response::{json_response, text_response};
use super::{Finished, Gateway};
use crate::browser::CLIENT_JS;
use crate::browser::token::{Binding, Claims, unix_ms};
use crate::forward::body::ResponseBody;
use crate::policy::{Denial, Exchange, Reason, RoutePolicy};

/// The token endpoint's path.
pub(super) const TOKEN_PATH: &str = "/_hookwarden/token";

/// Answers a gateway endpoint that needs no route, or `None` to let the request take the
/// normal path (which refuses unknown paths with 404 and records the event).
pub(super) fn handle(_gw: &Gateway, parts: &Parts, path: &str) -> Option<Response<ResponseBody>> {
    match (path, &parts.method) {
        ("/_hookwarden/healthz", &Method::GET | &Method::HEAD) => {
            Some(text_response(StatusCode::OK, "ok"))
        }
        ("/_hookwarden/client.js", &Method::GET | &Method::HEAD) => Some(client_js()),
        _ => None,
    }
}

fn client_js() -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(CLIENT_JS));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Pages that isolate themselves (COEP) may still load it from the gateway's origin, and
    // pages that pin it with Subresource Integrity (`crossorigin` + `integrity`) or import it
    // as a module need a CORS answer: it is public, the same for everyone, without cookies.
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// `GET /_hookwarden/token?route=NAME` → `{"token": "...", "expires_in": 600, "path": "/chat"}`.
pub(super) async fn token(
    gw: &Gateway,
    route: Option<&Arc<RoutePolicy>>,
    ex: &mut Exchange,
) -> Finished {
    if ex.method != Method::GET && ex.method != Method::OPTIONS {
        return gw.refuse(
            ex,
            Denial::new(Reason::MethodNotAllowed)
                .with_header(header::ALLOW, HeaderValue::from_static("GET")),
        );
    }
    if ex.query_param("route").is_none() {
        return gw.refuse(
            ex,
            Denial::new(Reason::BadRequest).with_detail("token request without route"),
        );
    }
    let found = route.and_then(|r| {
        let browser = r.browser.as_ref()?;
        Some((r, browser, browser.token?))
    });
    let Some((route, browser, settings)) = found else {
        return gw.refuse(
            ex,
            Denial::new(Reason::NotFound).with_detail("token request for no token route"),
        );
    };
    if ex.method == Method::OPTIONS {
        return gw.preflight(ex, browser, &HeaderValue::from_static("GET"));
    }
    if let Err(d) = route.check_token_endpoint(ex, gw.services()).await {
        return gw.refuse(ex, d);
    }
    let Some(origin) = ex.header_str("origin").map(str::to_owned) else {
        // The origin guard is always in the list; this is only a second lock.
        return gw.refuse(ex, Denial::new(Reason::OriginMissing));
    };
    let now = unix_ms(SystemTime::now());
    let bind = Binding::for_client(ex.client_ip, settings.bind);
    let Ok(claims) = Claims::new_session(&route.name, &origin, bind, settings.ttl, now) else {
        return gw.refuse(
            ex,
            Denial::new(Reason::InternalError).with_detail("random source failed"),
        );
    };
    ex.session_id = Some(claims.session_id());
    let body = serde_json::json!({
        "token": gw.services().tokens.issue(&claims),
        "expires_in": settings.ttl.as_secs(),
        "path": route.path,
    });
    Finished::answered(json_response(StatusCode::OK, body.to_string()))
}
