//! The gateway's own endpoints under `/_hookwarden/` on the public listener.

use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::Gateway;
use super::response::text_response;
use crate::forward::body::ResponseBody;

/// Answers a gateway endpoint, or `None` to let the request take the normal path (which
/// refuses unknown paths with 404 and records the event).
pub(super) fn handle(_gw: &Gateway, parts: &Parts, path: &str) -> Option<Response<ResponseBody>> {
    match (path, &parts.method) {
        ("/_hookwarden/healthz", &Method::GET | &Method::HEAD) => {
            Some(text_response(StatusCode::OK, "ok"))
        }
        _ => None,
    }
}
