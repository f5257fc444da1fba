//! Cohere's rerank routes: `POST /v2/rerank` (string documents) and `POST /v1/rerank` (strings or
//! objects ranked on `rank_fields`, optionally echoed back).

use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Call;
use crate::capability::rerank::{rerank as run_rerank, scorer_for, RerankJob, MAX_DOCUMENTS};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::cohere_common::{check_priority, new_id};

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
                        return Err(ApiError::invalid(format!(
                            "documents[{index}].{field} must be a string"
                        )))
                    }
                    None => {
                        return Err(ApiError::invalid(format!(
                            "documents[{index}] has no field '{field}'"
                        )))
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
    call: Call,
    req: RerankRequest,
    version: &'static str,
    require_model: bool,
) -> Result<Response, ApiError> {
    if require_model && req.model.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("model is required"));
    }
    if req.query.trim().is_empty() {
        return Err(ApiError::invalid("query must not be empty"));
    }
    let count = req.documents.len();
    if count == 0 || count > MAX_DOCUMENTS {
        return Err(ApiError::invalid(format!(
            "documents must hold 1 to {MAX_DOCUMENTS} items, got {count}"
        )));
    }
    let top_n = match req.top_n {
        None => count,
        Some(n) if n >= 1 => (n as usize).min(count),
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "top_n must be at least 1, got {n}"
            )))
        }
    };
    check_priority(req.priority)?;
    let max_chunks = match (req.max_chunks_per_doc, req.max_tokens_per_doc) {
        (Some(n), _) if n < 1 => {
            return Err(ApiError::invalid("max_chunks_per_doc must be at least 1"))
        }
        (_, Some(n)) if n < 1 => {
            return Err(ApiError::invalid("max_tokens_per_doc must be at least 1"))
        }
        (Some(n), _) => usize::try_from(n).unwrap_or(usize::MAX),
        (None, Some(tokens)) => usize::try_from(tokens)
            .unwrap_or(usize::MAX)
            .div_ceil(TOKENS_PER_CHUNK)
            .min(crate::capability::rerank::MAX_CHUNKS_PER_DOC),
        (None, None) => DEFAULT_MAX_CHUNKS,
    };
    let fields = req
        .rank_fields
        .clone()
        .unwrap_or_else(|| vec!["text".to_string()]);
    if fields.is_empty() {
        return Err(ApiError::invalid("rank_fields must not be empty"));
    }
    let texts = req
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| rank_text(i, d, &fields))
        .collect::<Result<Vec<_>, _>>()?;
    let scorer = scorer_for(&call.state, req.model.as_deref())?;
    let job = RerankJob {
        query: req.query,
        documents: texts,
        max_chunks,
    };
    let with_documents = req.return_documents == Some(true);
    let documents = req.documents;
    run_rerank(&call, scorer, job, move |scores, units| {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let results: Vec<Value> = order
            .into_iter()
            .take(top_n)
            .map(|i| {
                let mut result = json!({ "index": i, "relevance_score": scores[i] });
                if with_documents {
                    result["document"] = echo(&documents[i]);
                }
                result
            })
            .collect();
        json!({
            "id": new_id(),
            "results": results,
            "meta": {
                "api_version": { "version": version },
                "billed_units": { "search_units": units.search_units },
            },
        })
    })
    .await
}

pub async fn rerank_v2(
    call: Call,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Response, ApiError> {
    rerank(call, req, "2", true).await
}

pub async fn rerank_v1(
    call: Call,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Response, ApiError> {
    rerank(call, req, "1", false).await
}
