//! Ingest: each document is chunked by its structure (token-aware, with the collection's
//! embedder counting tokens), its chunks embedded with their headings and title, and the
//! document written with its chunks in one transaction — whole or not at all. One document
//! failing never aborts the batch: its row says why.

use std::sync::Arc;

use enclave_engine::encoder::{InputType, TextEncoder, Truncate};
use enclave_rag::chunking::{chunk, ChunkLimits};
use enclave_store::{ChunkRow, CollectionRecord, DocumentRecord};
use serde_json::{Map, Value};

use super::Library;
use crate::error::ApiError;

/// Most characters of one document's text.
pub const MAX_DOCUMENT_CHARS: usize = 5_000_000;
/// Chunks embedded per encoder request.
const EMBED_BATCH: usize = 32;

/// A document to ingest, as the caller gave it (or as a file was read).
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub id: Option<String>,
    pub title: Option<String>,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub acl: Vec<String>,
}

/// What became of one document.
#[derive(Debug, Clone)]
pub struct IngestRow {
    pub id: String,
    pub chunks: usize,
    /// `None`: stored.
    pub error: Option<String>,
}

/// A document id: 1–128 characters of letters, digits and `._:-` (ids travel in URL paths).
pub fn check_document_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "document id '{id}' must be 1-128 characters of letters, digits and . _ : -"
        ))
    }
}

/// Ingests `documents` (each already read, or the reason it could not be) into `collection`;
/// returns a row per document and the tokens embedded (what the call is billed).
pub async fn ingest(
    library: &Library,
    encoder: &Arc<dyn TextEncoder>,
    collection: &CollectionRecord,
    documents: Vec<Result<NewDocument, (String, String)>>,
) -> Result<(Vec<IngestRow>, i64), ApiError> {
    let mut rows = Vec::with_capacity(documents.len());
    let mut tokens = 0i64;
    for document in documents {
        let document = match document {
            Ok(document) => document,
            Err((id, error)) => {
                rows.push(IngestRow {
                    id,
                    chunks: 0,
                    error: Some(error),
                });
                continue;
            }
        };
        let id = document
            .id
            .clone()
            .unwrap_or_else(|| format!("doc_{}", uuid::Uuid::new_v4().simple()));
        match ingest_one(library, encoder, collection, &id, document).await {
            Ok((chunks, used)) => {
                tokens += used;
                rows.push(IngestRow {
                    id,
                    chunks,
                    error: None,
                });
            }
            Err(error) => rows.push(IngestRow {
                id,
                chunks: 0,
                error: Some(error),
            }),
        }
    }
    // The writer sees its own writes at once; other nodes within a poll interval.
    library.catch_up().await?;
    Ok((rows, tokens))
}

async fn ingest_one(
    library: &Library,
    encoder: &Arc<dyn TextEncoder>,
    collection: &CollectionRecord,
    id: &str,
    document: NewDocument,
) -> Result<(usize, i64), String> {
    check_document_id(id)?;
    if document.text.trim().is_empty() {
        return Err("the document has no text".into());
    }
    if document.text.chars().count() > MAX_DOCUMENT_CHARS {
        return Err(format!(
            "the document is longer than {MAX_DOCUMENT_CHARS} characters"
        ));
    }
    if let Some(bad) = document
        .acl
        .iter()
        .find(|g| g.trim().is_empty() || g.contains(','))
    {
        return Err(format!(
            "acl group '{bad}' must be non-empty and without commas"
        ));
    }
    let title = document.title.clone().unwrap_or_default();
    // Chunking and tokenizing are CPU work: off the async workers.
    let counter = Arc::clone(encoder);
    let text = document.text.clone();
    let limits = chunk_limits(encoder.info().max_tokens);
    let chunks = crate::blocking::off_runtime(move || {
        chunk(&text, limits, &|t: &str| counter.text_tokens(t).len())
    })
    .await
    .map_err(|e| e.message)?;
    let inputs: Vec<String> = chunks
        .iter()
        .map(|c| embedding_text(&title, &c.context, &c.text))
        .collect();
    let mut vectors = Vec::with_capacity(inputs.len());
    let mut used = 0i64;
    for batch in inputs.chunks(EMBED_BATCH) {
        let tokenized = batch
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let t = encoder
                    .info()
                    .input_text(Some(InputType::SearchDocument), t);
                encoder.tokenize(i, &t, Truncate::End)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        used += tokenized.iter().map(|t| t.len() as i64).sum::<i64>();
        let out = encoder
            .encode(tokenized)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|_| "the encoder stopped".to_string())?
            .map_err(|e| e.to_string())?;
        vectors.extend(out);
    }
    let rows: Vec<ChunkRow> = chunks
        .iter()
        .zip(vectors)
        .enumerate()
        .map(|(n, (c, vector))| ChunkRow {
            chunk_id: n as i64,
            start: c.start as i64,
            end: c.end as i64,
            context: c.context.clone(),
            vector,
        })
        .collect();
    let record = DocumentRecord {
        collection_id: collection.id.clone(),
        id: id.to_string(),
        title,
        metadata: Value::Object(document.metadata).to_string(),
        acl: document.acl,
        text: document.text,
        created_ms: enclave_store::now_ms(),
    };
    library
        .store()
        .put_document(&record, &rows)
        .await
        .map_err(|e| {
            tracing::error!("storing document {id}: {e}");
            "the document could not be stored".to_string()
        })?;
    Ok((rows.len(), used))
}

/// Chunks fit the embedder's window with room for the title and headings.
pub fn chunk_limits(max_tokens: usize) -> ChunkLimits {
    let max = max_tokens.saturating_sub(56).clamp(64, 400);
    ChunkLimits {
        max_tokens: max,
        overlap_tokens: max / 5,
    }
}

/// What is embedded for a chunk: its document's title and headings frame its text.
pub fn embedding_text(title: &str, context: &str, text: &str) -> String {
    [title, context, text]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}
