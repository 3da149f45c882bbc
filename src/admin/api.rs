//! The admin API's JSON endpoints and `/metrics`. Every handler here runs behind the token
//! check ([`super::auth`]); store queries run on the blocking pool over the admin's own read
//! connection, so a slow query never holds the audit writer's lock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::reload::ReloadError;
use crate::config::{AlertMatch, Issue, RouteConfig, RouteMode, Severity, units};
use crate::events::metrics::Gauges;
use crate::policy::{Guard, RoutePolicy};
use crate::store::StoreError;
use crate::store::events::{self as audit, FilterArgs};

/// Most events one `GET /api/events` returns.
pub const MAX_EVENTS_PER_PAGE: u32 = 1000;
/// The longest stats window.
const MAX_WINDOW: Duration = Duration::from_secs(90 * 86400);

/// An error answer: `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin API: store query failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the store query failed; see the gateway's log",
    )
}

/// Runs a read on the admin's store connection off the async threads.
async fn read<T: Send + 'static>(
    state: &AdminState,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let store = state.reader.clone();
    match tokio::task::spawn_blocking(move || f(&store.lock())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_failed(e)),
        Err(e) => Err(store_failed(e)),
    }
}

/// A handler's query arguments, or why they cannot be read (`limit=abc`, `before=1e5`) with
/// `hint` after the framework's reason: for the API's own JSON `bad_request`, like every other
/// bad filter, not the framework's plain text.
pub fn query_args<T>(
    args: Result<Query<T>, axum::extract::rejection::QueryRejection>,
    hint: &str,
) -> Result<T, String> {
    args.map(|Query(a)| a)
        .map_err(|e| format!("{}{hint}", e.body_text()))
}

/// `GET /api/events`: `route`, `outcome`, `reason`, `since`, `ip`, `limit`, `before`, `after`.
pub async fn events(
    State(state): State<AdminState>,
    args: Result<Query<FilterArgs>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let args = match query_args(args, "; limit, before and after are whole numbers") {
        Ok(a) => a,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_request", msg),
    };
    let filter = match args.resolve(jiff::Timestamp::now(), MAX_EVENTS_PER_PAGE) {
        Ok(f) => f,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_request", msg),
    };
    match read(&state, move |c| audit::list_events(c, &filter)).await {
        Ok(events) => Json(json!({ "events": events })).into_response(),
        Err(resp) => resp,
    }
}

/// Query of `GET /api/stats`.
#[derive(Debug, Deserialize)]
pub struct StatsArgs {
    /// The window back from now, e.g. `1h` (default).
    pub window: Option<String>,
}

/// `GET /api/stats?window=1h`.
pub async fn stats(
    State(state): State<AdminState>,
    args: Result<Query<StatsArgs>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let args = match query_args(args, "") {
        Ok(a) => a,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_request", msg),
    };
    let window = match args.window.as_deref() {
        None | Some("") => Duration::from_secs(3600),
        Some(w) => match units::parse_duration(w) {
            Ok(d) if d >= Duration::from_secs(60) && d <= MAX_WINDOW => d,
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "window must be between 1m and 90d",
                );
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("window: {e}; write e.g. 15m, 1h or 7d"),
                );
            }
        },
    };
    match read(&state, move |c| {
        audit::stats(c, jiff::Timestamp::now(), window)
    })
    .await
    {
        Ok(s) => Json(s).into_response(),
        Err(resp) => resp,
    }
}

/// `GET /api/routes`: every route with its settings and the guards it runs, in order.
pub async fn routes(State(state): State<AdminState>) -> Response {
    let config = state.reloader.current();
    let table = state.gateway.routes();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let alerts: Vec<&str> = config
                .alerts
                .iter()
                .filter(|a| a.route.as_deref().is_none_or(|n| n == r.name))
                .map(|a| a.name.as_str())
                .collect();
            describe_route(r, table.by_name(&r.name).map(|p| &**p), &alerts)
        })
        .collect();
    Json(json!({ "routes": routes })).into_response()
}

