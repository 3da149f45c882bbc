//! The request pipeline: one request's life as a fixed sequence of phases.
//!
//! ```text
//!  accept ─► address ─► gateway endpoint? ─► path sanity ─► route ─► CORS preflight?
//!        ─► method ─► head guards ─► read body (≤ max_body, ≤ body_timeout) ─► body guards
//!        ─► forward (≤ timeout to headers) ─► stream response (idle timeout)
//!           | async route: store in the queue (committed to disk) ─► 202 queued
//!        ─► CORS headers (browser routes) ─► log: one Event, on success and failure alike
//! ```
//!
//! `GET /_hookwarden/token?route=NAME` takes a short cut after the address phase: the named
//! route's token-endpoint guards, then a new token (see `internal`).
//!
//! Each phase either hands the exchange on or ends it with a [`Denial`]; the last phase turns
//! the result into the response ([`response::denial_response`] is the only place denials
//! become HTTP) and emits the event.

mod internal;
pub mod response;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use ipnet::IpNet;

use crate::browser::{BrowserPolicy, cors};
use crate::config::RouteMode;
use crate::events::{Emitter, Event, Outcome, event_user_agent};
use crate::forward::body::{IdleTimeout, ResponseBody};
use crate::forward::headers::{X_REQUEST_ID, overlay, strip_hop_by_hop};
use crate::forward::{ForwardError, HeadTimer, UpstreamHeaders, UpstreamResponse};
use crate::policy::{
    Denial, Exchange, HandedOn, Reason, RoutePolicy, RouteTable, Services, client_ip, path,
};
use crate::queue::{AcceptError, Queue};
use crate::server::body::RequestBody;

/// `Retry-After` of a `queue_full` refusal: the queue drains at the upstream's pace, so a
/// sender should come back in a while rather than at once.
const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Facts about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The socket peer.
    pub peer: SocketAddr,
    /// True for TLS connections.
    pub tls: bool,
    /// True when the connection's writer takes upstream head fields passed through as bytes
    /// ([`ResponseBody::take_passed`]): the HTTP/1.1 listener. Otherwise they are merged into
    /// the response's header map before it is returned.
    pub passed_heads: bool,
}

/// Listener-wide settings the pipeline needs.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Time allowed for a request body.
    pub body_timeout: Duration,
    /// `Strict-Transport-Security` for TLS responses.
    pub hsts: Option<HeaderValue>,
}

/// The gateway: routes, services and sinks shared by every connection.
pub struct Gateway {
    routes: ArcSwap<RouteTable>,
    settings: ArcSwap<GatewaySettings>,
    services: Services,
    events: Arc<Emitter>,
    /// Bytes all requests together may hold in memory while their bodies are read and
    /// forwarded (`server.max_buffered_body`): `max_body` bounds one request, this bounds the
    /// sum, so many slow bodies at the limit cannot exhaust memory.
    body_budget: Arc<tokio::sync::Semaphore>,
    queue: Option<Queue>,
}

/// How a request ended, before it becomes a response and an event.
struct Finished {
    response: Response<ResponseBody>,
    outcome: Outcome,
    reason: Option<Reason>,
    detail: Option<&'static str>,
    upstream_status: Option<u16>,
    upstream_latency: Option<Duration>,
    /// Stored in the delivery queue (async route): accepted, so replay claims stay.
    queued: bool,
}

impl Finished {
    /// The gateway answered by itself (a preflight, a token): allowed, nothing forwarded.
    fn answered(response: Response<ResponseBody>) -> Self {
        Finished {
            response,
            outcome: Outcome::Allowed,
            reason: None,
            detail: None,
            upstream_status: None,
            upstream_latency: None,
            queued: false,
        }
    }
}

impl Gateway {
    /// A gateway serving `routes`.
    pub fn new(
        routes: RouteTable,
        settings: GatewaySettings,
        services: Services,
        events: Arc<Emitter>,
        max_buffered_body: u64,
    ) -> Self {
        let budget = usize::try_from(max_buffered_body)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Gateway {
            routes: ArcSwap::from_pointee(routes),
            settings: ArcSwap::from_pointee(settings),
            services,
            events,
            body_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
            queue: None,
        }
    }

