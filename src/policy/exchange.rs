//! `Exchange`: one request as it passes the guards, and what the guards learn about it.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Version};

use super::reason::Reason;
use crate::urlenc;

/// A request in flight. Guards read it, may remove the credentials they consume (so they are
/// not forwarded), and record what they learned (key id, session id, flags, response headers).
#[derive(Debug)]
pub struct Exchange {
    /// Unique id, in the error body, the audit log and the `X-Request-Id` headers.
    pub request_id: String,
    /// When the request's headers were complete.
    pub started: Instant,
    /// Method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// The query string as it will be forwarded (consumed parameters are removed).
    pub query: Option<String>,
    /// The query string as received, for guards that sign over the original URL.
    pub original_query: Option<String>,
    /// Request headers as they will be forwarded (consumed credentials are removed).
    pub headers: HeaderMap,
    /// HTTP version the client spoke.
    pub version: Version,
    /// The socket peer.
    pub peer: SocketAddr,
    /// The client's address: the peer, or the forwarded address when the peer is a trusted proxy.
    pub client_ip: IpAddr,
    /// `X-Forwarded-For` as it will be sent upstream (see `client_ip`).
    pub forwarded_for: String,
    /// True when the request arrived over TLS (or a trusted proxy said it did).
    pub https: bool,
    /// True when the request carries a body (a length above zero, or chunked).
    pub has_body: bool,
    /// The body, once read (empty before the body phase).
    pub body: Bytes,
    /// Id of the API key that authenticated the request.
    pub key_id: Option<String>,
    /// Browser session id from the request's token.
    pub session_id: Option<String>,
    /// Findings that did not decide the outcome: alert-mode mismatches on an allowed request
    /// (e.g. `ip_not_allowed`), or `banned` on the refusal that started a ban.
    pub flags: Vec<Reason>,
    /// Headers to add to the response, whatever the upstream answers.
    pub response_headers: HeaderMap,
    /// Replay claims this request made (state key and lifetime): settled when the upstream
    /// accepts the message, released when it does not.
    pub replay_claims: Vec<(String, std::time::Duration)>,
    /// Where the request has been handed, if anywhere yet: from then on it may have been
    /// delivered or queued, whatever becomes of its answer.
    pub handed_on: HandedOn,
}

/// Where an exchange's request went after the guards passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandedOn {
    /// Nowhere yet.
    #[default]
    Not,
    /// To the upstream (a sync route).
    Upstream,
    /// To the delivery queue's writer (an async route).
    Queue,
}

impl Exchange {
    /// A bodiless HTTP/1.1 exchange from `peer` (which is also the client address), as the
    /// gateway starts one; the pipeline fills in the rest as it learns it. Tests use it to
    /// build exchanges without listing every field.
    pub fn new(
        method: Method,
        path: impl Into<String>,
        query: Option<String>,
        headers: HeaderMap,
        peer: SocketAddr,
    ) -> Exchange {
        let client_ip = peer.ip().to_canonical();
        Exchange {
            request_id: crate::gateway::new_request_id(),
            started: Instant::now(),
            method,
            path: path.into(),
            original_query: query.clone(),
            query,
            headers,
            version: Version::HTTP_11,
            peer,
            client_ip,
            forwarded_for: client_ip.to_string(),
            https: false,
            has_body: false,
            body: Bytes::new(),
            key_id: None,
            session_id: None,
            flags: Vec::new(),
            response_headers: HeaderMap::new(),
            replay_claims: Vec::new(),
            handed_on: HandedOn::Not,
        }
    }

    /// The first value of query parameter `name` in the received query, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        urlenc::query_param(self.original_query.as_deref()?, name)
    }

    /// Removes parameter `name` from the forwarded query (a consumed credential).
    pub fn consume_query_param(&mut self, name: &str) {
        if let Some(q) = self.query.take() {
            self.query = urlenc::remove_query_param(&q, name);
        }
    }

    /// A header's value as text, when present and visible ASCII.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Adds a flag once.
    pub fn flag(&mut self, reason: Reason) {
        if !self.flags.contains(&reason) {
            self.flags.push(reason);
        }
    }
}