/// A route for the dashboard. Never the upstream's path or query (they often carry the
/// webhook's secret) nor injected header values: only their names.
fn describe_route(r: &RouteConfig, policy: Option<&RoutePolicy>, alerts: &[&str]) -> Value {
    let up = &r.upstream.url;
    let host = match (up.host(), up.port_u16()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    };
    let (head, body) = match policy {
        Some(p) => (
            std::iter::once("method".to_owned())
                .chain(p.head.iter().map(guard_name))
                .chain(std::iter::once("read_body".to_owned()))
                .collect::<Vec<_>>(),
            p.body.iter().map(guard_name).collect::<Vec<_>>(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    json!({
        "name": r.name,
        "path": r.path,
        "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "mode": match r.mode { RouteMode::Sync => "sync", RouteMode::Async => "async" },
        "delivery": r.delivery.as_ref().map(|d| json!({
            "attempts": d.attempts,
            "backoff_seconds": d.backoff.as_secs_f64(),
            "max_backoff_seconds": d.max_backoff.as_secs_f64(),
            "concurrency": d.concurrency,
            "max_queued": d.max_queued,
        })),
        "max_body": r.max_body,
        "content_types": r.content_types,
        "upstream": {
            "scheme": up.scheme_str().unwrap_or("http"),
            "host": host,
            "timeout_seconds": r.upstream.timeout.as_secs_f64(),
            "injected_headers": r.upstream.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        },
        "guards": { "head": head, "body": body },
        "alerts": alerts,
    })
}

/// A guard's name in snake case, from its variant name. Deriving it from `Debug` means a new
/// guard shows up here without touching this file; only the variant name is used, never the
/// guard's fields.
pub fn guard_name(g: &Guard) -> String {
    let debug = format!("{g:?}");
    let variant = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    let mut out = String::with_capacity(variant.len() + 4);
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET /api/alerts`: the rules in force (without their URLs) and the latest alerts sent.
pub async fn alerts(State(state): State<AdminState>) -> Response {
    let config = state.reloader.current();
    let rules: Vec<Value> = config
        .alerts
        .iter()
        .map(|a| {
            let (reasons, outcome) = match &a.matches {
                AlertMatch::Reasons(rs) => (
                    Some(rs.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
                    None,
                ),
                AlertMatch::Outcome(o) => (None, Some(o.as_str())),
            };
            json!({
                "name": a.name,
                "reasons": reasons,
                "outcome": outcome,
                "route": a.route,
                "threshold": a.threshold,
                "window_seconds": a.window.as_secs(),
                "cooldown_seconds": a.cooldown.as_secs(),
                "format": a.format.as_str(),
            })
        })
        .collect();
    match read(&state, |c| audit::recent_alerts(c, 50)).await {
        Ok(recent) => Json(json!({ "rules": rules, "recent": recent })).into_response(),
        Err(resp) => resp,
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AdminState>) -> Response {
    let queue = match state.gateway.queue() {
        Some(q) => q.gauges().await,
        None => Vec::new(),
    };
    let gauges = Gauges {
        active_connections: state.active.load(Ordering::Relaxed),
        state_entries: state.gateway.services().state.local_entries(),
        state: state.gateway.services().state.stats(),
        sinks: state.gateway.events().stats(),
        queue,
    };
    let text = state.metrics.render(&gauges);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn issue_json(i: &Issue) -> Value {
    json!({
        "severity": match i.severity { Severity::Error => "error", Severity::Warning => "warning" },
        "key": i.key,
        "problem": i.problem,
        "fix": i.fix,
    })
}

/// `POST /api/reload`: re-reads the config file. 200 with what changed, or 422 with the
/// config's errors (the same text `hookwarden check` prints) and the old config still serving.
pub async fn reload(State(state): State<AdminState>) -> Response {
    let reloader = state.reloader.clone();
    let result = match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    match result {
        Ok(r) => Json(json!({
            "ok": true,
            "routes": r.routes,
            "alerts": r.alerts,
            "warnings": r.warnings,
            "restart_needed": r.restart_needed,
        }))
        .into_response(),
        Err(e) => {
            let status = match e {
                ReloadError::NoSource => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let issues: Vec<Value> = match &e {
                ReloadError::Invalid(issues) => issues.iter().map(issue_json).collect(),
                _ => Vec::new(),
            };
            (
                status,
                Json(json!({
                    "ok": false,
                    "error": "config_rejected",
                    "message": e.to_string(),
                    "issues": issues,
                })),
            )
                .into_response()
        }
    }
}
