//! `GET /v1/models` and `GET /v1/models/{model}`. Both SDKs call these paths, so each body carries
//! both shapes: Cohere's (`models`, `name`, `endpoints`, `context_length`, ...) and OpenAI's
//! (`object`, `data`, `id`, `owned_by`, ...). Each SDK reads its own fields and ignores the rest.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use enclave_engine::catalog::ModelKind;
use enclave_engine::encoder::{EncoderHead, TextEncoder};
use enclave_engine::TextGenerator;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, Family};
use crate::extract::{ApiQuery, SharedQuery};
use crate::rerank::Scorer;
use crate::state::AppState;

const FAMILY: Family = Family::Shared;

fn endpoints(kind: ModelKind) -> Vec<&'static str> {
    match kind {
        ModelKind::Chat => vec!["chat", "generate", "summarize", "rerank"],
        ModelKind::Completion => vec!["generate"],
        ModelKind::Embedding => vec!["embed", "classify", "rerank"],
        ModelKind::Reranker => vec!["rerank"],
    }
}

/// One entry in both SDKs' shapes.
fn entry(name: &str, kind: ModelKind, context_length: u64, extra: Value) -> Value {
    let mut entry = json!({
        "name": name,
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "enclave",
        "is_deprecated": false,
        "endpoints": endpoints(kind),
        "finetuned": false,
        "context_length": context_length,
        // No HuggingFace tokenizer.json is served: the SDK falls back to /v1/tokenize.
        "tokenizer_url": null,
        "default_endpoints": [],
        "features": [],
    });
    if let (Some(obj), Value::Object(more)) = (entry.as_object_mut(), extra) {
        obj.extend(more);
    }
    entry
}

fn describe(model: &Arc<dyn TextGenerator>) -> Value {
    let info = model.info();
    // A chat model reranks as an LLM relevance judge.
    let extra = match info.kind {
        ModelKind::Chat => json!({ "rerank_scorer": Scorer::Judge(Arc::clone(model)).kind() }),
        _ => json!({}),
    };
    entry(
        &info.name,
        info.kind,
        u64::from(info.context_per_sequence),
        extra,
    )
}

fn encoder_kind(model: &Arc<dyn TextEncoder>) -> ModelKind {
    match model.info().head {
        EncoderHead::Embedding => ModelKind::Embedding,
        EncoderHead::Classifier { .. } => ModelKind::Reranker,
    }
}

fn describe_encoder(model: &Arc<dyn TextEncoder>) -> Value {
    let info = model.info();
    let scorer = Scorer::of_encoder(Arc::clone(model)).kind();
    let mut extra = match &info.head {
        EncoderHead::Embedding => json!({
            "embedding_dimensions": info.dimensions,
            "rerank_scorer": scorer,
        }),
        EncoderHead::Classifier { labels } => json!({
            "rerank_scorer": scorer,
            "labels": labels,
        }),
    };
    extra["encoder_engine"] = json!(info.engine.name());
    extra["precision"] = json!(info.precision.name());
    entry(
        &info.name,
        encoder_kind(model),
        info.max_tokens as u64,
        extra,
    )
}

fn all_models(state: &AppState) -> Vec<(ModelKind, Value)> {
    let generators = state.models().iter().map(|m| (m.info().kind, describe(m)));
    let encoders = state
        .encoders()
        .iter()
        .map(|m| (encoder_kind(m), describe_encoder(m)));
    generators.chain(encoders).collect()
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
    ApiQuery(query, _): SharedQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
    // Every served model is a default of its endpoints, so `default_only` filters nothing.
    let _ = query.default_only;
    let matching: Vec<Value> = all_models(&state)
        .into_iter()
        .filter(|(kind, _)| {
            query
                .endpoint
                .as_deref()
                .is_none_or(|e| endpoints(*kind).contains(&e))
        })
        .map(|(_, entry)| entry)
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
    if let Some(encoder) = state.encoder_named(&name) {
        return Ok(Json(describe_encoder(encoder)));
    }
    let model = state.model(FAMILY, Some(&name))?;
    Ok(Json(describe(&model)))
}