    /// Gives async routes their delivery queue.
    pub fn with_queue(mut self, queue: Queue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The delivery queue of async routes.
    pub fn queue(&self) -> Option<&Queue> {
        self.queue.as_ref()
    }

    /// Replaces the routes and settings atomically; requests in flight finish on the old ones.
    pub fn swap(&self, routes: RouteTable, settings: GatewaySettings) {
        self.routes.store(Arc::new(routes));
        self.settings.store(Arc::new(settings));
    }

    /// The current routes.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// Shared state and stores.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The event emitter.
    pub fn events(&self) -> &Arc<Emitter> {
        &self.events
    }

    /// The answer to a request head the listener will not serve (malformed, too large, too
    /// many fields: `bad_request`; too many HTTP/2 requests from one address: `overloaded`):
    /// a JSON error, recorded like any refusal, with the connection's address (the head that
    /// would name a forwarded one is the part that was refused). Such heads are what
    /// smuggling attempts and scanners send.
    pub fn refuse_head(
        &self,
        status: StatusCode,
        reason: Reason,
        detail: &'static str,
        info: ConnInfo,
    ) -> Response<ResponseBody> {
        let time = jiff::Timestamp::now();
        let request_id = new_request_id();
        let mut response =
            response::json_response(status, response::error_body(status, &request_id));
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(X_REQUEST_ID, v);
        }
        self.add_hsts(info.tls, response.headers_mut());
        self.events.emit(Event {
            time,
            request_id,
            route: None,
            client_ip: info.peer.ip().to_canonical(),
            method: "-".into(),
            status: status.as_u16(),
            outcome: Outcome::Denied,
            reason: Some(reason),
            detail: Some(detail),
            flags: Vec::new(),
            key_id: None,
            session_id: None,
            latency: Duration::ZERO,
            upstream_status: None,
            upstream_latency: None,
            user_agent: None,
        });
        response
    }

    /// Adds `Strict-Transport-Security` to a response on a TLS connection, when configured.
    /// Every answer carries it, the gateway's own and refusals of unreadable heads included:
    /// a browser that first sees the gateway through one of those should learn it too.
    pub fn add_hsts(&self, tls: bool, headers: &mut http::HeaderMap) {
        if tls && let Some(hsts) = &self.settings.load().hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }

