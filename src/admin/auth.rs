//! The admin listener's Bearer token check.
//!
//! The presented token and the configured one are both hashed with SHA-256 and the digests
//! compared in constant time: the comparison leaks neither the position of the first
//! difference nor the token's length.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminState;
use crate::secret::Secret;

/// True when `presented` is the configured token.
pub fn token_matches(presented: &[u8], expected: &Secret) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// True when the request carries the admin token in force.
pub fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    match (bearer(headers), state.reloader.admin_token()) {
        (Some(t), Some(expected)) => token_matches(t, &expected),
        _ => false,
    }
}

/// Middleware: lets the request through with a valid token, answers 401 otherwise.
pub async fn require_token(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if authorized(&state, req.headers()) {
        return next.run(req).await;
    }
    tracing::warn!(
        peer = %peer.ip(),
        path = %req.uri().path(),
        presented = req.headers().contains_key(header::AUTHORIZATION),
        "admin request without a valid token"
    );
    unauthorized()
}

/// The 401 answer.
pub fn unauthorized() -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "error": "unauthorized",
            "message": "send the admin token as `Authorization: Bearer <token>`",
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hookwarden-admin\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let s = Secret::new("correct-horse-battery-staple");
        assert!(token_matches(b"correct-horse-battery-staple", &s));
        assert!(!token_matches(b"correct-horse-battery-stapl", &s));
        assert!(!token_matches(b"correct-horse-battery-staple ", &s));
        assert!(!token_matches(b"", &s));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("abc"));
        assert_eq!(bearer(&h), None);
    }
}
