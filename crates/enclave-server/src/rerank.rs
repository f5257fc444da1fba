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

use enclave_engine::catalog::ModelKind;
use enclave_engine::encoder::{TextEncoder, Truncate};
use enclave_engine::{ChatMessage, GenEvent, TextGenerator};

use crate::embedding::{embed_texts, encode_with};
use crate::error::{ApiError, Family};
use crate::state::AppState;

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

/// The scorer for a rerank model name; without a name, the first cross-encoder served, else the
/// first chat model as judge, else the first embedding model.
pub fn scorer_for(
    state: &AppState,
    family: Family,
    model: Option<&str>,
) -> Result<Scorer, ApiError> {
    let is_chat = |m: &&Arc<dyn TextGenerator>| m.info().kind == ModelKind::Chat;
    match model.filter(|m| !m.is_empty()) {
        None => {
            if let Some(reranker) = state.first_cross_encoder() {
                return Ok(Scorer::CrossEncoder(reranker));
            }
            if let Some(judge) = state.models().iter().find(is_chat) {
                return Ok(Scorer::Judge(Arc::clone(judge)));
            }
            state.encoder(family, None).map(Scorer::Embedding)
        }
        Some(name) => match state.encoder_named(name) {
            Some(encoder) => Ok(Scorer::of_encoder(Arc::clone(encoder))),
            None => state.chat_model(family, Some(name)).map(Scorer::Judge),
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

/// Relevance in [0, 1] of each document to the query (same order as `documents`).
pub async fn score(
    family: Family,
    scorer: &Scorer,
    query: &str,
    documents: &[String],
    max_chunks: usize,
) -> Result<Vec<f32>, ApiError> {
    let mut owners = Vec::new();
    let mut pieces = Vec::new();
    for (doc, text) in documents.iter().enumerate() {
        for chunk in chunks(text, max_chunks) {
            owners.push(doc);
            pieces.push(chunk);
        }
    }
    let piece_scores = match scorer {
        Scorer::CrossEncoder(encoder) => {
            cross_encoder_scores(family, encoder, query, pieces).await?
        }
        Scorer::Embedding(encoder) => embedding_scores(family, encoder, query, pieces).await?,
        Scorer::Judge(judge) => judge_scores(family, judge, query, &pieces).await?,
    };
    let mut best = vec![0f32; documents.len()];
    for (doc, s) in owners.into_iter().zip(piece_scores) {
        best[doc] = best[doc].max(s);
    }
    Ok(best)
}

async fn cross_encoder_scores(
    family: Family,
    encoder: &Arc<dyn TextEncoder>,
    query: &str,
    pieces: Vec<String>,
) -> Result<Vec<f32>, ApiError> {
    let query = query.to_string();
    let outputs = encode_with(family, encoder, move |encoder| {
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

async fn embedding_scores(
    family: Family,
    encoder: &Arc<dyn TextEncoder>,
    query: &str,
    pieces: Vec<String>,
) -> Result<Vec<f32>, ApiError> {
    let mut texts = Vec::with_capacity(pieces.len() + 1);
    texts.push(query.to_string());
    // Empty documents cannot be embedded; they score 0.
    let empty: Vec<bool> = pieces.iter().map(|p| p.trim().is_empty()).collect();
    texts.extend(pieces.into_iter().filter(|p| !p.trim().is_empty()));
    let embedded = embed_texts(family, encoder, texts, Truncate::End).await?;
    let (query_vector, rest) = embedded
        .vectors
        .split_first()
        .ok_or_else(|| ApiError::internal(family, "no query embedding"))?;
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

async fn judge_scores(
    family: Family,
    judge: &Arc<dyn TextGenerator>,
    query: &str,
    pieces: &[String],
) -> Result<Vec<f32>, ApiError> {
    let yes = answer_tokens(judge, &["yes", "Yes", " yes", " Yes", "YES"]);
    let no = answer_tokens(judge, &["no", "No", " no", " No", "NO"]);
    let candidates: Vec<u32> = yes.iter().chain(&no).copied().collect();
    let context = judge.info().context_per_sequence as usize;
    let prompts = pieces
        .iter()
        .map(|piece| {
            let messages = [
                ChatMessage::new("system", JUDGE_SYSTEM),
                ChatMessage::new(
                    "user",
                    format!("Query: {query}\n\nDocument: {piece}\n\nIs this document relevant to the query? Answer yes or no."),
                ),
            ];
            let rendered = judge.render_chat(&messages).map_err(|e| ApiError::from_generator(family, e))?;
            let mut tokens = judge.tokenize(&rendered, true);
            if tokens.len() + 1 > context {
                // Keep the end: the question and the assistant's turn must survive.
                tokens.drain(..tokens.len() + 1 - context);
            }
            Ok(tokens)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    // Waves no larger than the engine's slots, so a big rerank never floods the shared queue.
    let wave = judge.info().parallel_sequences.max(1) as usize;
    let mut scores = Vec::with_capacity(prompts.len());
    for batch in prompts.chunks(wave) {
        let mut streams = Vec::with_capacity(batch.len());
        for prompt in batch {
            let stream = judge
                .score_next(prompt.clone(), candidates.clone())
                .map_err(|e| ApiError::from_generator(family, e))?;
            streams.push(stream);
        }
        for mut stream in streams {
            let mut logits = None;
            while let Some(event) = stream.recv().await {
                match event {
                    GenEvent::Logits(values) => logits = Some(values),
                    GenEvent::Error(message) => return Err(ApiError::internal(family, message)),
                    GenEvent::Done { .. } => break,
                    GenEvent::Text { .. } => {}
                }
            }
            let logits =
                logits.ok_or_else(|| ApiError::internal(family, "the judge returned no logits"))?;
            let (yes_logits, no_logits) = logits.split_at(yes.len());
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
