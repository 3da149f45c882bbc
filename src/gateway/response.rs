//! The one place that turns a denial into the client's response.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::forward::body::ResponseBody;
use crate::forward::headers::overlay;
use crate::policy::{Denial, Reason, error_code};

/// The JSON error response for `denial`: `{"error": "<code>", "request_id": "<id>"}`. The
/// reason stays in the audit log; only the status's generic code is shown.
pub fn denial_response(denial: &Denial, request_id: &str) -> Response<ResponseBody> {
    let status = denial.reason.status();
    let body = if denial.reason == Reason::Duplicate {
        format!(r#"{{"status":"duplicate","request_id":"{request_id}"}}"#)
    } else {
        error_body(status, request_id)
    };
    let mut resp = json_response(status, body);
    let h = resp.headers_mut();
    for (name, value) in &denial.headers {
        h.append(name, value.clone());
    }
    if let Some(after) = denial.retry_after {
        // Round up: retrying a fraction of a second early would be refused again.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

/// The gateway's JSON error body for `status`: `{"error": "<code>", "request_id": "<id>"}`.
pub fn error_body(status: StatusCode, request_id: &str) -> String {
    format!(
        r#"{{"error":"{}","request_id":"{request_id}"}}"#,
        error_code(status)
    )
}

/// A small JSON response that must not be cached.
pub fn json_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A plain-text response.
pub fn text_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Moves the upstream head fields a response carries as bytes ([`ResponseBody::take_passed`])
/// into its header map, for a writer that knows only the map (hyper's HTTP/2). The map's own
/// fields replace the upstream's of the same name, as the response rules would have it. A head
/// the map does not take (the parser lets none through) becomes a 502.
pub fn merge_passed(resp: &mut Response<ResponseBody>, request_id: &str) {
    let Some(head) = resp.body_mut().take_passed() else {
        return;
    };
    match head.into_map() {
        Ok(mut map) => {
            overlay(&mut map, resp.headers());
            *resp.headers_mut() = map;
        }
        Err(e) => {
            tracing::warn!(request_id, error = %e, "upstream response head not passed on");
            let status = StatusCode::BAD_GATEWAY;
            *resp = json_response(status, error_body(status, request_id));
        }
    }
}
