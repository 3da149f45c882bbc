//! Policy: each route compiled once into an ordered list of guards.
//!
//! A guard is a small type with one job and one reason code, in its own file under
//! [`guards`]. [`Guard`] is an enum of them, so dispatch is static and the set of checks is
//! visible in one place. The order of checks is the compiler's ([`RoutePolicy::compile`]),
//! never the config's, and follows one rule: refuse as early and as cheaply as possible, and
//! never let an unauthenticated caller spend what belongs to authenticated ones.
//!
//! ```text
//! head:  method → ban → ip → user agent → size/type → origin → per-IP limits
//!        → credentials in head (key | URL secret | token) → key/session/route limits
//! body:  signature → replay → decrypt
//! ```

pub mod client_ip;
mod exchange;
pub mod guards;
pub mod path;
mod reason;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use exchange::Exchange;
pub use reason::{Denial, Reason, error_code};

use crate::browser::BrowserPolicy;
use crate::browser::token::TokenKey;
use crate::config::{AuthConfig, Config, RouteConfig, RouteMode};
use crate::forward::{ClientError, Upstream, UpstreamClient};
use crate::state::State;
use crate::store::keys::KeyCache;
use guards::{
    ApiKeyGuard, BodySizeGuard, ContentTypeGuard, MethodGuard, OriginGuard, SignatureGuard,
    TokenGuard,
};

/// What guards may use besides the request: shared state and stores.
#[derive(Debug, Clone)]
pub struct Services {
    /// Limits, single-use ids, failure counters, bans.
    pub state: State,
    /// API keys issued with `hookwarden keys create`, in memory.
    pub keys: KeyCache,
    /// Signs and verifies browser tokens (`server.secret`, or the generated one).
    pub tokens: TokenKey,
}

/// One check. See the module docs for the order the compiler puts them in.
#[derive(Debug)]
pub enum Guard {
    /// Declared `Content-Length` over `max_body`.
    BodySize(BodySizeGuard),
    /// Media type outside `content_types`.
    ContentType(ContentTypeGuard),
    /// An API key in a header, the query or a bearer token.
    ApiKey(ApiKeyGuard),
    /// A provider signature over the body, then replay protection.
    Signature(SignatureGuard),
    /// `Origin` missing or not in `allowed_origins`.
    Origin(OriginGuard),
    /// Browser token missing, invalid, expired or already spent.
    Token(TokenGuard),
}

impl Guard {
    /// Runs the check. Guards may consume credentials from the exchange and record what they
    /// learned in it.
    pub async fn check(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        match self {
            Guard::BodySize(g) => g.check(ex),
            Guard::ContentType(g) => g.check(ex),
            Guard::ApiKey(g) => g.check(ex, &services.keys),
            Guard::Signature(g) => g.check(ex, services).await,
            Guard::Origin(g) => g.check(ex),
            Guard::Token(g) => g.check(ex, services).await,
        }
    }
}

/// A route compiled for serving.
#[derive(Debug)]
pub struct RoutePolicy {
    /// The route's name.
    pub name: Arc<str>,
    /// The exact path.
    pub path: String,
    /// Proxy or queue.
    pub mode: RouteMode,
    /// Accepted methods (405 with `Allow` otherwise).
    pub method: MethodGuard,
    /// Body limit, enforced while reading.
    pub max_body: u64,
    /// Guards that need only the request head, in order.
    pub head: Vec<Guard>,
    /// Guards that need the body, in order.
    pub body: Vec<Guard>,
    /// Where allowed requests go.
    pub upstream: Upstream,
    /// `[route.browser]`: origins, CORS answers, token settings.
    pub browser: Option<Arc<BrowserPolicy>>,
    /// Guards run by `GET /_hookwarden/token?route=NAME` before it issues a token for this
    /// route, in the head guards' order. Only the head guards that protect the gateway itself
    /// and make sense for a bodiless, credential-less request belong here: ban, IP rules,
    /// User-Agent, origin and per-IP limits (a token is an unauthenticated caller's first
    /// request, so these must be able to refuse it). Size/type, credentials and
    /// key/session/route limits never do. Empty unless the route has `token = true`.
    pub token_endpoint: Vec<Guard>,
}

