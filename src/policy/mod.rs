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
//! body:  signature → replay → (key/session/route limits, when a signature is the last
//!        credential) → decrypt
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

pub use exchange::{Exchange, HandedOn};
pub use reason::{Denial, Reason, error_code};

use crate::browser::BrowserPolicy;
use crate::browser::token::TokenKey;
use crate::config::{AuthConfig, Config, DeliveryConfig, RouteConfig, RouteMode};
use crate::config_hash::ConfigKeyHash;
use crate::forward::{ClientError, Upstream, UpstreamClient};
use crate::state::State;
use crate::store::keys::KeyCache;
use guards::{
    ApiKeyGuard, BanGuard, BodySizeGuard, ContentTypeGuard, DecryptGuard, IpGuard, LimitGuard,
    LimitScope, MethodGuard, OriginGuard, SignatureGuard, TokenGuard, UserAgentGuard,
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
    /// The client address is banned (`[route.ban]`).
    Ban(BanGuard),
    /// `[route.ip]` allow and deny lists.
    Ip(IpGuard),
    /// `[route.user_agent]` prefixes.
    UserAgent(UserAgentGuard),
    /// A group of `[[route.limit]]`.
    Limit(LimitGuard),
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
    /// Body that does not decrypt (`[route.decrypt]`); replaces the body by its plaintext.
    Decrypt(DecryptGuard),
}

impl Guard {
    /// The check of a guard that needs no shared state, run at once; `None` for one that awaits
    /// it (ban, limits, signatures' replay ids, tokens), which [`Self::check`] runs. Most of a
    /// route's guards are of the first kind, and a future made, polled and dropped for each
    /// cost about 70 instructions.
    fn check_now(&self, ex: &mut Exchange, services: &Services) -> Option<Result<(), Denial>> {
        match self {
            Guard::Ip(g) => Some(g.check(ex)),
            Guard::UserAgent(g) => Some(g.check(ex)),
            Guard::BodySize(g) => Some(g.check(ex)),
            Guard::ContentType(g) => Some(g.check(ex)),
            Guard::ApiKey(g) => Some(g.check(ex, &services.keys)),
            Guard::Origin(g) => Some(g.check(ex)),
            Guard::Decrypt(g) => Some(g.check(ex)),
            Guard::Ban(_) | Guard::Limit(_) | Guard::Signature(_) | Guard::Token(_) => None,
        }
    }

