//! Request bodies as the gateway reads them: from the gateway's own HTTP/1.1 connections, or
//! from hyper's HTTP/2 streams.

use hyper::body::Incoming;

/// A request's body: `Left` from an HTTP/1.1 connection (`h1.rs`; what the gateway leaves
/// unread, the connection reads and drops after the response), `Right` from an HTTP/2 stream
/// (hyper). An enum rather than a boxed trait object: one per request, on the path every
/// request takes.
pub type RequestBody = http_body_util::Either<super::h1::Body, Incoming>;
