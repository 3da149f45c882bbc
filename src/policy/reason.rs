//! Reason codes and denials: the stable vocabulary of the audit log.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

/// Why a request was refused or failed. `as_str()` gives the stable code recorded in the audit
/// log; `status()` the HTTP status the client gets. Codes are never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No route has the request's path.
    NotFound,
    /// The route does not accept the method.
    MethodNotAllowed,
    /// Malformed path or request.
    BadRequest,
    /// Body over `max_body`.
    BodyTooLarge,
    /// Content type not in `content_types`.
    UnsupportedMediaType,
    /// Client IP in `[route.ip] deny`.
    IpDenied,
    /// Client IP not in `[route.ip] allow`.
    IpNotAllowed,
    /// User-Agent not in `allow_prefixes`.
    UserAgentDenied,
    /// The client IP is temporarily banned.
    Banned,
    /// A browser route got no `Origin`.
    OriginMissing,
    /// `Origin` is not one of `allowed_origins`.
    OriginDenied,
    /// A token route got no `X-Hookwarden-Token`.
    TokenMissing,
    /// The token's signature or contents do not match.
    TokenInvalid,
    /// The token's expiry has passed.
    TokenExpired,
    /// The token was already spent.
    TokenReused,
    /// No API key / URL secret where the route expects one.
    CredentialMissing,
    /// The key is unknown or revoked.
    KeyInvalid,
    /// The key's expiry has passed.
    KeyExpired,
    /// The signature header is missing.
    SignatureMissing,
    /// No signature matches.
    SignatureInvalid,
    /// The signed timestamp is outside `tolerance`.
    TimestampOutOfWindow,
    /// The signed message was already accepted.
    Duplicate,
    /// The same signed message is being delivered right now; try again shortly.
    InFlight,
    /// A rate limit or quota is exhausted.
    RateLimited,
    /// The body could not be decoded or decrypted.
    DecryptFailed,
    /// Shared state (Redis) is unreachable and `on_error = "deny"`.
    StateUnavailable,
    /// The upstream could not be reached or broke the exchange.
    UpstreamUnreachable,
    /// The upstream sent no response headers within `timeout`.
    UpstreamTimeout,
    /// The route's delivery queue is full.
    QueueFull,
    /// An async delivery failed for good.
    DeliveryFailed,
    /// The client did not send its body within `server.body_timeout`.
    BodyTimeout,
    /// The gateway itself failed (a bug or a broken store); details are in the log.
    InternalError,
    /// The gateway is at a resource limit (`server.max_buffered_body`); retry later.
    Overloaded,
    /// The client went away before its answer was ready (an HTTP/2 stream reset): nothing
    /// was sent to it. Recorded with status 499, as nginx logs it.
    ClientClosed,
}

