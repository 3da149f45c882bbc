//! The origin guard: a browser route answers only pages on its `allowed_origins`.
//!
//! The `Origin` header must be byte for byte one of the configured origins in the form
//! browsers send (see [`crate::browser::origin`]): lower-case scheme and host, no default port,
//! nothing after the host or port. There are no wildcards and no suffix matching, so
//! `https://shop.example.com.evil.net` and `https://evilshop.example.com` are as foreign as
//! any other site. `Referer` is never consulted: it is optional, often trimmed by referrer
//! policies, and no substitute for the header browsers attach to every cross-origin request.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};

use crate::browser::origin::Origin;
use crate::policy::{Denial, Exchange, Reason};

/// Refuses requests without an `Origin` (`origin_missing`) or with one not listed
/// (`origin_denied`).
#[derive(Debug, Clone)]
pub struct OriginGuard {
    allowed: Arc<[Origin]>,
}

impl OriginGuard {
    /// A guard admitting exactly `allowed` (none: refuse everything).
    pub fn new(allowed: &[Origin]) -> Self {
        OriginGuard {
            allowed: allowed.into(),
        }
    }

    /// The `Origin` header of `headers` when it is allowed.
    pub fn admit<'h>(&self, headers: &'h HeaderMap) -> Result<&'h HeaderValue, Denial> {
        let mut values = headers.get_all(header::ORIGIN).iter();
        let Some(value) = values.next() else {
            return Err(Denial::new(Reason::OriginMissing));
        };
        if values.next().is_some() {
            return Err(Denial::new(Reason::OriginDenied).with_detail("several Origin headers"));
        }
        let bytes = value.as_bytes();
        if self.allowed.iter().any(|o| o.as_str().as_bytes() == bytes) {
            return Ok(value);
        }
        Err(Denial::new(Reason::OriginDenied).with_detail(why_denied(bytes)))
    }

    /// Checks the request's `Origin`.
    pub fn check(&self, ex: &Exchange) -> Result<(), Denial> {
        self.admit(&ex.headers).map(|_| ())
    }
}

/// Audit detail for a refused origin: telling a typo in the config from an attack helps.
fn why_denied(value: &[u8]) -> &'static str {
    let Ok(text) = std::str::from_utf8(value) else {
        return "origin is not text";
    };
    if text == "null" {
        return "origin null";
    }
    match Origin::parse(text) {
        Err(_) => "origin malformed",
        Ok(o) if o.as_str() != text => "origin not in the form browsers send",
        Ok(_) => "origin not allowed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> OriginGuard {
        OriginGuard::new(&[
            Origin::parse("https://shop.example.com").unwrap(),
            Origin::parse("http://127.0.0.1:8081").unwrap(),
        ])
    }

    fn headers(origins: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for o in origins {
            h.append(header::ORIGIN, HeaderValue::from_bytes(o).unwrap());
        }
        h
    }

    fn verdict(origins: &[&[u8]]) -> Result<(), (Reason, Option<&'static str>)> {
        guard()
            .admit(&headers(origins))
            .map(|_| ())
            .map_err(|d| (d.reason, d.detail))
    }

    #[test]
    fn exact_origins_pass() {
        assert_eq!(verdict(&[b"https://shop.example.com"]), Ok(()));
        assert_eq!(verdict(&[b"http://127.0.0.1:8081"]), Ok(()));
    }

    #[test]
    fn a_missing_origin_is_origin_missing_even_with_a_referer() {
        let mut h = HeaderMap::new();
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://shop.example.com/page"),
        );
        let d = guard().admit(&h).unwrap_err();
        assert_eq!(d.reason, Reason::OriginMissing);
    }

    #[test]
    fn look_alikes_are_denied_with_a_detail() {
        use Reason::OriginDenied as D;
        let cases: &[(&[u8], &str)] = &[
            (b"https://shop.example.com.evil.net", "origin not allowed"),
            (b"https://evilshop.example.com", "origin not allowed"),
            (b"https://evil.net", "origin not allowed"),
            (b"http://shop.example.com", "origin not allowed"),
            (b"https://shop.example.com:8443", "origin not allowed"),
            (b"http://127.0.0.1:8082", "origin not allowed"),
            (b"http://localhost:8081", "origin not allowed"),
            (b"null", "origin null"),
            (
                b"HTTPS://SHOP.EXAMPLE.COM",
                "origin not in the form browsers send",
            ),
            (
                b"https://Shop.example.com",
                "origin not in the form browsers send",
            ),
            (
                b"https://shop.example.com:443",
                "origin not in the form browsers send",
            ),
            (b"https://shop.example.com/", "origin malformed"),
            (b"https://shop.example.com:443x", "origin malformed"),
            (b"https://shop.example.com ", "origin malformed"),
            (b"https://shop.example.com\t", "origin malformed"),
            (b"shop.example.com", "origin malformed"),
            (b"", "origin malformed"),
            (b"*", "origin malformed"),
            (b"https://shop.example.com\xff", "origin is not text"),
        ];
        for (value, detail) in cases {
            assert_eq!(
                verdict(&[value]),
                Err((D, Some(*detail))),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn two_origin_headers_are_denied_even_if_one_is_allowed() {
        assert_eq!(
            verdict(&[b"https://shop.example.com", b"https://evil.net"]),
            Err((Reason::OriginDenied, Some("several Origin headers")))
        );
    }

    #[test]
    fn no_allowed_origins_refuses_everything() {
        let g = OriginGuard::new(&[]);
        let d = g
            .admit(&headers(&[b"https://shop.example.com"]))
            .unwrap_err();
        assert_eq!(d.reason, Reason::OriginDenied);
    }
}
