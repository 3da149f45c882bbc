//! Header rules for both directions: hop-by-hop removal and what the gateway sets itself.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and their legacy relatives: never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Names of headers the gateway consumes or sets itself on the way upstream.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Hookwarden-Token`: a browser token, consumed by the gateway.
pub const X_HOOKWARDEN_TOKEN: HeaderName = HeaderName::from_static("x-hookwarden-token");
/// `X-Hookwarden-Delivery`: the id of a queued message, the same on every delivery attempt.
pub const X_HOOKWARDEN_DELIVERY: HeaderName = HeaderName::from_static("x-hookwarden-delivery");
/// `X-Hookwarden-Attempt`: the delivery attempt's number, from 1.
pub const X_HOOKWARDEN_ATTEMPT: HeaderName = HeaderName::from_static("x-hookwarden-attempt");

/// True when `value` is one a header field may hold (`HeaderValue::from_bytes`'s rule: visible
/// ASCII, spaces, tabs and obs-text; no other control character). Every byte is looked at,
/// without stopping at the first bad one, so the check runs on vectors: values the gateway
/// made itself (addresses, request ids) are checked on every request and almost never fail.
pub fn is_field_value(value: &[u8]) -> bool {
    value.iter().fold(true, |ok, &b| {
        ok & ((b >= 0x20 && b != 0x7f) | (b == b'\t'))
    })
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_connection_named(headers);
    remove_where(headers, is_hop_by_hop);
}

/// True for the hop-by-hop headers that are dropped whatever `Connection` says
/// (`HTTP2-Settings` belongs to an h2c upgrade of the client's own connection).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || matches!(
            name.as_str(),
            "keep-alive" | "proxy-connection" | "http2-settings"
        )
}

/// Removes the headers a `Connection` header names as hop-by-hop for this connection.
fn remove_connection_named(headers: &mut HeaderMap) {
    for name in connection_named(headers) {
        headers.remove(name);
    }
}

/// The headers a `Connection` header names as hop-by-hop for this connection (beyond those
/// [`is_hop_by_hop`] drops anyway).
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    if !headers.contains_key(header::CONNECTION) {
        return Vec::new();
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual values name nothing beyond what `is_hop_by_hop` removes anyway.
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        // Fields that describe the message itself are not the connection's to remove: a
        // client listing `Content-Type` would have its body reach the upstream without the
        // type the route's `content_types` checked.
        .filter(|name| !is_about_the_message(name))
        .collect()
}

/// End-to-end fields that say what the message is, which a `Connection` header cannot make
/// hop-by-hop.
fn is_about_the_message(name: &HeaderName) -> bool {
    [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CONTENT_LENGTH,
        header::HOST,
    ]
    .contains(name)
}

