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
        // As bytes: the text view checks every byte and the `;` search and trim of `str` are
        // general; about 250 instructions a request more. A value with a byte past ASCII is
        // refused, as it always was (its text view failed).
        let value = value.as_bytes();
        let media = if value.is_ascii() {
            value
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii()
        } else {
            b""
        };
        if self
            .allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(media))
        {
            Ok(())
        } else {
            Err(Denial::new(Reason::UnsupportedMediaType))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::guards::testing::exchange;
    use http::HeaderValue;

    fn check(values: &[&[u8]], has_body: bool) -> Result<(), Reason> {
        let guard = ContentTypeGuard::new(vec!["application/json".into(), "text/plain".into()]);
        let mut ex = exchange("192.0.2.1");
        ex.has_body = has_body;
        for v in values {
            let v = HeaderValue::from_bytes(v).expect("a valid field value");
            ex.headers.append(header::CONTENT_TYPE, v);
        }
        guard.check(&ex).map_err(|d| d.reason)
    }

    #[test]
    fn the_media_type_is_compared_without_parameters_case_or_spaces() {
        for ok in [
            &b"application/json"[..],
            b"Application/JSON",
            b"application/json; charset=utf-8",
            b"  text/plain ;format=flowed",
            b"text/plain;",
        ] {
            assert_eq!(
                check(&[ok], true),
                Ok(()),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        for refused in [
            &b"application/jsonx"[..],
            b"application/json-patch+json",
            b"application/jso",
            b"xapplication/json",
            b"application / json",
            b"",
            b";application/json",
            // A byte past ASCII anywhere, parameters included, is refused as before.
            b"application/json; charset=\xe9",
        ] {
            assert_eq!(
                check(&[refused], true),
                Err(Reason::UnsupportedMediaType),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn a_missing_or_repeated_content_type_is_refused_when_it_matters() {
        assert_eq!(check(&[], false), Ok(()));
        assert_eq!(check(&[], true), Err(Reason::UnsupportedMediaType));
        assert_eq!(
            check(&[b"application/json", b"text/plain"], true),
            Err(Reason::UnsupportedMediaType)
        );
    }
}
