//! The token guard: every call on a `token = true` route spends a single-use token.
//!
//! The token comes in `X-Hookwarden-Token` (removed before forwarding). It must carry a valid
//! signature, be unexpired, and have been issued for this route, to the request's origin and
//! to the client's address or network ([`crate::browser::token`]). Then its id is claimed in
//! `State` until it expires, so a second use, even a simultaneous one on another connection or
//! gateway instance, is `token_reused`. Only after a successful claim does the response get the
//! next token of the same session (in `X-Hookwarden-Token`, whatever the upstream answers):
//! a refused token never yields a new one, so replaying a captured token gains nothing.

use std::time::SystemTime;

use http::HeaderValue;

use crate::browser::TokenSettings;
use crate::browser::token::{Binding, Expected, TokenError, unix_ms};
use crate::forward::headers::X_HOOKWARDEN_TOKEN;
use crate::policy::{Denial, Exchange, Reason, Services};

/// Refuses requests without a token (`token_missing`), with a forged, altered or foreign one
/// (`token_invalid`), an expired one (`token_expired`) or a spent one (`token_reused`).
#[derive(Debug, Clone)]
pub struct TokenGuard {
    route: std::sync::Arc<str>,
    settings: TokenSettings,
}

impl TokenGuard {
    /// A guard for the route named `route`.
    pub fn new(route: std::sync::Arc<str>, settings: TokenSettings) -> Self {
        TokenGuard { route, settings }
    }

    /// Checks and spends the request's token.
    pub async fn check(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        self.check_at(ex, services, unix_ms(SystemTime::now()))
            .await
    }

    /// [`TokenGuard::check`] at `now_ms` (Unix milliseconds).
    pub async fn check_at(
        &self,
        ex: &mut Exchange,
        services: &Services,
        now_ms: u64,
    ) -> Result<(), Denial> {
        let mut values = ex.headers.get_all(X_HOOKWARDEN_TOKEN).iter();
        let token = match (values.next(), values.next()) {
            (None, _) => return Err(Denial::new(Reason::TokenMissing)),
            (Some(_), Some(_)) => {
                return Err(Denial::new(Reason::TokenInvalid).with_detail("several token headers"));
            }
            (Some(v), None) => v.to_str().map(|s| s.trim().to_owned()),
        };
        ex.headers.remove(X_HOOKWARDEN_TOKEN);
        let Ok(token) = token else {
            return Err(Denial::new(Reason::TokenInvalid).with_detail("token malformed"));
        };
        if token.is_empty() {
            return Err(Denial::new(Reason::TokenMissing));
        }
        // The origin guard runs first, so this is an allowed origin.
        let Some(origin) = ex.header_str("origin").map(str::to_owned) else {
            return Err(Denial::new(Reason::OriginMissing));
        };
        let expected = Expected {
            route: &self.route,
            origin: &origin,
            ip: ex.client_ip,
        };
        let claims = services
            .tokens
            .verify(&token, &expected, now_ms)
            .map_err(|e| {
                let reason = match e {
                    TokenError::Expired => Reason::TokenExpired,
                    _ => Reason::TokenInvalid,
                };
                Denial::new(reason).with_detail(e.detail())
            })?;
        ex.session_id = Some(claims.session_id());
        // Made before the claim, so a failing random source never spends a token for nothing.
        let next = claims
            .next(
                Binding::for_client(ex.client_ip, self.settings.bind),
                self.settings.ttl,
                now_ms,
            )
            .map_err(|_| Denial::new(Reason::InternalError).with_detail("random source failed"))?;
        match services
            .state
            .claim_once(&claims.claim_key(), claims.remaining(now_ms))
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(Denial::new(Reason::TokenReused)),
            Err(_) => {
                return Err(Denial::new(Reason::StateUnavailable)
                    .with_detail("cannot record the spent token"));
            }
        }
        if let Ok(v) = HeaderValue::from_str(&services.tokens.issue(&next)) {
            ex.response_headers.insert(X_HOOKWARDEN_TOKEN, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, Method, Version, header};

    use super::*;
    use crate::browser::token::Claims;
    use crate::config::TokenBind;
    use crate::state::State;

    const NOW: u64 = 1_750_000_000_000;
    const ORIGIN: &str = "https://shop.example.com";

    fn services() -> Services {
        crate::policy::guards::testing::services(State::memory(10_000))
    }

    fn guard() -> TokenGuard {
        TokenGuard::new(
            "chat".into(),
            TokenSettings {
                ttl: Duration::from_secs(60),
                bind: TokenBind::Prefix,
            },
        )
    }

    fn exchange(token: Option<&str>) -> Exchange {
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static(ORIGIN));
        if let Some(t) = token {
            headers.insert(X_HOOKWARDEN_TOKEN, HeaderValue::from_str(t).unwrap());
        }
        Exchange {
            request_id: "r".into(),
            started: Instant::now(),
            method: Method::POST,
            path: "/chat".into(),
            query: None,
            original_query: None,
            headers,
            version: Version::HTTP_11,
            peer: SocketAddr::new(ip, 40000),
            client_ip: ip,
            forwarded_for: ip.to_string(),
            https: false,
            has_body: true,
            body: Bytes::new(),
            key_id: None,
            session_id: None,
            flags: Vec::new(),
            response_headers: HeaderMap::new(),
            replay_claims: Vec::new(),
            handed_on: crate::policy::HandedOn::Not,
        }
    }

