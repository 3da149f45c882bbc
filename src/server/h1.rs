//! HTTP/1.1 connections, served by the gateway itself: each request head parsed with
//! `httparse` straight from the connection's read buffer, the body read from the socket by the
//! request body the gateway consumes, the response head and the first body bytes written in
//! one call. HTTP/2 (h2c, or ALPN over TLS) stays with hyper (`conn.rs`).
//!
//! Why not hyper here: its HTTP/1.1 server runs every request through a dispatcher, a body
//! channel and a header map it encodes again on the way out; on a proxied request that cost
//! about as many instructions as everything the gateway itself does (`bench/run
//! --instructions`, docs/benchmarks.md). The upstream side made the same move
//! (`forward/h1.rs`); both share one chunked decoder (`crate::http1`).
//!
//! Where a request ends decides what the next one is, so framing is strict (RFC 9112 §6):
//! `Transfer-Encoding` must be exactly `chunked`, never with `Content-Length`, never on
//! HTTP/1.0; `Content-Length` must be one decimal value (repeats must agree); an HTTP/1.1
//! request needs exactly one `Host`. Anything else is a 400 and the connection closes.
//!
//! A request body the gateway refused before reading any of it is read and dropped after the
//! response, up to 8 MiB within 5 s, so the client reads its answer instead of a reset and the
//! connection can carry the next request. A body whose reading began and stopped (too large,
//! too slow), and one whose client waits for a `100 Continue` it never got (it may not send
//! the body at all), close the connection instead.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::digits::decimal_bytes;
use crate::forward::body::ResponseBody;
use crate::gateway::{ConnInfo, Gateway};
use crate::http1::{Chunk, Step, parse_length, step_chunked};
use crate::policy::Reason;

use super::body::RequestBody;

/// Largest request head accepted (request line and header fields); beyond it, 431.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request; beyond it, 431.
pub(super) const MAX_HEADERS: usize = 100;
/// How much the read buffer grows by before a read: a typical webhook request, head and body,
/// in one read, without holding much memory for each idle keep-alive connection.
const READ_CHUNK: usize = 8 * 1024;
/// Response bytes gathered before they are written.
const WRITE_MAX: usize = 64 * 1024;
/// A request body left unread is read and dropped up to this many bytes …
const DISCARD_MAX: u64 = 8 << 20;
/// … within this time.
const DISCARD_TIME: Duration = Duration::from_secs(5);
/// The interim response a client that sent `Expect: 100-continue` waits for.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// Time left for the first request head (the connection may have spent some of its
    /// header time already, showing which protocol it speaks).
    pub first: Duration,
    /// Time for a request head, the wait for it included.
    pub header: Duration,
    /// Time a connection may wait for its next request.
    pub keepalive: Duration,
}

/// Where the current request's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point of its grammar.
    Chunked(Chunk),
    /// Read to its end.
    Done,
    /// Cut short or malformed: the connection cannot carry another request.
    Broken,
}

/// Whether the client waits for `100 Continue` before sending its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// It does not (or it already has it).
    No,
    /// It does; this many bytes of the interim response are written.
    Waiting(usize),
}

