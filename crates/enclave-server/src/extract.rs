//! Request-body and query-string extraction that answers every failure (too large, not JSON,
//! wrong field types, bad UTF-8) with a 4xx in the route's own error shape instead of axum's
//! plain-text rejections.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Family};

/// Marker types naming the family at the type level, so handlers say `CohereJson<T>`.
pub trait FamilyMarker {
    const FAMILY: Family;
}

pub struct CohereFamily;
pub struct OpenAiFamily;
pub struct SharedFamily;

impl FamilyMarker for CohereFamily {
    const FAMILY: Family = Family::Cohere;
}
impl FamilyMarker for OpenAiFamily {
    const FAMILY: Family = Family::OpenAi;
}
impl FamilyMarker for SharedFamily {
    const FAMILY: Family = Family::Shared;
}

/// A query string, read like [`axum::extract::Query`] but refused in the family's error shape.
pub struct ApiQuery<T, F>(pub T, pub PhantomData<F>);

pub type CohereQuery<T> = ApiQuery<T, CohereFamily>;
pub type SharedQuery<T> = ApiQuery<T, SharedFamily>;

impl<T, F, S> FromRequestParts<S> for ApiQuery<T, F>
where
    T: DeserializeOwned,
    F: FamilyMarker,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid(F::FAMILY, rejection.body_text()))?;
        Ok(ApiQuery(value, PhantomData))
    }
}

pub struct ApiJson<T, F>(pub T, pub PhantomData<F>);

pub type CohereJson<T> = ApiJson<T, CohereFamily>;
pub type OpenAiJson<T> = ApiJson<T, OpenAiFamily>;

impl<T, F, S> FromRequest<S> for ApiJson<T, F>
where
    T: DeserializeOwned,
    F: FamilyMarker,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let family = F::FAMILY;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    family,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large for this server's limit",
                )
            } else {
                ApiError::invalid(family, rejection.body_text())
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::invalid(
                family,
                "the request body is empty; send a JSON object",
            ));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(family, e))?;
        Ok(ApiJson(value, PhantomData))
    }
}