    /// Runs the check. Guards may consume credentials from the exchange and record what they
    /// learned in it.
    pub async fn check(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        match self {
            Guard::Ban(g) => g.check(ex, services).await,
            Guard::Ip(g) => g.check(ex),
            Guard::UserAgent(g) => g.check(ex),
            Guard::Limit(g) => g.check(ex, services).await,
            Guard::BodySize(g) => g.check(ex),
            Guard::ContentType(g) => g.check(ex),
            Guard::ApiKey(g) => g.check(ex, &services.keys),
            Guard::Signature(g) => g.check(ex, services).await,
            Guard::Origin(g) => g.check(ex),
            Guard::Token(g) => g.check(ex, services).await,
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
    /// `[route.delivery]`, for async routes.
    pub delivery: Option<DeliveryConfig>,
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
    /// `[route.ban]`, to which the gateway reports credential failures.
    pub ban: Option<BanGuard>,
    /// Guards run by `GET /_hookwarden/token?route=NAME` before it issues a token for this
    /// route: ban, IP rules, origin and the per-IP limits (counted apart from the route's own
    /// requests). A token is an unauthenticated caller's first request, so these must be able
    /// to refuse it; size/type, credentials and key/session/route limits never apply to it.
    pub token_endpoint: Vec<Guard>,
    /// Replace the body of an upstream 404 or 5xx by the gateway's JSON error
    /// (`upstream.error_bodies`; by default on browser routes, whose callers are untrusted
    /// pages).
    pub hide_error_bodies: bool,
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
        let abuse = &cfg.abuse;
        let ban = abuse.ban.map(|b| BanGuard::new(&cfg.name, b));
        let ip = abuse.ip.as_ref().map(IpGuard::new);
        let (per_ip, per_caller): (Vec<_>, Vec<_>) =
            abuse.limits.iter().partition(|l| l.key.is_per_ip());

        let mut head = Vec::new();
        // ban → ip → user agent
        head.extend(ban.clone().map(Guard::Ban));
        head.extend(ip.clone().map(Guard::Ip));
        if let Some(ua) = &abuse.user_agent {
            head.push(Guard::UserAgent(UserAgentGuard::new(ua)));
        }
        // → size/type
        head.push(Guard::BodySize(BodySizeGuard::new(cfg.max_body)));
        if let Some(types) = &cfg.content_types {
            head.push(Guard::ContentType(ContentTypeGuard::new(types.clone())));
        }
        let name: Arc<str> = cfg.name.as_str().into();
        let browser = cfg
            .browser
            .as_ref()
            .map(|b| Arc::new(BrowserPolicy::compile(b, &cfg.methods)));
        // → origin
        if let Some(b) = &browser {
            head.push(Guard::Origin(b.origins.clone()));
        }
        // → per-IP limits (count every request, failed ones too)
        if !per_ip.is_empty() {
            let g = LimitGuard::new(&cfg.name, &per_ip, LimitScope::Route);
            head.push(Guard::Limit(g));
        }
        // → credentials in head (API key | URL secret | token); signatures need the body
        let mut body = Vec::new();
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
        // → key/session/header/route limits, for authenticated requests only: right after the
        // last credential check, which is a signature over the body when the route has one.
        // Garbage must never spend the budget a legitimate sender depends on.
        if !per_caller.is_empty() {
            let g = Guard::Limit(LimitGuard::new(&cfg.name, &per_caller, LimitScope::Route));
            if body.is_empty() {
                head.push(g);
            } else {
                body.push(g);
            }
        }
        // Decryption replaces the body, so it runs after every guard that reads the body as
        // received (signatures are computed over the ciphertext).
        if let Some(d) = &cfg.decrypt {
            body.push(Guard::Decrypt(DecryptGuard::new(d)));
        }

        // The token endpoint: ban, IP rules, origin, per-IP limits (counted apart from the
        // route's own requests). See `RoutePolicy::token_endpoint`.
        let mut token_endpoint = Vec::new();
        token_endpoint.extend(ban.clone().map(Guard::Ban));
        token_endpoint.extend(ip.map(Guard::Ip));
        if let Some(b) = &browser {
            token_endpoint.push(Guard::Origin(b.origins.clone()));
        }
        if !per_ip.is_empty() {
            let g = LimitGuard::new(&cfg.name, &per_ip, LimitScope::TokenEndpoint);
            token_endpoint.push(Guard::Limit(g));
        }

        Ok(RoutePolicy {
            name,
            path: cfg.path.clone(),
            mode: cfg.mode,
            delivery: cfg.delivery.clone(),
            method: MethodGuard::new(&cfg.methods),
            max_body: cfg.max_body,
            head,
            body,
            upstream: Upstream::new(&cfg.upstream, client),
            browser,
            ban,
            hide_error_bodies: cfg
                .upstream
                .error_bodies
                .map_or(cfg.browser.is_some(), |e| {
                    e == crate::config::ErrorBodies::Hide
                }),
            token_endpoint,
        })
    }

    /// Runs the route's guards for its token endpoint (`GET /_hookwarden/token?route=NAME`):
    /// ban, IP rules, origin and per-IP limits, so the endpoint cannot be used to get around
    /// them.
    /// The token endpoint calls this before issuing a token; a refusal is answered like any
    /// other (`response::denial_response`, keeping `ex.response_headers`).
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

    /// Tells the route that `denial` refused `ex`: a credential failure counts towards
    /// `[route.ban]` (and may flag the exchange `banned`). The gateway calls this for every
    /// refusal of a route request.
    pub async fn record_denial(&self, ex: &mut Exchange, denial: &Denial, services: &Services) {
        if denial.reason.is_auth_failure()
            && let Some(ban) = &self.ban
        {
            ban.record_failure(ex, services).await;
        }
    }

    /// Runs the head guards in order; the first refusal ends the check.
    pub async fn check_head(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        for g in &self.head {
            match g.check_now(ex, services) {
                Some(checked) => checked?,
                None => g.check(ex, services).await?,
            }
        }
        Ok(())
    }

    /// Runs the body guards in order (the body has been read into the exchange).
    pub async fn check_body(&self, ex: &mut Exchange, services: &Services) -> Result<(), Denial> {
        for g in &self.body {
            match g.check_now(ex, services) {
                Some(checked) => checked?,
                None => g.check(ex, services).await?,
            }
        }
        Ok(())
    }
}

/// All routes, by path. Swapped as a whole on reload.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_path: HashMap<String, Arc<RoutePolicy>, ConfigKeyHash>,
    by_name: HashMap<Arc<str>, Arc<RoutePolicy>, ConfigKeyHash>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(route_extra: &str) -> RoutePolicy {
        let text = format!(
            "[[route]]\nname = \"chat\"\npath = \"/chat\"\ncontent_types = [\"application/json\"]\n[route.upstream]\nurl = \"http://127.0.0.1:5678/hook\"\n{route_extra}"
        );
        let loaded = crate::config::load_str(&text, "t", std::path::Path::new("/"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let client = UpstreamClient::new(None, Duration::from_secs(1)).unwrap();
        RoutePolicy::compile(&loaded.config.routes[0], client).unwrap()
    }

    fn kinds(guards: &[Guard]) -> Vec<&'static str> {
        guards
            .iter()
            .map(|g| match g {
                Guard::Ban(_) => "ban",
                Guard::Ip(_) => "ip",
                Guard::UserAgent(_) => "user_agent",
                Guard::Limit(_) => "limit",
                Guard::BodySize(_) => "body_size",
                Guard::ContentType(_) => "content_type",
                Guard::Origin(_) => "origin",
                Guard::ApiKey(_) => "api_key",
                Guard::Token(_) => "token",
                Guard::Signature(_) => "signature",
                Guard::Decrypt(_) => "decrypt",
            })
            .collect()
    }

    #[test]
    fn guards_run_in_the_documented_order_whatever_the_config_order() {
        // Sections deliberately listed in the "wrong" order.
        let p = compile(
            r#"
[[route.limit]]
key = "route"
rate = "100/minute"
[[route.limit]]
key = "ip"
rate = "10/minute"
[route.user_agent]
allow_prefixes = ["n8n"]
[route.ip]
deny = ["198.51.100.0/24"]
[route.ban]
"#,
        );
        assert_eq!(
            kinds(&p.head),
            [
                "ban",
                "ip",
                "user_agent",
                "body_size",
                "content_type",
                "limit",
                "limit"
            ]
        );
        assert_eq!(kinds(&p.token_endpoint), ["ban", "ip", "limit"]);
        assert!(p.ban.is_some());
    }

    #[test]
    fn caller_limits_follow_a_signature_into_the_body_phase() {
        let p = compile(
            r#"
[[route.limit]]
key = "route"
rate = "100/minute"
[[route.limit]]
key = "ip"
rate = "10/minute"
[[route.auth]]
type = "signature"
provider = "github"
secrets = ["0123456789abcdef"]
"#,
        );
        assert_eq!(kinds(&p.head), ["body_size", "content_type", "limit"]);
        assert_eq!(kinds(&p.body), ["signature", "limit"]);
    }

    #[test]
    fn without_abuse_sections_only_the_core_guards_run() {
        let p = compile("");
        assert_eq!(kinds(&p.head), ["body_size", "content_type"]);
        assert!(p.token_endpoint.is_empty());
        assert!(p.ban.is_none());
    }

    #[test]
    fn a_route_with_only_caller_limits_gives_the_token_endpoint_none() {
        let p = compile("[[route.limit]]\nkey = \"route\"\nrate = \"1/s\"\n");
        assert_eq!(kinds(&p.head), ["body_size", "content_type", "limit"]);
        assert!(p.token_endpoint.is_empty());
    }

    #[tokio::test]
    async fn only_credential_failures_count_towards_a_ban() {
        let p = compile("[route.ban]\nafter_failures = 2\n");
        let services = guards::testing::services(State::memory(10_000));
        let mut ex = guards::testing::exchange("203.0.113.9");
        for reason in [
            Reason::RateLimited,
            Reason::IpDenied,
            Reason::UnsupportedMediaType,
            Reason::BodyTooLarge,
            Reason::Banned,
        ] {
            p.record_denial(&mut ex, &Denial::new(reason), &services)
                .await;
            p.record_denial(&mut ex, &Denial::new(reason), &services)
                .await;
        }
        assert_eq!(p.check_head(&mut ex, &services).await, Ok(()));
        p.record_denial(&mut ex, &Denial::new(Reason::KeyInvalid), &services)
            .await;
        assert!(ex.flags.is_empty());
        p.record_denial(&mut ex, &Denial::new(Reason::TokenReused), &services)
            .await;
        assert_eq!(ex.flags, [Reason::Banned]);
        assert_eq!(
            p.check_head(&mut ex, &services).await,
            Err(Denial::new(Reason::Banned))
        );
        assert_eq!(
            p.check_token_endpoint(&mut ex, &services).await,
            Err(Denial::new(Reason::Banned))
        );
    }
}
