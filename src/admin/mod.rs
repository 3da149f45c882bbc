//! The admin listener: admin API, `/metrics` and the dashboard, on `[admin] listen`, never on
//! the public port.
//!
//! ```text
//!  GET  /healthz            open           200 ok
//!  GET  /, /assets/*        open           the dashboard's static files (they hold no data)
//!  GET  /metrics            Bearer token   Prometheus text
//!  GET  /api/events         Bearer token   audit events, filters as `hookwarden events`
//!  GET  /api/stats          Bearer token   counts over a window, top IPs and keys
//!  GET  /api/routes         Bearer token   routes and their policies
//!  GET  /api/alerts         Bearer token   alert rules and the latest alerts sent
//!  POST /api/reload         Bearer token   re-read the config file
//!  GET  /api/queue          Bearer token   delivery queue: counts per route, messages
//!  POST /api/queue/{id}/retry, POST /api/queue/retry?route=R, DELETE /api/queue/{id}
//! ```
//!
//! Anything else answers 401 without the token and 404 with it.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod queue;
pub mod reload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware;
use axum::response::Response;
use axum::routing::{delete, get, post};
use http::StatusCode;
use tokio::net::TcpListener;

use crate::events::metrics::Metrics;
use crate::gateway::Gateway;
use crate::store::Store;
use reload::Reloader;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The running gateway (routes, state, emitter).
    pub gateway: Arc<Gateway>,
    /// A read connection to the store.
    pub reader: Store,
    /// The metrics recorder.
    pub metrics: Arc<Metrics>,
    /// Open connections on the public listener.
    pub active: Arc<AtomicUsize>,
    /// Config reload, and the config and admin token in force.
    pub reloader: Arc<Reloader>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(api::metrics))
        .route("/api/events", get(api::events))
        .route("/api/stats", get(api::stats))
        .route("/api/routes", get(api::routes))
        .route("/api/alerts", get(api::alerts))
        .route("/api/reload", post(api::reload))
        .route("/api/queue", get(queue::list))
        .route("/api/queue/retry", post(queue::retry_all))
        .route("/api/queue/{id}/retry", post(queue::retry))
        .route("/api/queue/{id}", delete(queue::drop_message))
        // Issued API keys (the `keys` branch) plug in here, behind the same token check:
        //   .route("/api/keys", get(keys::list).post(keys::create))
        //   .route("/api/keys/{id}", delete(keys::revoke))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(dashboard::routes())
        .merge(protected)
        .fallback(fallback)
        .with_state(state)
}

/// Unknown paths: 401 without the token (nothing is revealed), 404 with it.
async fn fallback(State(state): State<AdminState>, req: Request) -> Response {
    if auth::authorized(&state, req.headers()) {
        api::error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
    } else {
        auth::unauthorized()
    }
}

/// The admin listener, bound.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr, state: AdminState) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr).await?;
        Ok(AdminServer {
            listener,
            router: router(state),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (at most
    /// [`ADMIN_DRAIN`]).
    ///
    /// Each connection gets [`ADMIN_HEADER_TIMEOUT`] to send a request head and at most
    /// [`ADMIN_MAX_CONNECTIONS`] are served at once: an admin port reachable beyond loopback
    /// must not be held open by clients that trickle bytes (a plain `axum::serve` has neither
    /// bound).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(ADMIN_MAX_CONNECTIONS));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(ADMIN_HEADER_TIMEOUT);
        tokio::pin!(shutdown);
        loop {
            // Waiting for a free slot must not keep shutdown waiting.
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let app = self
                .router
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                // Errors are the client's (a timeout, a reset): nothing to report.
                let _ = conn.await;
                drop(permit);
            });
        }
        if tokio::time::timeout(ADMIN_DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("admin requests still running at shutdown were cut");
        }
    }
}

/// Time a client of the admin listener gets to send a request head.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more wait to be accepted.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Time admin requests in flight get to finish at shutdown.
const ADMIN_DRAIN: Duration = Duration::from_secs(5);
