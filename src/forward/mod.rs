//! The forwarder: builds the upstream request from an allowed [`Exchange`] and sends it over a
//! pooled connection: plain-`http` upstreams through the lean HTTP/1.1 client in [`h1`],
//! `https` ones through hyper's client (HTTP/1.1, or HTTP/2 by ALPN).
//!
//! The request body is always complete (guards need it whole), so it goes as one `Full` chunk
//! with an exact `Content-Length`. The response comes back as a stream, handed to the listener
//! frame by frame under an idle timeout ([`body::IdleTimeout`]).

pub mod body;
pub mod h1;
pub mod headers;
pub mod passed;
pub mod sign;
pub mod tls;

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::policy::Exchange;
use body::UpstreamBody;
use passed::PassedHead;
use sign::OutboundSigner;

/// The idle time after which pooled upstream connections are closed: below the 5 s keep-alive
/// of Node.js (n8n) servers, so the pool never reuses a connection the upstream is closing.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Why forwarding failed before response headers arrived.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No connection could be made (refused, DNS, TLS handshake).
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    /// No response headers within the route's `timeout`.
    #[error("the upstream sent no response within {0:?}")]
    Timeout(Duration),
    /// The connection broke or the upstream answered with something that is not HTTP.
    #[error("the upstream broke the exchange: {0}")]
    Broken(String),
}

/// Why an upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file is unusable.
    #[error(transparent)]
    CaFile(#[from] tls::CaFileError),
    /// rustls refused the configuration.
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled client for upstream requests. Cheap to clone.
///
/// The connection pool itself is per thread: the listener runs one single-threaded runtime per
/// core, and a pooled connection's task lives on the runtime that opened it, so sharing pools
/// across threads would turn every request into cross-thread wake-ups. Pools are keyed by the
/// client's settings (CA certificates, connect timeout), so a reload with the same settings
/// keeps its warm connections.
#[derive(Clone)]
pub struct UpstreamClient {
    settings: Arc<ClientSettings>,
}

struct ClientSettings {
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    key: u64,
}

thread_local! {
    static POOLS: std::cell::RefCell<Vec<(u64, PooledClient)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClient")
    }
}

impl UpstreamClient {
    /// A client trusting the web PKI plus the CAs in `ca_file`.
    pub fn new(
        ca_file: Option<&std::path::Path>,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        use std::hash::{Hash, Hasher};
        let extra = match ca_file {
            Some(p) => tls::read_ca_file(p)?,
            None => Vec::new(),
        };
        let tls = tls::client_config(&extra)?;
        let mut h = std::hash::DefaultHasher::new();
        for c in &extra {
            c.as_ref().hash(&mut h);
        }
        connect_timeout.hash(&mut h);
        Ok(UpstreamClient {
            settings: Arc::new(ClientSettings {
                tls,
                connect_timeout,
                key: h.finish(),
            }),
        })
    }

    /// This thread's pool for these settings.
    /// Starts `req` on this thread's pool (without cloning the client: the future owns what
    /// it needs).
    fn start(&self, req: Request<Full<Bytes>>) -> hyper_util::client::legacy::ResponseFuture {
        let key = self.settings.key;
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            if let Some((_, c)) = pools.iter().find(|(k, _)| *k == key) {
                return c.request(req);
            }
            let c = build_client(&self.settings);
            let fut = c.request(req);
            pools.push((key, c));
            fut
        })
    }
}

fn build_client(settings: &ClientSettings) -> PooledClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(settings.tls.clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_max_idle_per_host(256)
        .build(https)
}

impl UpstreamClient {
    /// Sends `req` on this thread's pool and waits for the response headers, at most
    /// `timeout` (a route's requests, through [`Upstream::send`], and alert notifications).
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        if req.uri().scheme() == Some(&Scheme::HTTP) {
            let sent = std::pin::pin!(h1::send(req, self.settings.connect_timeout, POOL_IDLE));
            return h1_within(timeout, None, sent)
                .await
                .map(|resp| resp.map(UpstreamBody::Left));
        }
        match tokio::time::timeout(timeout, self.start(req)).await {
            Err(_) => Err(ForwardError::Timeout(timeout)),
            Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::Right)),
            Ok(Err(e)) if e.is_connect() => Err(ForwardError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(ForwardError::Broken(error_chain(&e))),
        }
    }
}

