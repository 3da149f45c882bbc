//! The content-type guard: 415 for a media type outside the route's `content_types`.

use http::header;

use crate::policy::{Denial, Exchange, Reason};

/// Refuses bodies whose media type (parameters ignored, case-insensitive) is not listed
/// (`unsupported_media_type`). A request without a body and without a `Content-Type` passes.
#[derive(Debug, Clone)]
pub struct ContentTypeGuard {
    allowed: Vec<String>,
}

impl ContentTypeGuard {
    /// A guard accepting `allowed` media types (lower case, no parameters).
    pub fn new(allowed: Vec<String>) -> Self {
        ContentTypeGuard { allowed }
    }

    /// Checks `Content-Type`.
    pub fn check(&self, ex: &Exchange) -> Result<(), Denial> {
        let mut values = ex.headers.get_all(header::CONTENT_TYPE).iter();
        let first = values.next();
        // Two Content-Type headers: this check would see the first, an upstream might believe
        // the last.
        if values.next().is_some() {
            return Err(Denial::new(Reason::UnsupportedMediaType)
                .with_detail("several Content-Type headers"));
        }
        let Some(value) = first else {
            return if ex.has_body {
                Err(Denial::new(Reason::UnsupportedMediaType))
            } else {
                Ok(())
            };
        };
        let media = value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if self.allowed.iter().any(|a| a.eq_ignore_ascii_case(media)) {
            Ok(())
        } else {
            Err(Denial::new(Reason::UnsupportedMediaType))
        }
    }
}
