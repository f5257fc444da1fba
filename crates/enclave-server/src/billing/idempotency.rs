//! `Idempotency-Key` on billable calls: the key is claimed when the call is admitted, so a
//! duplicate sent while it runs gets 409 before anything runs; the response of the call that
//! succeeded is stored with the claim, and every retry is answered with it (a stream replays
//! the frames that were sent) without running the model again. A failed call gives the key
//! back, so the client may retry.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use enclave_store::{Claim, Store, StoredResponse};

use super::receipt::REPLAYED;
use crate::auth::IdempotencyKey;
use crate::error::ApiError;

/// A key this call holds, and what it has sent so far (for a stream cut off mid-way).
pub(crate) struct Claimed {
    tenant_id: String,
    key: String,
    request_id: String,
    /// What a stream sent so far, and its content type (for a stream cut off mid-way).
    pub transcript: String,
    pub content_type: &'static str,
}

pub(crate) enum Claiming {
    Run(Claimed),
    Replay(Response),
}

pub(crate) async fn claim(
    store: &Store,
    node_id: &str,
    tenant_id: &str,
    idempotency: &IdempotencyKey,
    request_id: &str,
) -> Result<Claiming, ApiError> {
    let key = &idempotency.key;
    match store
        .claim_idempotency_key(
            tenant_id,
            key,
            &idempotency.fingerprint,
            request_id,
            node_id,
        )
        .await?
    {
        Claim::Claimed => Ok(Claiming::Run(Claimed {
            tenant_id: tenant_id.to_string(),
            key: key.clone(),
            request_id: request_id.to_string(),
            transcript: String::new(),
            content_type: "application/json",
        })),
        Claim::InFlight => Err(ApiError::conflict(format!(
            "a request with Idempotency-Key '{key}' is still running; retry once it has finished"
        ))),
        Claim::Mismatch => Err(ApiError::conflict(format!(
            "Idempotency-Key '{key}' was already used for a different request"
        ))),
        Claim::Done(stored) => Ok(Claiming::Replay(replay(stored))),
    }
}

/// The stored first response, as it was sent.
fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for line in stored.headers.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&stored.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

impl Claimed {
    /// Stores the response a retry will get. A failure leaves the claim running until it
    /// expires (retries get 409 meanwhile), never free to run the call a second time.
    pub(crate) async fn complete(
        self,
        store: &Store,
        content_type: &str,
        headers: &[(HeaderName, String)],
        body: String,
    ) {
        let headers = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect::<Vec<_>>()
            .join("\n");
        let stored = StoredResponse {
            status: 200,
            content_type: content_type.to_string(),
            headers,
            body,
        };
        if let Err(e) = store
            .complete_idempotency_key(&self.tenant_id, &self.key, &self.request_id, &stored)
            .await
        {
            tracing::error!(
                "storing the response of {} for its Idempotency-Key failed: {e}",
                self.request_id
            );
        }
    }

    /// The call failed: the client may retry under the same key.
    pub(crate) async fn release(self, store: &Store) {
        if let Err(e) = store
            .release_idempotency_key(&self.tenant_id, &self.key, &self.request_id)
            .await
        {
            tracing::warn!(
                "releasing the Idempotency-Key of {} failed: {e}",
                self.request_id
            );
        }
    }
}