    /// Serves one request. `timer`, when the connection lends one, times the wait for the
    /// upstream's response head (see [`HeadTimer`]).
    pub async fn handle(
        &self,
        req: Request<RequestBody>,
        conn: ConnInfo,
        timer: Option<HeadTimer<'_>>,
    ) -> Response<ResponseBody> {
        // What `begin` reads and builds is not kept across this future's awaits: its request
        // parts and the exchange before it is moved into `pending` were 760 bytes of every
        // request's state, copied with it.
        let (mut pending, body, settings, bad_xff) = match self.begin(req, conn) {
            Begun::Internal(resp) => return resp,
            Begun::Exchange(pending, body, settings, bad_xff) => (pending, body, settings, bad_xff),
        };
        let ex = &mut pending.ex;

        let routes = self.routes.load();
        // The token endpoint serves the route named in its query, so events, CORS answers and
        // guards are that route's.
        let token_endpoint = ex.path == internal::TOKEN_PATH;
        let route = if token_endpoint {
            ex.query_param("route")
                .and_then(|name| routes.by_name(&name).cloned())
        } else {
            routes.by_path(&ex.path).cloned()
        };
        pending.route = route.as_ref().map(|r| r.name.clone());
        // Read now: forwarding hands the request headers to the upstream request.
        let browser = route.as_ref().and_then(|r| r.browser.clone());
        let cors_origin = browser
            .as_ref()
            .and_then(|b| b.origins.admit(&ex.headers).ok().cloned());
        let finished = if bad_xff {
            self.refuse(
                ex,
                Denial::new(Reason::BadRequest).with_detail("invalid X-Forwarded-For"),
            )
        } else if token_endpoint {
            internal::token(self, route.as_ref(), ex).await
        } else if let Err(problem) = path::check_path(&ex.path) {
            self.refuse(
                ex,
                Denial::new(Reason::BadRequest).with_detail(problem.as_str()),
            )
        } else {
            match &route {
                None => self.refuse(ex, Denial::new(Reason::NotFound)),
                Some(route) => self.run_route(route, ex, body, &settings, timer).await,
            }
        };

        let Finished {
            mut response,
            outcome,
            reason,
            detail,
            upstream_status,
            upstream_latency,
            queued,
        } = finished;
        // A queued message counts as accepted: its claims stay, so a sender's retry of it is a
        // duplicate rather than a second copy in the queue.
        if !ex.replay_claims.is_empty() {
            let delivered = queued || upstream_status.is_some_and(|s| (200..300).contains(&s));
            // Decided: if this future is dropped while the claims are updated, the rest are
            // updated the same way (see `Unanswered`).
            pending.answered = Some(Answered {
                delivered,
                upstream_status,
                upstream_latency,
            });
            let ex = &pending.ex;
            update_claims(
                &self.services.state,
                &ex.replay_claims,
                delivered,
                &ex.request_id,
            )
            .await;
        }
        let ex = &mut pending.ex;
        if !conn.passed_heads {
            response::merge_passed(&mut response, &ex.request_id);
        }
        if browser.is_some() {
            cors::decorate(response.headers_mut(), cors_origin.as_ref());
        }
        let id_passed = response
            .body_mut()
            .passed_mut()
            .is_some_and(|head| head.push_own("x-request-id", &ex.request_id));
        let h = response.headers_mut();
        if !id_passed && let Ok(v) = HeaderValue::from_str(&ex.request_id) {
            h.insert(X_REQUEST_ID, v);
        }
        if conn.tls
            && let Some(hsts) = &settings.hsts
        {
            h.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        let status = response.status().as_u16();
        pending.finish(
            status,
            outcome,
            reason,
            detail,
            upstream_status,
            upstream_latency,
        );
        response
    }

    /// The start of [`Self::handle`], before anything is awaited: the client's address, the
    /// gateway's own endpoints, and the exchange that is recorded from here on.
    fn begin(&self, req: Request<RequestBody>, conn: ConnInfo) -> Begun<'_> {
        let started = Instant::now();
        let time = jiff::Timestamp::now();
        let settings = self.settings.load_full();
        let (parts, body) = req.into_parts();

        let addr = client_ip::resolve(conn.peer, &parts.headers, &settings.trusted_proxies);
        let (client_ip, forwarded_for, https, bad_xff) = match addr {
            Ok(a) => {
                let https = if a.via_trusted_proxy {
                    parts
                        .headers
                        .get("x-forwarded-proto")
                        .map_or(conn.tls, |v| v.as_bytes().eq_ignore_ascii_case(b"https"))
                } else {
                    conn.tls
                };
                (a.ip, a.forwarded_for, https, false)
            }
            Err(_) => {
                let ip = conn.peer.ip().to_canonical();
                (ip, ip.to_string(), conn.tls, true)
            }
        };

        let path_str = parts.uri.path();
        if path_str.starts_with("/_hookwarden/")
            && let Some(mut resp) = internal::handle(self, &parts, path_str)
        {
            self.add_hsts(conn.tls, resp.headers_mut());
            return Begun::Internal(resp);
        }

        let ex = Exchange {
            request_id: new_request_id_at(u64::try_from(time.as_millisecond()).unwrap_or(0)),
            started,
            method: parts.method,
            path: path_str.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            original_query: parts.uri.query().map(str::to_owned),
            has_body: !body.is_end_stream(),
            headers: parts.headers,
            version: parts.version,
            peer: conn.peer,
            client_ip,
            forwarded_for,
            https,
            body: Bytes::new(),
            key_id: None,
            session_id: None,
            flags: Vec::new(),
            response_headers: http::HeaderMap::new(),
            replay_claims: Vec::new(),
            handed_on: HandedOn::Not,
        };
        let user_agent = ex
            .headers
            .get(header::USER_AGENT)
            .map(|v| event_user_agent(v.as_bytes()));
        // From here the exchange is recorded even if it is dropped unfinished.
        let pending = Unanswered {
            gateway: self,
            ex,
            time,
            route: None,
            user_agent,
            answered: None,
        };
        Begun::Exchange(pending, body, settings, bad_xff)
    }

