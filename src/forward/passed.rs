//! Upstream response heads passed through as bytes.
//!
//! The lean HTTP/1.1 client (`h1.rs`) keeps the end-to-end fields of a plain-`http` upstream's
//! response head as the `name: value` lines the listener will write, instead of building a
//! header map that the listener then writes out again field by field: the map (a name lookup,
//! a value copy and a hash per field, then its drop) cost 3,700 instructions a proxied request
//! more than the lines do (`bench/run --instructions`, docs/benchmarks.md). The map is still built
//! ([`PassedHead::into_map`]) whenever a response rule has to read or change a field the
//! upstream sent: the head says so itself ([`PassedHead::is_ruled`]), and the gateway does it
//! for HTTP/2 and for responses that carry headers of its own besides `X-Request-Id`.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::digits::decimal;

/// What a response head field means to the gateway, by name (ASCII case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// `Content-Length`: read for the framing, written by the listener from the value.
    ContentLength,
    /// `Transfer-Encoding`: read for the framing, never passed on.
    TransferEncoding,
    /// `Connection`: read for persistence; passed to the rules only when it names other fields.
    Connection,
    /// Another hop-by-hop field ([`super::headers::is_hop_by_hop`]): never passed on.
    HopByHop,
    /// A field some response rule removes or replaces: `Location`, `Content-Location` and
    /// `Refresh` (they may name the upstream), `X-Request-Id` and `Strict-Transport-Security`
    /// (the gateway's own), and the CORS fields a browser route sets.
    Ruled,
    /// `Link` and `Set-Cookie`: passed on unless a value holds the upstream's secret path
    /// ([`PassedHead::names_secret`]); most responses with them pass as they came.
    Scanned,
    /// `Date`: passed on, and the listener then adds none of its own.
    Date,
    /// Any other end-to-end field: passed on as it came.
    Other,
}

/// True when `name` is `lower` in any letter case, for a `lower` of lowercase letters and `-`
/// (every name [`field_kind`] knows). Every byte is looked at, so the compare runs on vectors
/// rather than a case fold and a branch a byte (about 250 instructions a response): a byte
/// matches a letter when it is that letter with the case bit set or not, and `-` only as
/// itself (`a >= b'-'` rules out the one other byte, CR, that `| 0x20` maps onto it).
fn is_name(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower.as_bytes())
            .fold(true, |ok, (&a, &b)| ok & ((a | 0x20) == b) & (a >= b'-'))
}

/// Classifies a field name without building a [`HeaderName`]. Inlined into the response
/// parser: called as a function it cost about 170 instructions a response more.
#[inline(always)]
pub(crate) fn field_kind(name: &[u8]) -> FieldKind {
    let is = |s: &str| is_name(name, s);
    match name.len() {
        2 if is("te") => FieldKind::HopByHop,
        4 if is("date") => FieldKind::Date,
        4 if is("link") => FieldKind::Scanned,
        10 if is("set-cookie") => FieldKind::Scanned,
        7 if is("trailer") || is("upgrade") => FieldKind::HopByHop,
        7 if is("refresh") => FieldKind::Ruled,
        8 if is("location") => FieldKind::Ruled,
        10 if is("connection") => FieldKind::Connection,
        10 if is("keep-alive") => FieldKind::HopByHop,
        12 if is("x-request-id") => FieldKind::Ruled,
        14 if is("content-length") => FieldKind::ContentLength,
        16 if is("content-location") => FieldKind::Ruled,
        16 if is("proxy-connection") => FieldKind::HopByHop,
        17 if is("transfer-encoding") => FieldKind::TransferEncoding,
        18 if is("proxy-authenticate") => FieldKind::HopByHop,
        19 if is("proxy-authorization") => FieldKind::HopByHop,
        25 if is("strict-transport-security") => FieldKind::Ruled,
        27 if is("access-control-allow-origin") => FieldKind::Ruled,
        29 if is("access-control-expose-headers") => FieldKind::Ruled,
        32 if is("access-control-allow-credentials") => FieldKind::Ruled,
        _ => FieldKind::Other,
    }
}