/// A timer an HTTP/1.1 connection lends each of its requests for the upstream's response
/// head. The connection keeps one for all its requests and moves its deadline later for each:
/// one compare-and-swap in tokio's timer entry, where a timer per request was registered with
/// the driver and removed again, and the exchange was moved into a `Timeout` (620
/// instructions a request, callgrind).
pub type HeadTimer<'a> = Pin<&'a mut tokio::time::Sleep>;

/// Waits for a plain-http exchange's response head at most `timeout`, on `timer` when one is
/// lent. The exchange comes pinned where its caller made it: taken by value it was copied
/// into this future's state and again to pin it (about 1.3 KB twice a request, a fifth of the
/// request's cache-missing writes in callgrind's cache simulation).
async fn h1_within<T>(
    timeout: Duration,
    timer: Option<HeadTimer<'_>>,
    mut sent: Pin<&mut impl Future<Output = Result<T, ForwardError>>>,
) -> Result<T, ForwardError> {
    let Some(mut timer) = timer else {
        return match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(ForwardError::Timeout(timeout)),
            Ok(r) => r,
        };
    };
    timer.as_mut().reset(tokio::time::Instant::now() + timeout);
    // The exchange first, as `tokio::time::timeout` does: a head that arrived just as the
    // deadline passed is still used.
    std::future::poll_fn(|cx| match sent.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(r),
        Poll::Pending => timer
            .as_mut()
            .poll(cx)
            .map(|()| Err(ForwardError::Timeout(timeout))),
    })
    .await
}

/// An upstream's answer to a forwarded request, up to its head.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// The status.
    pub status: StatusCode,
    /// The end-to-end header fields.
    pub headers: UpstreamHeaders,
    /// The body, still to be read.
    pub body: UpstreamBody,
}

/// An upstream response's header fields, in the form its client read them.
#[derive(Debug)]
pub enum UpstreamHeaders {
    /// A header map (hyper's client, or the general path of the lean one).
    Map(HeaderMap),
    /// The fields as the upstream sent them (the lean client's direct path).
    Passed(PassedHead),
}

impl UpstreamHeaders {
    /// The fields as a header map.
    pub fn into_map(self) -> Result<HeaderMap, passed::InvalidField> {
        match self {
            UpstreamHeaders::Map(map) => Ok(map),
            UpstreamHeaders::Passed(head) => head.into_map(),
        }
    }
}

impl From<Response<UpstreamBody>> for UpstreamResponse {
    fn from(resp: Response<UpstreamBody>) -> Self {
        let (parts, body) = resp.into_parts();
        UpstreamResponse {
            status: parts.status,
            headers: UpstreamHeaders::Map(parts.headers),
            body,
        }
    }
}

/// Parts of an upstream's URL shorter than this are not treated as secret in texts shown to
/// operators: `webhook`, `api` and `v1` are not what makes a URL secret, and replacing them
/// would garble the text.
pub const MIN_SECRET_CHARS: usize = 8;

/// True for a part of an upstream URL, or the value of a descriptive injected header
/// ([`DESCRIPTIVE_FIELDS`]), that may be what makes it secret: at least [`MIN_SECRET_CHARS`]
/// long and mixing character classes (lower case, upper case, digits: webhook ids, tokens) or
/// long. Words such as `services`, `webhooks`, `callback` or `application/json` are not:
/// treating them as secret would strip unrelated redirects and garble error texts.
fn looks_secret(s: &str) -> bool {
    let classes = [
        s.bytes().any(|b| b.is_ascii_lowercase()),
        s.bytes().any(|b| b.is_ascii_uppercase()),
        s.bytes().any(|b| b.is_ascii_digit()),
    ]
    .iter()
    .filter(|&&c| c)
    .count();
    s.len() >= MIN_SECRET_CHARS && (classes >= 2 || s.len() >= 24)
}