    /// The phases after routing: method, head guards, body, body guards, forward.
    async fn run_route(
        &self,
        route: &Arc<RoutePolicy>,
        ex: &mut Exchange,
        body: RequestBody,
        settings: &GatewaySettings,
        timer: Option<HeadTimer<'_>>,
    ) -> Finished {
        // A refusal before the body is read leaves it unread; `Linger` drains a bounded part of
        // it after the answer, so the client reads its 413 (or 401, …) instead of a reset.
        let mut body = Linger(Some(body));
        // A CORS preflight is answered before the method check: OPTIONS is never a route's
        // method, and the browser sends it before the real request.
        if ex.method == Method::OPTIONS
            && let Some(browser) = &route.browser
        {
            return self.preflight(ex, browser, &browser.methods);
        }
        if let Err(d) = route.method.check(ex) {
            return self.refuse(ex, d);
        }
        if let Err(d) = route.check_head(ex, &self.services).await {
            route.record_denial(ex, &d, &self.services).await;
            return self.refuse(ex, d);
        }
        // Reserve the body's bytes (its declared length, or the route's limit when it has
        // none) until the request has been forwarded.
        let declared = if ex.has_body {
            declared_length(ex)
        } else {
            None
        };
        let reserve = if ex.has_body {
            declared.unwrap_or(route.max_body).min(route.max_body)
        } else {
            0
        };
        let _budget = match u32::try_from(reserve)
            .ok()
            .and_then(|n| self.body_budget.clone().try_acquire_many_owned(n).ok())
        {
            Some(permit) => permit,
            None => {
                let mut d =
                    Denial::new(Reason::Overloaded).with_detail("request body budget exhausted");
                d.retry_after = Some(Duration::from_secs(1));
                return self.refuse(ex, d);
            }
        };
        let Some(incoming) = body.0.take() else {
            return self.refuse(ex, Denial::new(Reason::InternalError));
        };
        let http2 = matches!(incoming, RequestBody::Right(_));
        match read_body(incoming, route.max_body, settings.body_timeout).await {
            Ok(bytes) => ex.body = bytes,
            Err(d) => return self.refuse(ex, d),
        }
        if http2 {
            // A body shorter than its declared length is not the request the client sent: an
            // HTTP/2 stream reset with NO_ERROR ends the body in hyper as if it were complete.
            // (The HTTP/1.1 reader cannot end a body early.)
            if declared.is_some_and(|n| n != ex.body.len() as u64) {
                return self.refuse(
                    ex,
                    Denial::new(Reason::BadRequest)
                        .with_detail("body shorter than its Content-Length"),
                );
            }
            // Without a declared length, that reset is told apart from the end of the body
            // only by hyper's stream task, which checks for a reset when this future is
            // pending and then drops it: give it that chance before anything is forwarded or
            // queued (the reset has arrived already if it is what ended the body).
            tokio::task::yield_now().await;
        }
        if let Err(d) = route.check_body(ex, &self.services).await {
            route.record_denial(ex, &d, &self.services).await;
            return self.refuse(ex, d);
        }
        if route.mode == RouteMode::Async {
            return self.enqueue(route, ex).await;
        }
        self.forward(route, ex, timer).await
    }

