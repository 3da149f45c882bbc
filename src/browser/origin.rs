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
        return Ok(format!("[{}]", ipv6_serialized(ip)));
    }
    if host.is_empty() || host.len() > 253 {
        return Err(OriginError::Host);
    }
    let lower = host.to_ascii_lowercase();
    if let Some(ip) = whatwg_ipv4(&lower) {
        // A host ending in a number is an IPv4 address to a browser, in any of the forms it
        // accepts (`127.1`, `0x7f.0.0.1`, `2130706433`); it sends the dotted quad.
        return Ok(ip.ok_or(OriginError::Host)?.to_string());
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

/// An IPv6 address as the URL standard serialises it: lower-case hex groups, the first
/// longest run of two or more zero groups as `::`, never a dotted IPv4 tail (Rust's `Display`
/// writes `::ffff:127.0.0.1` where a browser sends `::ffff:7f00:1`).
fn ipv6_serialized(ip: Ipv6Addr) -> String {
    let groups = ip.segments();
    // The first longest run of zeros, if at least two long.
    let (mut best, mut best_len, mut i) = (None, 1, 0);
    while i < 8 {
        if groups[i] == 0 {
            let start = i;
            while i < 8 && groups[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best = Some(start);
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    let mut out = String::with_capacity(39);
    let mut i = 0;
    while i < 8 {
        if best == Some(i) {
            out.push_str(if i == 0 { "::" } else { ":" });
            i += best_len;
            continue;
        }
        out.push_str(&format!("{:x}", groups[i]));
        if i < 7 {
            out.push(':');
        }
        i += 1;
    }
    out
}

/// The URL standard's IPv4 parser: `None` when `host` does not end in a number (a domain),
/// `Some(None)` when it does but is not a valid address (a browser refuses such a URL).
fn whatwg_ipv4(host: &str) -> Option<Option<Ipv4Addr>> {
    let mut parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    let last = *parts.last()?;
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if last.is_empty() || !numeric {
        return None;
    }
    if parts.len() > 4 {
        return Some(None);
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for p in &parts {
        match ipv4_number(p) {
            Some(n) => numbers.push(n),
            None => return Some(None),
        }
    }
    let (last, init) = numbers.split_last()?;
    if init.iter().any(|&n| n > 255) || *last >= 256u64.pow(5 - numbers.len() as u32) {
        return Some(None);
    }
    let mut addr = *last;
    for (i, n) in init.iter().enumerate() {
        addr += n << (8 * (3 - i));
    }
    Some(u32::try_from(addr).ok().map(Ipv4Addr::from))
}

/// One part of a URL-standard IPv4 address: decimal, `0x` hex (digits optional) or, with a
/// leading zero, octal. At most 32 bits' worth, so sums cannot overflow.
fn ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits.trim_start_matches('0'), radix)
        .ok()
        .or_else(|| digits.bytes().all(|b| b == b'0').then_some(0))
        .filter(|&n| n <= u64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Origin::parse(s).unwrap().as_str().to_owned()
    }

    /// Hosts in the forms a browser rewrites: each configured origin must equal what the
    /// browser sends. Expected values are Node.js's WHATWG `new URL(u).origin` (v20).
    #[test]
    fn numeric_hosts_are_serialised_as_browsers_send_them() {
        for (config, sent) in [
            (
                "http://[::ffff:127.0.0.1]:8081",
                "http://[::ffff:7f00:1]:8081",
            ),
            ("http://0x7f.0.0.1", "http://127.0.0.1"),
            ("http://127.1", "http://127.0.0.1"),
            ("http://2130706433", "http://127.0.0.1"),
            ("http://0177.0.0.1", "http://127.0.0.1"),
            ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
            (
                "http://[2001:db8:0:0:1:0:0:1]",
                "http://[2001:db8::1:0:0:1]",
            ),
            ("http://[1:0:0:2:0:0:0:3]", "http://[1:0:0:2::3]"),
            ("http://[::]", "http://[::]"),
            ("http://[1::]", "http://[1::]"),
            ("http://127.0.0.1.", "http://127.0.0.1"),
            ("http://0x.0", "http://0.0.0.0"),
            ("http://0xffffffff", "http://255.255.255.255"),
            ("http://00000000000000000000000000001.1", "http://1.0.0.1"),
            ("http://[::127.0.0.1]", "http://[::7f00:1]"),
            ("https://1.2.3", "https://1.2.0.3"),
        ] {
            assert_eq!(canon(config), sent, "{config}");
        }
        for invalid in [
            "http://0x100000000",
            "http://1.0x100000000",
            "http://256.0.0.1",
            "http://1.2.3.4.5",
            "http://example.0x",
            "http://foo.09",
            "http://4294967296",
            "http://1.0x100.1",
        ] {
            assert!(Origin::parse(invalid).is_err(), "{invalid}");
        }
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
            ("https://1.2.3.256", OriginError::Host),
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