/// The connection's socket and the bytes read from it but not yet used. The connection loop
/// and the request body it hands the gateway share it: they never use it at the same time
/// (one task), the mutex only makes the sharing safe to express.
struct Wire<I> {
    io: I,
    buf: BytesMut,
    body: Framing,
    expect: Expect,
    /// The gateway started reading the current body.
    touched: bool,
    /// The client has shut down its sending side after pipelining more requests: those are
    /// served, and [`client_gone`] stops watching.
    sent_all: bool,
    /// The current request's head was already waiting when the gateway turned to read it: the
    /// client sends ahead of the answers, so the end of its stream while this request is
    /// handled means it has sent all it will (`printf … | nc -N`), not that it has gone (the
    /// end may only be seen now, with nothing left in the buffer). Set for each request: one
    /// that came alone is watched as usual.
    pipelined: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Wire<I> {
    /// Reads more bytes into the buffer; `Ok(0)` when the client has closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Writes what is left of `100 Continue`.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Expect::Waiting(done) = self.expect {
            if done == CONTINUE.len() {
                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                self.expect = Expect::No;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &CONTINUE[done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.expect = Expect::Waiting(done + n);
        }
        Poll::Ready(Ok(()))
    }

    /// The next piece of the request body.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        self.touched = true;
        loop {
            match self.body {
                Framing::Done => return Poll::Ready(None),
                Framing::Broken => {
                    return Poll::Ready(Some(Err(io::Error::other("request body unreadable"))));
                }
                Framing::Length(0) => {
                    self.body = Framing::Done;
                    return Poll::Ready(None);
                }
                Framing::Length(_) | Framing::Chunked(_) => {}
            }
            if self.expect != Expect::No
                && let Err(e) = ready!(self.poll_continue(cx))
            {
                self.body = Framing::Broken;
                return Poll::Ready(Some(Err(e)));
            }
            match self.body {
                Framing::Length(left) if !self.buf.is_empty() => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    let data = self.buf.split_to(n).freeze();
                    self.body = Framing::Length(left - n as u64);
                    return Poll::Ready(Some(Ok(data)));
                }
                Framing::Chunked(at) => match step_chunked(&mut self.buf, at) {
                    Step::Data(data, next) => {
                        self.body = Framing::Chunked(next);
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Step::Next(next) => {
                        self.body = Framing::Chunked(next);
                        continue;
                    }
                    Step::End => {
                        self.body = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Step::Fail(why) => {
                        self.body = Framing::Broken;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            why,
                        ))));
                    }
                    Step::NeedMore => {}
                },
                _ => {}
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.body = Framing::Broken;
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    self.body = Framing::Broken;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    /// Writes all of `out`, then flushes (TLS holds bytes back until then).
    fn poll_write_out(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) -> Poll<io::Result<()>> {
        while !out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let _ = out.split_to(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// The wire as the request body sees it, without the socket's type.
trait BodySource: Send + Sync {
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>>;
    fn framing(&self) -> Framing;
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send> BodySource for Mutex<Wire<I>> {
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        lock(self).poll_body(cx)
    }

    fn framing(&self) -> Framing {
        lock(self).body
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request body read from an HTTP/1.1 connection as the gateway asks for it. Dropping it
/// unread is fine: the connection reads and drops the rest after the response.
pub struct Body {
    wire: Arc<dyn BodySource>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h1::Body")
            .field("framing", &self.wire.framing())
            .finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.wire
            .poll_body(cx)
            .map(|d| d.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.wire.framing(), Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.wire.framing() {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A parsed request head and what the connection needs to know about it.
struct Head {
    request: Request<()>,
    framing: Framing,
    expect_continue: bool,
    /// The client asked to close after this request (or spoke HTTP/1.0 without keep-alive).
    close: bool,
}

/// Why a request head was refused; the connection answers and closes.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Malformed, or framed in a way that could be read two ways.
    BadRequest(&'static str),
    /// Larger than `MAX_HEAD` or with more than `MAX_HEADERS` fields.
    TooLarge,
}

/// Serves HTTP/1.1 requests on `io` until the client leaves, a request says close, a timeout
/// passes or `stop` turns true (requests in flight finish first).
pub(super) async fn serve<I>(
    io: I,
    gateway: Arc<Gateway>,
    info: ConnInfo,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wire = Arc::new(Mutex::new(Wire {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        body: Framing::Done,
        expect: Expect::No,
        touched: false,
        sent_all: false,
        pipelined: false,
    }));
    let source: Arc<dyn BodySource> = wire.clone();
    let mut out = BytesMut::with_capacity(4096);
    let mut wait = timeouts.first;
    // One timer for every head on the connection, moved later for each: a later deadline is
    // one compare-and-swap in tokio's timer entry (the driver re-files it when the old
    // deadline comes), where a timer per request was registered with the driver and removed
    // again (830 instructions a request, callgrind).
    let head_timer = tokio::time::sleep(wait);
    tokio::pin!(head_timer);
    // And one for the upstream's response heads, lent to each request (`HeadTimer`).
    let upstream_timer = tokio::time::sleep(wait);
    tokio::pin!(upstream_timer);
    // One wait for the stop signal for the whole connection: one made per request registered
    // with the channel and removed again each time (with polling it before the head, about
    // 400 instructions a request, callgrind). It is never polled again once it has finished:
    // the connection returns.
    let mut stop_wait = stop.clone();
    let stopped = async move {
        let _ = stop_wait.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        head_timer.as_mut().reset(Instant::now() + wait);
        wait = timeouts.header.min(timeouts.keepalive);
        // The read's result is a temporary of this statement: a named one, taken apart by
        // the match, would be kept in this future across every later await.
        let head = match tokio::select! {
            // The head first: the stop signal is then only polled (which takes its channel's
            // lock) when no head is waiting, not on the wake-up that brings one. A head that
            // came in as the server began stopping is served, with `Connection: close`.
            biased;
            head = read_head(&wire, head_timer.as_mut()) => head,
            () = stopped.as_mut() => return,
        } {
            Ok(Some(h)) => h,
            // The client left, or sent nothing (more) in time.
            Ok(None) => return,
            Err(refusal) => {
                refuse(&wire, &mut out, refusal, &gateway, info).await;
                return;
            }
        };
        let (request, head_request, http10, close) = begin_request(&wire, &source, head);
        // In a block of its own: the request's future is the largest part of this one, and
        // held to the end of the loop's body it was kept beside the response's writing.
        let response = {
            // Pinned where it is made: `tokio::pin!` on a named future moved its 3 KB twice,
            // a tenth of the request's cache-missing writes (callgrind's cache simulation).
            let mut handled =
                std::pin::pin!(gateway.handle(request, info, Some(upstream_timer.as_mut())));
            tokio::select! {
                biased;
                response = handled.as_mut() => response,
                // The exchange is dropped with the connection: the gateway records it
                // (`client_closed`) and lets go of the upstream call.
                () = client_gone(&wire) => return,
            }
        };

        let (left, continue_owed, touched) = {
            let w = lock(&wire);
            (w.body, w.expect != Expect::No, w.touched)
        };
        let unread = !matches!(left, Framing::Done | Framing::Length(0));
        let close = close
            || *stop.borrow()
            || left == Framing::Broken
            // It may never send the body it was not asked for: what follows is unknowable.
            || (unread && continue_owed)
            // Reading began and stopped (too large, too slow): waiting longer for the rest
            // would hand a slow client more time than `body_timeout` allows.
            || (unread && touched)
            || matches!(left, Framing::Length(n) if n > DISCARD_MAX);
        let (written, close) =
            write_response(&wire, &mut out, response, head_request, http10, close).await;
        if !written {
            return;
        }
        if close {
            if unread {
                shutdown_and_drain(&wire).await;
            } else {
                let _ = std::future::poll_fn(|cx| Pin::new(&mut lock(&wire).io).poll_shutdown(cx))
                    .await;
            }
            return;
        }
        if unread && !discard_body(&wire).await {
            return;
        }
    }
}

/// Sets the connection up for the body of the request `head` announces and makes its request,
/// whose body reads from `source`; also whether it is a HEAD request, an HTTP/1.0 one, and
/// whether the connection closes after it. A function of its own rather than lines of
/// [`serve`]: there the parts of the head were kept in its future across every await.
fn begin_request<I>(
    wire: &Mutex<Wire<I>>,
    source: &Arc<dyn BodySource>,
    head: Head,
) -> (Request<RequestBody>, bool, bool, bool) {
    let Head {
        request,
        framing,
        expect_continue,
        close,
    } = head;
    let head_request = request.method() == Method::HEAD;
    let http10 = request.version() == Version::HTTP_10;
    {
        let mut w = lock(wire);
        w.body = framing;
        w.touched = false;
        w.expect = if expect_continue && !http10 && framing != Framing::Length(0) {
            Expect::Waiting(0)
        } else {
            Expect::No
        };
    }
    let request = request.map(|()| {
        RequestBody::Left(Body {
            wire: source.clone(),
        })
    });
    (request, head_request, http10, close)
}

/// Resolves when the client closes its connection (or it fails) while its request is handled,
/// once the request's body has been read whole: nothing more of this request is expected, so
/// a read that finds the end of the stream means the client has gone (as nginx judges it; a
/// client that only shuts down its sending side counts as gone too). Bytes that arrive instead
/// (a pipelined request) are kept for the next head; with [`MAX_HEAD`] of them waiting, the
/// client is not watched any more. A client that shuts down its sending side after pipelining
/// further requests has not gone: it waits for their answers (`printf … | nc -N`), and is not
/// watched any more either; also when the end of its stream is seen only while the last of
/// them is handled (see [`Wire::pipelined`]). Until the body is read the handler's own reads
/// notice a close. Never resolves otherwise.
async fn client_gone<I>(wire: &Mutex<Wire<I>>)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| {
        let mut w = lock(wire);
        // Not watched yet (or any more): polled again whenever the handler is woken, in the
        // same `select!`, so the watch starts as soon as the body has been read.
        if !matches!(w.body, Framing::Done | Framing::Length(0))
            || w.expect != Expect::No
            || w.sent_all
            || w.buf.len() >= MAX_HEAD
        {
            return Poll::Pending;
        }
        // Read into a small buffer of its own: reserving room in `buf` here, while the body
        // taken from it is still held, would allocate a fresh one for every request.
        let mut room = [std::mem::MaybeUninit::<u8>::uninit(); 512];
        loop {
            let mut chunk = tokio::io::ReadBuf::uninit(&mut room);
            match Pin::new(&mut w.io).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(())) if chunk.filled().is_empty() => {
                    // Line ends after a body (some clients send one) are no request.
                    let waiting = w.buf.iter().any(|&b| b != b'\r' && b != b'\n');
                    if !waiting && !w.pipelined {
                        return Poll::Ready(());
                    }
                    w.sent_all = true;
                    return Poll::Pending;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    w.buf.extend_from_slice(chunk.filled());
                    if w.buf.len() >= MAX_HEAD {
                        return Poll::Pending;
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// Waits for a complete request head: `Ok(None)` when the client closes or `timer` fires
/// first.
async fn read_head<I>(
    wire: &Mutex<Wire<I>>,
    mut timer: Pin<&mut tokio::time::Sleep>,
) -> Result<Option<Head>, Refusal>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    // How much of the buffer was parsed without finding the head's end. The head is parsed
    // again only once new bytes could end it: parsing the whole buffer per read let a client
    // trickling a 60 KB head a byte at a time cost a full parse per byte (quadratic).
    let mut parsed: usize = 0;
    let mut first = true;
    loop {
        {
            let mut w = lock(wire);
            // Empty lines before a request line are ignored (RFC 9112 §2.2); dropped here so
            // that a client sending only those cannot make every read a parse of them all.
            let blank = w
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                bytes::Buf::advance(&mut w.buf, blank);
                parsed = parsed.saturating_sub(blank);
            }
            if first {
                w.pipelined = !w.buf.is_empty();
                first = false;
            }
            if !w.buf.is_empty()
                && (parsed == 0 || may_end_head(&w.buf[parsed.saturating_sub(3)..]))
            {
                match parse_head(&mut w.buf)? {
                    Some(head) => return Ok(Some(head)),
                    None if w.buf.len() > MAX_HEAD => return Err(Refusal::TooLarge),
                    None => parsed = w.buf.len(),
                }
            } else if w.buf.len() > MAX_HEAD {
                return Err(Refusal::TooLarge);
            }
        }
        // The socket first, as `tokio::time::timeout` does: a head that arrived just as the
        // deadline passed is still served.
        let filled = std::future::poll_fn(|cx| match lock(wire).poll_fill(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
        })
        .await;
        match filled {
            Some(Ok(n)) if n > 0 => {}
            _ => return Ok(None),
        }
    }
}

/// A byte an authority (`host[:port]`, RFC 3986 §3.2) may hold: unreserved, sub-delims,
/// `%` of percent-encoding, `:` and the brackets of an IP literal.
fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b)
}

/// Whether `bytes` hold the end of a head: an empty line, after CRLF or a bare LF.
fn may_end_head(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(i, w)| {
        w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && bytes.get(i + 2) == Some(&b'\n')))
    })
}

/// Parses the request head at the start of `buf`, taking it out of the buffer when complete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Refusal> {
    // Uninitialised: filling 100 empty fields first cost more than parsing a typical head.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest("malformed request head")),
    };
    // Offsets rather than slices, so the values can share the head's bytes once it is frozen.
    // Checked: a slice that is not inside the head (none should be) is a refusal, not a
    // panic or a wrong range.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = (s.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(s.len()).filter(|&end| end <= len)?;
        Some(start..end)
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| Refusal::BadRequest("invalid method"))?;
    let target = req
        .path
        .and_then(|p| span(p.as_bytes()))
        .ok_or(Refusal::BadRequest("malformed request head"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut named = Vec::with_capacity(req.headers.len());
    for f in req.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| Refusal::BadRequest("invalid header name"))?;
        let range = span(f.value).ok_or(Refusal::BadRequest("malformed request head"))?;
        named.push((name, range));
    }
    let mut headers = HeaderMap::with_capacity(named.len());
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| Refusal::BadRequest("invalid request target"))?;

    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut hosts = 0;
    let mut close = version == Version::HTTP_10;
    let mut expect_continue = false;
    for (name, range) in named {
        let raw = &head[range.clone()];
        if name == header::CONTENT_LENGTH {
            let n = parse_length(raw).ok_or(Refusal::BadRequest("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::BadRequest("conflicting Content-Length values"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            // Only `chunked`, once: other codings are not supported, and a repeated or listed
            // chunked is how smuggling attempts disguise themselves.
            if coded || !raw.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::BadRequest("unsupported Transfer-Encoding"));
            }
            coded = true;
            chunked = true;
        } else if name == header::HOST {
            hosts += 1;
            // RFC 9112 §3.2: a Host that is not a valid authority is a 400. (Empty is valid.)
            if !raw.trim_ascii().iter().all(|&b| is_authority_byte(b)) {
                return Err(Refusal::BadRequest("invalid Host"));
            }
        } else if name == header::CONNECTION {
            for token in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        } else if name == header::EXPECT {
            // Any field asking for it: a later `Expect` must not cancel the 100 the client
            // waits for (it would stall until its own timeout).
            expect_continue |= raw
                .split(|&b| b == b',')
                .any(|e| e.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
        }
        let value = HeaderValue::from_maybe_shared(head.slice(range))
            .map_err(|_| Refusal::BadRequest("invalid header value"))?;
        headers.append(name, value);
    }
    if coded && length.is_some() {
        return Err(Refusal::BadRequest(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if coded && version == Version::HTTP_10 {
        return Err(Refusal::BadRequest(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if version == Version::HTTP_11 && hosts != 1 {
        return Err(Refusal::BadRequest(
            "an HTTP/1.1 request needs exactly one Host",
        ));
    }
    let framing = if chunked {
        Framing::Chunked(Chunk::Size)
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing,
        expect_continue,
        close,
    }))
}

/// Answers a request head that cannot be served, records it, then closes. Such heads are
/// what smuggling attempts and scanners send, so they go to the audit log like any refusal
/// (with the connection's address: the head that would name a forwarded one is the part that
/// could not be read).
async fn refuse<I>(
    wire: &Mutex<Wire<I>>,
    out: &mut BytesMut,
    refusal: Refusal,
    gateway: &Gateway,
    info: ConnInfo,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (status, detail) = match refusal {
        Refusal::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
        Refusal::TooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        ),
    };
    let response = gateway.refuse_head(status, Reason::BadRequest, detail, info);
    let _ = write_response(wire, out, response, false, false, true).await;
    // The rest of what the client sent is unknowable; read a little so the answer is not
    // destroyed by a reset.
    shutdown_and_drain(wire).await;
}

/// How the response body is delimited.
enum Out {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes are left.
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    UntilClose,
}

/// Writes `response`; returns whether it was written whole, and whether the connection must
/// close after it.
async fn write_response<I>(
    wire: &Mutex<Wire<I>>,
    out: &mut BytesMut,
    response: Response<ResponseBody>,
    head_request: bool,
    http10: bool,
    mut close: bool,
) -> (bool, bool)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let passed = body.take_passed();
    let status = parts.status;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = [0u8; 20];
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut declared: Option<u64> = None;
    // RFC 9110 §8.6: no Content-Length on a 1xx or 204, whoever set one.
    let lengthless = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut dated = false;
    for (name, value) in &parts.headers {
        // The connection's own framing and persistence are this side's to say.
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING || name == "keep-alive" {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if lengthless {
                continue;
            }
            match parse_length(value.as_bytes()) {
                Some(n) if declared.is_none() => declared = Some(n),
                _ => continue,
            }
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(head) = &passed {
        // The upstream's end-to-end fields, as they came (`forward::passed`), and the request
        // id the gateway added to them (`PassedHead::push_own`). None has a name the gateway
        // sets in the map (X-Request-Id, HSTS, CORS): a head with one goes through the map
        // instead (`PassedHead::is_ruled`). A `Vary` may be in both: one list to HTTP.
        out.extend_from_slice(head.lines());
        dated |= head.is_dated();
        if declared.is_none()
            && !lengthless
            && let Some(n) = head.content_length()
        {
            declared = Some(n);
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(decimal_bytes(n, &mut digits));
            out.extend_from_slice(b"\r\n");
        }
    }
    if !dated {
        put_date(out);
    }
    let bodyless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut framing = if bodyless {
        Out::None
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(decimal_bytes(n, &mut digits));
        out.extend_from_slice(b"\r\n");
        Out::Length(n)
    } else if http10 {
        close = true;
        Out::UntilClose
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    };
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if matches!(framing, Out::None) {
        return (flush(wire, out).await, close);
    }

    loop {
        // Gather what the body has ready; write when it has nothing more for now.
        let next = if out.is_empty() {
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        } else {
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    if !flush(wire, out).await {
                        return (false, true);
                    }
                    continue;
                }
            }
        };
        let data = match next {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: the head is long gone.
                Err(_) => continue,
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                // What was produced goes out; the missing end tells the client it is cut.
                flush(wire, out).await;
                return (false, true);
            }
        };
        if data.is_empty() {
            continue;
        }
        match &mut framing {
            Out::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    tracing::debug!("response body longer than its Content-Length; closing");
                    flush(wire, out).await;
                    return (false, true);
                }
                *left -= n;
                out.extend_from_slice(&data);
            }
            Out::Chunked => {
                put_hex(out, data.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
            Out::UntilClose | Out::None => out.extend_from_slice(&data),
        }
        if out.len() >= WRITE_MAX && !flush(wire, out).await {
            return (false, true);
        }
    }
    match framing {
        Out::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Out::Length(left) if left > 0 => {
            tracing::debug!("response body shorter than its Content-Length; closing");
            flush(wire, out).await;
            return (false, true);
        }
        _ => {}
    }
    (flush(wire, out).await, close)
}

/// Writes and flushes `out`; false when the client is gone or stopped reading.
async fn flush<I>(wire: &Mutex<Wire<I>>, out: &mut BytesMut) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| lock(wire).poll_write_out(cx, out))
        .await
        .is_ok()
}

