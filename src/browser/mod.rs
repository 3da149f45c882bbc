//! Browser widgets: untrusted page code calling a route through the gateway.
//!
//! CORS headers only make browsers behave; curl ignores them. So a browser route is enforced
//! on the server side, in this order:
//!
//! 1. the `Origin` header must be one of `allowed_origins` exactly
//!    ([`crate::policy::guards::OriginGuard`]);
//! 2. with `token = true`, every call spends a fresh single-use token
//!    ([`crate::policy::guards::TokenGuard`]) obtained from `GET /_hookwarden/token` (see
//!    `gateway::internal`) and answered with the next token of the same session.
//!
//! This module holds what those pieces share: origin parsing ([`origin`]), the CORS answers
//! ([`cors`]), the token format and key ([`token`]), and a route's compiled browser settings
//! ([`BrowserPolicy`]). The browser client served at `/_hookwarden/client.js` is
//! [`CLIENT_JS`].

pub mod cors;
pub mod origin;
pub mod token;

use std::time::Duration;

use http::{HeaderValue, Method};

use crate::config::{BrowserConfig, TokenBind};
use crate::policy::guards::OriginGuard;

/// The dependency-free browser client (`GET /_hookwarden/client.js`).
pub const CLIENT_JS: &str = include_str!("../../assets/client.js");

/// How a route's tokens are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSettings {
    /// Lifetime of each token.
    pub ttl: Duration,
    /// What part of the client address a token is bound to.
    pub bind: TokenBind,
}

/// A browser route's compiled settings, shared by its guards, its preflight answers and its
/// token endpoint.
#[derive(Debug)]
pub struct BrowserPolicy {
    /// The allowed origins.
    pub origins: OriginGuard,
    /// `Access-Control-Allow-Methods` for the route's preflight.
    pub methods: HeaderValue,
    /// Token settings when `token = true`.
    pub token: Option<TokenSettings>,
}

impl BrowserPolicy {
    /// Compiles `[route.browser]` for a route accepting `methods`.
    pub fn compile(cfg: &BrowserConfig, methods: &[Method]) -> Self {
        BrowserPolicy {
            origins: OriginGuard::new(&cfg.allowed_origins),
            methods: cors::allow_methods(methods),
            token: cfg.token.then_some(TokenSettings {
                ttl: cfg.token_ttl,
                bind: cfg.token_bind,
            }),
        }
    }
}