impl Reason {
    /// Every reason, for docs and exhaustive tests.
    pub const ALL: &'static [Reason] = &[
        Reason::NotFound,
        Reason::MethodNotAllowed,
        Reason::BadRequest,
        Reason::BodyTooLarge,
        Reason::UnsupportedMediaType,
        Reason::IpDenied,
        Reason::IpNotAllowed,
        Reason::UserAgentDenied,
        Reason::Banned,
        Reason::OriginMissing,
        Reason::OriginDenied,
        Reason::TokenMissing,
        Reason::TokenInvalid,
        Reason::TokenExpired,
        Reason::TokenReused,
        Reason::CredentialMissing,
        Reason::KeyInvalid,
        Reason::KeyExpired,
        Reason::SignatureMissing,
        Reason::SignatureInvalid,
        Reason::TimestampOutOfWindow,
        Reason::Duplicate,
        Reason::InFlight,
        Reason::RateLimited,
        Reason::DecryptFailed,
        Reason::StateUnavailable,
        Reason::UpstreamUnreachable,
        Reason::UpstreamTimeout,
        Reason::QueueFull,
        Reason::DeliveryFailed,
        Reason::BodyTimeout,
        Reason::InternalError,
        Reason::Overloaded,
        Reason::ClientClosed,
    ];

    /// The stable code, as in the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not_found",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::BadRequest => "bad_request",
            Reason::BodyTooLarge => "body_too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::IpDenied => "ip_denied",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::UserAgentDenied => "user_agent_denied",
            Reason::Banned => "banned",
            Reason::OriginMissing => "origin_missing",
            Reason::OriginDenied => "origin_denied",
            Reason::TokenMissing => "token_missing",
            Reason::TokenInvalid => "token_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenReused => "token_reused",
            Reason::CredentialMissing => "credential_missing",
            Reason::KeyInvalid => "key_invalid",
            Reason::KeyExpired => "key_expired",
            Reason::SignatureMissing => "signature_missing",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::TimestampOutOfWindow => "timestamp_out_of_window",
            Reason::Duplicate => "duplicate",
            Reason::InFlight => "in_flight",
            Reason::RateLimited => "rate_limited",
            Reason::DecryptFailed => "decrypt_failed",
            Reason::StateUnavailable => "state_unavailable",
            Reason::UpstreamUnreachable => "upstream_unreachable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::QueueFull => "queue_full",
            Reason::DeliveryFailed => "delivery_failed",
            Reason::BodyTimeout => "body_timeout",
            Reason::InternalError => "internal_error",
            Reason::Overloaded => "overloaded",
            Reason::ClientClosed => "client_closed",
        }
    }

    /// Parses a stable code.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == code)
    }

    /// The HTTP status a client gets for this reason (`client_closed`: the 499 recorded for
    /// an answer no client got).
    pub fn status(self) -> StatusCode {
        match self {
            Reason::NotFound => StatusCode::NOT_FOUND,
            Reason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reason::BadRequest | Reason::DecryptFailed => StatusCode::BAD_REQUEST,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::IpDenied
            | Reason::IpNotAllowed
            | Reason::UserAgentDenied
            | Reason::Banned
            | Reason::OriginMissing
            | Reason::OriginDenied
            | Reason::TokenMissing
            | Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::TokenReused => StatusCode::FORBIDDEN,
            Reason::CredentialMissing
            | Reason::KeyInvalid
            | Reason::KeyExpired
            | Reason::SignatureMissing
            | Reason::SignatureInvalid
            | Reason::TimestampOutOfWindow => StatusCode::UNAUTHORIZED,
            Reason::Duplicate => StatusCode::OK,
            Reason::InFlight => StatusCode::CONFLICT,
            Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reason::StateUnavailable | Reason::QueueFull | Reason::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reason::UpstreamUnreachable | Reason::DeliveryFailed => StatusCode::BAD_GATEWAY,
            Reason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reason::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            // A status in the valid range, so never the fallback.
            Reason::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// True for failures of the caller's credentials (key, signature, token): the ones that
    /// count towards an automatic ban.
    pub const fn is_auth_failure(self) -> bool {
        matches!(
            self,
            Reason::CredentialMissing
                | Reason::KeyInvalid
                | Reason::KeyExpired
                | Reason::SignatureMissing
                | Reason::SignatureInvalid
                | Reason::TimestampOutOfWindow
                | Reason::TokenMissing
                | Reason::TokenInvalid
                | Reason::TokenExpired
                | Reason::TokenReused
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The public error code for a status, as in `{"error": "<code>"}`.
pub fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        431 => "request_header_fields_too_large",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        _ => "internal_error",
    }
}

/// A guard's refusal: the reason, and anything the response needs besides the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub reason: Reason,
    /// Detail for the audit log only (never sent to the client), e.g. which decryption step
    /// failed. Must not contain secrets.
    pub detail: Option<&'static str>,
    /// For 429: when to try again.
    pub retry_after: Option<Duration>,
    /// Extra response headers (`Allow`, `RateLimit`, …). A `Vec` rather than a `HeaderMap`
    /// keeps `Result<(), Denial>` small on the hot path.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Denial {
    /// A denial with just a reason.
    pub fn new(reason: Reason) -> Self {
        Denial {
            reason,
            detail: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// Adds audit-log detail.
    pub fn with_detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl From<Reason> for Denial {
    fn from(reason: Reason) -> Self {
        Denial::new(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.as_str()), Some(*r));
        }
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn statuses_follow_the_design_table() {
        assert_eq!(Reason::SignatureInvalid.status(), 401);
        assert_eq!(Reason::OriginDenied.status(), 403);
        assert_eq!(Reason::TokenReused.status(), 403);
        assert_eq!(Reason::BodyTooLarge.status(), 413);
        assert_eq!(Reason::RateLimited.status(), 429);
        assert_eq!(Reason::StateUnavailable.status(), 503);
        assert_eq!(Reason::UpstreamTimeout.status(), 504);
        assert_eq!(error_code(Reason::KeyExpired.status()), "unauthorized");
        assert_eq!(error_code(Reason::Banned.status()), "forbidden");
    }
}
