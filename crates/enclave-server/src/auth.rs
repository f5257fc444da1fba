//! Bearer-key check in front of every API route.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Family};
use crate::state::AppState;

/// The key in `Authorization: Bearer <key>`, if any.
pub fn bearer(request_headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = request_headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
pub fn key_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}

pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ok = bearer(request.headers()).is_some_and(|k| key_matches(k, &state.config().api_key));
    if ok {
        next.run(request).await
    } else {
        ApiError::unauthorized(Family::of_path(request.uri().path())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(key_matches("abc", "abc"));
        assert!(!key_matches("abd", "abc"));
        assert!(!key_matches("ab", "abc"));
        assert!(!key_matches("abcd", "abc"));
        assert!(!key_matches("", "abc"));
    }
}
