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

/// `ip` as text, as `Display` writes it.
pub fn ip_string(ip: IpAddr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, ip);
    s
}

/// Appends `ip` as `Display` writes it. IPv4 by hand: every request formats its client's
/// address three times (`X-Forwarded-For`, the log line, the audit row), and the formatting
/// machinery cost about 1,200 instructions each time.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

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
            forwarded_for: ip_string(peer_ip),
        });
    }
    // Entries are split as bytes: a header that is not visible ASCII somewhere left of the
    // client (written by the client itself) must not make the whole request unreadable.
    let entries: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect();
    if entries.is_empty() {
        return Ok(ClientAddr {
            ip: peer_ip,
            via_trusted_proxy: true,
            forwarded_for: ip_string(peer_ip),
        });
    }
    // Walk from the right. `hops` collects the trusted entries passed on the way.
    let mut hops: Vec<IpAddr> = Vec::new();
    let mut client = None;
    for raw in entries.iter().rev() {
        let ip = std::str::from_utf8(raw)
            .ok()
            .and_then(parse_entry)
            .ok_or(InvalidForwardedFor)?;
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
    let mut forwarded_for = ip_string(ip);
    for hop in hops.iter().rev() {
        forwarded_for.push_str(", ");
        push_ip(&mut forwarded_for, *hop);
    }
    forwarded_for.push_str(", ");
    push_ip(&mut forwarded_for, peer_ip);
    Ok(ClientAddr {
        ip,
        via_trusted_proxy: true,
        forwarded_for,
    })
}