/// The end-to-end fields of an upstream's response head, as `name: value\r\n` lines in the
/// order the upstream sent them (names as it spelled them), without the framing fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassedHead {
    lines: Vec<u8>,
    content_length: Option<u64>,
    ruled: bool,
    dated: bool,
    /// A `Scanned` field is among the lines.
    scanned: bool,
    /// Bit `n` set when a field name has `n` bytes (63 for longer ones): most names the guards
    /// set have a length none of the upstream's names has, so most lookups read no line.
    name_lengths: u64,
}

/// The bit of [`PassedHead`]'s name lengths for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl PassedHead {
    /// An empty head, with room for `fields` typical fields.
    pub(crate) fn with_fields(fields: usize) -> Self {
        PassedHead {
            lines: Vec::with_capacity(fields * 32),
            ..PassedHead::default()
        }
    }

    /// Adds a field the parser has validated (an HTTP token as name; a value of visible
    /// characters, spaces, tabs and obs-text). A `Ruled` field, or a `Connection` field passed
    /// here because it names others, marks the head for the rules.
    pub(crate) fn push(&mut self, kind: FieldKind, name: &[u8], value: &[u8]) {
        match kind {
            FieldKind::Ruled | FieldKind::Connection => self.ruled = true,
            FieldKind::Date => self.dated = true,
            FieldKind::Scanned => self.scanned = true,
            _ => {}
        }
        self.name_lengths |= length_bit(name.len());
        self.lines.extend_from_slice(name);
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value);
        self.lines.extend_from_slice(b"\r\n");
    }

    /// Adds a field of the gateway's own (`X-Request-Id`) to be written with the upstream's:
    /// put in the response's header map instead, it would make the map allocate, hash and drop
    /// for that one field (about 650 instructions a request). Refused (false, nothing added)
    /// for a value a header field cannot hold, or a head the rules will turn into a map.
    pub fn push_own(&mut self, name: &'static str, value: &str) -> bool {
        if !super::headers::is_field_value(value.as_bytes()) || self.ruled {
            return false;
        }
        self.push(FieldKind::Other, name.as_bytes(), value.as_bytes());
        true
    }

    /// Sets the response's `Content-Length`, written by the listener (and by
    /// [`Self::into_map`]) as a field of its own.
    pub(crate) fn set_content_length(&mut self, length: Option<u64>) {
        self.content_length = length;
    }

    /// The `Content-Length` the upstream declared, when it framed the body by it.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// True when a field the upstream sent is one a response rule reads or changes: the head
    /// must go through the header map ([`Self::into_map`]) rather than be passed on as it is.
    pub fn is_ruled(&self) -> bool {
        self.ruled
    }

    /// True when a `Link` or `Set-Cookie` value holds one of `secret_parts` (so the head must
    /// go through the rules, which drop those fields).
    pub fn names_secret(&self, secret_parts: &[String]) -> bool {
        self.scanned
            && self.fields().any(|(name, value)| {
                field_kind(name) == FieldKind::Scanned
                    && secret_parts
                        .iter()
                        .any(|p| contains_bytes(value, p.as_bytes()))
            })
    }

    /// True when the upstream sent a `Date`.
    pub fn is_dated(&self) -> bool {
        self.dated
    }

    /// True when a field has the name of one of `map`'s (ASCII case-insensitive): the map's
    /// fields would replace it, so the head must go through the map.
    pub fn shares_a_name_with(&self, map: &HeaderMap) -> bool {
        map.keys().any(|k| {
            let k = k.as_str().as_bytes();
            self.name_lengths & length_bit(k.len()) != 0
                && self.fields().any(|(name, _)| name.eq_ignore_ascii_case(k))
        })
    }

    /// The `name: value\r\n` lines (no `Content-Length`; see [`Self::content_length`]).
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The fields as `(name, value)` pairs, in order, `Content-Length` excepted.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // Names are tokens: the first colon ends the name, and `push` put one space
                // after it.
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let value = line.get(colon + 2..).unwrap_or_default();
                (&line[..colon], value)
            })
    }

    /// The head as a header map, `Content-Length` included, for the response rules.
    pub fn into_map(self) -> Result<HeaderMap, InvalidField> {
        let mut map = HeaderMap::with_capacity(8);
        for (name, value) in self.fields() {
            let name = HeaderName::from_bytes(name).map_err(|_| InvalidField)?;
            let value = HeaderValue::from_bytes(value).map_err(|_| InvalidField)?;
            map.append(name, value);
        }
        if let Some(n) = self.content_length {
            let mut digits = [0u8; 20];
            let value = HeaderValue::from_str(decimal(n, &mut digits)).map_err(|_| InvalidField)?;
            map.append(http::header::CONTENT_LENGTH, value);
        }
        Ok(map)
    }
}

