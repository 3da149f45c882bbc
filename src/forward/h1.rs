//! A lean HTTP/1.1 client for plain-`http` upstreams: a connection from a per-thread pool, the
//! request head and body written in one buffer, the response head parsed with `httparse`, and
//! the body read straight from the socket by the response body itself.
//!
//! Why not hyper's client here: it runs each pooled connection as a task of its own, reached
//! through channels and a shared pool, behind a connector stack; on a proxied request that
//! machinery cost more instructions than everything else the gateway does (`bench/run
//! --instructions`, docs/benchmarks.md). The listener's workers each run a single-threaded
//! runtime, so a connection can simply belong to the request using it and go back to its
//! thread's pool when the response ends. HTTPS upstreams (TLS, HTTP/2 by ALPN) keep hyper's
//! client, where the handshake and encryption dominate anyway.
//!
//! Framing follows RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked`; else `Content-Length`; else until the upstream closes.
//! A connection returns to the pool only after a response whose end was framed exactly and
//! with nothing after it: never after `Transfer-Encoding` together with `Content-Length` (the
//! request-smuggling shape), a close-delimited body, `Connection: close`, HTTP/1.0, or a body
//! the consumer stopped reading.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ForwardError;
use super::passed::{FieldKind, PassedHead, field_kind};
use crate::digits::decimal_bytes;
use crate::http1::{Chunk, Step, parse_length, step_chunked};

/// Largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted.
const MAX_HEADERS: usize = 128;
/// How much the read buffer grows by before a read.
const READ_CHUNK: usize = 16 * 1024;
/// Bodies up to this size are copied behind the head and written with it in one call.
const COALESCE_MAX: usize = 64 * 1024;
/// Idle connections kept per upstream address and thread at most.
const MAX_IDLE_PER_TARGET: usize = 256;

/// An open connection to an upstream, with bytes read from it but not yet used.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Reads more bytes into the buffer; `Ok(0)` when the upstream has closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    /// True when an idle connection can carry another request: the upstream has not closed
    /// it nor sent anything unasked, and its runtime still runs. Costs a system call only when
    /// the socket was reported readable since its last read.
    fn still_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Where pooled connections go: the upstream's host and port as the URL names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) host: Arc<str>,
    pub(super) port: u16,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<Vec<(Target, VecDeque<Idle>)>> = const { RefCell::new(Vec::new()) };
    static SWEEPER: Cell<bool> = const { Cell::new(false) };
}

/// The most recently used idle connection to `target` that is still usable.
fn checkout(target: &Target, max_idle: Duration) -> Option<Conn> {
    IDLE.with(|pools| {
        let mut pools = pools.borrow_mut();
        let (_, queue) = pools.iter_mut().find(|(t, _)| t == target)?;
        while let Some(mut idle) = queue.pop_back() {
            if idle.since.elapsed() >= max_idle {
                // The newest is too old, so are all the others.
                queue.clear();
                return None;
            }
            if idle.conn.still_usable() {
                return Some(idle.conn);
            }
        }
        None
    })
}

/// Puts a connection whose last response ended cleanly back into this thread's pool.
fn checkin(target: Target, conn: Conn, max_idle: Duration) {
    let now = Instant::now();
    IDLE.with(|pools| {
        let mut pools = pools.borrow_mut();
        let queue = match pools.iter().position(|(t, _)| *t == target) {
            Some(i) => &mut pools[i].1,
            None => {
                pools.push((target, VecDeque::new()));
                let last = pools.len() - 1;
                &mut pools[last].1
            }
        };
        while queue
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= max_idle)
        {
            queue.pop_front();
        }
        if queue.len() >= MAX_IDLE_PER_TARGET {
            queue.pop_front();
        }
        queue.push_back(Idle { conn, since: now });
    });
    start_sweeper(max_idle);
}