    /// Stores an allowed exchange of an async route and answers
    /// `202 {"status":"queued","id":"…"}` once it is on disk; 503 (`queue_full`) when the route
    /// holds `max_queued` messages.
    async fn enqueue(&self, route: &RoutePolicy, ex: &mut Exchange) -> Finished {
        let Some(queue) = &self.queue else {
            return self.refuse(
                ex,
                Denial::new(Reason::InternalError).with_detail("async route without a queue"),
            );
        };
        ex.handed_on = HandedOn::Queue;
        let accepted = queue.accept(route, ex);
        // The writer stores the message whether or not this request is still waiting, so the
        // message's claims follow the writer's answer in a task of their own: kept once it is
        // stored (a copy is then a duplicate), released if it was refused.
        let accepted = if ex.replay_claims.is_empty() {
            accepted.await
        } else {
            self.deciding_claims(ex, accepted, Result::is_ok)
                .await
                .unwrap_or_else(|e| Err(AcceptError::Store(format!("queue task failed: {e}"))))
        };
        match accepted {
            Ok(()) => {
                let mut response = response::json_response(
                    http::StatusCode::ACCEPTED,
                    format!(r#"{{"status":"queued","id":"{}"}}"#, ex.request_id),
                );
                for (name, value) in &ex.response_headers {
                    response.headers_mut().insert(name, value.clone());
                }
                let mut f = Finished::answered(response);
                f.queued = true;
                f
            }
            Err(AcceptError::Full) => {
                let mut d = Denial::new(Reason::QueueFull).with_detail("max_queued reached");
                d.retry_after = Some(QUEUE_FULL_RETRY_AFTER);
                self.refuse(ex, d)
            }
            Err(e) => {
                tracing::error!(request_id = %ex.request_id, route = %route.name, error = %e, "cannot queue a request");
                self.refuse(
                    ex,
                    Denial::new(Reason::InternalError).with_detail("queue write failed"),
                )
            }
        }
    }

    /// Sends an allowed exchange upstream and starts streaming the answer back.
    async fn forward(
        &self,
        route: &Arc<RoutePolicy>,
        ex: &mut Exchange,
        timer: Option<HeadTimer<'_>>,
    ) -> Finished {
        let sent = Instant::now();
        ex.handed_on = HandedOn::Upstream;
        let answer = if ex.replay_claims.is_empty() {
            route.upstream.forward(ex, timer).await
        } else {
            // A signed message's claims must follow the upstream's answer, also when the
            // client leaves before it (a sender that gave up and will retry): cancelling the
            // call and releasing the claims would let the retry through while the upstream
            // may be processing the first copy. So the call runs in a task of its own.
            let req = route.upstream.request(ex);
            let owner = Arc::clone(route);
            let sent = async move { owner.upstream.send(req).await };
            let delivered = |r: &Result<Response<_>, _>| {
                r.as_ref().is_ok_and(|resp| resp.status().is_success())
            };
            // Boxed for the reason `Upstream::forward` boxes its general path.
            match Box::pin(self.deciding_claims(ex, sent, delivered)).await {
                Ok(r) => r.map(UpstreamResponse::from),
                Err(e) => Err(ForwardError::Broken(e.to_string())),
            }
        };
        match answer {
            Ok(resp) => {
                let upstream_latency = Some(sent.elapsed());
                let UpstreamResponse {
                    status,
                    headers,
                    body,
                } = resp;
                let upstream_status = Some(status.as_u16());
                if route.hide_error_bodies
                    && (status == http::StatusCode::NOT_FOUND || status.is_server_error())
                {
                    // The upstream's error page may name the real webhook URL; the client gets
                    // the status and the gateway's own JSON error instead.
                    let body = response::error_body(status, &ex.request_id);
                    let mut response = response::json_response(status, body);
                    overlay(response.headers_mut(), &ex.response_headers);
                    return Finished {
                        response,
                        outcome: Outcome::Allowed,
                        reason: None,
                        detail: Some("upstream error body hidden"),
                        upstream_status,
                        upstream_latency,
                        queued: false,
                    };
                }
                let body = IdleTimeout::new(body, route.upstream.idle_timeout);
                let mut response = match headers {
                    // Nothing here reads or changes the upstream's fields: they go on as they
                    // came (`forward::passed`), after the guards' own headers (RateLimit
                    // fields, a rotated token), none of which the upstream sent.
                    UpstreamHeaders::Passed(head)
                        if !head.is_ruled()
                            && !head.shares_a_name_with(&ex.response_headers)
                            && !head.names_secret(route.upstream.secret_parts()) =>
                    {
                        let mut response = Response::new(ResponseBody::passed(body, head));
                        *response.headers_mut() = std::mem::take(&mut ex.response_headers);
                        response
                    }
                    headers => match headers.into_map() {
                        Ok(mut headers) => {
                            self.apply_response_rules(route, ex, &mut headers);
                            let mut response = Response::new(ResponseBody::stream(body));
                            *response.headers_mut() = headers;
                            response
                        }
                        Err(e) => {
                            let e = ForwardError::Broken(e.to_string());
                            return self.upstream_failed(route, ex, e, sent);
                        }
                    },
                };
                *response.status_mut() = status;
                Finished {
                    response,
                    outcome: Outcome::Allowed,
                    reason: None,
                    detail: None,
                    upstream_status,
                    upstream_latency,
                    queued: false,
                }
            }
            Err(e) => self.upstream_failed(route, ex, e, sent),
        }
    }

    /// The rules for the fields of an upstream's response: hop-by-hop fields go, and so do
    /// `Location`, `Content-Location` and `Refresh` when they would show the upstream's URL,
    /// and `Link` and `Set-Cookie` when they hold its secret path;
    /// the headers the guards asked for replace the upstream's of the same name.
    fn apply_response_rules(&self, route: &RoutePolicy, ex: &Exchange, headers: &mut HeaderMap) {
        strip_hop_by_hop(headers);
        for name in [header::LOCATION, header::CONTENT_LOCATION, header::REFRESH] {
            let leaks = headers
                .get_all(&name)
                .iter()
                .any(|v| v.to_str().map_or(true, |v| route.upstream.is_own_url(v)));
            if leaks {
                headers.remove(&name);
            }
        }
        // Fields that may carry a URL or path among other things (`Link: <…>; rel=…`, a
        // cookie's `Path=`): gone when they name the upstream's secret path.
        for name in [header::LINK, header::SET_COOKIE] {
            let leaks = |v: &HeaderValue| route.upstream.names_secret(v.as_bytes());
            if headers.get_all(&name).iter().any(leaks) {
                // Only the fields that leak: a session cookie beside them is the upstream's.
                let kept: Vec<HeaderValue> = headers
                    .get_all(&name)
                    .iter()
                    .filter(|v| !leaks(v))
                    .cloned()
                    .collect();
                headers.remove(&name);
                for v in kept {
                    headers.append(name.clone(), v);
                }
            }
        }
        overlay(headers, &ex.response_headers);
    }

    /// The answer when the upstream could not be reached or broke the exchange.
    fn upstream_failed(
        &self,
        route: &RoutePolicy,
        ex: &Exchange,
        e: ForwardError,
        sent: Instant,
    ) -> Finished {
        let (reason, detail) = match &e {
            ForwardError::Connect(_) => (Reason::UpstreamUnreachable, "connect failed"),
            ForwardError::Broken(_) => (Reason::UpstreamUnreachable, "exchange broken"),
            ForwardError::Timeout(_) => (Reason::UpstreamTimeout, "no response headers in time"),
        };
        tracing::warn!(
            request_id = %ex.request_id,
            route = %route.name,
            error = %e,
            "upstream failed"
        );
        let mut f = self.refuse(ex, Denial::new(reason).with_detail(detail));
        f.outcome = Outcome::Failed;
        f.upstream_latency = Some(sent.elapsed());
        f
    }

    /// Runs `work` (the hand-on of a request holding replay claims) in a task of its own, which
    /// then settles the claims, taken from `ex`, if `delivered` says so of its result, or
    /// releases them: so they follow the real answer even if this request is dropped meanwhile.
    async fn deciding_claims<T: Send + 'static>(
        &self,
        ex: &mut Exchange,
        work: impl Future<Output = T> + Send + 'static,
        delivered: impl FnOnce(&T) -> bool + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let claims = std::mem::take(&mut ex.replay_claims);
        let state = self.services.state.clone();
        let request_id = ex.request_id.clone();
        tokio::spawn(async move {
            let r = work.await;
            update_claims(&state, &claims, delivered(&r), &request_id).await;
            r
        })
        .await
    }

