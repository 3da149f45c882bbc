//! The public listener: accepting connections, TLS, HTTP/1.1 and HTTP/2, connection limits,
//! slow-client timeouts and graceful shutdown.
//!
//! Thread per core, like nginx's workers: `workers` threads, each with its own single-threaded
//! runtime and its own `SO_REUSEPORT` socket on the listen address, so the kernel spreads
//! connections over them and a connection's whole life (accept, TLS, parsing, guards, the
//! upstream exchange) stays on one thread with no cross-thread wake-ups.
//!
//! Connection phase defences, in order: a cap on open connections shared by all workers (a
//! semaphore taken before `accept`, so excess clients wait in the kernel's backlog instead of
//! costing memory), a deadline for the TLS handshake or, on plain connections, for the bytes
//! that tell HTTP/1.1 from HTTP/2, and then hyper's header-read timeout, which in hyper 1.x
//! also bounds the idle time between requests on a keep-alive connection.

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::gateway::{ConnInfo, Gateway};

/// The HTTP/2 connection preface; a plain connection that starts with it speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at most, over all workers.
    pub max_connections: usize,
    /// Time for the TLS handshake, the request headers, and idle keep-alive gaps.
    pub header_timeout: Duration,
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
        let builder = Arc::new(connection_builder(&limits));
        let permits = Arc::new(Semaphore::new(limits.max_connections));
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

/// The HTTP/1.1 + HTTP/2 connection settings shared by all workers.
fn connection_builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One listener thread.
struct Worker {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    permits: Arc<Semaphore>,
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
        let graceful = GracefulShutdown::new();
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
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                gateway: self.gateway.clone(),
                builder: self.builder.clone(),
                header_timeout: self.limits.header_timeout,
                peer,
            };
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            let active = self.active.clone();
            tokio::spawn(async move {
                active.fetch_add(1, Ordering::Relaxed);
                match tls {
                    Some(acceptor) => conn.serve_tls(stream, acceptor, watcher).await,
                    None => conn.serve_plain(stream, watcher).await,
                }
                active.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        drop(listener);
        match tokio::time::timeout(self.limits.shutdown_timeout, graceful.shutdown()).await {
            Ok(()) => tracing::debug!("worker: all connections closed"),
            Err(_) => tracing::warn!(
                open = self.active.load(Ordering::Relaxed),
                "shutdown timeout reached; closing the remaining connections"
            ),
        }
    }
}

struct Connection {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    header_timeout: Duration,
    peer: SocketAddr,
}

impl Connection {
    async fn serve_plain(self, stream: TcpStream, watcher: hyper_util::server::graceful::Watcher) {
        // hyper-util reads the first bytes to tell HTTP/1.1 from h2c without a timer; make sure
        // they are there (or the client is gone) before handing the socket over.
        if !preface_ready(&stream, self.header_timeout).await {
            return;
        }
        let info = ConnInfo {
            peer: self.peer,
            tls: false,
        };
        self.serve_io(stream, info, None, watcher).await;
    }

    async fn serve_tls(
        self,
        stream: TcpStream,
        acceptor: TlsAcceptor,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let tls = match tokio::time::timeout(self.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let info = ConnInfo {
            peer: self.peer,
            tls: true,
        };
        self.serve_io(tls, info, Some(h2), watcher).await;
    }

    async fn serve_io<I>(
        self,
        io: I,
        info: ConnInfo,
        alpn_h2: Option<bool>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gateway = self.gateway;
        let svc = service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(req, info).await) }
        });
        let io = TokioIo::new(io);
        // With ALPN the protocol is known; skipping detection also skips its untimed read.
        let builder = match alpn_h2 {
            Some(true) => (*self.builder).clone().http2_only(),
            Some(false) => (*self.builder).clone().http1_only(),
            None => (*self.builder).clone(),
        };
        let conn = builder.serve_connection(io, svc);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
        }
    }
}

/// Waits until the plain connection has sent enough to tell its protocol: a first byte that
/// is not the start of the HTTP/2 preface, or the whole preface. False when the client sends
/// nothing in time or hangs up.
async fn preface_ready(stream: &TcpStream, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 24];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => {
                if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] {
                    return true;
                }
                // A partial preface: wait for more without spinning on the same bytes.
                if tokio::time::timeout_at(deadline, stream.readable())
                    .await
                    .is_err()
                {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}
