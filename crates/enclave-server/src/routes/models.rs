//! `GET /v1/models` and `GET /v1/models/{model}`. Both SDKs call these paths, so each body carries
//! both shapes: Cohere's (`models`, `name`, `endpoints`, `context_length`, ...) and OpenAI's
//! (`object`, `data`, `id`, `owned_by`, ...). Each SDK reads its own fields and ignores the rest.

use std::sync::Arc;

use axum::extract::Path;
use axum::Json;
use enclave_engine::catalog::ModelKind;
use enclave_engine::encoder::{EncoderHead, TextEncoder};
use enclave_engine::TextGenerator;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Call;
use crate::capability::rerank::Scorer;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::{AppState, ModelRole};

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

/// A served model's name, kind and listing entry.
struct Listed {
    name: String,
    kind: ModelKind,
    entry: Value,
}

/// Every served model, then every alias (listed like its model, with `alias_of`).
fn all_models(state: &AppState) -> Vec<Listed> {
    let generators = state.generators().iter().map(|m| Listed {
        name: m.info().name.clone(),
        kind: m.info().kind,
        entry: describe(m),
    });
    let encoders = state.encoders().iter().map(|m| Listed {
        name: m.info().name.clone(),
        kind: encoder_kind(m),
        entry: describe_encoder(m),
    });
    let served: Vec<Listed> = generators.chain(encoders).collect();
    let aliases: Vec<Listed> = state
        .aliases()
        .iter()
        .filter_map(|(alias, target)| {
            let model = served.iter().find(|m| &m.name == target)?;
            let mut entry = model.entry.clone();
            entry["name"] = json!(alias);
            entry["id"] = json!(alias);
            entry["alias_of"] = json!(target);
            Some(Listed {
                name: target.clone(),
                kind: model.kind,
                entry,
            })
        })
        .collect();
    served.into_iter().chain(aliases).collect()
}

/// The model an endpoint uses when a request names none.
fn default_for(state: &AppState, endpoint: &str) -> Option<String> {
    match endpoint {
        "chat" | "summarize" => state.default_name(ModelRole::Chat),
        "generate" => state.generators().first().map(|m| m.info().name.clone()),
        "embed" | "classify" => state.default_name(ModelRole::Embed),
        "rerank" => state.default_name(ModelRole::Rerank),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page_size: Option<i64>,
    page_token: Option<String>,
    endpoint: Option<String>,
    default_only: Option<bool>,
}

/// `GET /v1/models`: the models this key may use, filtered by endpoint; with
/// `default_only=true` and an endpoint, only the model that endpoint uses by default.
pub async fn list(
    call: Call,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page_size = query.page_size.unwrap_or(20);
    if !(1..=1000).contains(&page_size) {
        return Err(ApiError::invalid(format!(
            "page_size must be between 1 and 1000, got {page_size}"
        )));
    }
    let start: usize = match query.page_token.as_deref() {
        None | Some("") => 0,
        Some(token) => token
            .parse()
            .map_err(|_| ApiError::invalid("page_token is not one this server issued"))?,
    };
    let state = &call.state;
    let default = match (query.default_only, query.endpoint.as_deref()) {
        (Some(true), Some(endpoint)) => Some(default_for(state, endpoint)),
        (Some(true), None) => {
            return Err(ApiError::invalid("default_only needs an endpoint"));
        }
        _ => None,
    };
    let matching: Vec<Value> = all_models(state)
        .into_iter()
        .filter(|m| {
            query
                .endpoint
                .as_deref()
                .is_none_or(|e| endpoints(m.kind).contains(&e))
        })
        .filter(|m| call.caller.require_model(&m.name).is_ok())
        .filter(|m| match &default {
            // The served model itself, not its aliases.
            Some(default) => {
                default.as_deref() == Some(m.name.as_str()) && m.entry.get("alias_of").is_none()
            }
            None => true,
        })
        .map(|m| m.entry)
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

pub async fn get(call: Call, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let state = &call.state;
    let mut entry = match state.encoder_or_alias(&name) {
        Some(encoder) => {
            call.caller.require_model(&encoder.info().name)?;
            describe_encoder(encoder)
        }
        None => {
            let model = state.model(Some(&name))?;
            call.caller.require_model(&model.info().name)?;
            describe(&model)
        }
    };
    let served = state.resolve(&name).to_string();
    if served != name {
        entry["name"] = json!(name);
        entry["id"] = json!(name);
        entry["alias_of"] = json!(served);
    }
    Ok(Json(entry))
}
