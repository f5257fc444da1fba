//! Retrieval for grounded chat: the chat's question searched in the named collections (as the
//! caller may see them), and the best chunks handed over as documents that remember where in
//! their stored document they lie.

use enclave_rag::index::{Retriever, SearchFilter};
use enclave_rag::Origin;
use enclave_store::KeyRecord;
use serde_json::{Map, Value};

use super::search::{search, Rerank};
use super::{collection_encoder, owned_collection, visibility};
use crate::error::ApiError;
use crate::pipeline::DocumentInput;
use crate::state::AppState;

/// Chunks a grounded chat reads from its collections.
pub const CHAT_CHUNKS: usize = 5;
/// Most collections one chat may name.
const MAX_COLLECTIONS: usize = 8;

/// The chunks of `collections` (names or ids) that best answer `query`, as documents.
pub async fn documents_for(
    state: &AppState,
    key: &KeyRecord,
    collections: &[String],
    query: &str,
) -> Result<Vec<DocumentInput>, ApiError> {
    if collections.len() > MAX_COLLECTIONS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_COLLECTIONS} collections may be named"
        )));
    }
    let library = state
        .library()
        .ok_or_else(|| ApiError::not_found("this server runs without collections"))?;
    let filter = SearchFilter {
        groups: visibility(key),
        ..SearchFilter::default()
    };
    let mut found = Vec::new();
    for name in collections {
        let collection = owned_collection(library, key, name).await?;
        let encoder = collection_encoder(state, &collection)?;
        let hits = search(
            library,
            Some(&encoder),
            &collection,
            query,
            CHAT_CHUNKS,
            Retriever::Fused,
            &Rerank::best(state),
            &filter,
        )
        .await?;
        found.extend(hits.into_iter().map(|hit| (collection.id.clone(), hit)));
    }
    // Every collection's candidates are scored by the same reranker (or, for collections with
    // different embedders, by cosines of the same scale).
    found.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    found.truncate(CHAT_CHUNKS);
    Ok(found
        .into_iter()
        .map(|(collection_id, hit)| {
            let chunk = hit.chunk;
            let mut fields = Map::new();
            fields.insert("title".into(), Value::String(chunk.title.clone()));
            fields.insert("text".into(), Value::String(chunk.text.clone()));
            DocumentInput {
                id: Some(format!("{}:{}", chunk.document_id, chunk.chunk_id)),
                fields,
                hidden: Vec::new(),
                origin: Some(Origin {
                    collection_id,
                    document_id: chunk.document_id,
                    title: chunk.title,
                    start: chunk.start,
                }),
                ..DocumentInput::default()
            }
        })
        .collect())
}

/// The question a chat asks: its last user message.
pub fn question_of(messages: &[enclave_engine::ChatMessage]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.as_str())
}