    /// Answers a CORS preflight: 204 for an allowed origin, else the origin guard's refusal.
    fn preflight(&self, ex: &Exchange, browser: &BrowserPolicy, methods: &HeaderValue) -> Finished {
        match browser.origins.admit(&ex.headers) {
            Ok(_) => Finished::answered(cors::preflight(methods)),
            Err(d) => self.refuse(ex, d),
        }
    }

    /// Ends the exchange with a denial. Headers the guards asked for (a rotated token, rate
    /// limit fields) are kept: the client needs them most on a refusal.
    fn refuse(&self, ex: &Exchange, denial: Denial) -> Finished {
        let mut response = response::denial_response(&denial, &ex.request_id);
        overlay(response.headers_mut(), &ex.response_headers);
        Finished {
            response,
            outcome: Outcome::Denied,
            reason: Some(denial.reason),
            detail: denial.detail,
            upstream_status: None,
            upstream_latency: None,
            queued: false,
        }
    }
}

/// Settles the replay claims of a delivered request (copies are now duplicates), or forgets
/// those of a request that was not delivered, so the sender's retry goes through.
async fn update_claims(
    state: &crate::state::State,
    claims: &[(String, Duration)],
    delivered: bool,
    request_id: &str,
) {
    for (key, ttl) in claims {
        let done = if delivered {
            state.settle(key, *ttl).await
        } else {
            state.remove(key).await
        };
        if let Err(e) = done {
            tracing::warn!(%request_id, error = %e, "cannot update a replay claim");
        }
    }
}

/// How [`Gateway::begin`] ends: an answer of the gateway's own, or an exchange to run (with
/// its body, the settings it runs under and whether its `X-Forwarded-For` was unusable).
// Returned once per request and taken apart at once: boxing the larger variant would cost an
// allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Begun<'g> {
    Internal(Response<ResponseBody>),
    Exchange(Unanswered<'g>, RequestBody, Arc<GatewaySettings>, bool),
}

