//! Hand-built exchanges for the guards' unit tests.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Version};

use crate::policy::Exchange;

/// A bodiless `POST /hook` from `ip` (the socket peer too).
pub(crate) fn exchange(ip: &str) -> Exchange {
    let ip: IpAddr = ip.parse().expect("test address");
    Exchange {
        request_id: "test".into(),
        started: Instant::now(),
        method: Method::POST,
        path: "/hook".into(),
        query: None,
        original_query: None,
        headers: HeaderMap::new(),
        version: Version::HTTP_11,
        peer: SocketAddr::new(ip, 40000),
        client_ip: ip,
        forwarded_for: ip.to_string(),
        https: false,
        has_body: false,
        body: Bytes::new(),
        key_id: None,
        session_id: None,
        flags: Vec::new(),
        response_headers: HeaderMap::new(),
    }
}
