//! The rerank capability: relevance of each document to a query, from one of the scorers behind
//! [`Scorer`]. Long documents are split into chunks and score by their best chunk.
//!
//! - A cross-encoder (a user's BERT-family sequence classifier) reads query and chunk together
//!   and scores by its relevance logit: the sigmoid of a single logit, or the softmax
//!   probability of the last label when it has several.
//! - An embedding model scores by cosine similarity of query and chunk embeddings.
//! - A chat model is an LLM relevance judge: the probability it puts on "yes" against "no"
//!   under a fixed relevance prompt, read from the logits of one forward pass per pair
//!   (nothing is sampled).

use std::sync::Arc;

use axum::response::Response;
use enclave_engine::encoder::{InputType, TextEncoder, Truncate};
use enclave_engine::{ChatMessage, TextGenerator};
use enclave_store::{Capability, Units};
use serde_json::Value;

use super::embed::{embed_texts, encode_with, for_task};
use super::run_billed;
use crate::auth::Call;
use crate::error::ApiError;
use crate::state::{AppState, ModelRole};

/// Most documents per call.
pub const MAX_DOCUMENTS: usize = 1000;
/// Most chunks one document may be split into (`max_chunks_per_doc`).
pub const MAX_CHUNKS_PER_DOC: usize = 10;
/// Most pieces (document chunks) scored in one call, over all documents: each is a forward
/// pass, and a call is billed one search unit per 100 of them.
pub const MAX_PIECES: usize = 1000;
/// Longest query, in the scorer's tokens (it is read once per piece).
pub const MAX_QUERY_TOKENS: usize = 256;
/// Pieces billed as one search unit.
const PIECES_PER_SEARCH_UNIT: usize = 100;

/// Words per chunk: long documents are scored chunk by chunk.
const CHUNK_WORDS: usize = 180;

const JUDGE_SYSTEM: &str = "You judge search results. Answer only yes or no.";

pub enum Scorer {
    CrossEncoder(Arc<dyn TextEncoder>),
    Embedding(Arc<dyn TextEncoder>),
    Judge(Arc<dyn TextGenerator>),
}

impl Scorer {
    /// How an encoder reranks: a cross-encoder scores pairs, a sentence encoder by cosine.
    pub fn of_encoder(encoder: Arc<dyn TextEncoder>) -> Self {
        if encoder.info().head.is_embedding() {
            Scorer::Embedding(encoder)
        } else {
            Scorer::CrossEncoder(encoder)
        }
    }

    /// The model that scores (what a call is billed under).
    pub fn model_name(&self) -> &str {
        match self {
            Scorer::CrossEncoder(encoder) | Scorer::Embedding(encoder) => &encoder.info().name,
            Scorer::Judge(generator) => &generator.info().name,
        }
    }

    /// How the scorer is named in `/v1/models`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scorer::CrossEncoder(_) => "cross-encoder",
            Scorer::Embedding(_) => "embedding-cosine",
            Scorer::Judge(_) => "llm-judge",
        }
    }
}

/// The scorer for a rerank model name; without a name, the server's default reranker
/// ([`AppState::default_name`]).
pub fn scorer_for(state: &AppState, model: Option<&str>) -> Result<Scorer, ApiError> {
    match model.filter(|m| !m.is_empty()) {
        None => match state.default_name(ModelRole::Rerank) {
            Some(name) => scorer_for(state, Some(&name)),
            // Nothing served can rerank: the embedding lookup names what is served.
            None => state.encoder(None).map(Scorer::Embedding),
        },
        Some(name) => match state.encoder_or_alias(name) {
            Some(encoder) => Ok(Scorer::of_encoder(Arc::clone(encoder))),
            None => state.chat_model(Some(name)).map(Scorer::Judge),
        },
    }
}

/// Splits a document into chunks of at most `CHUNK_WORDS` words (at least one chunk).
pub fn chunks(text: &str, max_chunks: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return vec![String::new()];
    }
    words
        .chunks(CHUNK_WORDS)
        .take(max_chunks.max(1))
        .map(|c| c.join(" "))
        .collect()
}

/// A rerank call: a query against documents, each split into at most `max_chunks` chunks.
pub struct RerankJob {
    pub query: String,
    pub documents: Vec<String>,
    pub max_chunks: usize,
}