/// Parses one entry: an address, optionally with a port (`1.2.3.4:80`, `[2001:db8::1]:80`)
/// and an IPv6 zone (`fe80::1%eth0`, dropped: it only names an interface of the sender).
/// The unspecified addresses (`0.0.0.0`, `::`) are not a client and count as invalid.
fn parse_entry(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // `[v6]` or `[v6]:port`; whatever follows the bracket is a port and is not needed.
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        inside
    } else if raw.matches(':').count() == 1 {
        // `v4:port` (an IPv6 address has at least two colons).
        raw.split_once(':').map_or(raw, |(h, _)| h)
    } else {
        raw
    };
    let addr = host.split_once('%').map_or(host, |(a, _zone)| a);
    let ip = addr.parse::<IpAddr>().ok()?.to_canonical();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.255",
            "203.0.113.9",
            "99.100.9.199",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 255 - n, n / 3, 7]);
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }
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

    /// Trusted ranges parsed the way `server.trusted_proxies` is.
    fn configured(list: &[&str]) -> Vec<IpNet> {
        let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
        let text = format!(
            "[server]\ntrusted_proxies = [{}]\n[[route]]\nname = \"r\"\npath = \"/r\"\n[route.upstream]\nurl = \"http://127.0.0.1:1/\"\n",
            items.join(", ")
        );
        crate::config::load_str(&text, "t", std::path::Path::new("/tmp"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .config
            .server
            .trusted_proxies
    }

    fn walk(peer_ip: &str, xff: &[&str], trusted: &[&str]) -> Result<String, InvalidForwardedFor> {
        resolve(peer(peer_ip), &headers(xff), &configured(trusted)).map(|a| a.ip.to_string())
    }

    // The cases below are ported from realclientip-go's `TestRightmostTrustedRangeStrategy`
    // and, for address formats, `TestRightmostNonPrivateStrategy` and `Test_goodIPAddr`
    // (github.com/realclientip/realclientip-go, realclientip_test.go), the reference
    // implementation of Adam Pritchard's "The perils of the 'real' client IP"
    // (adam-p.ca/blog/2022/03/x-forwarded-for/). Cases written there for the `Forwarded`
    // header use `X-Forwarded-For` here, the only header hookwarden reads. realclientip-go
    // leaves the peer check to a chained strategy; here the peer must itself be trusted
    // before any header is read, so each case names a trusted peer.

    #[test]
    fn realclientip_rightmost_trusted_range_cases() {
        let xff = ["2.2.2.2:3384, 3.3.3.3", "4.4.4.4"];
        // "One range", "One IP".
        assert_eq!(walk("4.4.4.9", &xff, &["4.4.4.0/24"]).unwrap(), "3.3.3.3");
        assert_eq!(walk("4.4.4.4", &xff, &["4.4.4.4"]).unwrap(), "3.3.3.3");
        // "No ranges": nothing is trusted, the peer is the client.
        assert_eq!(walk("4.4.4.4", &xff, &[]).unwrap(), "4.4.4.4");
        // "Many kinds of ranges": mapped and NAT64 ranges, IPv6 /128 and /64, ports.
        assert_eq!(
            walk(
                "2.2.2.2",
                &[
                    "99.99.99.99, 4.4.4.8, [2607:f8b0:4004:83f::200e]:4747",
                    "2.2.2.2:8883, 64:ff9b::188.0.2.200, 3.3.5.5, 2001:db7::abcd",
                ],
                &[
                    "2.2.2.2/32",
                    "2607:f8b0:4004:83f::200e/128",
                    "3.3.0.0/16",
                    "2001:db7::/64",
                    "::ffff:4.4.4.4/124",
                    "64:ff9b::188.0.2.128/112",
                ],
            )
            .unwrap(),
            "99.99.99.99"
        );
        // "Cloudflare ranges" (two of Cloudflare's published ranges).
        assert_eq!(
            walk(
                "173.245.48.5",
                &["2.2.2.2:3384, 3.3.3.3", "4.4.4.4", "2400:cb00::1"],
                &["173.245.48.0/20", "2400:cb00::/32"],
            )
            .unwrap(),
            "4.4.4.4"
        );
        // "Peer untrusted: returns peer, ignores spoofed header", with and without a header.
        assert_eq!(
            walk("9.9.9.9", &["1.2.3.4, 10.0.0.1"], &["10.0.0.0/8"]).unwrap(),
            "9.9.9.9"
        );
        assert_eq!(walk("9.9.9.9", &[], &["10.0.0.0/8"]).unwrap(), "9.9.9.9");
        // "Peer trusted: walks header as normal".
        assert_eq!(
            walk("10.0.0.5", &["3.3.3.3, 10.0.0.1"], &["10.0.0.0/8"]).unwrap(),
            "3.3.3.3"
        );
        // "Fail: rightmost non-trusted IP invalid" / "... unspecified".
        let trusted = ["2.2.2.0/24"];
        for bad in [
            ["nope, 2.2.2.2:3384, 2.2.2.3", "2.2.2.4"],
            [":: , 2.2.2.2:3384, 2.2.2.3", "2.2.2.4"],
            ["0.0.0.0, 2.2.2.2:3384, 2.2.2.3", "2.2.2.4"],
            ["7.7.7.7.7, 2.2.2.3", "2.2.2.4"],
        ] {
            assert_eq!(
                walk("2.2.2.9", &bad, &trusted),
                Err(InvalidForwardedFor),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_entry_trusted_gives_the_furthest_hop_unlike_realclientip() {
        // realclientip-go's "Fail: no non-trusted IP" returns no address and leaves the
        // choice to the caller. Here every entry was vouched for by a trusted hop, so the
        // furthest one is the client: an internal caller behind our own proxies keeps
        // working (and is rate limited as itself) instead of getting a 400.
        assert_eq!(
            walk(
                "2.2.2.9",
                &["2.2.2.2:3384, 2.2.2.3", "2.2.2.4"],
                &["2.2.2.0/24"]
            )
            .unwrap(),
            "2.2.2.2"
        );
    }

    #[test]
    fn realclientip_address_formats() {
        let t = ["10.0.0.0/8"];
        for (entry, want) in [
            // IPv4 and IPv6, with and without ports.
            ("4.4.4.4:39333", "4.4.4.4"),
            ("[2607:f8b0:4004:83f::18]:3838", "2607:f8b0:4004:83f::18"),
            ("2607:f8b0:4004:83f::18", "2607:f8b0:4004:83f::18"),
            // IPv4-mapped IPv6, dotted and hex, with a port: canonicalised to IPv4.
            ("::ffff:188.0.2.128", "188.0.2.128"),
            ("[::ffff:188.0.2.128]:48483", "188.0.2.128"),
            ("::ffff:bc15:0006", "188.21.0.6"),
            ("0:0:0:0:0:ffff:bc15:0006", "188.21.0.6"),
            // NAT64 and 6to4 are IPv6 addresses in their own right and stay so.
            ("64:ff9b::188.0.2.128", "64:ff9b::bc00:280"),
            ("2002:c000:204::", "2002:c000:204::"),
            // Zones are dropped; a port that is not a number is ignored like any port.
            (
                "[2607:f8b0:4004:83f::18%eth0]:3393",
                "2607:f8b0:4004:83f::18",
            ),
            ("fe80::abcd%zone", "fe80::abcd"),
            ("[fe80::abcd%eth0]:xyz", "fe80::abcd"),
            ("1.1.1.1%", "1.1.1.1"),
            ("1.1.1.1:48944", "1.1.1.1"),
            ("::1", "::1"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert_eq!(walk("10.0.0.2", &[entry], &t).unwrap(), want, "{entry}");
        }
        // Two headers with the client last: the rightmost untrusted entry wins.
        assert_eq!(
            walk("10.0.0.2", &["3.3.3.3", "4.4.4.4, ::ffff:188.0.2.128"], &t).unwrap(),
            "188.0.2.128"
        );
        for bad in [
            "nope%zone",
            "nope!!",
            "::",
            "0.0.0.0",
            "",
            "[2001:db8::1",
            "[::1]x",
        ] {
            assert_eq!(
                walk("10.0.0.2", &[bad], &t),
                Err(InvalidForwardedFor),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn realclientip_range_parsing() {
        // `TestAddressesAndRangesToIPNets`, "Mixed input", through `server.trusted_proxies`.
        let nets = configured(&[
            "1.1.1.1",
            "2607:f8b0:4004:83f::200e",
            "1.1.1.1/32",
            "2607:f8b0:4004:83f::200e/128",
            "1.1.1.1/16",
            "2607:f8b0:4004:83f::200e/56",
            "::ffff:188.0.2.128/112",
            "::ffff:bc15:0006/104",
            "64:ff9b::188.0.2.128/112",
        ]);
        let got: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "1.1.1.1/32",
                "2607:f8b0:4004:83f::200e/128",
                "1.1.1.1/32",
                "2607:f8b0:4004:83f::200e/128",
                "1.1.0.0/16",
                "2607:f8b0:4004:800::/56",
                "188.0.0.0/16",
                "188.0.0.0/8",
                "64:ff9b::bc00:0/112",
            ]
        );
        // "Error: garbage CIDR", "CIDR with zone", "garbage IP", "empty value".
        for bad in [
            "2607:f8b0:4004:83f::200e/nope",
            "fe80::abcd%nope/64",
            "1.1.1.nope",
            "",
        ] {
            let text = format!(
                "[server]\ntrusted_proxies = [{bad:?}]\n[[route]]\nname = \"r\"\npath = \"/r\"\n[route.upstream]\nurl = \"http://127.0.0.1:1/\"\n"
            );
            let err = crate::config::load_str(&text, "t", std::path::Path::new("/"), &|_| None)
                .unwrap_err();
            assert_eq!(err.issues()[0].key, "server.trusted_proxies", "{bad:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_ascii_left_of_the_client_do_not_matter() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xc3\xa9vil, 198.51.100.1").unwrap(),
        );
        let r = resolve(peer("10.0.0.2"), &h, &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(r.ip.to_string(), "198.51.100.1");
        // The same bytes where the walk has to read them are an error.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.1, \xc3\xa9vil").unwrap(),
        );
        assert_eq!(
            resolve(peer("10.0.0.2"), &h, &nets(&["10.0.0.0/8"])),
            Err(InvalidForwardedFor)
        );
    }
}
