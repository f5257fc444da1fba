//! Search over a collection: the query embedded with the collection's embedder, lexical and
//! dense candidates fused, only chunks the caller may see.

use std::sync::Arc;

use enclave_engine::encoder::{TextEncoder, Truncate};
use enclave_rag::index::{ChunkRecord, Retriever, SearchFilter};
use enclave_store::CollectionRecord;

use super::Library;
use crate::error::ApiError;

/// Most results one search returns.
pub const MAX_TOP_K: usize = 100;

/// A found chunk and its score.
#[derive(Debug, Clone)]
pub struct Found {
    pub chunk: ChunkRecord,
    pub score: f32,
}

/// The `top_k` chunks of `collection` for `query`.
pub async fn search(
    library: &Library,
    encoder: Option<&Arc<dyn TextEncoder>>,
    collection: &CollectionRecord,
    query: &str,
    top_k: usize,
    retriever: Retriever,
    filter: &SearchFilter,
) -> Result<Vec<Found>, ApiError> {
    let vector = match (retriever, encoder) {
        (Retriever::Lexical, _) | (_, None) => None,
        (_, Some(encoder)) => Some(embed_query(encoder, query).await?),
    };
    let index = library.index(&collection.id).await;
    let index = index.read().await;
    let hits = index.search(query, vector.as_deref(), top_k, retriever, filter);
    Ok(hits
        .into_iter()
        .filter_map(|hit| {
            index.chunk(hit.slot).map(|chunk| Found {
                chunk: chunk.clone(),
                score: hit.score,
            })
        })
        .collect())
}

async fn embed_query(encoder: &Arc<dyn TextEncoder>, query: &str) -> Result<Vec<f32>, ApiError> {
    let tokens = encoder.tokenize(0, query, Truncate::End)?;
    let mut out = encoder
        .encode(vec![tokens])?
        .await
        .map_err(|_| ApiError::internal("the encoder stopped"))??;
    out.pop()
        .ok_or_else(|| ApiError::internal("the encoder returned nothing"))
}
