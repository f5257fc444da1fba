//! Cohere's rerank routes: `POST /v2/rerank` (string documents) and `POST /v1/rerank` (strings or
//! objects ranked on `rank_fields`, optionally echoed back).

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::MaybeCaller;
use crate::error::{ApiError, Family};
use crate::extract::{ApiJson, CohereJson};
use crate::metering::Bill;
use crate::rerank::{score, scorer_for};
use crate::routes::cohere_common::{check_priority, new_id};
use crate::state::AppState;
use axum::response::Response;
use enclave_store::{Capability, Units};

const FAMILY: Family = Family::Cohere;
/// Most documents per call (each one is at least one forward pass).
pub const MAX_DOCUMENTS: usize = 1000;
/// Cohere's default for v1.
const DEFAULT_MAX_CHUNKS: usize = 10;
/// Roughly the tokens in one chunk, to turn `max_tokens_per_doc` into a chunk count.
const TOKENS_PER_CHUNK: usize = 240;

/// A document: a string, or an object of string fields.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Fields(Map<String, Value>),
}

#[derive(Debug, Deserialize)]
pub struct RerankRequest {
    model: Option<String>,
    query: String,
    documents: Vec<Document>,
    top_n: Option<i64>,
    rank_fields: Option<Vec<String>>,
    return_documents: Option<bool>,
    max_chunks_per_doc: Option<i64>,
    max_tokens_per_doc: Option<i64>,
    priority: Option<i64>,
}

/// The text ranked for a document; objects are ranked on `rank_fields` (default `text`).
fn rank_text(index: usize, doc: &Document, fields: &[String]) -> Result<String, ApiError> {
    match doc {
        Document::Text(text) => Ok(text.clone()),
        Document::Fields(map) => {
            let mut parts = Vec::new();
            for field in fields {
                match map.get(field) {
                    Some(Value::String(value)) if fields.len() == 1 => parts.push(value.clone()),
                    Some(Value::String(value)) => parts.push(format!("{field}: {value}")),
                    Some(_) => {
                        return Err(ApiError::invalid(
                            FAMILY,
                            format!("documents[{index}].{field} must be a string"),
                        ))
                    }
                    None => {
                        return Err(ApiError::invalid(
                            FAMILY,
                            format!("documents[{index}] has no field '{field}'"),
                        ))
                    }
                }
            }
            Ok(parts.join("\n"))
        }
    }
}

fn echo(doc: &Document) -> Value {
    match doc {
        Document::Text(text) => json!({ "text": text }),
        Document::Fields(map) => Value::Object(map.clone()),
    }
}

async fn rerank(
    state: &AppState,
    caller: &MaybeCaller,
    req: RerankRequest,
    version: &str,
    require_model: bool,
) -> Result<Response, ApiError> {
    if require_model && req.model.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(FAMILY, "model is required"));
    }
    if req.query.trim().is_empty() {
        return Err(ApiError::invalid(FAMILY, "query must not be empty"));
    }
    let count = req.documents.len();
    if count == 0 || count > MAX_DOCUMENTS {
        return Err(ApiError::invalid(
            FAMILY,
            format!("documents must hold 1 to {MAX_DOCUMENTS} items, got {count}"),
        ));
    }
    let top_n = match req.top_n {
        None => count,
        Some(n) if n >= 1 => (n as usize).min(count),
        Some(n) => {
            return Err(ApiError::invalid(
                FAMILY,
                format!("top_n must be at least 1, got {n}"),
            ))
        }
    };
    check_priority(req.priority)?;
    let max_chunks = match (req.max_chunks_per_doc, req.max_tokens_per_doc) {
        (Some(n), _) if n < 1 => {
            return Err(ApiError::invalid(
                FAMILY,
                "max_chunks_per_doc must be at least 1",
            ))
        }
        (_, Some(n)) if n < 1 => {
            return Err(ApiError::invalid(
                FAMILY,
                "max_tokens_per_doc must be at least 1",
            ))
        }
        (Some(n), _) => n as usize,
        (None, Some(tokens)) => (tokens as usize).div_ceil(TOKENS_PER_CHUNK),
        (None, None) => DEFAULT_MAX_CHUNKS,
    };
    let fields = req
        .rank_fields
        .clone()
        .unwrap_or_else(|| vec!["text".to_string()]);
    if fields.is_empty() {
        return Err(ApiError::invalid(FAMILY, "rank_fields must not be empty"));
    }
    let texts = req
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| rank_text(i, d, &fields))
        .collect::<Result<Vec<_>, _>>()?;
    let scorer = scorer_for(state, FAMILY, req.model.as_deref())?;
    // One search unit per query per 100 documents.
    let units = Units::search_units(count.div_ceil(100) as i64);
    let bill = Bill::admit(
        state,
        caller,
        FAMILY,
        Capability::Rerank,
        scorer.model_name(),
        units,
    )
    .await?;
    let scores = score(FAMILY, &scorer, &req.query, &texts, max_chunks).await?;
    let receipt = bill.settle(units).await?;

    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let with_documents = req.return_documents == Some(true);
    let results: Vec<Value> = order
        .into_iter()
        .take(top_n)
        .map(|i| {
            let mut result = json!({ "index": i, "relevance_score": scores[i] });
            if with_documents {
                result["document"] = echo(&req.documents[i]);
            }
            result
        })
        .collect();
    Ok(receipt.json(json!({
        "id": new_id(),
        "results": results,
        "meta": {
            "api_version": { "version": version },
            "billed_units": { "search_units": units.search_units },
        },
    })))
}

pub async fn rerank_v2(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): CohereJson<RerankRequest>,
) -> Result<Response, ApiError> {
    rerank(&state, &caller, req, "2", true).await
}

pub async fn rerank_v1(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): CohereJson<RerankRequest>,
) -> Result<Response, ApiError> {
    rerank(&state, &caller, req, "1", false).await
}
