//! The public listener: accepting connections, TLS, HTTP/1.1 and HTTP/2, connection limits,
//! slow-client timeouts and graceful shutdown.
//!
//! Thread per core, like nginx's workers: `workers` threads, each with its own single-threaded
//! runtime and its own `SO_REUSEPORT` socket on the listen address, so the kernel spreads
//! connections over them and a connection's whole life (accept, TLS, parsing, guards, the
//! upstream exchange) stays on one thread with no cross-thread wake-ups.
//!
//! Connection defences, in order: a cap on open connections shared by all workers (a semaphore
//! taken before `accept`, so excess clients wait in the kernel's backlog instead of costing
//! memory) and a cap per client address (so one host cannot take every slot); a deadline for
//! the TLS handshake or, on plain connections, for the bytes that tell HTTP/1.1 from HTTP/2;
//! a deadline for each HTTP/1.1 request head, the wait for it included (`h1`);
//! `keepalive_timeout` for a connection with no request in flight (HTTP/2 included, see
//! `conn`); and `send_timeout` for a client that stops reading (`io`).

pub mod body;
mod conn;
mod h1;
pub mod io;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::gateway::Gateway;
use conn::{Connection, PerIp};

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at most, over all workers.
    pub max_connections: usize,
    /// Open connections per client address at most (0 = no limit); `per_ip_exempt` excluded.
    pub max_connections_per_ip: usize,
    /// Networks the per-address limit does not apply to (the trusted proxies).
    pub per_ip_exempt: Vec<IpNet>,
    /// Time for the TLS handshake, the request headers, and idle HTTP/1.1 keep-alive gaps.
    pub header_timeout: Duration,
    /// Time a connection (HTTP/2 included) may stay open with no request in flight.
    pub keepalive_timeout: Duration,
    /// Time a write to a client may stay blocked (the client not reading).
    pub send_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Listener threads (each with its own socket and runtime).
    pub workers: usize,
}

/// The public listener, bound and ready to run.
pub struct Server {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    limits: ConnLimits,
    active: Arc<AtomicUsize>,
}

/// Binds one `SO_REUSEPORT` socket on `addr` (port 0 picks a free port).
fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl Server {
    /// Binds `addr` once per worker. With `tls`, every connection must complete a TLS
    /// handshake.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        gateway: Arc<Gateway>,
        limits: ConnLimits,
    ) -> std::io::Result<Server> {
        let workers = limits.workers.max(1);
        let first = reuseport_socket(addr)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(reuseport_socket(addr)?);
        }
        Ok(Server {
            sockets,
            addr,
            tls: tls.map(TlsAcceptor::from),
            gateway,
            limits,
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }

    /// A counter of open connections, for the metrics.
    pub fn active_connections(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives in-flight requests
    /// up to `shutdown_timeout` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            sockets,
            addr: _,
            tls,
            gateway,
            limits,
            active,
        } = self;
        let builder = Arc::new(connection_builder());
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let per_ip = PerIp::new(limits.max_connections_per_ip, limits.per_ip_exempt.clone());
        // HTTP/2 carries many requests on one connection: an address gets as many in flight
        // over HTTP/2, in all, as it could have over HTTP/1.1 (one per connection), not 64
        // times that.
        let streams_per_ip =
            PerIp::new(limits.max_connections_per_ip, limits.per_ip_exempt.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut done = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            done.push(done_rx);
            let worker = Worker {
                gateway: gateway.clone(),
                builder: builder.clone(),
                tls: tls.clone(),
                limits: limits.clone(),
                permits: permits.clone(),
                per_ip: per_ip.clone(),
                streams_per_ip: streams_per_ip.clone(),
                active: active.clone(),
                stop: stop_rx.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("hookwarden-{i}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(worker.run(socket)),
                        Err(e) => tracing::error!(error = %e, "cannot start a worker runtime"),
                    }
                    let _ = done_tx.send(());
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker thread");
            }
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections, waiting for requests in flight");
        let _ = stop_tx.send(true);
        for d in done {
            let _ = d.await;
        }
    }
}

/// The HTTP/2 connection settings shared by all workers (HTTP/1.1 is `h1.rs`'s own).
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // 64 streams per connection: each may buffer a body of up to max_body, so this bounds
    // what one HTTP/2 connection can hold (the body budget bounds all of them together).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder.http2_only()
}

/// One listener thread.
struct Worker {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    permits: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    streams_per_ip: Arc<PerIp>,
    active: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(self, socket: std::net::TcpListener) {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register the listener");
                return;
            }
        };
        // Every connection task holds a clone of `done_tx`; when all are gone, `done_rx`
        // closes, which is how shutdown knows the last connection has finished.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        // Connections watch a stop channel of this worker's own, relayed from the server's:
        // an HTTP/1.1 connection polls its stop signal about once a request, which takes the
        // channel's lock, and with one channel for all workers that lock's cache line moved
        // between their cores on every request.
        let (local_stop_tx, local_stop) = watch::channel(false);
        let mut relay = self.stop.clone();
        tokio::spawn(async move {
            // A dropped sender (the server gone) stops connections too, as it did them
            // watching the server's channel.
            let _ = relay.wait_for(|s| *s).await;
            local_stop_tx.send_replace(true);
        });
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut stopped => break,
                p = self.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = self.per_ip.admit(peer.ip()) else {
                tracing::debug!(peer = %peer, "too many connections from this address; closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                gateway: self.gateway.clone(),
                builder: self.builder.clone(),
                header_timeout: self.limits.header_timeout,
                keepalive_timeout: self.limits.keepalive_timeout,
                send_timeout: self.limits.send_timeout,
                peer,
                stop: local_stop.clone(),
                done: done_tx.clone(),
                streams_per_ip: self.streams_per_ip.clone(),
            };
            let tls = self.tls.clone();
            let active = self.active.clone();
            tokio::spawn(async move {
                active.fetch_add(1, Ordering::Relaxed);
                match tls {
                    Some(acceptor) => conn.serve_tls(stream, acceptor).await,
                    None => conn.serve_plain(stream).await,
                }
                active.fetch_sub(1, Ordering::Relaxed);
                drop((permit, slot));
            });
        }
        drop(listener);
        drop(done_tx);
        match tokio::time::timeout(self.limits.shutdown_timeout, done_rx.recv()).await {
            Ok(_) => tracing::debug!("worker: all connections closed"),
            Err(_) => tracing::warn!(
                open = self.active.load(Ordering::Relaxed),
                "shutdown timeout reached; closing the remaining connections"
            ),
        }
    }
}