/// Scores `job` with `scorer` as one billed call (one search unit per 100 pieces scored) and
/// answers with `render`'s JSON of the scores (one per document, in order).
pub async fn rerank(
    call: &Call,
    scorer: Scorer,
    job: RerankJob,
    render: impl FnOnce(Vec<f32>, &Units) -> Value,
) -> Result<Response, ApiError> {
    if job.max_chunks == 0 || job.max_chunks > MAX_CHUNKS_PER_DOC {
        return Err(ApiError::invalid(format!(
            "max_chunks_per_doc must be 1 to {MAX_CHUNKS_PER_DOC}, got {}",
            job.max_chunks
        )));
    }
    // Sized unread first: no query this long can be within the token bound.
    if job.query.len() > MAX_QUERY_TOKENS * 32 {
        return Err(query_too_long(job.query.len(), "bytes"));
    }
    let most_pieces = (job.documents.len() * job.max_chunks).min(MAX_PIECES);
    let max = Units::search_units(most_pieces.div_ceil(PIECES_PER_SEARCH_UNIT) as i64);
    let model = scorer.model_name().to_string();
    let documents = job.documents.len();
    let work = async {
        let (query, pieces, owners) = split(&scorer, job).await?;
        let count = owners.len();
        let piece_scores = score(&scorer, query, pieces).await?;
        let mut best = vec![0f32; documents];
        for (doc, s) in owners.into_iter().zip(piece_scores) {
            best[doc] = best[doc].max(s);
        }
        let units = Units::search_units(count.div_ceil(PIECES_PER_SEARCH_UNIT) as i64);
        Ok((best, units))
    };
    run_billed(call, Capability::Rerank, &model, max, work, render).await
}

/// Relevance in [0, 1] of each piece to `query` by `scorer`; the caller bills.
pub async fn score(scorer: &Scorer, query: String, pieces: Vec<String>) -> Scored {
    let scoring = (query, pieces);
    match scorer {
        Scorer::CrossEncoder(encoder) => cross_encoder_scores(encoder, scoring).await,
        Scorer::Embedding(encoder) => embedding_scores(encoder, scoring).await,
        Scorer::Judge(judge) => judge_scores(judge, scoring).await,
    }
}

fn query_too_long(size: usize, unit: &str) -> ApiError {
    ApiError::invalid(format!(
        "query is too long: {size} {unit}; at most {MAX_QUERY_TOKENS} tokens"
    ))
}

/// On a blocking thread: checks the query's length in the scorer's tokens and splits the
/// documents into pieces (refusing more than [`MAX_PIECES`]); returns the query, the pieces
/// and each piece's document.
async fn split(
    scorer: &Scorer,
    job: RerankJob,
) -> Result<(String, Vec<String>, Vec<usize>), ApiError> {
    let count_tokens: Box<dyn Fn(&str) -> usize + Send> = match scorer {
        Scorer::CrossEncoder(e) | Scorer::Embedding(e) => {
            let e = Arc::clone(e);
            Box::new(move |text| e.text_tokens(text).len())
        }
        Scorer::Judge(g) => {
            let g = Arc::clone(g);
            Box::new(move |text| g.tokenize(text, false).len())
        }
    };
    crate::blocking::off_runtime(move || {
        let query_tokens = count_tokens(&job.query);
        if query_tokens > MAX_QUERY_TOKENS {
            return Err(query_too_long(query_tokens, "tokens"));
        }
        let mut owners = Vec::new();
        let mut pieces = Vec::new();
        for (doc, text) in job.documents.iter().enumerate() {
            for chunk in chunks(text, job.max_chunks) {
                if pieces.len() == MAX_PIECES {
                    return Err(ApiError::invalid(format!(
                        "the documents split into more than {MAX_PIECES} chunks of {CHUNK_WORDS} words; send fewer or shorter documents, or lower max_chunks_per_doc"
                    )));
                }
                owners.push(doc);
                pieces.push(chunk);
            }
        }
        Ok((job.query, pieces, owners))
    })
    .await?
}

/// The query and the pieces to score against it.
type Work = (String, Vec<String>);
/// One relevance in [0, 1] per piece.
type Scored = Result<Vec<f32>, ApiError>;

async fn cross_encoder_scores(encoder: &Arc<dyn TextEncoder>, (query, pieces): Work) -> Scored {
    let bytes = pieces.iter().map(|p| p.len() + query.len()).sum();
    let outputs = encode_with(encoder, bytes, move |encoder| {
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| encoder.tokenize_pair(i, &query, piece))
            .collect()
    })
    .await?;
    Ok(outputs.vectors.iter().map(|l| relevance(l)).collect())
}

/// A cross-encoder's relevance from its logits: the sigmoid of a single logit, else the softmax
/// probability of the last label.
fn relevance(logits: &[f32]) -> f32 {
    match logits {
        [] => 0.0,
        [single] => 1.0 / (1.0 + (-single).exp()),
        [.., last] => (last - log_sum_exp(logits)).exp(),
    }
}

