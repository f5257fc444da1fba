//! Which wire protocol a route group speaks, and so the shape its errors take: Cohere
//! `{"message": ...}`, OpenAI `{"error": {...}}`. The family is declared once per route group
//! (see `crate::router`) through [`answer_in`]; nothing below a group knows it.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Cohere,
    OpenAi,
    /// Routes both SDKs call (`/v1/models`): the body carries both shapes.
    Shared,
}

impl Family {
    /// The family of a path no route matched (the only place a family is guessed from a path).
    pub fn of_unrouted_path(path: &str) -> Self {
        const OPENAI: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];
        if OPENAI.iter().any(|p| path.starts_with(p)) {
            Family::OpenAi
        } else if path.starts_with("/v1/models") {
            Family::Shared
        } else {
            Family::Cohere
        }
    }

    pub fn body(self, error: &ApiError) -> Value {
        let openai = json!({
            "message": error.message,
            "type": openai_type(error.status),
            "param": null,
            "code": error.status.as_u16().to_string(),
        });
        match self {
            Family::Cohere => json!({ "message": error.message }),
            Family::OpenAi => json!({ "error": openai }),
            Family::Shared => json!({ "message": error.message, "error": openai }),
        }
    }
}

fn openai_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::PAYMENT_REQUIRED => "insufficient_quota",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request_error",
    }
}

/// Re-renders an error response of a route group in the group's family; also gives the
/// router's bare 405 (a wrong method on a known path) a body in that shape.
pub async fn answer_in(family: Family, response: Response) -> Response {
    let error = match response.extensions().get::<ApiError>() {
        Some(error) => error.clone(),
        None if response.status() == StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
        ),
        None => return response,
    };
    let (mut parts, _) = response.into_parts();
    let rendered = error.render(family);
    let (rendered_parts, body) = rendered.into_parts();
    // Keep what earlier layers set (Connection: close, Allow, Retry-After); replace the body.
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in rendered_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_unrouted_paths() {
        assert_eq!(
            Family::of_unrouted_path("/v1/chat/completions"),
            Family::OpenAi
        );
        assert_eq!(Family::of_unrouted_path("/v1/chat"), Family::Cohere);
        assert_eq!(Family::of_unrouted_path("/v1/models/x"), Family::Shared);
    }

    #[test]
    fn shapes() {
        let error = ApiError::bad_request("nope");
        assert_eq!(Family::Cohere.body(&error), json!({"message": "nope"}));
        let openai = Family::OpenAi.body(&error);
        assert_eq!(openai["error"]["message"], "nope");
        assert_eq!(openai["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn errors_are_rerendered_in_the_groups_family_with_their_headers() {
        use axum::response::IntoResponse;
        let response = ApiError::unavailable("busy").into_response();
        let response = answer_in(Family::OpenAi, response).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["error"]["message"], "busy");
        assert_eq!(body["error"]["type"], "server_error");
    }
}