/// Reads and drops the rest of a request body the gateway left unread; true when it ended
/// within `DISCARD_MAX` and `DISCARD_TIME`.
async fn discard_body<I>(wire: &Mutex<Wire<I>>) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut dropped: u64 = 0;
    let drain = async {
        loop {
            match std::future::poll_fn(|cx| lock(wire).poll_body(cx)).await {
                None => return true,
                Some(Ok(data)) => {
                    dropped += data.len() as u64;
                    if dropped > DISCARD_MAX {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(DISCARD_TIME, drain)
        .await
        .unwrap_or(false)
}

/// Closes the sending side, then reads and drops what the client still sends (bounded), so
/// the kernel does not answer unread bytes with a reset that destroys the response.
async fn shutdown_and_drain<I>(wire: &Mutex<Wire<I>>)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        let _ = std::future::poll_fn(|cx| Pin::new(&mut lock(wire).io).poll_shutdown(cx)).await;
        let mut dropped = 0usize;
        loop {
            let n = std::future::poll_fn(|cx| {
                let mut w = lock(wire);
                w.buf.clear();
                w.poll_fill(cx)
            })
            .await;
            match n {
                Ok(n) if n > 0 && dropped < DISCARD_MAX as usize => dropped += n,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Appends `n` in lowercase hex (a chunk size).
fn put_hex(out: &mut BytesMut, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    let mut v = n;
    loop {
        i -= 1;
        tmp[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends a `date` field (RFC 9110 §6.6.1), formatted once a second per thread.
fn put_date(out: &mut BytesMut) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let now = jiff::Timestamp::now();
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != now.as_second() {
            let printer = jiff::fmt::rfc2822::DateTimePrinter::new();
            if let Ok(s) = printer.timestamp_to_rfc9110_string(&now) {
                *d = (now.as_second(), s);
            }
        }
        if !d.1.is_empty() {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(d.1.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_are_authorities_are_accepted() {
        for host in [
            "",
            "x",
            "example.com:443",
            "[::1]:8080",
            "127.0.0.1",
            "xn--bcher-kva.example",
            "a_b",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(matches!(parse(&raw), Ok(Some(_))), "{host:?} refused");
        }
    }

    #[test]
    fn the_end_of_a_head_is_seen_in_any_line_ending() {
        for ends in ["\r\n\r\n", "\n\n", "\n\r\n", "x\r\n\r\nbody"] {
            assert!(may_end_head(ends.as_bytes()), "{ends:?}");
        }
        for not in [
            "",
            "\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "\n\r",
            "\r\n\r",
        ] {
            assert!(!may_end_head(not.as_bytes()), "{not:?}");
        }
    }

    fn parse(raw: &str) -> Result<Option<Head>, Refusal> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_head(&mut buf)
    }

    fn head(raw: &str) -> Head {
        let mut buf = BytesMut::from(raw.as_bytes());
        let h = parse_head(&mut buf)
            .unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"))
            .unwrap_or_else(|| panic!("{raw:?} incomplete"));
        assert!(buf.is_empty(), "the head was not taken out of the buffer");
        h
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("POST /hook?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(h.request.uri().path(), "/hook");
        assert_eq!(h.request.uri().query(), Some("a=1"));
        assert!(!h.close);
        let h = head("POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        let h = head("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        // Repeated identical lengths are one length.
        let h =
            head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(3));
        // HTTP/1.0 closes unless it asks to keep alive; 1.1 closes when it asks to.
        assert!(head("GET / HTTP/1.0\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n").close);
        for expect in [
            "Expect: 100-continue\r\nExpect: foo",
            "Expect: foo, 100-continue",
        ] {
            let h = head(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\n{expect}\r\nContent-Length: 1\r\n\r\n"
            ));
            assert!(h.expect_continue, "{expect}");
        }
        let h =
            head("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for raw in [
            // The smuggling shapes: both framings, a disguised or repeated chunked.
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            // Host missing or twice.
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            // A Host that is no authority.
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n",
            // Obsolete line folding, a space before the colon, a bad version.
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(Refusal::BadRequest(_))),
                "{raw:?} was accepted"
            );
        }
    }

    #[test]
    fn partial_heads_wait_and_huge_ones_are_refused() {
        assert!(matches!(
            parse("POST /hook HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        ));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert!(matches!(parse(&raw), Err(Refusal::TooLarge)));
        // Complete in one read, but over the limit all the same.
        let big = "a".repeat(MAX_HEAD);
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        assert!(matches!(parse(&raw), Err(Refusal::TooLarge)));
    }

    #[test]
    fn pipelined_requests_stay_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        );
        let a = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(a.request.uri().path(), "/a");
        let b = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(b.request.uri().path(), "/b");
        assert!(buf.is_empty());
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for n in [0u64, 1, 15, 16, 255, 4096, u64::MAX] {
            let mut out = BytesMut::new();
            put_hex(&mut out, n);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{n:x}"));
        }
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut out = BytesMut::new();
        put_date(&mut out);
        let line = std::str::from_utf8(&out).unwrap();
        // e.g. "date: Sun, 29 Nov 2026 23:40:01 GMT\r\n"
        assert!(
            line.starts_with("date: ") && line.ends_with(" GMT\r\n"),
            "{line}"
        );
        assert_eq!(line.len(), "date: Sun, 29 Nov 2026 23:40:01 GMT\r\n".len());
    }
}
