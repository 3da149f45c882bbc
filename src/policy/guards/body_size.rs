//! The declared-size guard: 413 from `Content-Length` before the body is touched.
//!
//! The limit is enforced a second time while the body is read (chunked bodies have no length),
//! so this guard is only the early, free refusal.

use http::header;

use crate::policy::{Denial, Exchange, Reason};

/// Refuses a declared `Content-Length` over the route's `max_body` (`body_too_large`).
#[derive(Debug, Clone, Copy)]
pub struct BodySizeGuard {
    max: u64,
}

impl BodySizeGuard {
    /// A guard for bodies up to `max` bytes.
    pub fn new(max: u64) -> Self {
        BodySizeGuard { max }
    }

    /// Checks `Content-Length`.
    pub fn check(&self, ex: &Exchange) -> Result<(), Denial> {
        let declared = ex
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(n) if n > self.max => Err(Denial::new(Reason::BodyTooLarge)),
            _ => Ok(()),
        }
    }
}
