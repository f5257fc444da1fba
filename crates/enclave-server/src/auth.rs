//! The bearer-key check in front of every API route: finds the caller's key, refuses unknown,
//! revoked and expired keys (401), counts the request against the key's rate limit (429), and
//! hands the caller to the handler.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use enclave_store::Role;
use sha2::{Digest, Sha256};

use crate::access::{Caller, Refusal};
use crate::error::{ApiError, Family};
use crate::metering::{rate_error, store_error};
use crate::state::AppState;

/// The key in `Authorization: Bearer <key>`, if any.
pub fn bearer(request_headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = request_headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

fn refused(family: Family, refusal: &Refusal) -> ApiError {
    match refusal {
        Refusal::Unknown => ApiError::unauthorized(family),
        Refusal::Revoked => {
            ApiError::new(family, StatusCode::UNAUTHORIZED, "this API key was revoked")
        }
        Refusal::Expired => {
            ApiError::new(family, StatusCode::UNAUTHORIZED, "this API key has expired")
        }
    }
}

pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let family = Family::of_path(request.uri().path());
    let Some(access) = state.access() else {
        return next.run(request).await;
    };
    let limit = state.config().max_body_bytes;
    let Some(secret) = bearer(request.headers()).map(str::to_string) else {
        return reject(request, ApiError::unauthorized(family)).await;
    };
    let caller = match access.authenticate(&secret).await {
        Ok(Ok(caller)) => caller,
        Ok(Err(refusal)) => return reject(request, refused(family, &refusal)).await,
        Err(e) => return reject(request, store_error(family, e)).await,
    };
    match access.take_request_slot(&caller.0).await {
        Ok(Ok(())) => {}
        Ok(Err(limited)) => return reject(request, rate_error(family, limited)).await,
        Err(e) => return reject(request, store_error(family, e)).await,
    }
    request.extensions_mut().insert(caller);
    if request.headers().contains_key(IDEMPOTENCY_KEY) {
        request = match fingerprinted(request, limit).await {
            Ok(request) => request,
            Err(response) => return response,
        };
    }
    next.run(request).await
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A hash of a request's method, path and body: a retry under an Idempotency-Key matches it,
/// a different request under a reused key does not.
#[derive(Debug, Clone)]
pub struct RequestFingerprint(pub String);

/// Reads the body (within the body limit), fingerprints the request and puts the body back.
async fn fingerprinted(request: Request, limit: usize) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    let family = Family::of_path(parts.uri.path());
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            family,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes or could not be read"),
        )
        .into_response()
    })?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    parts
        .extensions
        .insert(RequestFingerprint(hex::encode(hasher.finalize())));
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Largest body read (and dropped) to keep a refused client's connection usable.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long a refused client may take to send that body.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Answers `error` before the handler runs. A small body is read first: a kept-alive
/// connection whose body was left unread is closed by the HTTP layer, and a client that sends
/// its next request on it meanwhile sees it cut off. Anything else — a large or unsized body, a
/// client waiting for `100 Continue`, a slow sender — is answered with `Connection: close`
/// instead of being read for a caller that was refused.
async fn reject(request: Request, error: ApiError) -> Response {
    let headers = request.headers();
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= DRAIN_LIMIT);
    let drained = small
        && !headers.contains_key(header::EXPECT)
        && tokio::time::timeout(
            DRAIN_TIMEOUT,
            axum::body::to_bytes(request.into_body(), DRAIN_LIMIT as usize),
        )
        .await
        .is_ok_and(|read| read.is_ok());
    let mut response = error.into_response();
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The caller of a billable route: its key (absent only when the server runs without accounts,
/// for bare-engine benchmarks) and the client's `Idempotency-Key`, if it sent one. Extracting it
/// never fails, so the body is always read before any error is answered.
pub struct MaybeCaller {
    pub caller: Option<Caller>,
    idempotency_key: Option<Option<String>>,
    /// Set by the key check whenever an Idempotency-Key is sent.
    pub fingerprint: Option<String>,
}

impl MaybeCaller {
    /// The client's `Idempotency-Key`; 400 when it is empty, too long or not visible ASCII.
    pub fn idempotency_key(&self, family: Family) -> Result<Option<&str>, ApiError> {
        match &self.idempotency_key {
            None => Ok(None),
            Some(Some(key)) => Ok(Some(key)),
            Some(None) => Err(ApiError::invalid(
                family,
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MaybeCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let idempotency_key = parts.headers.get(IDEMPOTENCY_KEY).map(|value| {
            value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY)
                .map(str::to_string)
        });
        Ok(Self {
            caller: parts.extensions.get::<Caller>().cloned(),
            idempotency_key,
            fingerprint: parts
                .extensions
                .get::<RequestFingerprint>()
                .map(|f| f.0.clone()),
        })
    }
}

/// An admin route's caller: the platform admin, or a tenant admin confined to its tenant.
pub struct AdminCaller {
    pub caller: Caller,
}

impl AdminCaller {
    /// The tenant this caller is confined to (`None`: every tenant).
    pub fn tenant_scope(&self) -> Option<&str> {
        match self.caller.0.role {
            Role::Admin => None,
            _ => Some(self.caller.0.tenant_id.as_str()),
        }
    }

    pub fn is_platform_admin(&self) -> bool {
        self.caller.0.role == Role::Admin
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let family = Family::Cohere;
        let Some(caller) = parts.extensions.get::<Caller>().cloned() else {
            return Err(ApiError::unauthorized(family));
        };
        match caller.0.role {
            Role::Admin | Role::TenantAdmin => Ok(Self { caller }),
            Role::Member => Err(ApiError::new(
                family,
                StatusCode::FORBIDDEN,
                "admin routes need an admin key",
            )),
        }
    }
}
