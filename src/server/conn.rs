//! One client connection: TLS or protocol detection, then HTTP/1.1 (`h1.rs`, which bounds its
//! own idle time) or HTTP/2 through hyper, whose connection life is kept here: it ends when the
//! client leaves, when the gateway shuts down (gracefully: requests in flight finish), or when
//! it has been idle for `keepalive_timeout`.
//!
//! The idle rule exists because an HTTP/2 connection with no stream open is otherwise kept for
//! ever, and its keep-alive pings only prove the peer is alive. Without it, a host could hold
//! every connection slot with silent HTTP/2 connections. Its limit is `keepalive_timeout`
//! capped by `header_timeout`, as on HTTP/1.1: a request whose headers never finish opens no
//! stream, so this is also what bounds it.
//!
//! The stall rule: HTTP/2 flow control lets a client take a response's head and then grant
//! no window for its body while still answering pings, so neither the socket's send timeout
//! nor the upstream's idle timeout (which does not count time the client spends not reading)
//! ever fires, and the stream holds its upstream connection. A response body hyper has not
//! come back to for `send_timeout` after being handed data ends the connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::body::RequestBody;
use super::h1::{self, Timeouts};
use super::io::SendTimeout;
use crate::forward::body::{BoxError, ResponseBody};
use crate::gateway::{ConnInfo, Gateway};
use crate::policy::Reason;

/// The HTTP/2 connection preface; a plain connection that starts with it speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an idle connection being closed may take to say goodbye.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Everything a connection task needs.
pub(super) struct Connection {
    pub gateway: Arc<Gateway>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub send_timeout: Duration,
    pub peer: SocketAddr,
    /// Completes the worker's shutdown.
    pub stop: watch::Receiver<bool>,
    /// Dropped when the connection ends; the worker waits for all of them on shutdown.
    pub done: mpsc::Sender<()>,
    /// HTTP/2 requests in flight per client address, across its connections.
    pub streams_per_ip: Arc<PerIp>,
}

impl Connection {
    /// Serves a plain TCP connection: HTTP/1.1 by the gateway's own loop, h2c by hyper.
    pub async fn serve_plain(self, stream: TcpStream) {
        // The first bytes tell HTTP/1.1 from h2c; wait for them (or for the client to leave).
        let accepted = Instant::now();
        let Some(h2) = preface_ready(&stream, self.header_timeout).await else {
            return;
        };
        // One header timeout for the first request, its first byte included: a client
        // trickling a byte just before each deadline must not get two.
        let first = self.header_timeout.saturating_sub(accepted.elapsed());
        let info = ConnInfo {
            peer: self.peer,
            tls: false,
            passed_heads: !h2,
        };
        let io = SendTimeout::new(stream, self.send_timeout);
        if h2 {
            self.serve_h2(io, info).await;
        } else {
            self.serve_h1(io, info, first).await;
        }
    }