/// True when `needle` occurs in `haystack`.
pub(crate) fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A passed field that a header map does not take (the parser should have refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid header field in the upstream's response")]
pub struct InvalidField;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::headers::is_hop_by_hop;

    /// The vector compare agrees with a case-insensitive one for every byte at every place of
    /// every name it is used with.
    #[test]
    fn names_compare_as_case_insensitive_ascii() {
        let names = [
            "te",
            "date",
            "trailer",
            "upgrade",
            "refresh",
            "location",
            "connection",
            "keep-alive",
            "x-request-id",
            "content-length",
            "content-location",
            "proxy-connection",
            "transfer-encoding",
            "proxy-authenticate",
            "proxy-authorization",
            "strict-transport-security",
            "access-control-allow-origin",
            "access-control-expose-headers",
            "access-control-allow-credentials",
        ];
        for lower in names {
            assert!(lower.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            for at in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut name = lower.as_bytes().to_vec();
                    name[at] = b;
                    assert_eq!(
                        is_name(&name, lower),
                        name.eq_ignore_ascii_case(lower.as_bytes()),
                        "{lower} with {b:#04x} at {at}"
                    );
                }
            }
            assert!(!is_name(&lower.as_bytes()[1..], lower));
        }
    }

    /// The gateway's own field goes out with the upstream's, and only a value a field can hold
    /// into a head that is passed on as it is.
    #[test]
    fn a_field_of_the_gateways_own_is_added_only_when_it_can_be_written() {
        let mut head = PassedHead::with_fields(2);
        head.push(FieldKind::Other, b"Server", b"up/1");
        assert!(head.push_own("x-request-id", "0193abc"));
        let fields: Vec<_> = head.fields().collect();
        assert_eq!(
            fields,
            [
                (&b"Server"[..], &b"up/1"[..]),
                (&b"x-request-id"[..], &b"0193abc"[..])
            ]
        );
        let lines = head.lines().to_vec();
        assert!(!head.push_own("x-request-id", "a\r\nset-cookie: x=1"));
        assert!(!head.push_own("x-request-id", "a\u{7f}"));
        assert_eq!(head.lines(), &lines[..], "a refused value adds nothing");
        let mut ruled = PassedHead::with_fields(1);
        ruled.push(FieldKind::Ruled, b"Location", b"http://10.0.0.2/");
        assert!(!ruled.push_own("x-request-id", "0193abc"));
    }

    /// The byte classification agrees with the header-map rules for every name they single
    /// out, in any letter case, and leaves other names alone.
    #[test]
    fn field_kinds_agree_with_the_header_rules() {
        let ruled = [
            "location",
            "content-location",
            "refresh",
            "x-request-id",
            "strict-transport-security",
            "access-control-allow-origin",
            "access-control-expose-headers",
            "access-control-allow-credentials",
        ];
        let hop = [
            "te",
            "trailer",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
        ];
        for name in hop {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for (names, kind) in [
            (&ruled[..], FieldKind::Ruled),
            (&hop[..], FieldKind::HopByHop),
            (&["date"][..], FieldKind::Date),
            (&["link", "set-cookie"][..], FieldKind::Scanned),
            (&["connection"][..], FieldKind::Connection),
            (&["content-length"][..], FieldKind::ContentLength),
            (&["transfer-encoding"][..], FieldKind::TransferEncoding),
        ] {
            for name in names {
                assert_eq!(field_kind(name.as_bytes()), kind, "{name}");
                let upper = name.to_ascii_uppercase();
                assert_eq!(field_kind(upper.as_bytes()), kind, "{upper}");
            }
        }
        // Every hop-by-hop name of the map rules has a kind that is never passed on.
        for name in [
            "connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "keep-alive",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)));
            assert!(
                !matches!(
                    field_kind(name.as_bytes()),
                    FieldKind::Other | FieldKind::Date | FieldKind::Ruled | FieldKind::Scanned
                ),
                "{name}"
            );
        }
        for name in [
            "content-type",
            "set-cookies",
            "links",
            "x-locations",
            "locations",
            "dates",
            "x-te",
            "server",
            "vary",
            "access-control-max-age",
            "",
        ] {
            assert_eq!(field_kind(name.as_bytes()), FieldKind::Other, "{name}");
        }
    }

    #[test]
    fn fields_come_back_in_order_and_the_map_adds_the_length() {
        let mut head = PassedHead::with_fields(3);
        head.push(FieldKind::Other, b"Content-Type", b"text/plain");
        head.push(FieldKind::Other, b"set-cookie", b"a=1");
        head.push(FieldKind::Date, b"Date", b"Mon, 30 Nov 2026 04:00:00 GMT");
        head.push(FieldKind::Other, b"Set-Cookie", b"b=2; Path=/");
        head.push(FieldKind::Other, b"x-empty", b"");
        head.push(FieldKind::Other, b"x-colon", b"a: b\xe9");
        head.set_content_length(Some(42));
        assert!(head.is_dated());
        assert!(!head.is_ruled());
        assert_eq!(
            head.lines(),
            b"Content-Type: text/plain\r\nset-cookie: a=1\r\nDate: Mon, 30 Nov 2026 04:00:00 GMT\r\n\
              Set-Cookie: b=2; Path=/\r\nx-empty: \r\nx-colon: a: b\xe9\r\n"
        );
        let fields: Vec<(&[u8], &[u8])> = head.fields().collect();
        assert_eq!(fields[1], (&b"set-cookie"[..], &b"a=1"[..]));
        assert_eq!(fields[4], (&b"x-empty"[..], &b""[..]));
        assert_eq!(fields[5], (&b"x-colon"[..], &b"a: b\xe9"[..]));
        let map = head.into_map().unwrap();
        assert_eq!(map["content-type"], "text/plain");
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2; Path=/"]);
        assert_eq!(map["content-length"], "42");
        assert_eq!(map["x-empty"], "");
        assert_eq!(map["x-colon"].as_bytes(), b"a: b\xe9");
        assert_eq!(map.len(), 7);
    }

    #[test]
    fn names_shared_with_a_map_are_found_in_any_case() {
        let mut head = PassedHead::with_fields(2);
        head.push(FieldKind::Other, b"Content-Type", b"text/plain");
        head.push(FieldKind::Other, b"RateLimit", b"\"up\";r=1");
        let mut map = HeaderMap::new();
        assert!(!head.shares_a_name_with(&map));
        map.insert("ratelimit-policy", HeaderValue::from_static("\"gw\";q=10"));
        assert!(!head.shares_a_name_with(&map));
        map.insert("ratelimit", HeaderValue::from_static("\"gw\";r=9"));
        assert!(head.shares_a_name_with(&map));
    }

    #[test]
    fn a_name_of_the_same_length_is_not_a_shared_name_and_long_names_are_compared() {
        let long = "x-".repeat(40);
        let mut head = PassedHead::with_fields(2);
        head.push(FieldKind::Other, b"X-Trace", b"1");
        head.push(FieldKind::Other, long.to_uppercase().as_bytes(), b"2");
        let mut map = HeaderMap::new();
        // Seven bytes as `X-Trace` has, another name.
        map.insert("x-token", HeaderValue::from_static("t"));
        assert!(!head.shares_a_name_with(&map));
        // Longer than 63 bytes, and not the upstream's long name.
        let other_long = format!("{}y", "x-".repeat(39));
        map.insert(
            HeaderName::from_bytes(other_long.as_bytes()).unwrap(),
            HeaderValue::from_static("3"),
        );
        assert!(!head.shares_a_name_with(&map));
        map.insert(
            HeaderName::from_bytes(long.as_bytes()).unwrap(),
            HeaderValue::from_static("4"),
        );
        assert!(head.shares_a_name_with(&map));
    }

    #[test]
    fn ruled_fields_and_connection_lists_send_the_head_to_the_rules() {
        for (kind, name) in [
            (FieldKind::Ruled, "Location"),
            (FieldKind::Connection, "Connection"),
        ] {
            let mut head = PassedHead::with_fields(1);
            head.push(FieldKind::Other, b"x-a", b"1");
            assert!(!head.is_ruled());
            head.push(kind, name.as_bytes(), b"x");
            assert!(head.is_ruled(), "{name}");
        }
    }
}
