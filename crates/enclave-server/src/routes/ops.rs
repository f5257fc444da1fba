//! Operational routes: liveness, readiness with per-model load, and Cohere's key check.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::bearer;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when at least one model is loaded and every model's engine is still running (an
/// engine whose thread died turns this 503, so a load balancer stops sending traffic);
/// reports active and waiting requests per model, and what speculation and prefix reuse saved.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let encoders = state.encoders().iter().map(|m| {
        let info = m.info();
        json!({
            "name": info.name,
            "kind": if info.head.is_embedding() { "embedding" } else { "reranker" },
            "running": m.is_running(),
            "max_concurrent_requests": info.max_concurrent_requests,
        })
    });
    let models: Vec<Value> = state
        .generators()
        .iter()
        .map(|m| {
            let (active, waiting) = m.load();
            let info = m.info();
            json!({
                "name": info.name,
                "running": m.is_running(),
                "active": active,
                "waiting": waiting,
                "slots": info.parallel_sequences,
                "queue_capacity": info.queue_capacity,
                "engine": engine_stats(&m.stats()),
            })
        })
        .chain(encoders)
        .collect();
    let stopped = models.iter().any(|m| m["running"] == json!(false));
    let (status, label) = if models.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no models loaded")
    } else if stopped {
        (StatusCode::SERVICE_UNAVAILABLE, "an engine has stopped")
    } else {
        (StatusCode::OK, "ready")
    };
    (status, Json(json!({ "status": label, "models": models })))
}

/// What speculation and prefix reuse saved since the engine started, with the rates.
fn engine_stats(stats: &enclave_engine::EngineStats) -> Value {
    let rate = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            (part as f64 / whole as f64 * 1e4).round() / 1e4
        }
    };
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "reused_prompt_tokens": stats.reused_prompt_tokens,
        "prefix_reuse_rate": rate(stats.reused_prompt_tokens, stats.prompt_tokens),
        "prefix_copies": stats.prefix_copies,
        "generated_tokens": stats.generated_tokens,
        "drafted_tokens": stats.drafted_tokens,
        "accepted_tokens": stats.accepted_tokens,
        "acceptance_rate": rate(stats.accepted_tokens, stats.drafted_tokens),
        "decode_steps": stats.decode_steps,
        "calibrated": stats.calibrated,
        // What a pass costs by its size: what speculation weighs a longer draft against.
        "pass_costs": stats.pass_timings.iter().map(|t| json!({
            "rows": (t.rows * 10.0).round() / 10.0,
            "ms": (t.seconds * 1e5).round() / 100.0,
            "ms_per_row": (t.seconds / t.rows.max(1.0) * 1e5).round() / 100.0,
        })).collect::<Vec<_>>(),
    })
}

/// `{"valid": bool}`: answers for any key rather than rejecting, which is what the check is
/// for. It needs no key, so all its callers together share a per-second limit (429 past it).
pub async fn check_api_key(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (Some(access), Some(secret)) = (state.access(), bearer(&headers)) else {
        return Ok(Json(json!({ "valid": state.access().is_none() })));
    };
    if !access.allow_key_check() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many key checks; retry in a second",
        )
        .retry_after(1));
    }
    Ok(match access.authenticate(secret).await {
        Ok(Ok(caller)) => Json(json!({
            "valid": true,
            "organization_id": caller.0.tenant_id,
            "owner_id": caller.0.id,
        })),
        _ => Json(json!({ "valid": false })),
    })
}