    /// Serves a TLS connection; ALPN decides between HTTP/2 and HTTP/1.1.
    pub async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) {
        let accepted = Instant::now();
        let io = SendTimeout::new(stream, self.send_timeout);
        let tls = match tokio::time::timeout(self.header_timeout, acceptor.accept(io)).await {
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
            passed_heads: !h2,
        };
        if h2 {
            self.serve_h2(tls, info).await;
        } else {
            // The handshake and the first request head share one header timeout, as on a
            // plain connection.
            let first = self.header_timeout.saturating_sub(accepted.elapsed());
            self.serve_h1(tls, info, first).await;
        }
    }

    /// Serves HTTP/1.1 with the gateway's own connection loop (`h1.rs`).
    async fn serve_h1<I>(self, io: I, info: ConnInfo, first: Duration)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let timeouts = Timeouts {
            first,
            header: self.header_timeout,
            keepalive: self.keepalive_timeout,
        };
        h1::serve(io, self.gateway, info, timeouts, self.stop).await;
        drop(self.done);
    }

    /// Serves HTTP/2 with hyper.
    async fn serve_h2<I>(self, io: I, info: ConnInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let gateway = self.gateway;
        let tracked = activity.clone();
        let streams = self.streams_per_ip;
        let svc = service_fn(move |req| {
            let gateway = gateway.clone();
            let activity = tracked.clone();
            // Held until the response body is finished, like `in_flight`.
            let stream_slot = streams.admit(info.peer.ip());
            // Taken before the request is handled and released when its response body is
            // finished (or dropped), so a long stream keeps the connection busy.
            let in_flight = tracked.begin();
            async move {
                // HTTP/1.1 heads are refused past this many fields by the parser; HTTP/2 ones
                // only by their size, so the same cap is applied here.
                // HTTP/2 clients send each cookie as a field of its own (RFC 9113 §8.2.3),
                // where HTTP/1.1 joins them into one: all `cookie` fields count as one.
                let fields = req.headers().len();
                let too_many = fields > super::h1::MAX_HEADERS
                    && fields
                        - req
                            .headers()
                            .get_all(http::header::COOKIE)
                            .iter()
                            .count()
                            .saturating_sub(1)
                        > super::h1::MAX_HEADERS;
                let resp = if too_many {
                    gateway.refuse_head(
                        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        Reason::BadRequest,
                        "too many header fields",
                        info,
                    )
                } else if stream_slot.is_none() {
                    let mut resp = gateway.refuse_head(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        Reason::Overloaded,
                        "too many HTTP/2 requests in flight from this address",
                        info,
                    );
                    resp.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_static("1"),
                    );
                    resp
                } else {
                    gateway
                        .handle(req.map(RequestBody::Right), info, None)
                        .await
                };
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    handed: activity.handed_now(),
                    activity,
                    _in_flight: (in_flight, stream_slot),
                }))
            }
        });
        let builder = self.builder;
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut stop = self.stop;
        let mut closing = false;
        // An idle connection has nothing to finish; HTTP/2's graceful close still waits for the
        // peer to acknowledge a ping, which a hostile peer never does.
        let idle_close = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(idle_close);
        let mut idle_closing = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = stop.wait_for(|s| *s), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = activity.stalled_for(self.send_timeout) => {
                    tracing::debug!(peer = %info.peer, "client took no response data for send_timeout; connection closed");
                    break;
                }
                () = activity.idle_for(self.keepalive_timeout.min(self.header_timeout)), if !closing => {
                    tracing::debug!(peer = %info.peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    idle_closing = true;
                    idle_close.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                }
                () = &mut idle_close, if idle_closing => break,
            }
        }
        drop(self.done);
    }
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request finished.
    idle_since_ms: AtomicU64,
    /// Per response body in flight: milliseconds after `started` (plus one; 0: not waiting)
    /// since it handed hyper something (its head, a frame) without being asked for more.
    handoffs: Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            handoffs: Mutex::new(Vec::new()),
        }
    }

    fn now_mark(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// A hand-off mark for a new response body, starting now (its head was just handed over),
    /// registered for [`Activity::stalled_for`].
    fn handed_now(&self) -> Arc<AtomicU64> {
        let mark = Arc::new(AtomicU64::new(self.now_mark()));
        let mut list = self.handoffs.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&mark));
        mark
    }

    /// Completes once a response body has waited `limit` for hyper to ask for more after a
    /// hand-off: the client is not taking the response.
    async fn stalled_for(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        let tick = (limit / 4).max(Duration::from_millis(250));
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now_mark();
            let list = self.handoffs.lock().unwrap_or_else(|p| p.into_inner());
            let stalled = list.iter().filter_map(std::sync::Weak::upgrade).any(|m| {
                let since = m.load(Ordering::Acquire);
                since != 0 && now.saturating_sub(since) >= limit_ms
            });
            if stalled {
                return;
            }
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Completes once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                idle
            } else {
                let since = self.started
                    + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                let quiet = since.elapsed();
                if quiet >= idle {
                    return;
                }
                idle - quiet
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in flight; dropping it marks the end.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.started.elapsed().as_millis() as u64;
        a.idle_since_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is done, and marks
/// when it last handed hyper something hyper has not come back for.
struct Tracked {
    body: ResponseBody,
    handed: Arc<AtomicU64>,
    activity: Arc<Activity>,
    /// The connection's request count and the address's HTTP/2 stream slot.
    _in_flight: (InFlight, Option<PerIpSlot>),
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // Asked for more: whatever was handed has been taken. Waiting on the upstream from
        // here on is the upstream's idle timeout's business, not a stall.
        this.handed.store(0, Ordering::Release);
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.handed
                .store(this.activity.now_mark(), Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Open connections per client address, shared by all workers, so one host cannot take every
/// slot of `max_connections`. Trusted proxies are exempt: all their clients share their address.
#[derive(Debug)]
pub(super) struct PerIp {
    max: usize,
    exempt: Vec<ipnet::IpNet>,
    open: Mutex<std::collections::HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// At most `max` connections per address (0 = no limit), `exempt` networks excluded.
    pub fn new(max: usize, exempt: Vec<ipnet::IpNet>) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            exempt,
            open: Mutex::default(),
        })
    }

    /// Counts a connection from `ip`, or refuses it when the address is at its limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpSlot> {
        let ip = ip.to_canonical();
        if self.max == 0 || self.exempt.iter().any(|n| n.contains(&ip)) {
            return Some(PerIpSlot { owner: None, ip });
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            owner: Some(self.clone()),
            ip,
        })
    }
}