async fn embedding_scores(encoder: &Arc<dyn TextEncoder>, (query, pieces): Work) -> Scored {
    let mut texts = for_task(encoder.as_ref(), Some(InputType::SearchQuery), vec![query]);
    // Empty documents cannot be embedded; they score 0.
    let empty: Vec<bool> = pieces.iter().map(|p| p.trim().is_empty()).collect();
    let documents = pieces
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .collect();
    texts.extend(for_task(
        encoder.as_ref(),
        Some(InputType::SearchDocument),
        documents,
    ));
    let embedded = embed_texts(encoder, texts, Truncate::End).await?;
    let (query_vector, rest) = embedded
        .vectors
        .split_first()
        .ok_or_else(|| ApiError::internal("no query embedding"))?;
    let mut vectors = rest.iter();
    Ok(empty
        .into_iter()
        .map(|is_empty| {
            if is_empty {
                return 0.0;
            }
            vectors.next().map_or(0.0, |v| {
                let cos: f32 = v.iter().zip(query_vector).map(|(a, b)| a * b).sum();
                ((cos + 1.0) / 2.0).clamp(0.0, 1.0)
            })
        })
        .collect())
}

/// First token ids of the spellings of a word the model may answer with.
fn answer_tokens(judge: &Arc<dyn TextGenerator>, spellings: &[&str]) -> Vec<u32> {
    let mut ids: Vec<u32> = spellings
        .iter()
        .filter_map(|s| judge.tokenize(s, false).first().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// Token ids of each piece's prompt.
type Prompts = Result<Vec<Vec<u32>>, ApiError>;

/// The judge's prompt for each piece, through its chat template on a blocking thread; the
/// query and document are message text, so a document cannot write the judge's own turn.
async fn judge_prompts(judge: &Arc<dyn TextGenerator>, (query, pieces): Work) -> Prompts {
    let judge = Arc::clone(judge);
    crate::blocking::off_runtime(move || {
        let context = judge.info().context_per_sequence as usize;
        pieces
            .iter()
            .map(|piece| {
                let messages = [
                    ChatMessage::new("system", JUDGE_SYSTEM),
                    ChatMessage::new(
                        "user",
                        format!("Query: {query}\n\nDocument: {piece}\n\nIs this document relevant to the query? Answer yes or no."),
                    ),
                ];
                let mut tokens = judge.chat_tokens(&messages, &[])?.tokens;
                if tokens.len() + 1 > context {
                    // Keep the end: the question and the assistant's turn must survive.
                    tokens.drain(..tokens.len() + 1 - context);
                }
                Ok(tokens)
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?
}

async fn judge_scores(judge: &Arc<dyn TextGenerator>, work: Work) -> Scored {
    let yes = answer_tokens(judge, &["yes", "Yes", " yes", " Yes", "YES"]);
    let no = answer_tokens(judge, &["no", "No", " no", " No", "NO"]);
    let candidates: Vec<u32> = yes.iter().chain(&no).copied().collect();
    let prompts = judge_prompts(judge, work).await?;
    // Waves no larger than the engine's slots, so a big rerank never floods the shared queue.
    let wave = judge.info().parallel_sequences.max(1) as usize;
    let mut scores = Vec::with_capacity(prompts.len());
    for batch in prompts.chunks(wave) {
        let mut waiting = Vec::with_capacity(batch.len());
        for prompt in batch {
            waiting.push(judge.score_next(prompt.clone(), candidates.clone())?);
        }
        for answer in waiting {
            let logits = answer
                .await
                .map_err(|_| ApiError::internal("the judge stopped"))?
                .map_err(ApiError::internal)?;
            let (yes_logits, no_logits) = logits.split_at(yes.len().min(logits.len()));
            let (y, n) = (log_sum_exp(yes_logits), log_sum_exp(no_logits));
            scores.push(1.0 / (1.0 + (n - y).exp()));
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_documents_split_into_word_chunks() {
        let text = vec!["w"; CHUNK_WORDS * 2 + 5].join(" ");
        let parts = chunks(&text, 10);
        assert_eq!(parts.len(), 3);
        assert_eq!(chunks(&text, 2).len(), 2);
        assert_eq!(chunks("", 10), vec![String::new()]);
    }

    #[test]
    fn relevance_reads_one_or_several_logits() {
        assert!((relevance(&[0.0]) - 0.5).abs() < 1e-6);
        assert!(relevance(&[4.0]) > 0.98);
        assert!((relevance(&[1.0, 1.0]) - 0.5).abs() < 1e-6);
        assert!(relevance(&[-3.0, 3.0]) > 0.99);
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }
}
