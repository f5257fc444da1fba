//! The request-body deadline on API routes: a body is read whole, within the server's body
//! limit and its deadline, before the handler runs — the one place a request body is read.
//! A request carrying an `Idempotency-Key` is fingerprinted here too.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{RequestFingerprint, IDEMPOTENCY_KEY};
use crate::error::ApiError;
use crate::state::AppState;

/// Reads the whole request body within the deadline (and the body limit) before the handler
/// runs, so a client trickling its body cannot hold a worker: 408 past the deadline.
pub async fn read_body_by_deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let limit = if is_upload(&parts) {
        state.config().max_upload_bytes
    } else {
        state.config().max_body_bytes
    };
    let deadline = state.config().http.body_timeout;
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            if parts.headers.contains_key(IDEMPOTENCY_KEY) {
                let fingerprint = RequestFingerprint::of(&parts.method, parts.uri.path(), &bytes);
                parts.extensions.insert(fingerprint);
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => ApiError::too_large(format!(
            "request body is larger than {limit} bytes or could not be read"
        ))
        .into_response(),
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs()
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// File uploads into a collection (multipart) get the larger upload limit.
fn is_upload(parts: &axum::http::request::Parts) -> bool {
    let path = parts.uri.path();
    let multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    multipart && path.starts_with("/v1/collections/") && path.ends_with("/documents")
}