/// A counted connection; dropping it frees the slot.
pub(super) struct PerIpSlot {
    owner: Option<Arc<PerIp>>,
    ip: IpAddr,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            let mut open = owner.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

/// Waits until the plain connection has sent enough to tell its protocol: `Some(true)` for the
/// HTTP/2 preface, `Some(false)` for a first byte that cannot start it. `None` when the client
/// sends nothing in time or hangs up.
async fn preface_ready(stream: &TcpStream, timeout: Duration) -> Option<bool> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 24];
    let mut backoff = Duration::from_millis(5);
    loop {
        // Checked here: a `peek` that returns at once (bytes are buffered) never lets
        // `timeout_at` see its deadline.
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => {
                if buf[..n] != H2_PREFACE[..n] {
                    return Some(false);
                }
                if n >= H2_PREFACE.len() {
                    return Some(true);
                }
                // A partial preface (clients send all 24 bytes at once; a peer that stops
                // half way, or sends them a byte at a time, is waited for until the deadline).
                // The socket stays readable while those bytes sit unread, and a hang-up behind
                // them is not seen by `peek`: look again after a growing pause rather than
                // on every wake-up.
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(now))).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_counted_and_freed() {
        let p = PerIp::new(2, vec!["10.0.0.0/8".parse().unwrap()]);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = p.admit(ip).unwrap();
        let b = p.admit(ip).unwrap();
        assert!(p.admit(ip).is_none());
        // Another address and a trusted proxy are unaffected.
        assert!(p.admit("203.0.113.8".parse().unwrap()).is_some());
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| p.admit(proxy).unwrap()).collect();
        drop(a);
        assert!(p.admit(ip).is_some());
        drop((b, held));
        assert!(p.open.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_means_no_request_for_the_whole_duration() {
        let a = Arc::new(Activity::new());
        let idle = Duration::from_secs(60);
        let guard = a.begin();
        // Busy: never idle, however long.
        assert!(
            tokio::time::timeout(Duration::from_secs(600), a.idle_for(idle))
                .await
                .is_err()
        );
        drop(guard);
        let t0 = Instant::now();
        a.idle_for(idle).await;
        assert!(t0.elapsed() >= idle);
    }
}
