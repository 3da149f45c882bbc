//! Request bodies as the gateway reads them: from the gateway's own HTTP/1.1 connections, or
//! from hyper's HTTP/2 streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::forward::body::BoxError;

/// A request's body. An enum rather than a boxed trait object: one per request, on the path
/// every request takes.
#[derive(Debug)]
pub enum RequestBody {
    /// From an HTTP/1.1 connection (`h1.rs`); what the gateway leaves unread, the connection
    /// reads and drops after the response.
    H1(super::h1::Body),
    /// From an HTTP/2 stream (hyper).
    H2(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::H1(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::H1(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
        }
    }
}
