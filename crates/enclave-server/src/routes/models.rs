//! `GET /v1/models` and `GET /v1/models/{model}`. Both SDKs call these paths, so each body carries
//! both shapes: Cohere's (`models`, `name`, `endpoints`, `context_length`, ...) and OpenAI's
//! (`object`, `data`, `id`, `owned_by`, ...). Each SDK reads its own fields and ignores the rest.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use enclave_engine::catalog::ModelKind;
use enclave_engine::TextGenerator;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, Family};
use crate::state::AppState;

const FAMILY: Family = Family::Shared;

fn endpoints(kind: ModelKind) -> Vec<&'static str> {
    match kind {
        ModelKind::Chat => vec!["chat", "generate"],
        ModelKind::Completion => vec!["generate"],
    }
}

fn describe(model: &Arc<dyn TextGenerator>) -> Value {
    let info = model.info();
    json!({
        "name": info.name,
        "id": info.name,
        "object": "model",
        "created": 0,
        "owned_by": "enclave",
        "is_deprecated": false,
        "endpoints": endpoints(info.kind),
        "finetuned": false,
        "context_length": info.context_per_sequence,
        // No HuggingFace tokenizer.json exists for GGUF models: the SDK falls back to /v1/tokenize.
        "tokenizer_url": null,
        "default_endpoints": [],
        "features": [],
    })
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page_size: Option<i64>,
    page_token: Option<String>,
    endpoint: Option<String>,
    default_only: Option<bool>,
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(FAMILY, e.body_text()))?;
    let page_size = query.page_size.unwrap_or(20);
    if !(1..=1000).contains(&page_size) {
        return Err(ApiError::invalid(
            FAMILY,
            format!("page_size must be between 1 and 1000, got {page_size}"),
        ));
    }
    let start: usize = match query.page_token.as_deref() {
        None | Some("") => 0,
        Some(token) => token
            .parse()
            .map_err(|_| ApiError::invalid(FAMILY, "page_token is not one this server issued"))?,
    };
    let _ = query.default_only;
    let matching: Vec<Value> = state
        .models()
        .iter()
        .filter(|m| {
            query
                .endpoint
                .as_deref()
                .is_none_or(|e| endpoints(m.info().kind).contains(&e))
        })
        .map(describe)
        .collect();
    let end = (start + page_size as usize).min(matching.len());
    let page: Vec<Value> = matching
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = (end < matching.len()).then(|| end.to_string());
    Ok(Json(json!({
        "models": page,
        "next_page_token": next,
        "object": "list",
        "data": page,
    })))
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = state.model(FAMILY, Some(&name))?;
    Ok(Json(describe(&model)))
}
