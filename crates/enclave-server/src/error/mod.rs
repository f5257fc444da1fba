//! One error type for every route: a status and a message, never the wire family. The route
//! group that answers renders it in its family's shape ([`family`]), and [`convert`] is the one
//! place where each error source (engine, encoder, store, budget, rate, auth) becomes one.

pub mod convert;
pub mod family;

use std::fmt::Display;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use family::Family;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 400 for a request that breaks a documented rule.
    pub fn invalid(message: impl Display) -> Self {
        Self::bad_request(format!("invalid request: {message}"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid api token: send 'Authorization: Bearer <key>' with a key of this server",
        )
    }

    /// A 500: `detail` goes to the log, never to the client.
    pub fn internal(detail: impl Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// A 503 the client may retry after a second.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(1)
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The response in `family`'s shape.
    pub fn render(&self, family: Family) -> Response {
        let mut response = (self.status, axum::Json(family.body(self))).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl IntoResponse for ApiError {
    /// Rendered in Cohere's shape and tagged with the error, which the route group's
    /// [`family::answer_in`] layer re-renders in its own family's shape.
    fn into_response(self) -> Response {
        let mut response = self.render(Family::Cohere);
        response.extensions_mut().insert(self);
        response
    }
}
