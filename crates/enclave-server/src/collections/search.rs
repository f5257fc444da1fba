//! Search over a collection: the query embedded with the collection's embedder, lexical and
//! dense candidates fused, the best of them reranked, only chunks the caller may see.

use std::sync::Arc;

use enclave_engine::encoder::{InputType, TextEncoder, Truncate};
use enclave_rag::index::{ChunkRecord, Retriever, SearchFilter};
use enclave_store::CollectionRecord;

use super::Library;
use crate::capability::rerank::{score, scorer_for, Scorer};
use crate::error::ApiError;
use crate::state::AppState;

/// Most results one search returns.
pub const MAX_TOP_K: usize = 100;

/// A found chunk and its score.
#[derive(Debug, Clone)]
pub struct Found {
    pub chunk: ChunkRecord,
    pub score: f32,
}

/// Candidates the rerank stage reads again: each retriever's this many best.
pub const RERANK_DEPTH: usize = 20;

/// The stage after retrieval that orders the best candidates by the strongest scorer at hand.
pub enum Rerank {
    /// The retriever's order as it is.
    Off,
    /// The cosine of the query's and each chunk's embedding, read from the index (no model
    /// call): dense relevance applied to the candidates both retrievers found.
    Embedding,
    /// A served model scoring each (query, chunk) pair: a cross-encoder, or a scorer named by
    /// the caller (an LLM judge only that way: on small models it ranks near random).
    Model(Scorer),
}

impl Rerank {
    /// The best scorer served: a cross-encoder, else the collection's embeddings.
    pub fn best(state: &AppState) -> Self {
        match state.first_cross_encoder() {
            Some(encoder) => Rerank::Model(Scorer::CrossEncoder(encoder)),
            None => Rerank::Embedding,
        }
    }

    /// What a request asks for: `enabled` false turns the stage off; `model` names a scorer.
    pub fn asked(
        state: &AppState,
        enabled: Option<bool>,
        model: Option<&str>,
    ) -> Result<Self, ApiError> {
        match (enabled, model) {
            (Some(false), _) => Ok(Rerank::Off),
            (_, Some(model)) => Ok(Rerank::Model(scorer_for(state, Some(model))?)),
            _ => Ok(Rerank::best(state)),
        }
    }
}

/// The `top_k` chunks of `collection` for `query`.
#[allow(clippy::too_many_arguments)]
pub async fn search(
    library: &Library,
    encoder: Option<&Arc<dyn TextEncoder>>,
    collection: &CollectionRecord,
    query: &str,
    top_k: usize,
    retriever: Retriever,
    rerank: &Rerank,
    filter: &SearchFilter,
) -> Result<Vec<Found>, ApiError> {
    let vector = match (retriever, encoder) {
        (Retriever::Lexical, _) | (_, None) => None,
        (_, Some(encoder)) => Some(embed_query(encoder, query).await?),
    };
    let mut found: Vec<Found> = {
        let index = library.index(&collection.id).await;
        let index = index.read().await;
        let hits = match (rerank, retriever) {
            (Rerank::Off, _) => index.search(query, vector.as_deref(), top_k, retriever, filter),
            (_, Retriever::Fused) => {
                index.candidates(query, vector.as_deref(), top_k.max(RERANK_DEPTH), filter)
            }
            _ => index.search(
                query,
                vector.as_deref(),
                top_k.max(RERANK_DEPTH),
                retriever,
                filter,
            ),
        };
        hits.into_iter()
            .filter_map(|hit| {
                let chunk = index.chunk(hit.slot)?.clone();
                let score = match (rerank, &vector) {
                    (Rerank::Embedding, Some(v)) => index.similarity(hit.slot, v)?,
                    _ => hit.score,
                };
                Some(Found { chunk, score })
            })
            .collect()
    };
    if let Rerank::Model(scorer) = rerank {
        let pieces = found
            .iter()
            .map(|f| format!("{}\n{}", f.chunk.title, f.chunk.text))
            .collect();
        let scores = score(scorer, query.to_string(), pieces).await?;
        for (f, s) in found.iter_mut().zip(scores) {
            f.score = s;
        }
    }
    if !matches!(rerank, Rerank::Off) {
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    found.truncate(top_k);
    Ok(found)
}

async fn embed_query(encoder: &Arc<dyn TextEncoder>, query: &str) -> Result<Vec<f32>, ApiError> {
    let query = encoder
        .info()
        .input_text(Some(InputType::SearchQuery), query);
    let tokens = encoder.tokenize(0, &query, Truncate::End)?;
    let mut out = encoder
        .encode(vec![tokens])?
        .await
        .map_err(|_| ApiError::internal("the encoder stopped"))??;
    out.pop()
        .ok_or_else(|| ApiError::internal("the encoder returned nothing"))
}
