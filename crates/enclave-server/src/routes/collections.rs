//! `/v1/collections`: a tenant's document collections — create, list, delete; add documents
//! (JSON), forget one (with a receipt), search. Another tenant's collection is a 404, as is one
//! that does not exist. Ingest is billed as embed tokens, search as one search unit.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use enclave_rag::extract::{extract, Format};
use enclave_rag::index::{Retriever, SearchFilter};
use enclave_store::{Capability, CollectionRecord, KeyRecord, StoreError, Units};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Call;
use crate::capability::run_billed;
use crate::collections::ingest::{ingest, NewDocument};
use crate::collections::search::{search as run_search, Rerank, MAX_TOP_K};
use crate::collections::{collection_encoder, owned_collection, visibility, Library};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::{AppState, ModelRole};

/// Most documents one JSON ingest call may carry.
const MAX_DOCUMENTS_PER_CALL: usize = 1000;

fn rfc3339(ms: i64) -> String {
    enclave_store::reports::rfc3339(ms)
}

fn collection_json(c: &CollectionRecord) -> Value {
    json!({ "id": c.id, "name": c.name, "embed_model": c.embed_model, "created_at": rfc3339(c.created_ms) })
}

/// The caller's key (collections need accounts).
fn key_of(call: &Call) -> Result<Arc<KeyRecord>, ApiError> {
    call.caller
        .caller
        .as_ref()
        .map(|c| Arc::clone(&c.0))
        .ok_or_else(ApiError::unauthorized)
}

fn library(state: &AppState) -> Result<&Arc<Library>, ApiError> {
    state
        .library()
        .ok_or_else(|| ApiError::not_found("this server runs without collections"))
}

#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    name: String,
    embed_model: Option<String>,
}

