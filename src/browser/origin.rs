//! Web origins (`scheme://host[:port]`): parsing, and the one serialisation browsers send.
//!
//! RFC 6454 §6.1 and the WHATWG URL standard serialise an origin as the lower-case scheme,
//! `://`, the lower-case host (IDNs in their `xn--` form, IPv6 in brackets, compressed) and
//! `:port` only when the port is not the scheme's default. Browsers send exactly that in
//! `Origin`, so the gateway compares the header byte for byte with the canonical form of each
//! configured origin: anything else (`HTTPS://SHOP.EXAMPLE.COM`, `https://shop.example.com:443`,
//! a trailing `/`) can only come from a hand-made request and is refused.
//!
//! The config side is lenient where intent is unambiguous (case, an explicit default port) and
//! strict everywhere else (paths, wildcards, userinfo, `null`).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A parsed origin in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    serialized: String,
}

impl Origin {
    /// The canonical serialisation, as a browser sends it in `Origin`.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// Parses `input` case-insensitively, dropping an explicit default port.
    pub fn parse(input: &str) -> Result<Origin, OriginError> {
        if input.is_empty() {
            return Err(OriginError::Empty);
        }
        if input.eq_ignore_ascii_case("null") {
            return Err(OriginError::Null);
        }
        if input.contains('*') {
            return Err(OriginError::Wildcard);
        }
        if !input.is_ascii() {
            return Err(OriginError::NotAscii);
        }
        if input
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(OriginError::Whitespace);
        }
        let (scheme, rest) = input.split_once("://").ok_or(OriginError::NoScheme)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(OriginError::Scheme),
        };
        if rest.contains(['/', '?', '#']) {
            return Err(OriginError::Path);
        }
        if rest.contains('@') {
            return Err(OriginError::Userinfo);
        }
        let (host, port) = split_host_port(rest)?;
        let host = canonical_host(host)?;
        let port = match port {
            None => None,
            Some(p) => {
                if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(OriginError::Port);
                }
                match p.parse::<u16>() {
                    Ok(0) | Err(_) => return Err(OriginError::Port),
                    Ok(n) if n == default_port => None,
                    Ok(n) => Some(n),
                }
            }
        };
        let serialized = match port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        };
        Ok(Origin { serialized })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

/// Why a string is not an origin. The messages complete "… is not a usable origin: ".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Nothing at all.
    #[error("it is empty")]
    Empty,
    /// The opaque origin of sandboxed frames, `file:` pages and redirects.
    #[error(
        "\"null\" is the origin of sandboxed frames and local files, which any page can produce"
    )]
    Null,
    /// A wildcard.
    #[error("wildcards are not supported")]
    Wildcard,
    /// Non-ASCII characters.
    #[error("it contains non-ASCII characters")]
    NotAscii,
    /// Spaces or control characters.
    #[error("it contains spaces or control characters")]
    Whitespace,
    /// No `scheme://`.
    #[error("it has no scheme")]
    NoScheme,
    /// Not http or https.
    #[error("the scheme is not http or https")]
    Scheme,
    /// A path, query or fragment (including a lone trailing `/`).
    #[error("it has a path, query or fragment (an origin ends after the host or port)")]
    Path,
    /// `user:password@`.
    #[error("it contains user information")]
    Userinfo,
    /// The host is empty or not a DNS name or IP address.
    #[error("the host is not a valid DNS name or IP address")]
    Host,
    /// The port is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    Port,
}

fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), OriginError> {
    if let Some(after) = rest.strip_prefix('[') {
        let (inside, tail) = after.split_once(']').ok_or(OriginError::Host)?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or(OriginError::Host)?),
        };
        // Keep the brackets so `canonical_host` knows it is IPv6.
        return Ok((&rest[..inside.len() + 2], port));
    }
    match rest.split_once(':') {
        Some((h, p)) => Ok((h, Some(p))),
        None => Ok((rest, None)),
    }
}

fn canonical_host(host: &str) -> Result<String, OriginError> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| OriginError::Host)?;
        return Ok(format!("[{ip}]"));
    }
    if host.is_empty() || host.len() > 253 {
        return Err(OriginError::Host);
    }
    let lower = host.to_ascii_lowercase();
    if lower.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Only dotted-quad IPv4 is an IP; browsers rewrite other numeric forms, and a name made
        // of digits alone is not a valid DNS name either.
        let ip: Ipv4Addr = lower.parse().map_err(|_| OriginError::Host)?;
        return Ok(ip.to_string());
    }
    for label in lower.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(OriginError::Host);
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Origin::parse(s).unwrap().as_str().to_owned()
    }

    #[test]
    fn canonical_forms_are_lower_case_without_default_ports() {
        assert_eq!(
            canon("https://shop.example.com"),
            "https://shop.example.com"
        );
        assert_eq!(
            canon("HTTPS://Shop.Example.COM"),
            "https://shop.example.com"
        );
        assert_eq!(
            canon("https://shop.example.com:443"),
            "https://shop.example.com"
        );
        assert_eq!(
            canon("http://shop.example.com:80"),
            "http://shop.example.com"
        );
        assert_eq!(
            canon("http://shop.example.com:443"),
            "http://shop.example.com:443"
        );
        assert_eq!(
            canon("https://shop.example.com:8443"),
            "https://shop.example.com:8443"
        );
        assert_eq!(canon("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(canon("http://[0:0:0:0:0:0:0:1]:8081"), "http://[::1]:8081");
        assert_eq!(
            canon("https://xn--bcher-kva.example"),
            "https://xn--bcher-kva.example"
        );
    }

    #[test]
    fn non_origins_are_refused_with_their_cause() {
        let cases: &[(&str, OriginError)] = &[
            ("", OriginError::Empty),
            ("null", OriginError::Null),
            ("NULL", OriginError::Null),
            ("https://*.example.com", OriginError::Wildcard),
            ("*", OriginError::Wildcard),
            ("https://bücher.example", OriginError::NotAscii),
            ("https://shop.example.com ", OriginError::Whitespace),
            ("shop.example.com", OriginError::NoScheme),
            ("ftp://shop.example.com", OriginError::Scheme),
            ("file://", OriginError::Scheme),
            ("https://shop.example.com/", OriginError::Path),
            ("https://shop.example.com/chat", OriginError::Path),
            ("https://shop.example.com?x", OriginError::Path),
            ("https://shop.example.com#x", OriginError::Path),
            ("https://user@shop.example.com", OriginError::Userinfo),
            ("https://", OriginError::Host),
            ("https://shop..example.com", OriginError::Host),
            ("https://shop.example.com.", OriginError::Host),
            ("https://-shop.example.com", OriginError::Host),
            ("https://1.2.3", OriginError::Host),
            ("https://[::1", OriginError::Host),
            ("https://[::1]x", OriginError::Host),
            ("https://shop.example.com:443x", OriginError::Port),
            ("https://shop.example.com:", OriginError::Port),
            ("https://shop.example.com:0", OriginError::Port),
            ("https://shop.example.com:65536", OriginError::Port),
            ("https://shop.example.com:+443", OriginError::Port),
        ];
        for (input, want) in cases {
            assert_eq!(Origin::parse(input), Err(*want), "{input:?}");
        }
    }
}
