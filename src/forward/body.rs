//! Response bodies: the gateway's own small answers, and upstream streams passed through
//! frame by frame with an idle timeout.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::passed::PassedHead;
use tokio::time::{Instant, Sleep};

/// Errors a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body whose upstream went quiet for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for longer than {0:?}")]
pub struct IdleTimeoutError(pub Duration);

/// The body of every response the public listener sends. An enum rather than a boxed trait
/// object keeps the gateway's own answers free of an allocation. An upstream's body is boxed:
/// a response is moved from frame to frame about ten times on its way to the client, and
/// inline its 170 bytes were copied each time (more than the allocation costs).
pub enum ResponseBody {
    /// A complete body (errors, health checks, gateway endpoints).
    Full(Option<Bytes>),
    /// An upstream's body, streamed through.
    Stream(Box<Streamed>),
}

/// An upstream's body on its way through.
pub struct Streamed {
    /// The body.
    body: IdleTimeout<UpstreamBody>,
    /// The upstream's head fields, when they are passed on as they came rather than through
    /// the response's header map: the HTTP/1.1 listener writes them after the map's fields
    /// (`server::h1`); see [`super::passed`].
    passed: Option<PassedHead>,
}

/// An upstream response's body: `Left` from the lean HTTP/1.1 client (plain-`http`
/// upstreams), `Right` from hyper's client (`https` upstreams).
pub type UpstreamBody = http_body_util::Either<super::h1::Body, Incoming>;

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        ResponseBody::Full((!b.is_empty()).then_some(b))
    }

    /// No body.
    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    /// An upstream's body, its head in the response's header map.
    pub fn stream(body: IdleTimeout<UpstreamBody>) -> Self {
        ResponseBody::Stream(Box::new(Streamed { body, passed: None }))
    }

    /// An upstream's body, with its head's fields to be written as they came.
    pub fn passed(body: IdleTimeout<UpstreamBody>, head: PassedHead) -> Self {
        ResponseBody::Stream(Box::new(Streamed {
            body,
            passed: Some(head),
        }))
    }

    /// The upstream head fields this body carries, if any, to add a field of the gateway's own
    /// to them ([`PassedHead::push_own`]).
    pub fn passed_mut(&mut self) -> Option<&mut PassedHead> {
        match self {
            ResponseBody::Stream(s) => s.passed.as_mut(),
            ResponseBody::Full(_) => None,
        }
    }

    /// Takes the upstream head fields this body carries, if any: whoever writes the response
    /// must write them too (or merge them into the header map first).
    pub fn take_passed(&mut self) -> Option<PassedHead> {
        match self {
            ResponseBody::Stream(s) => s.passed.take(),
            ResponseBody::Full(_) => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(s) => Pin::new(&mut s.body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream(s) => s.body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(s) => s.body.inner.size_hint(),
        }
    }
}

/// Wraps a body and fails it when no frame arrives within `idle` of being asked for one.
///
/// The clock starts when the consumer asks for the next frame, not when the last one was
/// produced, so a slow reader (back-pressure) never counts against the upstream. The timer is
/// made only when the inner body first has nothing ready: most upstream answers are read
/// whole from what the socket already holds, and a timer per response (an allocation, a clock
/// read, registering with the driver and taking it out again) cost about 1,000 instructions.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Made at the first wait.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame came since the timer was set: it must be set afresh before the next wait.
    rearm: bool,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            sleep: None,
            rearm: false,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.rearm = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        // Nothing ready: this ask is where the wait starts, unless it has started already.
        let idle = this.idle;
        let sleep = match &mut this.sleep {
            Some(sleep) => {
                if this.rearm {
                    sleep.as_mut().reset(Instant::now() + idle);
                }
                sleep
            }
            none => none.insert(Box::pin(tokio::time::sleep(idle))),
        };
        this.rearm = false;
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(IdleTimeoutError(idle)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_body_util::channel::Channel;

    /// Pauses shorter than the idle time pass however long the whole body takes; a pause
    /// longer fails the body, counted from the ask that found nothing.
    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_restarts_with_every_frame() {
        let (mut tx, inner) = Channel::<Bytes, BoxError>::new(1);
        let mut body = IdleTimeout::new(inner, Duration::from_millis(300));
        tokio::spawn(async move {
            for i in 0..4u8 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tx.send_data(Bytes::from(vec![b'0' + i])).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(tx);
        });
        for i in 0..4u8 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from(vec![b'0' + i]));
        }
        let asked = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeoutError>(), "{err}");
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(400),
            "{waited:?}"
        );
    }

    /// A body whose frames are all ready never sets a timer.
    #[tokio::test(start_paused = true)]
    async fn a_body_read_whole_at_once_sets_no_timer() {
        let inner = http_body_util::Full::new(Bytes::from_static(b"whole"));
        let mut body = IdleTimeout::new(inner, Duration::from_millis(1));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "whole");
        assert!(body.frame().await.is_none());
        assert!(body.sleep.is_none());
    }
}
