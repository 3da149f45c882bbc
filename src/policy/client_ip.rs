//! The real client address: the socket peer, or, behind trusted proxies, the rightmost
//! untrusted `X-Forwarded-For` entry.
//!
//! Everything left of the entries our own proxies appended was written by the client and can
//! say anything, so the walk goes from the right, across every `X-Forwarded-For` header in
//! order, skips trusted addresses, and stops at the first untrusted one. An unparsable entry
//! met on the way is an error: falling back to something further left would hand the choice
//! of address to the client.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The resolved client address and the `X-Forwarded-For` value to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address (IPv4-mapped IPv6 canonicalised to IPv4).
    pub ip: IpAddr,
    /// True when the peer is a trusted proxy (so its `X-Forwarded-Proto` is believed).
    pub via_trusted_proxy: bool,
    /// `X-Forwarded-For` for the upstream: the client first, then the trusted hops, then the
    /// peer. Entries the client could have forged are not passed on.
    pub forwarded_for: String,
}

/// An `X-Forwarded-For` entry that is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid X-Forwarded-For entry")]
pub struct InvalidForwardedFor;

/// Resolves the client address from the peer and the request headers.
pub fn resolve(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Result<ClientAddr, InvalidForwardedFor> {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer_ip) {
        return Ok(ClientAddr {
            ip: peer_ip,
            via_trusted_proxy: false,
            forwarded_for: peer_ip.to_string(),
        });
    }
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(v) = value.to_str() else {
            return Err(InvalidForwardedFor);
        };
        entries.extend(v.split(',').map(str::trim));
    }
    if entries.is_empty() {
        return Ok(ClientAddr {
            ip: peer_ip,
            via_trusted_proxy: true,
            forwarded_for: peer_ip.to_string(),
        });
    }
    // Walk from the right. `hops` collects the trusted entries passed on the way.
    let mut hops: Vec<IpAddr> = Vec::new();
    let mut client = None;
    for raw in entries.iter().rev() {
        let ip = parse_entry(raw).ok_or(InvalidForwardedFor)?;
        if is_trusted(&ip) {
            hops.push(ip);
        } else {
            client = Some(ip);
            break;
        }
    }
    // Every entry trusted: the request comes from our own infrastructure; the furthest hop we
    // know of is the client.
    let ip = match client {
        Some(ip) => ip,
        None => hops.pop().unwrap_or(peer_ip),
    };
    let mut forwarded_for = ip.to_string();
    for hop in hops.iter().rev() {
        forwarded_for.push_str(", ");
        forwarded_for.push_str(&hop.to_string());
    }
    forwarded_for.push_str(", ");
    forwarded_for.push_str(&peer_ip.to_string());
    Ok(ClientAddr {
        ip,
        via_trusted_proxy: true,
        forwarded_for,
    })
}

/// Parses one entry: an address, optionally with a port (`1.2.3.4:80`, `[2001:db8::1]:80`).
fn parse_entry(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    // A bracketed IPv6 address without a port.
    raw.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 5555)
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let r = resolve(
            peer("203.0.113.9"),
            &headers(&["1.1.1.1"]),
            &nets(&["10.0.0.0/8"]),
        )
        .unwrap();
        assert_eq!(r.ip.to_string(), "203.0.113.9");
        assert_eq!(r.forwarded_for, "203.0.113.9");
        assert!(!r.via_trusted_proxy);
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_entry_wins() {
        let r = resolve(
            peer("10.0.0.2"),
            &headers(&["6.6.6.6, 198.51.100.1, 10.0.0.7"]),
            &nets(&["10.0.0.0/8"]),
        )
        .unwrap();
        assert_eq!(r.ip.to_string(), "198.51.100.1");
        // The forged leftmost entry is not passed on.
        assert_eq!(r.forwarded_for, "198.51.100.1, 10.0.0.7, 10.0.0.2");
    }

    #[test]
    fn several_headers_are_read_as_one_list_in_order() {
        let r = resolve(
            peer("10.0.0.2"),
            &headers(&["6.6.6.6", "198.51.100.1", "10.0.0.7"]),
            &nets(&["10.0.0.0/8"]),
        )
        .unwrap();
        assert_eq!(r.ip.to_string(), "198.51.100.1");
    }

    #[test]
    fn an_invalid_entry_before_the_client_is_an_error_not_a_fallback() {
        let err = resolve(
            peer("10.0.0.2"),
            &headers(&["6.6.6.6, garbage, 10.0.0.7"]),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(err, Err(InvalidForwardedFor));
        // Garbage left of the client is never looked at.
        let ok = resolve(
            peer("10.0.0.2"),
            &headers(&["garbage, 198.51.100.1"]),
            &nets(&["10.0.0.0/8"]),
        )
        .unwrap();
        assert_eq!(ok.ip.to_string(), "198.51.100.1");
    }

    #[test]
    fn mapped_ipv6_is_canonicalised_everywhere() {
        let r = resolve(
            peer("::ffff:10.0.0.2"),
            &headers(&["::ffff:198.51.100.1"]),
            &nets(&["10.0.0.0/8"]),
        )
        .unwrap();
        assert_eq!(r.ip.to_string(), "198.51.100.1");
        assert!(r.via_trusted_proxy);
    }

    #[test]
    fn ports_and_brackets_are_accepted() {
        let t = nets(&["10.0.0.0/8"]);
        for (xff, want) in [
            ("198.51.100.1:4711", "198.51.100.1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            let r = resolve(peer("10.0.0.2"), &headers(&[xff]), &t).unwrap();
            assert_eq!(r.ip.to_string(), want, "{xff}");
        }
    }

    #[test]
    fn trusted_proxy_without_header_means_the_proxy_is_the_client() {
        let r = resolve(peer("10.0.0.2"), &HeaderMap::new(), &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(r.ip.to_string(), "10.0.0.2");
        assert_eq!(r.forwarded_for, "10.0.0.2");
    }
}
