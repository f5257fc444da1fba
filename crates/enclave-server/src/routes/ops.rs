//! Operational routes: liveness, readiness with per-model load, and Cohere's key check.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::bearer;
use crate::state::AppState;

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when every model's engine is running; reports active and waiting requests per model.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let encoders = state.encoders().iter().map(|m| {
        let info = m.info();
        json!({
            "name": info.name,
            "kind": if info.head.is_embedding() { "embedding" } else { "reranker" },
            "max_concurrent_requests": info.max_concurrent_requests,
        })
    });
    let models: Vec<Value> = state
        .models()
        .iter()
        .map(|m| {
            let (active, waiting) = m.load();
            let info = m.info();
            json!({
                "name": info.name,
                "active": active,
                "waiting": waiting,
                "slots": info.parallel_sequences,
                "queue_capacity": info.queue_capacity,
            })
        })
        .chain(encoders)
        .collect();
    let status = if models.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let label = if status == StatusCode::OK {
        "ready"
    } else {
        "no models loaded"
    };
    (status, Json(json!({ "status": label, "models": models })))
}

/// `{"valid": bool}`: answers for any key rather than rejecting, which is what the check is for.
pub async fn check_api_key(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let (Some(access), Some(secret)) = (state.access(), bearer(&headers)) else {
        return Json(json!({ "valid": state.access().is_none() }));
    };
    match access.authenticate(secret).await {
        Ok(Ok(caller)) => Json(json!({
            "valid": true,
            "organization_id": caller.0.tenant_id,
            "owner_id": caller.0.id,
        })),
        _ => Json(json!({ "valid": false })),
    }
}
