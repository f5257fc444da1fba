//! Encoders behind the [`TextEncoder`] seam: BERT-family safetensors models converted to GGUF and
//! run by llama.cpp, with TEI-style batching by token budget. A sentence encoder answers
//! normalised embeddings; a sequence classifier (a cross-encoder reranker) answers its logits
//! for a text pair.

mod batcher;
mod bert;
pub mod convert;
mod gguf;
mod native;
mod vocab;

use std::borrow::Cow;

use tokio::sync::oneshot;

pub use bert::{fastest_precision, BertEncoder, EncoderConfig, EncoderEngine};
pub use convert::Precision;

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
    #[error("token id {0} is not in the model's vocabulary")]
    InvalidToken(i64),
    #[error("encoding failed: {0}")]
    Engine(String),
}

/// What an encoder answers for each input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderHead {
    /// A pooled (mean or first-token, as the model was trained), L2-normalised sentence embedding.
    Embedding,
    /// One logit per label from a classification head over the first token; fed a
    /// query–document pair, a cross-encoder's relevance.
    Classifier { labels: Vec<String> },
}

impl EncoderHead {
    pub fn is_embedding(&self) -> bool {
        *self == EncoderHead::Embedding
    }
}

/// Facts about a loaded encoder.
#[derive(Debug, Clone)]
pub struct EncoderInfo {
    pub name: String,
    pub head: EncoderHead,
    /// Length of each output: the embedding size, or the number of labels.
    pub dimensions: usize,
    /// Most tokens one input may have, special tokens included.
    pub max_tokens: usize,
    /// Requests that may be in flight before callers get `Busy`.
    pub max_concurrent_requests: usize,
    /// What runs the forward pass, and at which weight precision.
    pub engine: EncoderEngine,
    pub precision: Precision,
    /// Whether each input must open with its task's prefix (`search_query: ` …), as
    /// nomic-embed was trained; see [`EncoderInfo::input_text`].
    pub input_prefixes: bool,
}

/// What a text is embedded for (Cohere's `input_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    SearchDocument,
    SearchQuery,
    Classification,
    Clustering,
}

impl InputType {
    /// Cohere's name, which is also nomic-embed's prefix word.
    pub fn name(self) -> &'static str {
        match self {
            InputType::SearchDocument => "search_document",
            InputType::SearchQuery => "search_query",
            InputType::Classification => "classification",
            InputType::Clustering => "clustering",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            InputType::SearchDocument,
            InputType::SearchQuery,
            InputType::Classification,
            InputType::Clustering,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
    }
}

impl EncoderInfo {
    /// The text the encoder should see for `text` embedded as `kind`: prefixed for encoders
    /// trained with task prefixes, unchanged otherwise (and when no kind is known).
    pub fn input_text<'a>(&self, kind: Option<InputType>, text: &'a str) -> Cow<'a, str> {
        match kind {
            Some(kind) if self.input_prefixes => Cow::Owned(format!("{}: {text}", kind.name())),
            _ => Cow::Borrowed(text),
        }
    }
}

/// Pending outputs of one request: one vector per input, in input order.
pub type OutputsReceiver = oneshot::Receiver<Result<Vec<Vec<f32>>, EncoderError>>;

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
    /// Token ids of a text pair (a query and a document, in that order) as the model was
    /// trained to read one: BERT `[CLS] first [SEP] second [SEP]` with the second text in
    /// segment B, RoBERTa `<s> first </s></s> second </s>`. Whatever does not fit is cut from
    /// the ends of the texts, longer text first, as Hugging Face's `longest_first` does.
    /// `index` names the pair in errors.
    fn tokenize_pair(
        &self,
        index: usize,
        first: &str,
        second: &str,
    ) -> Result<Vec<u32>, EncoderError>;
    /// Token ids of `text` alone, without special tokens (what `/v1/tokenize` shows).
    fn text_tokens(&self, text: &str) -> Vec<u32>;
    /// Text of `tokens`, rejecting ids outside the vocabulary.
    fn detokenize(&self, tokens: &[i64]) -> Result<String, EncoderError>;
    /// The text piece of each token.
    fn token_pieces(&self, tokens: &[u32]) -> Vec<String>;
    /// Queues tokenized inputs; the receiver yields one output per input (see [`EncoderHead`]).
    fn encode(&self, inputs: Vec<Vec<u32>>) -> Result<OutputsReceiver, EncoderError>;
    /// Whether the encoder still takes requests (false once its batching thread has died).
    fn is_running(&self) -> bool;
}

/// Cosine similarity of two vectors (for normalised vectors, their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}