/// An exchange on its way through [`Gateway::handle`], recorded when it ends. A handler can
/// be dropped before it ends: hyper drops the handler of an HTTP/2 stream the client resets,
/// the HTTP/1.1 loop drops it when the client closes (also, for either, when the gateway
/// closes the connection or shutdown's grace runs out). Such an exchange still gets its audit
/// event (status 499, `client_closed`, the detail saying how far it got). Replay claims it
/// still holds are released (never handed on) or decided as its answer said (dropped while
/// they were being updated); claims of a request handed on went with it, to the task that
/// runs its upstream call or waits for the queue's write, which decides them by that answer.
struct Unanswered<'g> {
    gateway: &'g Gateway,
    ex: Exchange,
    time: jiff::Timestamp,
    /// The route's name, once the request has one.
    route: Option<Arc<str>>,
    user_agent: Option<String>,
    /// Set once the answer is known and the claims are being updated.
    answered: Option<Answered>,
}

/// What an exchange's answer decided, kept while its replay claims are updated.
#[derive(Debug, Clone, Copy)]
struct Answered {
    /// The message counts as delivered (2xx, or queued): claims are kept.
    delivered: bool,
    upstream_status: Option<u16>,
    upstream_latency: Option<Duration>,
}

impl Unanswered<'_> {
    /// Emits the exchange's event; nothing more happens when it is dropped.
    fn finish(
        &mut self,
        status: u16,
        outcome: Outcome,
        reason: Option<Reason>,
        detail: Option<&'static str>,
        upstream_status: Option<u16>,
        upstream_latency: Option<Duration>,
    ) {
        let ex = &mut self.ex;
        self.gateway.events.emit(Event {
            time: self.time,
            request_id: std::mem::take(&mut ex.request_id),
            route: self.route.take(),
            client_ip: ex.client_ip,
            method: crate::events::event_method(&ex.method),
            status,
            outcome,
            reason,
            detail,
            flags: std::mem::take(&mut ex.flags),
            key_id: ex.key_id.take(),
            session_id: ex.session_id.take(),
            latency: ex.started.elapsed(),
            upstream_status,
            upstream_latency,
            user_agent: self.user_agent.take(),
        });
        // Settled or released by `handle` already.
        ex.replay_claims.clear();
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        // `finish` takes the request id: an exchange that has one was never recorded.
        if self.ex.request_id.is_empty() {
            return;
        }
        // Claims still held here were being updated when the answer was known (`answered`), or
        // were never handed on; those handed on go with the upstream call or the queue's write
        // (see `Gateway::forward`, `Gateway::enqueue`).
        let (keep, detail) = match (self.answered, self.ex.handed_on) {
            (Some(a), _) => (a.delivered, "dropped after the answer was ready"),
            (None, HandedOn::Queue) => (
                false,
                "dropped while the message was being queued (it is queued unless the queue refused it)",
            ),
            (None, HandedOn::Upstream) => (false, "dropped while the upstream was answering"),
            (None, HandedOn::Not) => (false, "dropped before the request was handed on"),
        };
        let claims = std::mem::take(&mut self.ex.replay_claims);
        if !claims.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let state = self.gateway.services.state.clone();
            let request_id = self.ex.request_id.clone();
            runtime.spawn(async move {
                update_claims(&state, &claims, keep, &request_id).await;
            });
        }
        let (upstream_status, upstream_latency) = self
            .answered
            .map_or((None, None), |a| (a.upstream_status, a.upstream_latency));
        let reason = Reason::ClientClosed;
        self.finish(
            reason.status().as_u16(),
            Outcome::Failed,
            Some(reason),
            Some(detail),
            upstream_status,
            upstream_latency,
        );
    }
}

/// A request body that may be left unread by a refusal. Closing a connection with unread
/// request bytes in the socket makes the kernel send a reset, which can destroy the response
/// before the client reads it. The HTTP/1.1 connection reads and drops the rest itself after
/// the response (`server::h1`); for an HTTP/2 stream, a bounded part (8 MiB within 5 s) is read
/// and dropped in the background.
struct Linger(Option<RequestBody>);

impl Drop for Linger {
    fn drop(&mut self) {
        if let Some(RequestBody::Right(body)) = self.0.take()
            && !body.is_end_stream()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let limited = Limited::new(body, 8 << 20);
                let _ = tokio::time::timeout(Duration::from_secs(5), limited.collect()).await;
            });
        }
    }
}