pub async fn create(
    call: Call,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<Response, ApiError> {
    let key = key_of(&call)?;
    let library = library(&call.state)?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 || name.starts_with("col_") {
        return Err(ApiError::invalid(
            "name must be 1-100 characters and not start with 'col_'",
        ));
    }
    let model = match req.embed_model {
        Some(model) => call.state.resolve(&model).to_string(),
        None => call
            .state
            .default_name(ModelRole::Embed)
            .ok_or_else(|| ApiError::unavailable("no embedding model is served"))?,
    };
    let encoder = call.state.encoder(Some(&model))?;
    if !encoder.info().head.is_embedding() {
        return Err(ApiError::invalid(format!(
            "'{model}' is not an embedding model"
        )));
    }
    let record = match library
        .store()
        .create_collection(&key.tenant_id, name, &model)
        .await
    {
        Err(StoreError::Conflict(message)) => return Err(ApiError::conflict(message)),
        other => other?,
    };
    Ok(Json(collection_json(&record)).into_response())
}

pub async fn list(call: Call) -> Result<Response, ApiError> {
    let key = key_of(&call)?;
    let collections = library(&call.state)?
        .store()
        .list_collections(&key.tenant_id)
        .await?;
    let list: Vec<Value> = collections.iter().map(collection_json).collect();
    Ok(Json(json!({ "collections": list })).into_response())
}

pub async fn delete(call: Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let key = key_of(&call)?;
    let library = library(&call.state)?;
    let collection = owned_collection(library, &key, &id).await?;
    let removed = library
        .store()
        .delete_collection(&key.tenant_id, &collection.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("collection '{id}' not found")))?;
    library.catch_up().await?;
    Ok(
        Json(json!({ "id": collection.id, "deleted": true, "documents_removed": removed }))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
pub struct AddRequest {
    documents: Vec<Value>,
}

/// A JSON document: `{id?, title?, text, metadata?, acl?}`; a malformed one is a row error.
fn json_document(n: usize, value: Value) -> Result<NewDocument, (String, String)> {
    let row_id = value
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("documents[{n}]"), str::to_string);
    let fail = |message: String| (row_id.clone(), message);
    let Value::Object(mut doc) = value else {
        return Err(fail(
            "a document must be an object {id?, title?, text, metadata?, acl?}".into(),
        ));
    };
    let text_field =
        |doc: &mut Map<String, Value>, name: &str| -> Result<Option<String>, (String, String)> {
            match doc.remove(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(fail(format!("{name} must be a string"))),
            }
        };
    let id = text_field(&mut doc, "id")?;
    let title = text_field(&mut doc, "title")?;
    let text = text_field(&mut doc, "text")?.ok_or_else(|| fail("text is required".into()))?;
    let metadata = match doc.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(fail("metadata must be an object".into())),
    };
    let acl = match doc.remove("acl") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(groups)) => groups
            .into_iter()
            .map(|g| {
                g.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| fail("acl must list group names".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(fail("acl must list group names".into())),
    };
    if let Some(unknown) = doc.keys().next() {
        return Err(fail(format!("unknown field '{unknown}'")));
    }
    Ok(NewDocument {
        id,
        title,
        text,
        metadata,
        acl,
    })
}

/// Documents as JSON (`{"documents": [...]}`) or as files (multipart: file parts, and an
/// optional `acl` field of comma-separated groups for all of them).
pub async fn add_documents(
    call: Call,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let documents = if multipart {
        let form = Multipart::from_request(request, &call.state)
            .await
            .map_err(|e| ApiError::invalid(format!("unreadable multipart body: {e}")))?;
        files(form).await?
    } else {
        let ApiJson(req) = ApiJson::<AddRequest>::from_request(request, &call.state).await?;
        if req.documents.is_empty() || req.documents.len() > MAX_DOCUMENTS_PER_CALL {
            return Err(ApiError::invalid(format!(
                "documents must hold 1-{MAX_DOCUMENTS_PER_CALL} documents"
            )));
        }
        req.documents
            .into_iter()
            .enumerate()
            .map(|(n, v)| json_document(n, v))
            .collect()
    };
    add(call, id, documents).await
}

/// Uploaded files as documents: each read by its extension's format (off the async workers);
/// one that cannot be read is reported in its row.
async fn files(
    mut form: Multipart,
) -> Result<Vec<Result<NewDocument, (String, String)>>, ApiError> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid(format!("unreadable multipart body: {e}"))
    };
    let mut uploads = Vec::new();
    let mut acl = Vec::new();
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(unreadable)?;
        match (name.as_str(), file_name) {
            ("acl", None) => {
                acl = String::from_utf8_lossy(&bytes)
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            (_, Some(file_name)) => uploads.push((file_name, bytes)),
            (other, None) => {
                return Err(ApiError::invalid(format!(
                    "unexpected form field '{other}'"
                )))
            }
        }
    }
    if uploads.is_empty() || uploads.len() > MAX_DOCUMENTS_PER_CALL {
        return Err(ApiError::invalid(format!(
            "send 1-{MAX_DOCUMENTS_PER_CALL} files"
        )));
    }
    crate::blocking::off_runtime(move || {
        uploads
            .into_iter()
            .map(|(file_name, bytes)| read_file(&file_name, &bytes, &acl))
            .collect()
    })
    .await
}

/// One uploaded file as a document, or its row's error.
fn read_file(
    file_name: &str,
    bytes: &[u8],
    acl: &[String],
) -> Result<NewDocument, (String, String)> {
    let id = document_id_of(file_name);
    let fail = |e: String| (id.clone(), format!("'{file_name}': {e}"));
    let format = Format::of_name(file_name).ok_or_else(|| fail("unsupported file type".into()))?;
    let text = extract(bytes, format).map_err(fail)?;
    let source = format!("{format:?}").to_lowercase();
    Ok(NewDocument {
        id: Some(id.clone()),
        title: Some(file_name.to_string()),
        text,
        metadata: Map::from_iter([("format".to_string(), Value::String(source))]),
        acl: acl.to_vec(),
    })
}

/// A document id from a file name (path separators and other characters become `-`).
fn document_id_of(file_name: &str) -> String {
    let id: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if id.is_empty() {
        "file".into()
    } else {
        id
    }
}