/// Removes every header whose name `drop` selects. One pass over the names present, rather
/// than a lookup per name that might be: a request carries a handful of headers, while the
/// lists of names to drop are long, and each lookup hashes its name.
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| drop(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Puts the gateway's own response headers (`ours`) on `target`: each name in `ours` replaces
/// every value `target` had under it, and keeps all of its own values (a guard may add a field
/// more than once).
pub fn overlay(target: &mut HeaderMap, ours: &HeaderMap) {
    for name in ours.keys() {
        target.remove(name);
    }
    for (name, value) in ours {
        target.append(name, value.clone());
    }
}

/// Prepares client headers for the upstream: hop-by-hop, `Host`, framing and the gateway's own
/// headers go; what only the client may claim about itself (`Forwarded`, `X-Real-IP`) goes too,
/// because the gateway sets the authoritative `X-Forwarded-*` instead. Several `Cookie` fields
/// become one.
pub fn prepare_request_headers(headers: &mut HeaderMap) {
    remove_connection_named(headers);
    remove_where(headers, |name| !is_forwardable(name));
    if let Some(one) = joined_cookies(headers) {
        headers.insert(header::COOKIE, one);
    }
}

/// The `Cookie` fields of a request as one, joined with `"; "`, when there are several: HTTP/2
/// clients may send one field per cookie (RFC 9113 §8.2.3), and an HTTP/1.1 server reads only
/// one `Cookie` field (RFC 6265 §5.4). `None` for none or one.
pub fn joined_cookies(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let mut values = headers.get_all(header::COOKIE).iter();
    let first = values.next()?;
    let mut rest = values.peekable();
    rest.peek()?;
    let mut joined = first.as_bytes().to_vec();
    for v in rest {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    http::HeaderValue::from_bytes(&joined).ok()
}

/// True for a client header that may go upstream as it is, unless its request's `Connection`
/// header names it ([`connection_named`]): the rule [`prepare_request_headers`] applies.
///
/// Names with an underscore never go, as nginx drops them by default: CGI-style upstreams
/// (WSGI, Rack, PHP) read `X_Forwarded_For` and `X-Forwarded-For` as the same variable, so a
/// client could add its own value to a field the gateway sets, or send a field the gateway
/// strips or injects under another spelling.
pub fn is_forwardable(name: &HeaderName) -> bool {
    let name_str = name.as_str();
    !(is_hop_by_hop(name)
        || is_set_by_gateway(name)
        || is_client_claim(name_str)
        || is_method_override(name_str)
        || has_underscore(name_str.as_bytes()))
}

/// Every byte looked at, so the loop runs without a branch per byte (`contains` took about
/// 50 instructions a name).
fn has_underscore(name: &[u8]) -> bool {
    name.iter().fold(false, |seen, &b| seen | (b == b'_'))
}

/// Headers with which many frameworks (Rails, Laravel, Express's method-override, ASP.NET)
/// let a request act as another method: the route's `methods` list is the gateway's to
/// enforce, and a `POST` must not arrive as a `DELETE`.
fn is_method_override(name: &str) -> bool {
    matches!(
        name,
        "x-http-method-override" | "x-http-method" | "x-method-override"
    )
}

/// Headers the gateway sets itself upstream (or that belong to the client's hop): the
/// client's values never pass.
fn is_set_by_gateway(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::EXPECT,
        header::FORWARDED,
    ]
    .contains(name)
        || matches!(
            name.as_str(),
            "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-request-id"
                | "x-hookwarden-token"
                | "x-hookwarden-delivery"
                | "x-hookwarden-attempt"
        )
}

/// Other proxies' ways of naming the client or the original URL: an upstream (or its
/// framework) may believe them, and only the gateway knows these facts.
fn is_client_claim(name: &str) -> bool {
    matches!(
        name,
        "x-real-ip"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-server"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-original-url"
            | "x-rewrite-url"
            | "client-ip"
            | "x-originating-ip"
            | "x-remote-addr"
            | "x-remote-ip"
            | "x-proxyuser-ip"
            | "forwarded-for"
            | "x-forwarded"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check agrees with `HeaderValue::from_bytes` for every byte, wherever it stands in
    /// a value longer than a vector.
    #[test]
    fn field_values_are_checked_as_the_header_map_checks_them() {
        for b in 0..=255u8 {
            for at in [0, 17, 40] {
                let mut v = vec![b'a'; 41];
                v[at] = b;
                assert_eq!(
                    is_field_value(&v),
                    HeaderValue::from_bytes(&v).is_ok(),
                    "byte {b:#04x} at {at}"
                );
            }
        }
        assert!(is_field_value(b""));
    }
    use http::HeaderValue;

    #[test]
    fn underscore_spellings_of_any_name_are_not_forwarded() {
        for name in [
            "x_forwarded_for",
            "X_Forwarded_Proto",
            "x_real_ip",
            "x_auth",
            "my_custom_header",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(!is_forwardable(&name), "{name}");
        }
        assert!(is_forwardable(&HeaderName::from_static("x-custom-header")));
    }

    #[test]
    fn cookie_fields_are_joined_for_the_upstream() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        assert!(joined_cookies(&h).is_none());
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        prepare_request_headers(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
    }

    #[test]
    fn connection_cannot_remove_what_the_message_is() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Content-Type, Content-Encoding, X-Hop"),
        );
        assert_eq!(connection_named(&h), vec![HeaderName::from_static("x-hop")]);
    }

    #[test]
    fn connection_named_headers_are_dropped_with_the_standard_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn overlay_replaces_names_and_keeps_every_value_of_ours() {
        let mut target = HeaderMap::new();
        target.insert("ratelimit", HeaderValue::from_static("upstream"));
        target.insert("x-upstream", HeaderValue::from_static("1"));
        let mut ours = HeaderMap::new();
        ours.append("ratelimit", HeaderValue::from_static("a"));
        ours.append("ratelimit", HeaderValue::from_static("b"));
        overlay(&mut target, &ours);
        let values: Vec<_> = target.get_all("ratelimit").iter().collect();
        assert_eq!(values, ["a", "b"]);
        assert_eq!(target["x-upstream"], "1");
    }

    #[test]
    fn client_claims_about_forwarding_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "forwarded",
            "x-real-ip",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-client-ip",
            "x-cluster-client-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-original-url",
            "x-rewrite-url",
            "expect",
            "keep-alive",
            "proxy-connection",
            "http2-settings",
            "te",
            "upgrade",
            "proxy-authorization",
            "x-request-id",
            "x-hookwarden-token",
            "x-hookwarden-delivery",
            "x-hookwarden-attempt",
            "content-length",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        // Every value of a repeated header goes, not just the first.
        h.append("x-real-ip", HeaderValue::from_static("2"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-forwarded-hostile", HeaderValue::from_static("kept"));
        prepare_request_headers(&mut h);
        let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-forwarded-hostile"]);
    }
}
