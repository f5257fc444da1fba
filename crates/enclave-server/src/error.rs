//! One error type for every route, rendered in the error shape of the route's API family:
//! Cohere `{"message": ...}`, OpenAI `{"error": {...}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use enclave_engine::GeneratorError;
use serde_json::json;

/// Which wire protocol a route speaks, and so which error shape it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Cohere,
    OpenAi,
    /// Routes both SDKs call (`/v1/models`): the body carries both shapes.
    Shared,
}

impl Family {
    /// The family of a request path, for errors raised before a handler runs (auth, 404, panics).
    pub fn of_path(path: &str) -> Self {
        const OPENAI: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];
        if OPENAI.iter().any(|p| path.starts_with(p)) {
            Family::OpenAi
        } else if path.starts_with("/v1/models") {
            Family::Shared
        } else {
            Family::Cohere
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub family: Family,
    pub status: StatusCode,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(family: Family, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            family,
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(family: Family, message: impl Into<String>) -> Self {
        Self::new(family, StatusCode::BAD_REQUEST, message)
    }

    pub fn invalid(family: Family, message: impl std::fmt::Display) -> Self {
        Self::bad_request(family, format!("invalid request: {message}"))
    }

    pub fn not_found(family: Family, message: impl Into<String>) -> Self {
        Self::new(family, StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(family: Family) -> Self {
        Self::new(
            family,
            StatusCode::UNAUTHORIZED,
            "invalid api token: send 'Authorization: Bearer <key>' with a key of this server",
        )
    }

    pub fn internal(family: Family, message: impl Into<String>) -> Self {
        Self::new(family, StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Maps an engine refusal to the status a client can act on.
    pub fn from_generator(family: Family, err: GeneratorError) -> Self {
        let status = match err {
            GeneratorError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            GeneratorError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            GeneratorError::ContextExceeded { .. }
            | GeneratorError::EmptyPrompt
            | GeneratorError::InvalidToken(_)
            | GeneratorError::Template(_) => StatusCode::BAD_REQUEST,
        };
        let mut api = Self::new(family, status, err.to_string());
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            api.retry_after = Some(1);
        }
        api
    }

    fn openai_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::PAYMENT_REQUIRED => "insufficient_quota",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn body(&self) -> serde_json::Value {
        let openai = json!({
            "message": self.message,
            "type": self.openai_type(),
            "param": null,
            "code": self.status.as_u16().to_string(),
        });
        match self.family {
            Family::Cohere => json!({ "message": self.message }),
            Family::OpenAi => json!({ "error": openai }),
            Family::Shared => json!({ "message": self.message, "error": openai }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_by_path() {
        assert_eq!(Family::of_path("/v1/chat/completions"), Family::OpenAi);
        assert_eq!(Family::of_path("/v1/chat"), Family::Cohere);
        assert_eq!(Family::of_path("/v2/chat"), Family::Cohere);
        assert_eq!(Family::of_path("/v1/models/x"), Family::Shared);
    }

    #[test]
    fn shapes() {
        let cohere = ApiError::bad_request(Family::Cohere, "nope").body();
        assert_eq!(cohere, json!({"message": "nope"}));
        let openai = ApiError::bad_request(Family::OpenAi, "nope").body();
        assert_eq!(openai["error"]["message"], "nope");
        assert_eq!(openai["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn queue_full_is_429_with_retry_after() {
        let err = ApiError::from_generator(Family::Cohere, GeneratorError::QueueFull(4));
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        let response = err.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
