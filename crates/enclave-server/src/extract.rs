//! Request-body and query-string extraction that answers every failure (too large, not JSON,
//! wrong field types, bad UTF-8) with an [`ApiError`] instead of axum's plain-text rejections,
//! so the route group renders it in its family's shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, read within the server's body limit.
pub struct ApiJson<T>(pub T);

/// A query string, read like [`axum::extract::Query`].
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        Ok(ApiQuery(value))
    }
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("request body too large for this server's limit")
            } else {
                ApiError::invalid(rejection.body_text())
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::invalid(
                "the request body is empty; send a JSON object",
            ));
        }
        let value = serde_json::from_slice(&bytes).map_err(ApiError::invalid)?;
        Ok(ApiJson(value))
    }
}
