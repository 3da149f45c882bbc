//! The admin API of the delivery queue:
//!
//! ```text
//!  GET    /api/queue?route=R&state=S&limit=N&before=SEQ   summary per route, and messages
//!  POST   /api/queue/{id}/retry                           that message, due now
//!  POST   /api/queue/retry?route=R                        every dead letter of R
//!  DELETE /api/queue/{id}                                 drop that message
//! ```
//!
//! Messages are shown without their headers or body (they may carry personal data); changes
//! go through the queue's writer, so the running workers see them at once.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::AdminState;
use super::api::error;
use crate::queue::{ListFilter, MessageState, QueueError};

/// Most messages one `GET /api/queue` returns.
pub const MAX_MESSAGES_PER_PAGE: u32 = 1000;

/// Query of `GET /api/queue`.
#[derive(Debug, Default, Deserialize)]
pub struct ListArgs {
    /// Only this route.
    pub route: Option<String>,
    /// `pending`, `dead` or `delivered`.
    pub state: Option<String>,
    /// At most this many (default 100; more than a page holds is read as a page).
    #[serde(default, deserialize_with = "crate::store::events::whole_number")]
    pub limit: Option<u64>,
    /// Messages that arrived before this one (its `seq`), for paging back.
    pub before: Option<i64>,
}

/// Query of `POST /api/queue/retry`.
#[derive(Debug, Deserialize)]
pub struct RetryAllArgs {
    /// The route whose dead letters are retried.
    pub route: Option<String>,
}

fn no_queue() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "this gateway has no delivery queue",
    )
}

fn failed(e: QueueError) -> Response {
    tracing::error!(error = %e, "admin API: queue operation failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the queue operation failed; see the gateway's log",
    )
}

/// Parses a state filter; the error is a sentence for the caller.
pub fn parse_state(s: Option<&str>) -> Result<Option<MessageState>, String> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => MessageState::from_code(s)
            .map(Some)
            .ok_or_else(|| format!("state \"{s}\" is not one of pending, dead, delivered")),
    }
}

/// `GET /api/queue`: `{"summary": [...], "messages": [...]}`.
pub async fn list(
    State(state): State<AdminState>,
    args: Result<Query<ListArgs>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let args = match super::api::query_args(args, "; limit and before are whole numbers") {
        Ok(a) => a,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_request", msg),
    };
    let Some(q) = state.gateway.queue() else {
        return no_queue();
    };
    let st = match parse_state(args.state.as_deref()) {
        Ok(s) => s,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_request", msg),
    };
    if args.limit == Some(0) {
        // As /api/events answers it: 0 is a mistake, not "one".
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be 1 or more".to_owned(),
        );
    }
    let filter = ListFilter {
        route: args.route.filter(|r| !r.is_empty()),
        state: st,
        before: args.before,
        limit: u32::try_from(args.limit.unwrap_or(100))
            .map_or(MAX_MESSAGES_PER_PAGE, |l| l.clamp(1, MAX_MESSAGES_PER_PAGE)),
    };
    let summary = match q.summary().await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    match q.list(filter).await {
        Ok(messages) => Json(json!({ "summary": summary, "messages": messages })).into_response(),
        Err(e) => failed(e),
    }
}

/// `POST /api/queue/{id}/retry`.
pub async fn retry(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(q) = state.gateway.queue() else {
        return no_queue();
    };
    match q.retry(&id).await {
        Ok(Some(was)) => {
            tracing::info!(id = %id, was = %was, "admin API: queued message retried");
            Json(json!({ "ok": true, "id": id, "was": was })).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no queued message has this id",
        ),
        Err(e) => failed(e),
    }
}

/// `POST /api/queue/retry?route=R`: every dead letter of the route.
pub async fn retry_all(
    State(state): State<AdminState>,
    Query(args): Query<RetryAllArgs>,
) -> Response {
    let Some(q) = state.gateway.queue() else {
        return no_queue();
    };
    let Some(route) = args.route.filter(|r| !r.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name the route whose dead letters to retry: ?route=NAME",
        );
    };
    match q.retry_dead(&route).await {
        Ok(n) => {
            tracing::info!(route = %route, retried = n, "admin API: dead letters retried");
            Json(json!({ "ok": true, "route": route, "retried": n })).into_response()
        }
        Err(e) => failed(e),
    }
}

/// `DELETE /api/queue/{id}`.
pub async fn drop_message(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(q) = state.gateway.queue() else {
        return no_queue();
    };
    match q.drop_message(&id).await {
        Ok(Some((route, was))) => {
            tracing::info!(id = %id, route = %route, was = %was, "admin API: queued message dropped");
            Json(json!({ "ok": true, "id": id, "route": route, "was": was })).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no queued message has this id",
        ),
        Err(e) => failed(e),
    }
}