/// The request's `Content-Length`, when it has a valid one.
fn declared_length(ex: &Exchange) -> Option<u64> {
    ex.headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads a whole request body, at most `max` bytes within `timeout`.
async fn read_body(body: RequestBody, max: u64, timeout: Duration) -> Result<Bytes, Denial> {
    let limited = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    let mut collect = std::pin::pin!(limited.collect());
    // Most bodies arrived with their head and are read whole at the first poll: the timer (a
    // clock read, the collector moved into a `Timeout`, about 250 instructions) is made only
    // when the body is still on its way.
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        Poll::Ready(r) => r,
        Poll::Pending => match tokio::time::timeout(timeout, collect).await {
            Err(_) => {
                return Err(
                    Denial::new(Reason::BodyTimeout).with_detail("body not received in time")
                );
            }
            Ok(r) => r,
        },
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Denial::new(Reason::BodyTooLarge).with_detail("body over max_body while reading"))
        }
        Err(_) => Err(Denial::new(Reason::BadRequest).with_detail("body could not be read")),
    }
}

/// A new request id: 32 hex digits, the first 12 the time in milliseconds (so ids sort by
/// time), the rest a per-process random value and a scrambled counter (so ids are unique
/// across instances without a system call per request, which a UUID's fresh randomness would
/// cost, and do not reveal how many requests the gateway serves).
pub fn new_request_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    new_request_id_at(ms)
}

/// [`new_request_id`] for a request that arrived at `ms` (milliseconds since the epoch), when
/// the caller has read the clock already.
pub fn new_request_id_at(ms: u64) -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<(u16, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (hi, lo) = *SEED.get_or_init(|| {
        let mut b = [0u8; 10];
        // Without randomness ids are still unique within this process; only the cross-instance
        // guarantee weakens, so a failure here is not worth refusing requests over.
        let _ = getrandom::fill(&mut b);
        (
            u16::from_le_bytes([b[0], b[1]]),
            u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]),
        )
    });
    let n = scramble(lo.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)));
    // By hand rather than `format!`: this runs on every request, and the formatting machinery
    // costs more than the rest of the function.
    let mut id = [0u8; 32];
    put_hex(&mut id[..12], ms);
    put_hex(&mut id[12..16], u64::from(hi));
    put_hex(&mut id[16..], n);
    // Hex digits only, so always ASCII; the fallback is unreachable but keeps this total.
    String::from_utf8(id.to_vec()).unwrap_or_default()
}

/// Writes the low `out.len()` hex digits of `v` into `out`, most significant first; `out` has
/// an even length of at most 16 (a whole number of bytes of `v`). Two digits a byte from a
/// table: a digit at a time cost about 90 instructions more per request id, and the `hex`
/// crate's `encode_to_slice` about 120 more (one-worker callgrind).
fn put_hex(out: &mut [u8], v: u64) {
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        t
    };
    debug_assert!(out.len().is_multiple_of(2) && out.len() <= 16);
    let bytes = v.to_be_bytes();
    let skip = 8usize.saturating_sub(out.len() / 2);
    for (pair, &b) in out.chunks_exact_mut(2).zip(&bytes[skip..]) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
}

/// SplitMix64's finaliser: a bijection on `u64`, so distinct counters stay distinct, while
/// consecutive ones look unrelated.
fn scramble(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::{new_request_id, put_hex};

    #[test]
    fn hex_digits_match_the_formatter() {
        for v in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            let mut out = [0u8; 12];
            put_hex(&mut out, v);
            let low = format!("{v:016x}");
            assert_eq!(std::str::from_utf8(&out).unwrap(), &low[4..]);
            let mut full = [0u8; 16];
            put_hex(&mut full, v);
            assert_eq!(std::str::from_utf8(&full).unwrap(), low);
            let mut four = [0u8; 4];
            put_hex(&mut four, v);
            assert_eq!(std::str::from_utf8(&four).unwrap(), &low[12..]);
        }
    }

    #[test]
    fn request_ids_are_unique_hex_and_time_ordered() {
        let ids: Vec<String> = (0..10_000).map(|_| new_request_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        // The time prefix never goes backwards.
        assert!(ids.windows(2).all(|w| w[0][..12] <= w[1][..12]));
        // Consecutive ids do not show a counter.
        let tail = |s: &str| u64::from_str_radix(&s[16..], 16).unwrap();
        assert!(
            ids.windows(2)
                .all(|w| tail(&w[1]).wrapping_sub(tail(&w[0])) != 1)
        );
    }
}
