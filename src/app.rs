//! Assembly: a loaded [`Config`] turned into a running gateway (store, state, routes,
//! listener, background tasks). The binary and the integration tests both start here.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::task::JoinHandle;

use crate::admin::reload::Reloader;
use crate::admin::{AdminServer, AdminState};
use crate::browser::token::{TokenKey, TokenKeyError};
use crate::config::{Config, ServerConfig};
use crate::events::Emitter;
use crate::events::alerts::AlertEngine;
use crate::events::metrics::Metrics;
use crate::events::notifier;
use crate::forward::{ClientError, UpstreamClient};
use crate::gateway::{Gateway, GatewaySettings};
use crate::policy::{CompileError, RouteTable, Services};
use crate::queue::{Queue, QueueError};
use crate::server::tls::TlsError;
use crate::server::{ConnLimits, Server};
use crate::state::{State, StateError};
use crate::store::events::{AuditWriter, Retention};
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
    #[error(
        "cannot listen on {addr} ([server] listen): {source}; free the port or choose another address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (typically: in use, or a privileged port).
        source: std::io::Error,
    },
    /// The admin listen address could not be bound.
    #[error("cannot listen on {addr} ([admin] listen): {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client for alert notifications could not be built.
    #[error("alert notifier: {0}")]
    Notifier(#[from] ClientError),
    /// The shared state could not be set up.
    #[error(transparent)]
    State(#[from] StateError),
    /// The delivery queue could not be opened.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A gateway ready to serve.
pub struct App {
    gateway: Arc<Gateway>,
    server: Server,
    store: Store,
    addr: SocketAddr,
    admin: Option<AdminServer>,
    admin_addr: Option<SocketAddr>,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    audit: AuditWriter,
    notifier: JoinHandle<()>,
    queue: Queue,
    /// The store's claim for this server ([`Store::claim`]), released when the app goes.
    _claim: Option<std::fs::File>,
}

/// Time alert notifications get to connect.
const NOTIFIER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Opens the store, compiles the routes and binds the listeners. The config cannot be
    /// reloaded (there is no file to re-read); see [`App::start_from`].
    pub async fn start(config: &Config) -> Result<App, StartError> {
        App::start_from(config, None).await
    }

    /// Like [`App::start`], for a config read from `source`, which reloads re-read.
    pub async fn start_from(config: &Config, source: Option<PathBuf>) -> Result<App, StartError> {
        let claim = Store::claim(&config.storage.path)?;
        let store = Store::open(&config.storage.path)?;
        let reader = store.reader(&config.storage.path)?;
        let routes = RouteTable::compile(config)?;
        let services = Services {
            state: State::from_config(&config.state, config.server.secret.as_ref()).await?,
            keys: KeyCache::load(store.clone())?,
            tokens: TokenKey::load(config.server.secret.as_ref(), &store)?,
        };
        let events = Arc::new(Emitter::new());
        let metrics = Metrics::new();
        events.observe(metrics.observer());
        let (alerts, firings) = AlertEngine::new(&config.alerts);
        events.observe(alerts.observer());
        let retention = Arc::new(ArcSwap::from_pointee(Retention {
            keep: config.storage.keep,
            max_events: config.storage.max_events,
            audit_allowed: config.storage.audit_allowed,
        }));
        let audit = AuditWriter::start(store.clone(), &events, retention.clone());
        let notifier = notifier::start(
            firings,
            UpstreamClient::new(None, NOTIFIER_CONNECT_TIMEOUT)?,
            store.clone(),
            metrics.clone(),
        );
        let queue = Queue::open(&config.storage, &store)?;
        let gateway = Arc::new(
            Gateway::new(
                routes,
                gateway_settings(&config.server),
                services,
                events,
                config.server.max_buffered_body,
            )
            .with_queue(queue.clone()),
        );
        let certificate = match &config.server.tls {
            Some(files) => Some(crate::server::tls::Certificate::load(
                &files.cert,
                &files.key,
            )?),
            None => None,
        };
        let tls = match &certificate {
            Some(c) => Some(Arc::new(crate::server::tls::server_config(c.clone())?)),
            None => None,
        };
        let limits = ConnLimits {
            max_connections: config.server.max_connections,
            max_connections_per_ip: config.server.max_connections_per_ip,
            per_ip_exempt: config.server.trusted_proxies.clone(),
            header_timeout: config.server.header_timeout,
            keepalive_timeout: config.server.keepalive_timeout,
            send_timeout: config.server.send_timeout,
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
        let reloader = Arc::new(
            Reloader::new(
                source,
                config.clone(),
                gateway.clone(),
                alerts,
                retention,
                metrics.clone(),
            )
            .with_queue(queue.clone())
            .with_certificate(certificate),
        );
        let (admin, admin_addr) = match &config.admin {
            None => (None, None),
            Some(a) => {
                let state = AdminState {
                    gateway: gateway.clone(),
                    reader,
                    metrics: metrics.clone(),
                    active: server.active_connections(),
                    reloader: reloader.clone(),
                };
                let bind_err = |source| StartError::AdminBind {
                    addr: a.listen,
                    source,
                };
                let admin = AdminServer::bind(a.listen, state).await.map_err(bind_err)?;
                let admin_addr = admin.local_addr().map_err(bind_err)?;
                (Some(admin), Some(admin_addr))
            }
        };
        Ok(App {
            gateway,
            server,
            store,
            addr,
            admin,
            admin_addr,
            reloader,
            metrics,
            audit,
            notifier,
            queue,
            _claim: claim,
        })
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Config reload (also what SIGHUP triggers).
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// The metrics recorder.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
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
        // Deliveries of async routes start with the app, on this (the background) runtime.
        self.queue.start(&self.gateway, self.metrics.clone());
        let sweeper = tokio::spawn(self.gateway.services().state.clone().maintain());
        let metrics = self.metrics.clone();
        // The Prometheus recorder keeps histogram samples until they are folded in.
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
        let keys = self.gateway.services().keys.clone();
        let key_maintenance = keys.spawn_maintenance();
        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin.map(|a| {
            let mut rx = admin_stopped;
            tokio::spawn(a.run(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }))
        });
        self.server.run(shutdown).await;
        let _ = stop_admin.send(true);
        if let Some(task) = admin {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Requests are done: nothing new enters the queue. Let deliveries in flight finish.
        self.queue.shutdown(Duration::from_secs(10)).await;
        sweeper.abort();
        upkeep.abort();
        key_maintenance.abort();
        // Keep the last `last_used` times.
        let _ = tokio::task::spawn_blocking(move || keys.maintain()).await;
        // Requests are done: write what the audit writer still holds.
        self.audit.finish(Duration::from_secs(10)).await;
        self.notifier.abort();
    }
}
