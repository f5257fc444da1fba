//! The bearer-key check in front of every API route: finds the caller's key, refuses unknown,
//! revoked and expired keys (401), counts the request against the key's rate limit (429), and
//! hands the caller to the handler.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use enclave_store::Role;
use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The key in `Authorization: Bearer <key>`, if any.
pub fn bearer(request_headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = request_headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(access) = state.access() else {
        return next.run(request).await;
    };
    let Some(secret) = bearer(request.headers()).map(str::to_string) else {
        return reject(request, ApiError::unauthorized()).await;
    };
    let caller = match access.authenticate(&secret).await {
        Ok(Ok(caller)) => caller,
        Ok(Err(refusal)) => return reject(request, refusal.into()).await,
        Err(e) => return reject(request, e.into()).await,
    };
    match access.take_request_slot(&caller.0).await {
        Ok(Ok(())) => {}
        Ok(Err(limited)) => return reject(request, limited.into()).await,
        Err(e) => return reject(request, e.into()).await,
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A hash of a request's method, path and body (made where the body is read,
/// `crate::body_deadline`): a retry under an Idempotency-Key matches it, a different request
/// under a reused key does not.
#[derive(Debug, Clone)]
pub struct RequestFingerprint(pub String);

impl RequestFingerprint {
    pub fn of(method: &axum::http::Method, path: &str, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(method.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(body);
        Self(hex::encode(hasher.finalize()))
    }
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

/// A client's `Idempotency-Key` with the fingerprint of the request it came on.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

/// The caller of a billable route: its key (absent only when the server runs without accounts,
/// for bare-engine benchmarks) and the client's `Idempotency-Key`, if it sent one.
#[derive(Clone)]
pub struct MaybeCaller {
    pub caller: Option<Caller>,
    /// `Some(Err)` when the header is malformed: refused when the call is admitted.
    idempotency: Option<Result<IdempotencyKey, ()>>,
}

impl MaybeCaller {
    /// The client's `Idempotency-Key`; 400 when it is empty, too long or not visible ASCII.
    pub fn idempotency_key(&self) -> Result<Option<&IdempotencyKey>, ApiError> {
        match &self.idempotency {
            None => Ok(None),
            Some(Ok(key)) => Ok(Some(key)),
            Some(Err(())) => Err(ApiError::invalid(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))),
        }
    }

    /// 403 unless the key's scopes allow `model`: routes that bill nothing (tokenize, model
    /// listings) still show a scoped key only the models it may use.
    pub fn require_model(&self, model: &str) -> Result<(), ApiError> {
        match &self.caller {
            Some(Caller(key)) if !key.scopes.allows_model(model) => Err(ApiError::forbidden(
                format!("this key may not use model '{model}'"),
            )),
            _ => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MaybeCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let fingerprint = parts
            .extensions
            .get::<RequestFingerprint>()
            .map(|f| f.0.clone());
        let idempotency = parts.headers.get(IDEMPOTENCY_KEY).map(|value| {
            let key = value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or(())?;
            Ok(IdempotencyKey {
                key: key.to_string(),
                fingerprint: fingerprint.clone().unwrap_or_default(),
            })
        });
        Ok(Self {
            caller: parts.extensions.get::<Caller>().cloned(),
            idempotency,
        })
    }
}

/// What a billable handler works with: the server and who is calling.
#[derive(Clone)]
pub struct Call {
    pub state: AppState,
    pub caller: MaybeCaller,
    /// The id the call is billed and audited under (`req_…`).
    pub request_id: String,
}

impl FromRequestParts<AppState> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = MaybeCaller::from_request_parts(parts, state).await?;
        Ok(Self {
            state: state.clone(),
            caller,
            request_id: format!("req_{}", uuid::Uuid::new_v4().simple()),
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
        let Some(caller) = parts.extensions.get::<Caller>().cloned() else {
            return Err(ApiError::unauthorized());
        };
        match caller.0.role {
            Role::Admin | Role::TenantAdmin => Ok(Self { caller }),
            Role::Member => Err(ApiError::forbidden("admin routes need an admin key")),
        }
    }
}