/// Ingests read documents into a collection, billed as the embed tokens they took.
pub async fn add(
    call: Call,
    id: String,
    documents: Vec<Result<NewDocument, (String, String)>>,
) -> Result<Response, ApiError> {
    let key = key_of(&call)?;
    let library = Arc::clone(library(&call.state)?);
    let collection = owned_collection(&library, &key, &id).await?;
    let encoder = collection_encoder(&call.state, &collection)?;
    // At most a token per character, plus each chunk's special tokens.
    let chars: usize = documents
        .iter()
        .filter_map(|d| d.as_ref().ok())
        .map(|d| d.text.len())
        .sum();
    let max = Units::tokens((chars + chars / 8 + 64) as i64, 0);
    let work = async {
        let (rows, tokens) = ingest(&library, &encoder, &collection, documents).await?;
        Ok((rows, Units::tokens(tokens, 0)))
    };
    let model = collection.embed_model.clone();
    run_billed(&call, Capability::Embed, &model, max, work, |rows, units| {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| match &r.error {
                None => json!({ "id": r.id, "chunks": r.chunks, "status": "ok" }),
                Some(error) => json!({ "id": r.id, "chunks": 0, "status": "error", "error": error }),
            })
            .collect();
        json!({ "collection_id": collection.id, "documents": rows, "billed_units": { "input_tokens": units.input_tokens } })
    })
    .await
}

pub async fn forget(
    call: Call,
    Path((id, document_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = key_of(&call)?;
    let library = library(&call.state)?;
    let collection = owned_collection(library, &key, &id).await?;
    let receipt = library
        .store()
        .forget_document(&key.tenant_id, &collection.id, &document_id, &key.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("document '{document_id}' not found")))?;
    library.catch_up().await?;
    Ok(Json(json!({
        "receipt_id": receipt.id,
        "collection_id": receipt.collection_id,
        "document_id": receipt.document_id,
        "removed": { "document": true, "chunks": receipt.chunks_removed },
        "removed_at": rfc3339(receipt.removed_ms),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    query: String,
    top_k: Option<i64>,
    filter: Option<Map<String, Value>>,
    /// `fused` (default), `lexical` or `dense`.
    retriever: Option<String>,
    /// The stage after retrieval (default on): the best candidates reordered by a
    /// cross-encoder when one is served, else by embedding similarity.
    rerank: Option<bool>,
    /// A rerank-capable model to score with instead (a chat model judges relevance).
    rerank_model: Option<String>,
}

pub fn parse_retriever(name: Option<&str>) -> Result<Retriever, ApiError> {
    match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("fused") => Ok(Retriever::Fused),
        Some("lexical") => Ok(Retriever::Lexical),
        Some("dense") => Ok(Retriever::Dense),
        Some(other) => Err(ApiError::invalid(format!(
            "retriever must be fused, lexical or dense, got {other}"
        ))),
    }
}

pub async fn search(
    call: Call,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let key = key_of(&call)?;
    let library = Arc::clone(library(&call.state)?);
    let collection = owned_collection(&library, &key, &id).await?;
    if req.query.trim().is_empty() {
        return Err(ApiError::invalid("query must not be empty"));
    }
    let top_k = match req.top_k {
        None => 10,
        Some(k) if (1..=MAX_TOP_K as i64).contains(&k) => k as usize,
        Some(k) => {
            return Err(ApiError::invalid(format!(
                "top_k must be between 1 and {MAX_TOP_K}, got {k}"
            )))
        }
    };
    let retriever = parse_retriever(req.retriever.as_deref())?;
    let rerank = Rerank::asked(&call.state, req.rerank, req.rerank_model.as_deref())?;
    let encoder = collection_encoder(&call.state, &collection)?;
    let filter = SearchFilter {
        groups: visibility(&key),
        metadata: req.filter.unwrap_or_default(),
    };
    let work = async {
        let found = run_search(
            &library,
            Some(&encoder),
            &collection,
            &req.query,
            top_k,
            retriever,
            &rerank,
            &filter,
        )
        .await?;
        Ok((found, Units::search_units(1)))
    };
    run_billed(
        &call,
        Capability::Search,
        &collection.embed_model.clone(),
        Units::search_units(1),
        work,
        |found, _| {
            let results: Vec<Value> = found
                .iter()
                .map(|f| {
                    json!({
                        "document_id": f.chunk.document_id,
                        "chunk_id": f.chunk.chunk_id,
                        "title": f.chunk.title,
                        "text": f.chunk.text,
                        "start": f.chunk.start,
                        "end": f.chunk.end,
                        "score": f.score,
                        "metadata": f.chunk.metadata,
                    })
                })
                .collect();
            json!({ "results": results, "billed_units": { "search_units": 1 } })
        },
    )
    .await
}