/// Closes this thread's expired idle connections every `max_idle` while it has any, so an
/// upstream that closed them is not left with half-closed sockets on a quiet gateway. Only on
/// a single-threaded runtime (the listener's workers): elsewhere a task may run on another
/// thread than the pool it should sweep, and checkouts drop expired connections anyway.
fn start_sweeper(max_idle: Duration) {
    if SWEEPER.get() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return;
    }
    SWEEPER.set(true);
    rt.spawn(async move {
        loop {
            tokio::time::sleep(max_idle).await;
            let left = IDLE.with(|pools| {
                let mut pools = pools.borrow_mut();
                let now = Instant::now();
                for (_, queue) in pools.iter_mut() {
                    queue.retain(|i| now.duration_since(i.since) < max_idle);
                }
                pools.retain(|(_, q)| !q.is_empty());
                !pools.is_empty()
            });
            if !left {
                SWEEPER.set(false);
                return;
            }
        }
    });
}

/// How the end of a response body is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, at this point of its grammar.
    Chunked(Chunk),
    /// The body ends when the upstream closes the connection.
    UntilClose,
    /// The body has ended.
    Done,
}

/// A response body read from an upstream connection. Dropped before its end, it closes the
/// connection.
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    /// Where the connection goes back to once the body has ended; `None` when it must close.
    reuse: Option<(Target, Duration)>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h1::Body")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or closed before the framing said the body ended.
    #[error("upstream body cut short: {0}")]
    Io(#[from] io::Error),
    /// The chunked coding was malformed.
    #[error("malformed chunked body from the upstream: {0}")]
    Chunked(&'static str),
}

impl Body {
    /// Marks the body finished and hands the connection back to the pool when it may be reused.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let (Some(conn), Some((target, max_idle))) = (self.conn.take(), self.reuse.take())
            && conn.buf.is_empty()
        {
            checkin(target, conn, max_idle);
        }
    }

    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, BodyError>> {
        match &mut self.conn {
            Some(conn) => conn.poll_fill(cx).map_err(BodyError::Io),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn buffered(&mut self) -> Option<&mut BytesMut> {
        self.conn
            .as_mut()
            .map(|c| &mut c.buf)
            .filter(|b| !b.is_empty())
    }

    fn cut_short(&mut self) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(BodyError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the upstream closed the connection before the body ended",
        )))))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            match this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if let Some(buf) = this.buffered() {
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                        let data = buf.split_to(n).freeze();
                        let left = left - n as u64;
                        this.framing = Framing::Length(left);
                        if left == 0 {
                            // Back to the pool now, not when the consumer asks once more.
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.fill(cx)) {
                        Ok(0) => return this.cut_short(),
                        Ok(_) => {}
                        Err(e) => {
                            this.framing = Framing::Done;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
                Framing::UntilClose => {
                    if let Some(buf) = this.buffered() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.fill(cx)) {
                        Ok(0) => {
                            this.framing = Framing::Done;
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            this.framing = Framing::Done;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
                Framing::Chunked(at) => {
                    let step = match this.conn.as_mut() {
                        Some(conn) => step_chunked(&mut conn.buf, at),
                        None => Step::NeedMore,
                    };
                    match step {
                        Step::Data(data, next) => {
                            this.framing = Framing::Chunked(next);
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Step::Next(next) => this.framing = Framing::Chunked(next),
                        Step::End => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Step::Fail(why) => {
                            this.framing = Framing::Done;
                            this.conn = None;
                            return Poll::Ready(Some(Err(BodyError::Chunked(why))));
                        }
                        Step::NeedMore => match ready!(this.fill(cx)) {
                            Ok(0) => return this.cut_short(),
                            Ok(_) => {}
                            Err(e) => {
                                this.framing = Framing::Done;
                                return Poll::Ready(Some(Err(e)));
                            }
                        },
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A request failed: the error, and whether nothing at all came back (the signature of an
/// idle connection the upstream had closed).
struct Failure {
    error: ForwardError,
    nothing_received: bool,
}

/// Sends `req` to the plain-http upstream its URI names and waits for the response head. The
/// caller bounds the whole call with the route's `timeout`.
pub(super) async fn send(
    req: Request<Full<Bytes>>,
    connect_timeout: Duration,
    max_idle: Duration,
) -> Result<Response<Body>, ForwardError> {
    let (parts, body) = req.into_parts();
    let body = full_bytes(body);
    let host = parts
        .uri
        .host()
        .ok_or_else(|| ForwardError::Connect("the URL has no host".to_owned()))?;
    let port = parts.uri.port_u16().unwrap_or(80);
    let target = Target {
        host: Arc::from(host),
        port,
    };
    let message = encode_request(&parts, &target, &body);
    let (status, fields, body) = send_encoded(
        target,
        &message,
        &body,
        &parts.method,
        connect_timeout,
        max_idle,
    )
    .await?;
    let headers = fields
        .into_map()
        .map_err(|e| ForwardError::Broken(e.to_string()))?;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// A response as [`send_encoded`] reads it: the status, the head's end-to-end fields as the
/// upstream sent them, and the body.
pub(super) type Answer = (StatusCode, PassedHead, Body);

/// Sends a request the caller has encoded (`message`: the head, followed by `body` when it is
/// at most [`COALESCE_MAX`] bytes; a larger body is written after it) to `host:port`, and
/// waits for the response head.
pub(super) async fn send_encoded(
    target: Target,
    message: &[u8],
    body: &Bytes,
    method: &Method,
    connect_timeout: Duration,
    max_idle: Duration,
) -> Result<Answer, ForwardError> {
    let head_request = *method == Method::HEAD;
    if let Some(conn) = checkout(&target, max_idle) {
        match exchange(conn, message, body, head_request).await {
            Ok((resp, conn)) => return Ok(body_of(resp, conn, target, max_idle)),
            // A pooled connection that yields nothing at all was most likely closed by the
            // upstream while idle; a request that may be repeated (RFC 9110 §9.2.2) gets a new
            // connection. A POST is never sent twice: the upstream may have acted on it.
            Err(f) if f.nothing_received && method.is_idempotent() => {}
            Err(f) => return Err(f.error),
        }
    }
    let conn = connect(&target.host, target.port, connect_timeout).await?;
    match exchange(conn, message, body, head_request).await {
        Ok((resp, conn)) => Ok(body_of(resp, conn, target, max_idle)),
        Err(f) => Err(f.error),
    }
}

/// The bytes of a complete request body.
pub(super) fn full_bytes(body: Full<Bytes>) -> Bytes {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    // `Full` is always ready: its one frame, or the end.
    match http_body::Body::poll_frame(body.as_mut(), &mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The request line and head, and the body too when it is small, in one buffer. `Host` comes
/// from the URL unless the request carries one (a route may inject it); the length is always
/// the gateway's own; framing and connection headers of the request are never passed.
pub(super) fn encode_request(
    parts: &http::request::Parts,
    target: &Target,
    body: &Bytes,
) -> Vec<u8> {
    let mut out = head_buffer(body);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(header::HOST) {
        push_host_field(&mut out, &target.host, target.port);
    }
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    end_head(&mut out, body);
    out
}

/// A buffer for a request head, with room for `body` when [`end_head`] will put it there.
pub(super) fn head_buffer(body: &Bytes) -> Vec<u8> {
    let small = body.len() <= COALESCE_MAX;
    Vec::with_capacity(512 + if small { body.len() } else { 0 })
}

/// `host: host[:port]` for a URL's host and port (no port for 80).
pub(super) fn push_host_field(out: &mut Vec<u8>, host: &str, port: u16) {
    out.extend_from_slice(b"host: ");
    out.extend_from_slice(host.as_bytes());
    if port != 80 {
        out.push(b':');
        out.extend_from_slice(decimal_bytes(u64::from(port), &mut [0; 20]));
    }
    out.extend_from_slice(b"\r\n");
}

/// Ends a request head with the gateway's own `Content-Length` and the blank line, and puts
/// `body` after it when it is at most [`COALESCE_MAX`] bytes; [`send_encoded`] writes a larger
/// one on its own.
pub(super) fn end_head(out: &mut Vec<u8>, body: &Bytes) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(decimal_bytes(body.len() as u64, &mut [0; 20]));
    out.extend_from_slice(b"\r\n\r\n");
    if body.len() <= COALESCE_MAX {
        out.extend_from_slice(body);
    }
}

/// Opens a connection: each address the host resolves to in turn, each within
/// `connect_timeout`.
async fn connect(host: &str, port: u16, connect_timeout: Duration) -> Result<Conn, ForwardError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            match tokio::time::timeout(connect_timeout, tokio::net::lookup_host((bare, port))).await
            {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => {
                    return Err(ForwardError::Connect(format!(
                        "cannot resolve the host: {e}"
                    )));
                }
                Err(_) => {
                    return Err(ForwardError::Connect(
                        "resolving the host timed out".to_owned(),
                    ));
                }
            }
        }
    };
    let mut last = String::from("the host resolves to no address");
    for addr in addrs {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                return Ok(Conn {
                    stream,
                    buf: BytesMut::with_capacity(8 * 1024),
                });
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("connect timed out after {connect_timeout:?}"),
        }
    }
    Err(ForwardError::Connect(last))
}

/// A parsed response head and how its body is framed.
struct Head {
    status: StatusCode,
    fields: PassedHead,
    framing: Framing,
    keep_alive: bool,
}

/// Writes the request and reads the response head.
async fn exchange(
    mut conn: Conn,
    message: &[u8],
    body: &Bytes,
    head_request: bool,
) -> Result<(Head, Conn), Failure> {
    let broken = |e: String, nothing: bool| Failure {
        error: ForwardError::Broken(e),
        nothing_received: nothing,
    };
    let mut write = conn.stream.write_all(message).await;
    if write.is_ok() && body.len() > COALESCE_MAX {
        write = conn.stream.write_all(body).await;
    }
    if let Err(e) = write {
        return Err(broken(format!("cannot send the request: {e}"), true));
    }
    loop {
        // Nothing to parse before the first read (a pooled connection's buffer is empty).
        let parsed = if conn.buf.is_empty() {
            Ok(None)
        } else {
            parse_head(&conn.buf, head_request)
        };
        match parsed {
            Ok(Some((consumed, None))) => {
                // An interim (1xx) response: skip it, the final one follows.
                conn.buf.advance(consumed);
                continue;
            }
            Ok(Some((consumed, Some(head)))) => {
                conn.buf.advance(consumed);
                return Ok((head, conn));
            }
            Ok(None) => {}
            Err(e) => return Err(broken(e, false)),
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err(broken("response head too large".to_owned(), false));
        }
        conn.buf.reserve(READ_CHUNK);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => {
                let nothing = conn.buf.is_empty();
                return Err(broken(
                    "the upstream closed the connection without a complete response".to_owned(),
                    nothing,
                ));
            }
            Ok(_) => {}
            Err(e) => {
                let nothing = conn.buf.is_empty();
                return Err(broken(format!("cannot read the response: {e}"), nothing));
            }
        }
    }
}

/// Parses a response head at the start of `buf`: `None` when incomplete, else the bytes it
/// took and the head (`None` for an interim 1xx response, which is skipped).
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(usize, Option<Head>)>, String> {
    // Uninitialised: filling 128 empty fields first cost more than parsing a typical head.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let consumed = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("invalid response status {code}"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("the upstream switched protocols unasked".to_owned());
    }
    if status.is_informational() {
        return Ok(Some((consumed, None)));
    }
    let mut fields = PassedHead::with_fields(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut close = resp.version != Some(1);
    // httparse has checked each name is a token and each value holds only what a header value
    // may (`HeaderValue`'s own rule), so the fields are kept as bytes (`passed.rs`).
    for f in resp.headers.iter() {
        let name = f.name.as_bytes();
        let kind = field_kind(name);
        match kind {
            FieldKind::ContentLength => {
                let n = parse_length(f.value).ok_or("invalid Content-Length from the upstream")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length values from the upstream".to_owned());
                }
                length = Some(n);
            }
            FieldKind::TransferEncoding => {
                coded = true;
                // Only the last coding counts: chunked must be the final one (RFC 9112 §6.3).
                chunked = f
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            FieldKind::Connection => {
                let mut names_others = false;
                for t in f.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") && !t.is_empty() {
                        names_others = true;
                    }
                }
                // Kept only when it names other fields, for `strip_hop_by_hop` to remove them.
                if names_others {
                    fields.push(kind, name, f.value);
                }
            }
            // Never passed on (the framing was read from them above).
            FieldKind::HopByHop => {}
            FieldKind::Ruled | FieldKind::Date | FieldKind::Scanned | FieldKind::Other => {
                fields.push(kind, name, f.value);
            }
        }
    }
    let no_body =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        // None of these has a body, whatever it declares. But an answer that declares one
        // may come from an upstream that sends it anyway (a HEAD served by the GET handler is
        // common in hand-written servers), and the next request on the connection, which may
        // be another client's, would read those bytes as its answer. Such a connection is not
        // used again. A 204 may carry neither a length nor a coding (RFC 9110 §8.6, RFC 9112
        // §6.1), so its length is not passed on; a HEAD answer or a 304 states the length the
        // full answer would have, which is allowed and kept.
        if coded || length.is_some_and(|n| n > 0) {
            close = true;
        }
        if status == StatusCode::NO_CONTENT {
            length = None;
        }
        Framing::Length(0)
    } else if coded {
        // Transfer-Encoding overrides Content-Length; a message with both is a smuggling
        // attempt or a broken upstream, so its connection is not trusted again, and the length
        // is not passed on (RFC 9112 §6.3): the client would cut the decoded body by it.
        if length.take().is_some() {
            close = true;
        }
        if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            close = true;
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::UntilClose
    };
    fields.set_content_length(length);
    Ok(Some((
        consumed,
        Some(Head {
            status,
            fields,
            framing,
            keep_alive: !close,
        }),
    )))
}

/// The status, fields and body of a parsed head, the body reading from `conn`.
fn body_of(head: Head, conn: Conn, target: Target, max_idle: Duration) -> Answer {
    let mut body = Body {
        conn: Some(conn),
        framing: head.framing,
        reuse: head.keep_alive.then_some((target, max_idle)),
    };
    if body.framing == Framing::Length(0) {
        body.finish();
    }
    (head.status, head.fields, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse_head(raw.as_bytes(), false) {
            Ok(Some((n, Some(h)))) => {
                assert_eq!(n, raw.len());
                h
            }
            other => panic!(
                "not a complete final head: {:?}",
                other.map(|o| o.map(|x| x.0))
            ),
        }
    }

    /// Hop-by-hop fields stay out of the parsed head; a `Connection` naming other fields is
    /// kept so that `strip_hop_by_hop` removes them, and what is left is the end-to-end set.
    #[test]
    fn hop_by_hop_fields_never_reach_the_gateway() {
        let h = head(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\n\
             transfer-encoding: chunked\r\nupgrade: h2c\r\ntrailer: x-t\r\nx-kept: 1\r\n\r\n",
        );
        assert_eq!(h.fields.lines(), b"x-kept: 1\r\n");
        assert!(!h.fields.is_ruled());
        assert!(h.keep_alive);
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close, X-Hop\r\n\
             x-hop: secret\r\nx-kept: 1\r\n\r\n",
        );
        assert!(!h.keep_alive);
        // The rules must see it: the head is not passed on as it is.
        assert!(h.fields.is_ruled());
        let mut map = h.fields.into_map().unwrap();
        assert!(map.contains_key(header::CONNECTION));
        super::super::headers::strip_hop_by_hop(&mut map);
        let mut names: Vec<&str> = map.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-kept"]);
    }

    /// The passed lines are the end-to-end fields as sent, in order; the length travels
    /// beside them, and the map built from them is the one the rules always saw.
    #[test]
    fn end_to_end_fields_pass_as_sent() {
        let h = head(
            "HTTP/1.1 201 Created\r\nServer: up\r\nSet-Cookie: a=1\r\nContent-Length: 2\r\n\
             Date: Mon, 30 Nov 2026 04:00:00 GMT\r\nset-cookie: b=2\r\nX-Odd:  spaced \t\r\n\r\n",
        );
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(h.framing, Framing::Length(2));
        assert_eq!(
            h.fields.lines(),
            b"Server: up\r\nSet-Cookie: a=1\r\nDate: Mon, 30 Nov 2026 04:00:00 GMT\r\n\
              set-cookie: b=2\r\nX-Odd: spaced\r\n"
        );
        assert_eq!(h.fields.content_length(), Some(2));
        assert!(h.fields.is_dated());
        assert!(!h.fields.is_ruled());
        let map = h.fields.into_map().unwrap();
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(map["content-length"], "2");
        assert_eq!(map["x-odd"], "spaced");
        // A field a response rule reads sends the head through the rules.
        for field in [
            "Location: /next",
            "content-location: /x",
            "Refresh: 0",
            "X-Request-Id: up",
            "Strict-Transport-Security: max-age=1",
            "Access-Control-Allow-Origin: *",
        ] {
            let h = head(&format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{field}\r\n\r\n"
            ));
            assert!(h.fields.is_ruled(), "{field}");
        }
        // With Transfer-Encoding, the length is neither believed nor passed on.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.fields.content_length(), None);
        assert_eq!(h.fields.lines(), b"");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(h.keep_alive);
        // Chunked not last: only the close ends the body.
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        // Both: chunked wins, and the connection is never reused.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        let h =
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive, close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n");
        assert!(!h.keep_alive);
        match parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true) {
            Ok(Some((_, Some(h)))) => assert_eq!(h.framing, Framing::Length(0)),
            _ => panic!("HEAD response not parsed"),
        }
    }

    #[test]
    fn bad_lengths_and_protocol_switches_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1,1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        ] {
            assert!(parse_head(raw.as_bytes(), false).is_err(), "{raw}");
        }
        // The same value twice is one length.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let raw = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";
        assert!(matches!(parse_head(raw, false), Ok(Some((n, None))) if n == raw.len()));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", false),
            Ok(None)
        ));
    }

    #[test]
    fn request_head_carries_host_length_and_no_framing_from_the_caller() {
        let req = Request::builder()
            .method(Method::POST)
            .uri("http://127.0.0.1:8081/hook?a=1")
            .header("transfer-encoding", "chunked")
            .header("content-length", "999")
            .header("connection", "close")
            .header("x-auth", "v")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let target = Target {
            host: "127.0.0.1".into(),
            port: 8081,
        };
        let out = encode_request(&parts, &target, &Bytes::from_static(b"{}"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /hook?a=1 HTTP/1.1\r\nhost: 127.0.0.1:8081\r\nx-auth: v\r\ncontent-length: 2\r\n\r\n{}"
        );
        // The default port is not repeated; an injected Host wins.
        let req = Request::builder()
            .uri("http://example.com/")
            .header("host", "virtual.example")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let target = Target {
            host: "example.com".into(),
            port: 80,
        };
        let out = String::from_utf8(encode_request(&parts, &target, &Bytes::new())).unwrap();
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nhost: virtual.example\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
