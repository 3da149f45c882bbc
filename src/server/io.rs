//! A socket wrapper that fails writes which make no progress for too long.
//!
//! A client that stops reading (a stalled browser tab on an endless SSE stream, or an attacker)
//! would otherwise keep its connection, the upstream's connection and the buffers in between
//! for ever: hyper has no write timeout, and the upstream body's idle timeout deliberately does
//! not count time the client spends not reading. Like nginx's `send_timeout`, the deadline runs
//! only while a write is blocked, and restarts on every byte accepted.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Wraps `inner`; a write blocked for `timeout` fails with `TimedOut`.
pub struct SendTimeout<I> {
    inner: I,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<I> SendTimeout<I> {
    /// Wraps a socket.
    pub fn new(inner: I, timeout: Duration) -> Self {
        SendTimeout {
            inner,
            timeout,
            deadline: None,
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// Called when a write is pending: arms the deadline if needed and reports whether it
    /// passed.
    fn blocked(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        sleep.as_mut().poll(cx).is_ready()
    }

    fn progressed(&mut self) {
        self.deadline = None;
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "client did not read the response in time",
    )
}

impl<I: AsyncRead + Unpin> AsyncRead for SendTimeout<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendTimeout<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => {
                if this.blocked(cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => {
                if this.blocked(cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => {
                if this.blocked(cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<I> std::fmt::Debug for SendTimeout<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTimeout")
            .field("timeout", &self.timeout)
            .field("blocked", &self.deadline.is_some())
            .finish()
    }
}
