//! Assembly: a loaded [`Config`] turned into a running gateway (store, state, routes,
//! listener, background tasks). The binary and the integration tests both start here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::browser::token::{TokenKey, TokenKeyError};
use crate::config::{Config, ServerConfig};
use crate::events::Emitter;
use crate::gateway::{Gateway, GatewaySettings};
use crate::policy::{CompileError, RouteTable, Services};
use crate::server::tls::TlsError;
use crate::server::{ConnLimits, Server};
use crate::state::State;
use crate::store::keys::{KeyCache, KeyError};
use crate::store::{Store, StoreError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The issued API keys could not be loaded.
    #[error("cannot load the issued API keys: {0}")]
    Keys(#[from] KeyError),
    /// The browser token key could not be set up.
    #[error(transparent)]
    TokenKey(#[from] TokenKeyError),
    /// A route could not be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (typically: in use, or a privileged port).
        source: std::io::Error,
    },
}

/// A gateway ready to serve.
pub struct App {
    gateway: Arc<Gateway>,
    server: Server,
    store: Store,
    addr: SocketAddr,
}

/// The listener-wide settings the pipeline reads per request.
pub fn gateway_settings(server: &ServerConfig) -> GatewaySettings {
    GatewaySettings {
        trusted_proxies: server.trusted_proxies.clone(),
        body_timeout: server.body_timeout,
        hsts: server
            .hsts
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok()),
    }
}

impl App {
    /// Opens the store, compiles the routes and binds the listener.
    pub async fn start(config: &Config) -> Result<App, StartError> {
        let store = Store::open(&config.storage.path)?;
        let routes = RouteTable::compile(config)?;
        let services = Services {
            state: State::memory(config.state.max_entries),
            keys: KeyCache::load(store.clone())?,
            tokens: TokenKey::load(config.server.secret.as_ref(), &store)?,
        };
        let events = Arc::new(Emitter::new());
        let gateway = Arc::new(Gateway::new(
            routes,
            gateway_settings(&config.server),
            services,
            events,
        ));
        let tls = match &config.server.tls {
            Some(files) => Some(Arc::new(crate::server::tls::server_config(
                &files.cert,
                &files.key,
            )?)),
            None => None,
        };
        let limits = ConnLimits {
            max_connections: config.server.max_connections,
            header_timeout: config.server.header_timeout,
            shutdown_timeout: config.server.shutdown_timeout,
            workers: config.server.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
        };
        let server = Server::bind(config.server.listen, tls, gateway.clone(), limits)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let addr = server.local_addr().map_err(|source| StartError::Bind {
            addr: config.server.listen,
            source,
        })?;
        Ok(App {
            gateway,
            server,
            store,
            addr,
        })
    }

    /// The public listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gateway (routes, services, events).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes and the in-flight requests are done.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let state = self.gateway.services().state.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                state.sweep();
                metrics::gauge!("hookwarden_state_entries").set(state.local_entries() as f64);
            }
        });
        let keys = self.gateway.services().keys.clone();
        let key_maintenance = keys.spawn_maintenance();
        self.server.run(shutdown).await;
        sweeper.abort();
        key_maintenance.abort();
        // Keep the last `last_used` times.
        let _ = tokio::task::spawn_blocking(move || keys.maintain()).await;
    }
}