    fn first_token(s: &Services) -> (String, Claims) {
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let c = Claims::new_session(
            "chat",
            ORIGIN,
            Binding::for_client(ip, TokenBind::Prefix),
            Duration::from_secs(60),
            NOW,
        )
        .unwrap();
        (s.tokens.issue(&c), c)
    }

    async fn run(s: &Services, ex: &mut Exchange, now: u64) -> Result<(), Reason> {
        guard().check_at(ex, s, now).await.map_err(|d| d.reason)
    }

    #[tokio::test]
    async fn a_token_is_spent_once_and_answered_with_the_next_of_the_session() {
        let s = services();
        let (t, claims) = first_token(&s);
        let mut ex = exchange(Some(&t));
        assert_eq!(run(&s, &mut ex, NOW + 1_000).await, Ok(()));
        assert!(!ex.headers.contains_key(X_HOOKWARDEN_TOKEN), "not consumed");
        assert_eq!(ex.session_id.as_deref(), Some(claims.session_id().as_str()));
        let next = ex.response_headers[X_HOOKWARDEN_TOKEN]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(next, t);

        let mut again = exchange(Some(&t));
        assert_eq!(
            run(&s, &mut again, NOW + 2_000).await,
            Err(Reason::TokenReused)
        );
        assert!(
            again.response_headers.is_empty(),
            "a replay got a new token"
        );

        let mut ex2 = exchange(Some(&next));
        assert_eq!(run(&s, &mut ex2, NOW + 3_000).await, Ok(()));
        assert_eq!(ex2.session_id, ex.session_id);
    }

    #[tokio::test]
    async fn missing_expired_and_invalid_tokens_have_their_own_reasons() {
        let s = services();
        assert_eq!(
            run(&s, &mut exchange(None), NOW).await,
            Err(Reason::TokenMissing)
        );
        assert_eq!(
            run(&s, &mut exchange(Some("")), NOW).await,
            Err(Reason::TokenMissing)
        );
        let (t, _) = first_token(&s);
        let mut ex = exchange(Some(&t));
        assert_eq!(
            run(&s, &mut ex, NOW + 60_000).await,
            Err(Reason::TokenExpired)
        );
        assert!(ex.response_headers.is_empty());
        assert_eq!(
            run(&s, &mut exchange(Some("garbage")), NOW).await,
            Err(Reason::TokenInvalid)
        );
        // An expired attempt did not spend it: within its lifetime it still works once.
        assert_eq!(run(&s, &mut exchange(Some(&t)), NOW).await, Ok(()));
    }

    #[tokio::test]
    async fn two_token_headers_are_invalid() {
        let s = services();
        let (t, _) = first_token(&s);
        let mut ex = exchange(Some(&t));
        ex.headers
            .append(X_HOOKWARDEN_TOKEN, HeaderValue::from_str(&t).unwrap());
        assert_eq!(run(&s, &mut ex, NOW).await, Err(Reason::TokenInvalid));
    }
}