/// Why a route could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The upstream client could not be built.
    #[error("route {route}: upstream: {source}")]
    Upstream {
        /// The route.
        route: String,
        /// Why.
        source: ClientError,
    },
}

impl RoutePolicy {
    /// Compiles one route, sending upstream through `client`.
    pub fn compile(cfg: &RouteConfig, client: UpstreamClient) -> Result<Self, CompileError> {
        let mut head = vec![Guard::BodySize(BodySizeGuard::new(cfg.max_body))];
        if let Some(types) = &cfg.content_types {
            head.push(Guard::ContentType(ContentTypeGuard::new(types.clone())));
        }
        let name: Arc<str> = cfg.name.as_str().into();
        let mut body = Vec::new();
        let browser = cfg
            .browser
            .as_ref()
            .map(|b| Arc::new(BrowserPolicy::compile(b, &cfg.methods)));
        let mut token_endpoint = Vec::new();
        if let Some(b) = &browser {
            head.push(Guard::Origin(b.origins.clone()));
            if b.token.is_some() {
                token_endpoint.push(Guard::Origin(b.origins.clone()));
            }
        }
        // Per-IP limits go here, and into `token_endpoint` too (see its docs).
        // Credentials in head (API key | URL secret | token); signatures need the body.
        for auth in &cfg.auth {
            match auth {
                AuthConfig::ApiKey(k) => head.push(Guard::ApiKey(ApiKeyGuard::new(&name, k))),
                AuthConfig::Signature(s) => {
                    body.push(Guard::Signature(SignatureGuard::new(&name, s)));
                }
            }
        }
        if let Some(settings) = browser.as_ref().and_then(|b| b.token) {
            head.push(Guard::Token(TokenGuard::new(name.clone(), settings)));
        }
        Ok(RoutePolicy {
            name,
            path: cfg.path.clone(),
            mode: cfg.mode,
            method: MethodGuard::new(&cfg.methods),
            max_body: cfg.max_body,
            head,
            body,
            upstream: Upstream::new(&cfg.upstream, client),
            browser,
            token_endpoint,
        })
    }

    /// Runs the head guards in order; the first refusal ends the check.
    pub async fn check_head(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        for g in &self.head {
            g.check(ex, services).await?;
        }
        Ok(())
    }

    /// Runs the token endpoint's guards for this route (see [`RoutePolicy::token_endpoint`]).
    pub async fn check_token_endpoint(
        &self,
        ex: &mut Exchange,
        services: &Services,
    ) -> Result<(), Denial> {
        for g in &self.token_endpoint {
            g.check(ex, services).await?;
        }
        Ok(())
    }

    /// Runs the body guards in order (the body has been read into the exchange).
    pub async fn check_body(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        for g in &self.body {
            g.check(ex, services).await?;
        }
        Ok(())
    }
}

/// All routes, by path. Swapped as a whole on reload.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_path: HashMap<String, Arc<RoutePolicy>>,
    by_name: HashMap<Arc<str>, Arc<RoutePolicy>>,
}

impl RouteTable {
    /// Compiles every route of `config`.
    pub fn compile(config: &Config) -> Result<Self, CompileError> {
        // Routes with the same TLS trust and connect timeout share one connection pool.
        let mut clients: HashMap<(Option<PathBuf>, Duration), UpstreamClient> = HashMap::new();
        let mut table = RouteTable::default();
        for r in &config.routes {
            let key = (r.upstream.ca_file.clone(), r.upstream.connect_timeout);
            let client = match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = UpstreamClient::new(key.0.as_deref(), key.1).map_err(|source| {
                        CompileError::Upstream {
                            route: r.name.clone(),
                            source,
                        }
                    })?;
                    clients.insert(key, c.clone());
                    c
                }
            };
            let policy = Arc::new(RoutePolicy::compile(r, client)?);
            table.by_path.insert(policy.path.clone(), policy.clone());
            table.by_name.insert(policy.name.clone(), policy);
        }
        Ok(table)
    }

    /// The route serving `path` exactly.
    pub fn by_path(&self, path: &str) -> Option<&Arc<RoutePolicy>> {
        self.by_path.get(path)
    }

    /// The route named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<RoutePolicy>> {
        self.by_name.get(name)
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<RoutePolicy>> {
        self.by_name.values()
    }
}
