//! Sentence encoders behind the [`TextEncoder`] seam: BERT-family safetensors models converted to
//! GGUF and run by llama.cpp, with TEI-style batching by token budget.

mod batcher;
pub mod convert;
mod gguf;

use tokio::sync::oneshot;

pub use batcher::{EncoderConfig, LlamaEncoder};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EncoderError {
    #[error("too many concurrent requests ({0} in flight); retry shortly")]
    Busy(usize),
    #[error("the encoder has stopped")]
    Stopped,
    #[error("input {index} is empty")]
    EmptyInput { index: usize },
    #[error("input {index} has {tokens} tokens, more than the model's {max} (send truncate START or END)")]
    TooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    #[error("encoding failed: {0}")]
    Engine(String),
}

/// Facts about a loaded encoder.
#[derive(Debug, Clone)]
pub struct EncoderInfo {
    pub name: String,
    pub dimensions: usize,
    /// Most tokens one input may have, special tokens included.
    pub max_tokens: usize,
    /// Requests that may be in flight before callers get `Busy`.
    pub max_concurrent_requests: usize,
}

/// Pending embeddings of one request: one normalised vector per input, in input order.
pub type EmbeddingsReceiver = oneshot::Receiver<Result<Vec<Vec<f32>>, EncoderError>>;

/// Which end of an over-long input to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncate {
    /// Refuse over-long inputs.
    None,
    /// Drop tokens from the start.
    Start,
    /// Drop tokens from the end.
    End,
}

pub trait TextEncoder: Send + Sync {
    fn info(&self) -> &EncoderInfo;
    /// Token ids of `text` with the model's special tokens, fitted to the model per `truncate`.
    /// `index` names the input in errors.
    fn tokenize(
        &self,
        index: usize,
        text: &str,
        truncate: Truncate,
    ) -> Result<Vec<u32>, EncoderError>;
    /// Queues tokenized inputs; the receiver yields their L2-normalised embeddings.
    fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<EmbeddingsReceiver, EncoderError>;
}

/// Cosine similarity of two vectors (for normalised vectors, their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}
