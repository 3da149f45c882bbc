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

use crate::config::{Config, RouteConfig, RouteMode};
use crate::forward::{ClientError, Upstream, UpstreamClient};
use crate::state::State;
use guards::{BodySizeGuard, ContentTypeGuard, DecryptGuard, MethodGuard};

/// What guards may use besides the request: shared state and stores.
#[derive(Debug, Clone)]
pub struct Services {
    /// Limits, single-use ids, failure counters, bans.
    pub state: State,
}

/// One check. See the module docs for the order the compiler puts them in.
#[derive(Debug)]
pub enum Guard {
    /// Declared `Content-Length` over `max_body`.
    BodySize(BodySizeGuard),
    /// Media type outside `content_types`.
    ContentType(ContentTypeGuard),
    /// Body that does not decrypt (`[route.decrypt]`); replaces the body by its plaintext.
    Decrypt(DecryptGuard),
}

impl Guard {
    /// Runs the check. Guards may consume credentials from the exchange and record what they
    /// learned in it.
    pub async fn check(&self, ex: &mut Exchange, _services: &Services) -> Result<(), Denial> {
        match self {
            Guard::BodySize(g) => g.check(ex),
            Guard::ContentType(g) => g.check(ex),
            Guard::Decrypt(g) => g.check(ex),
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
        let mut body = Vec::new();
        // Decryption replaces the body, so it runs after every guard that reads the body
        // as received (signatures are computed over the ciphertext).
        if let Some(d) = &cfg.decrypt {
            body.push(Guard::Decrypt(DecryptGuard::new(d)));
        }
        Ok(RoutePolicy {
            name: cfg.name.as_str().into(),
            path: cfg.path.clone(),
            mode: cfg.mode,
            method: MethodGuard::new(&cfg.methods),
            max_body: cfg.max_body,
            head,
            body,
            upstream: Upstream::new(&cfg.upstream, client),
        })
    }

    /// Runs the head guards in order; the first refusal ends the check.
    pub async fn check_head(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        for g in &self.head {
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