/// Injected headers that describe the request rather than authenticate it: their values are
/// secret only where they look it ([`looks_secret`]), like parts of the URL. Any other
/// injected value is secret whatever it looks like.
const DESCRIPTIVE_FIELDS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-language",
    "content-type",
    "user-agent",
];

/// `s` as an upstream's error text or a field of its answer may repeat it: as it is, with its
/// runs of whitespace made one space (error texts are shown that way), escaped for a JSON
/// string (`\"`, `\\`; with `\/` as PHP's `json_encode` writes `/`; with `\u0026`, `\u003c`,
/// `\u003e` as Go's and Rails' encoders write `&`, `<`, `>`), escaped for HTML (an error page)
/// and percent-encoded (a redirect's URL).
fn written_forms(s: &str) -> Vec<String> {
    let collapsed = s
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let json = s.replace('\\', "\\\\").replace('"', "\\\"");
    let php = json.replace('/', "\\/");
    let go = json
        .replace('&', "\\u0026")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e");
    let html = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    let mut percent = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            percent.push(char::from(b));
        } else {
            percent.push_str(&format!("%{b:02X}"));
        }
    }
    let mut forms = vec![s.to_owned()];
    for form in [collapsed, json, php, go, html, percent] {
        if !form.is_empty() && !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// `s` percent-decoded, when that changes it and gives UTF-8.
fn decoded(s: &str) -> Option<String> {
    let d = crate::urlenc::percent_decode(s, true)?;
    let d = std::str::from_utf8(&d).ok()?;
    (d != s).then(|| d.to_owned())
}

/// A route's upstream: where to send, what to inject, how long to wait.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    path: String,
    base_query: Option<String>,
    inject: Arc<[(HeaderName, HeaderValue)]>,
    /// Time until response headers.
    pub timeout: Duration,
    /// Longest pause in a streamed response body.
    pub idle_timeout: Duration,
    client: UpstreamClient,
    signer: Option<OutboundSigner>,
    /// Where plain-http connections go: the URL's host and port (80 when it names none).
    /// Kept apart because `Authority::host`/`port` search the text on every call.
    host: Arc<str>,
    port: u16,
    /// The `Host` field for the direct path (`host[:port]`), or nothing when a route injects one.
    host_field: Vec<u8>,
    /// [`Upstream::secret_parts`], found once.
    secret_parts: Arc<[String]>,
}

impl Upstream {
    /// Builds a route's upstream from its config, using `client` for connections.
    pub fn new(cfg: &UpstreamConfig, client: UpstreamClient) -> Self {
        let scheme = cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = cfg
            .url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("localhost"));
        let path = cfg.url.path().to_owned();
        let inject = cfg
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let mut v = HeaderValue::from_str(value.expose()).ok()?;
                // Marked sensitive so HTTP/2 never adds it to its compression tables.
                v.set_sensitive(true);
                Some((name.clone(), v))
            })
            .collect();
        let host: Arc<str> = authority.host().into();
        let port = authority.port_u16().unwrap_or(80);
        let mut host_field = Vec::new();
        if !cfg.headers.iter().any(|(n, _)| n == http::header::HOST) {
            h1::push_host_field(&mut host_field, &host, port);
        }
        let mut upstream = Upstream {
            scheme,
            authority,
            path,
            host,
            port,
            host_field,
            base_query: cfg.url.query().map(str::to_owned),
            inject,
            timeout: cfg.timeout,
            idle_timeout: cfg.idle_timeout,
            client,
            signer: cfg.sign.as_ref().map(OutboundSigner::new),
            secret_parts: Arc::from([]),
        };
        upstream.secret_parts = upstream.find_secret_parts().into();
        upstream
    }

    /// What an upstream's error text or response fields must not repeat: the segments of its
    /// URL's path and its query values (as written and decoded) where they look secret
    /// ([`looks_secret`]), and the values of the headers injected into it and their words, of
    /// [`MIN_SECRET_CHARS`] or more whatever they look like (but for [`DESCRIPTIVE_FIELDS`]);
    /// each also as JSON, HTML, percent-encoding and collapsed whitespace write it
    /// ([`written_forms`]). Longest first, so a value that contains another is replaced whole.
    pub fn secret_parts(&self) -> &[String] {
        &self.secret_parts
    }

    fn find_secret_parts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |s: &str, credential: bool| {
            for s in [Some(s.to_owned()), decoded(s)].into_iter().flatten() {
                // An injected credential is there because the upstream wants it kept from
                // clients: secret whatever it looks like, once long enough to be told apart
                // from words.
                let secret = if credential {
                    s.chars().count() >= MIN_SECRET_CHARS
                } else {
                    looks_secret(&s)
                };
                if secret {
                    for form in written_forms(&s) {
                        if !out.contains(&form) {
                            out.push(form);
                        }
                    }
                }
            }
        };
        for segment in self.path.split('/') {
            add(segment, false);
        }
        if let Some(query) = &self.base_query {
            for pair in query.split('&') {
                add(pair.split_once('=').map_or(pair, |(_, value)| value), false);
            }
        }
        for (name, value) in self.inject.iter() {
            let credential = !DESCRIPTIVE_FIELDS.contains(&name.as_str());
            if let Ok(v) = std::str::from_utf8(value.as_bytes()) {
                add(v, credential);
                // `Bearer <token>`, `Basic <credentials>`: an upstream may echo the token
                // without its scheme.
                for word in v.split_whitespace().filter(|w| w.len() < v.len()) {
                    add(word, credential);
                }
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }

    /// The path and query for a request whose forwarded query is `query`. The client's
    /// parameters follow the configured ones, minus any of the same name: many upstreams take
    /// the last value of a repeated parameter, and a client must not override what the config
    /// sets.
    fn path_and_query(&self, query: Option<&str>) -> String {
        let query = match (&self.base_query, query) {
            (Some(b), Some(q)) => crate::urlenc::without_params_of(q, b),
            (_, q) => q.map(str::to_owned),
        };
        match (&self.base_query, query) {
            (None, None) => self.path.clone(),
            (Some(b), None) => format!("{}?{b}", self.path),
            (None, Some(q)) => format!("{}?{q}", self.path),
            (Some(b), Some(q)) => format!("{}?{b}&{q}", self.path),
        }
    }

    /// The URI for a request whose forwarded query is `query` (see [`Self::path_and_query`]).
    fn uri(&self, query: Option<&str>) -> Uri {
        let pq = self.path_and_query(query);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = PathAndQuery::try_from(pq).ok();
        Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// Builds the upstream request for an allowed exchange. The exchange's headers have
    /// already lost the credentials the guards consumed.
    pub fn request(&self, ex: &mut Exchange) -> Request<Full<Bytes>> {
        let headers = forwarded_headers(ex);
        let body = std::mem::take(&mut ex.body);
        self.build_request(
            ex.method.clone(),
            ex.query.as_deref(),
            headers,
            body,
            &ex.request_id,
        )
    }

    /// Builds an upstream request from its parts: `headers` as [`forwarded_headers`] made
    /// them (the async queue stores them so), to which the request id, the route's injected
    /// headers, the outbound signature and the length are added here, at sending time. So
    /// secrets are never stored with a queued message, and a signature's timestamp is that of
    /// the attempt.
    pub fn build_request(
        &self,
        method: Method,
        query: Option<&str>,
        mut headers: HeaderMap,
        body: Bytes,
        request_id: &str,
    ) -> Request<Full<Bytes>> {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(headers::X_REQUEST_ID, v);
        }
        for (name, value) in self.inject.iter() {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(signer) = &self.signer {
            signer.apply(
                &mut headers,
                &body,
                request_id,
                jiff::Timestamp::now().as_second(),
            );
        }
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.uri(query);
        // The client picks HTTP/2 by ALPN itself; an HTTP/2 version here would fail on an
        // HTTP/1.1 upstream.
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        req
    }

    /// Sends an allowed exchange upstream (its body taken out of it) and waits for the
    /// response headers, at most `timeout`. To a plain-http upstream without outbound signing
    /// the request head is written straight from the exchange, with the headers [`Self::request`]
    /// would build (`direct_head_is_the_built_request` holds the two to that): the intermediate
    /// header map and request cost about 3,000 instructions per request.
    /// `timer`, when the client's connection lends one, times the wait for the head.
    pub async fn forward(
        &self,
        ex: &mut Exchange,
        timer: Option<HeadTimer<'_>>,
    ) -> Result<UpstreamResponse, ForwardError> {
        let direct = if self.scheme == Scheme::HTTP && self.signer.is_none() {
            self.encode_head(ex, &ex.body)
        } else {
            None
        };
        let Some(message) = direct else {
            let req = self.request(ex);
            // Boxed: the client's future is 3.3 KB, and held inline it made every request's
            // state (this future's, and each one awaiting it up to the connection's) that
            // much larger, also on the plain-http path that never runs it.
            return Box::pin(self.send(req)).await.map(UpstreamResponse::from);
        };
        let body = std::mem::take(&mut ex.body);
        let target = h1::Target {
            host: self.host.clone(),
            port: self.port,
        };
        let connect_timeout = self.client.settings.connect_timeout;
        let sent = std::pin::pin!(h1::send_encoded(
            target,
            &message,
            &body,
            &ex.method,
            connect_timeout,
            POOL_IDLE,
        ));
        let (status, fields, body) = h1_within(self.timeout, timer, sent).await?;
        Ok(UpstreamResponse {
            status,
            headers: UpstreamHeaders::Passed(fields),
            body: UpstreamBody::Left(body),
        })
    }

    /// The HTTP/1.1 request head for `ex` (and `body` after it when it is small enough to go in
    /// the same write): what [`forwarded_headers`], [`Self::build_request`] and the client's
    /// encoder make of it together, without building the header map in between. `None` when
    /// the query is not one a URI may carry (the general path, whose URI rejects it, answers).
    fn encode_head(&self, ex: &Exchange, body: &Bytes) -> Option<Vec<u8>> {
        let mut out = h1::head_buffer(body);
        out.extend_from_slice(ex.method.as_str().as_bytes());
        out.push(b' ');
        if self.base_query.is_none() && ex.query.is_none() {
            out.extend_from_slice(self.path.as_bytes());
        } else {
            // The query goes into the request line as it is: only when the URI grammar takes
            // all of it (as the general path's `Uri` would, which also drops a `#` and what
            // follows unchecked), so that no space or line break can end the line early.
            let pq = self.path_and_query(ex.query.as_deref());
            PathAndQuery::try_from(pq.as_str())
                .ok()
                .filter(|p| p.as_str() == pq)?;
            out.extend_from_slice(pq.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(&self.host_field);
        let injected = |name: &HeaderName| self.inject.iter().any(|(n, _)| n == name);
        let mut field = |name: &[u8], value: &[u8]| {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        let named = headers::connection_named(&ex.headers);
        // Cookie fields are written as one after the others (RFC 9113 §8.2.3: an HTTP/2
        // client may send one per cookie; an HTTP/1.1 server reads one).
        let mut cookies: Vec<&[u8]> = Vec::new();
        for (name, value) in &ex.headers {
            if !headers::is_forwardable(name) || named.contains(name) || injected(name) {
                continue;
            }
            if name == http::header::COOKIE {
                cookies.push(value.as_bytes());
            } else {
                field(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        if !cookies.is_empty() {
            field(b"cookie", &cookies.join(&b"; "[..]));
        }
        // `HeaderValue::from_str`'s rule, as `forwarded_headers` applies it.
        let valid = |v: &str| headers::is_field_value(v.as_bytes());
        if !injected(&headers::X_FORWARDED_FOR) && valid(&ex.forwarded_for) {
            field(b"x-forwarded-for", ex.forwarded_for.as_bytes());
        }
        if !injected(&headers::X_FORWARDED_PROTO) {
            field(
                b"x-forwarded-proto",
                if ex.https { b"https" } else { b"http" },
            );
        }
        if !injected(&headers::X_REQUEST_ID) && valid(&ex.request_id) {
            field(b"x-request-id", ex.request_id.as_bytes());
        }
        for (name, value) in self.inject.iter() {
            if name != http::header::CONTENT_LENGTH
                && name != http::header::TRANSFER_ENCODING
                && name != http::header::CONNECTION
            {
                field(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        h1::end_head(&mut out, body);
        Some(out)
    }

    /// Sends `req` and waits for the response headers, at most `timeout`.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        self.client.send(req, self.timeout).await
    }

    /// True when a `Location`-style header value points into this upstream: at its host, or
    /// relative (and so to a path on the upstream's host), or holding a secret part of its URL
    /// ([`Upstream::names_secret`]). Passing it on would show the client the real webhook's
    /// URL or paths; only absolute URLs to other hosts, without those parts, are kept.
    pub fn is_own_url(&self, value: &str) -> bool {
        if self.names_secret(value.as_bytes()) {
            return true;
        }
        match value.trim().parse::<Uri>() {
            Ok(uri) => match uri.authority() {
                Some(a) => a.host().eq_ignore_ascii_case(self.authority.host()),
                None => true,
            },
            // Unparsable: keep nothing that could be ours.
            Err(_) => true,
        }
    }

    /// True when `value` holds a secret-looking part of the upstream's URL or an injected
    /// value ([`Upstream::secret_parts`]), whatever host it names: an upstream that redirects
    /// to its public name (or `localhost`, or its address in another form) still shows the
    /// path that makes its URL secret.
    pub fn names_secret(&self, value: &[u8]) -> bool {
        self.secret_parts
            .iter()
            .any(|p| passed::contains_bytes(value, p.as_bytes()))
    }
}

/// The client's headers as they go upstream, before the route adds its own: hop-by-hop
/// headers, `Host`, framing and the gateway's own headers removed, `X-Forwarded-For` and
/// `X-Forwarded-Proto` set. Takes the headers out of the exchange.
pub fn forwarded_headers(ex: &mut Exchange) -> HeaderMap {
    let mut headers = std::mem::take(&mut ex.headers);
    headers::prepare_request_headers(&mut headers);
    if let Ok(v) = HeaderValue::from_str(&ex.forwarded_for) {
        headers.insert(headers::X_FORWARDED_FOR, v);
    }
    headers.insert(
        headers::X_FORWARDED_PROTO,
        HeaderValue::from_static(if ex.https { "https" } else { "http" }),
    );
    headers
}

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn upstream(url: &str, inject: &[(&str, &str)]) -> Upstream {
        let cfg = UpstreamConfig {
            url: url.parse().unwrap(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            headers: inject
                .iter()
                .map(|(n, v)| {
                    (
                        HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        Secret::new(*v),
                    )
                })
                .collect(),
            ca_file: None,
            sign: None,
            error_bodies: None,
        };
        Upstream::new(
            &cfg,
            UpstreamClient::new(None, Duration::from_secs(1)).unwrap(),
        )
    }

    /// A request carrying every kind of header the forwarding rules treat specially.
    fn exchange(query: Option<&str>, body: &'static str) -> Exchange {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "gateway.example"),
            ("connection", "x-hop-secret, keep-alive"),
            ("x-hop-secret", "per-connection"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("content-length", "999"),
            ("expect", "100-continue"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"),
            ("x-request-id", "client-chosen"),
            ("x-hookwarden-token", "tok"),
            ("x-auth", "client-tries-to-set-the-secret"),
            ("accept", "text/event-stream"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("user-agent", "test/1"),
            ("x-custom", "kept"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let mut ex = Exchange::new(
            Method::POST,
            "/hook",
            query.map(str::to_owned),
            h,
            "203.0.113.7:4000".parse().unwrap(),
        );
        ex.forwarded_for = "198.51.100.1, 203.0.113.7".to_owned();
        ex.body = Bytes::from_static(body.as_bytes());
        ex
    }

    /// A request as its request line, its header fields sorted by name (each name's values in
    /// their order) and what follows the head.
    fn normalized(message: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        let httparse::Status::Complete(n) = req.parse(message).unwrap() else {
            panic!("incomplete head");
        };
        let line = format!("{} {}", req.method.unwrap(), req.path.unwrap());
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        (line, headers, message[n..].to_vec())
    }

    /// What the general path sends: [`Upstream::request`], then the client's encoder.
    fn built(up: &Upstream, mut ex: Exchange) -> Vec<u8> {
        let (parts, body) = up.request(&mut ex).into_parts();
        let body = h1::full_bytes(body);
        let target = h1::Target {
            host: parts.uri.host().unwrap().into(),
            port: parts.uri.port_u16().unwrap_or(80),
        };
        h1::encode_request(&parts, &target, &body)
    }

    #[test]
    fn direct_head_is_the_built_request() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: [Case; 4] = [
            ("http://127.0.0.1:18001/hook", &[("x-auth", "secret")], None),
            (
                "http://upstream.internal/run?token=s3cret&a=1",
                &[("x-auth", "secret"), ("host", "n8n.internal")],
                Some("b=2&a=9&token=guess"),
            ),
            (
                "http://[::1]:8080/h",
                &[("x-forwarded-proto", "override"), ("x-request-id", "fixed")],
                Some("q=1"),
            ),
            ("http://example.com:80/", &[], None),
        ];
        for (url, inject, query) in cases {
            let up = upstream(url, inject);
            let ex = exchange(query, r#"{"message":"hi"}"#);
            let direct = up.encode_head(&ex, &ex.body.clone()).unwrap();
            let general = built(&up, exchange(query, r#"{"message":"hi"}"#));
            let mut a = normalized(&direct);
            let mut b = normalized(&general);
            // The request id is new for each exchange; everything else must agree.
            for h in [&mut a.1, &mut b.1] {
                for (n, v) in h.iter_mut() {
                    if n == "x-request-id" && v.len() == 32 {
                        *v = "<generated>".to_owned();
                    }
                }
            }
            assert_eq!(a, b, "{url}");
            // The rules themselves, not only their agreement.
            let names: Vec<&str> = a.1.iter().map(|(n, _)| n.as_str()).collect();
            for gone in [
                "connection",
                "x-hop-secret",
                "keep-alive",
                "te",
                "upgrade",
                "proxy-authorization",
                "expect",
                "forwarded",
                "x-real-ip",
                "x-hookwarden-token",
            ] {
                assert!(!names.contains(&gone), "{url}: {gone} forwarded");
            }
            assert_eq!(names.iter().filter(|n| **n == "host").count(), 1, "{url}");
            let values = |name: &str| -> Vec<&str> {
                a.1.iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .collect()
            };
            assert_eq!(values("accept"), ["text/event-stream", "application/json"]);
            assert_eq!(values("content-length"), ["16"]);
            assert_eq!(values("x-custom"), ["kept"]);
            assert_eq!(a.2, br#"{"message":"hi"}"#);
        }
    }

    /// A query that could end the request line (it cannot come from a parsed request, but the
    /// exchange's query is rewritten by guards) is never written raw: the direct path declines.
    #[test]
    fn direct_head_declines_a_query_that_is_not_a_uri_query() {
        let up = upstream("http://127.0.0.1:18001/hook", &[]);
        for q in ["a=1 HTTP/1.1\r\nx-injected: 1", "a=\r\n", "a=1#frag x"] {
            let ex = exchange(Some(q), "");
            assert!(up.encode_head(&ex, &Bytes::new()).is_none(), "{q:?}");
        }
        let ex = exchange(Some("a=1&b=%20"), "");
        assert!(up.encode_head(&ex, &Bytes::new()).is_some());
    }

    #[test]
    fn direct_head_injects_and_forwards_as_configured() {
        let up = upstream(
            "http://upstream.internal/run?token=s3cret&a=1",
            &[("x-auth", "secret"), ("host", "n8n.internal")],
        );
        let ex = exchange(Some("b=2&a=9&token=guess"), "");
        let (line, headers, rest) = normalized(&up.encode_head(&ex, &Bytes::new()).unwrap());
        assert_eq!(line, "POST /run?token=s3cret&a=1&b=2");
        let get = |name: &str| -> Vec<String> {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        assert_eq!(get("host"), ["n8n.internal"]);
        assert_eq!(get("x-auth"), ["secret"]);
        assert_eq!(get("x-forwarded-for"), ["198.51.100.1, 203.0.113.7"]);
        assert_eq!(get("x-forwarded-proto"), ["http"]);
        assert_eq!(get("x-request-id"), [ex.request_id.as_str()]);
        assert_eq!(get("content-length"), ["0"]);
        assert!(rest.is_empty());
    }
}
