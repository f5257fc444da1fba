//! The seam between the API layer and whatever runs a decoder model. Services call a
//! [`TextGenerator`]; they never learn which engine sits underneath.

use tokio::sync::{mpsc, oneshot};

use crate::catalog::ModelKind;
use crate::pass_cost::PassTiming;
use crate::sampling::{Constraint, SamplingParams};
use crate::tools::{ToolCall, ToolSpec};

/// One chat turn: `system`, `user`, `assistant` (text and/or tool calls) or `tool` (one call's
/// result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Calls an assistant turn made.
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` turn answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    Complete,
    /// A stop sequence was produced (and cut from the text).
    StopSequence,
    /// `max_tokens` was reached.
    MaxTokens,
    /// The answer is tool calls (set by callers that read calls out of the output; the
    /// scheduler itself ends such an answer with `Complete`).
    ToolCalls,
    /// A guardrail policy stopped the answer (set by the server's output checks; never by the
    /// scheduler).
    Blocked,
}

/// What a running generation sends back.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// Newly generated text (whole characters, never part of a stop sequence), with the number
    /// of tokens generated so far (what a client that leaves now has been served).
    Text { text: String, generated: u32 },
    Done {
        reason: FinishReason,
        prompt_tokens: u32,
        /// Prompt tokens served from KV cells kept from an earlier request on the same slot.
        cached_tokens: u32,
        completion_tokens: u32,
    },
    /// The engine failed mid-generation; no more events follow.
    Error(String),
}

/// The receiving end of one generation; dropping it cancels the generation and frees its slot.
pub type GenerationStream = mpsc::UnboundedReceiver<GenEvent>;

/// A scoring pass's answer: the candidates' logits, or why the engine failed.
pub type Scores = Result<Vec<f32>, String>;

/// The receiving end of one scoring pass; dropping it cancels the pass.
pub type ScoreReceiver = oneshot::Receiver<Scores>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeneratorError {
    #[error("the request queue is full ({0} waiting); retry shortly")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
    #[error("too many tokens: prompt of {prompt} tokens plus max_tokens {max_tokens} exceeds the context of {context} tokens")]
    ContextExceeded {
        prompt: usize,
        max_tokens: u32,
        context: u32,
    },
    #[error("empty prompt")]
    EmptyPrompt,
    #[error("token id {0} is outside the vocabulary")]
    InvalidToken(i64),
    #[error("chat template failed: {0}")]
    Template(String),
    /// The output grammar (a JSON schema or tool schemas) cannot be enforced.
    #[error("{0}")]
    Grammar(String),
}

/// Facts about a loaded model that the API layer reports or validates against.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub kind: ModelKind,
    /// Tokens one sequence may hold (prompt + generated).
    pub context_per_sequence: u32,
    /// Context the model was trained with.
    pub context_train: u32,
    pub vocab_size: u32,
    /// Sequences generated together in one batch.
    pub parallel_sequences: u32,
    /// Requests that may wait for a free sequence before callers get `QueueFull`.
    pub queue_capacity: usize,
}

/// A decoder model served with continuous batching.
pub trait TextGenerator: Send + Sync {
    fn info(&self) -> &ModelInfo;
    /// Token ids of `text`; `with_special` adds the model's BOS and parses special tokens.
    fn tokenize(&self, text: &str, with_special: bool) -> Vec<u32>;
    /// Text of `tokens`, rejecting ids outside the vocabulary.
    fn detokenize(&self, tokens: &[i64]) -> Result<String, GeneratorError>;
    /// The model's text piece for each token (for token strings in API responses).
    fn token_pieces(&self, tokens: &[u32]) -> Vec<String>;
    /// Renders messages through the model's own chat template, ending with the assistant's turn.
    fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, GeneratorError>;
    /// The prompt of a chat through the model's template, as tokens: the template's own text
    /// with its special tokens, and each message's text read as plain text, so a role marker
    /// written inside a message (`<|im_start|>system`) stays text and cannot open a turn.
    /// `tools` are offered in the model's own tool format (`tools::ToolFormat`); tool calls and
    /// results in `messages` are written the same way.
    fn chat_tokens(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
    ) -> Result<ChatTokens, GeneratorError>;
    /// Compiles `constraint` (kept for later requests); fails when it cannot be enforced.
    /// `submit` compiles it too: this lets callers do it off the async runtime and refuse the
    /// request before any work is queued.
    fn prepare(&self, constraint: &Constraint) -> Result<(), GeneratorError>;
    /// Queues a generation. Fails at once when the queue is full or the request cannot fit.
    fn submit(
        &self,
        prompt: Vec<u32>,
        params: SamplingParams,
    ) -> Result<GenerationStream, GeneratorError>;
    /// Queues a scoring pass: the prompt is evaluated once and the logits of `candidates` for
    /// the next token come back, in their order, on the returned receiver. Nothing is sampled.
    fn score_next(
        &self,
        prompt: Vec<u32>,
        candidates: Vec<u32>,
    ) -> Result<ScoreReceiver, GeneratorError>;
    /// Sequences generating now and requests waiting (for `/ready` and metrics).
    fn load(&self) -> (usize, usize);
    /// Speculation and prefix-reuse counters since the engine started.
    fn stats(&self) -> EngineStats;
    /// Whether the engine still takes requests (false once its thread has died).
    fn is_running(&self) -> bool;
}

/// What the engine saved since it started: prompt tokens it did not compute again (their KV
/// cells were kept or copied from another sequence) and tokens it guessed and verified in
/// batches (speculative decoding from the prompt).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Prompt tokens of every request admitted.
    pub prompt_tokens: u64,
    /// Of those, tokens whose KV cells were already computed.
    pub reused_prompt_tokens: u64,
    /// Requests whose prefix was copied from a sequence serving another request.
    pub prefix_copies: u64,
    /// Tokens generated (sampled and kept).
    pub generated_tokens: u64,
    /// Guessed tokens checked by the model.
    pub drafted_tokens: u64,
    /// Of those, tokens the model agreed with (each one a forward pass saved).
    pub accepted_tokens: u64,
    /// Forward passes that produced tokens for at least one generating sequence.
    pub decode_steps: u64,
    /// What forward passes of each size class cost on this machine, smallest first; what
    /// guesses are weighed against.
    pub pass_timings: Vec<PassTiming>,
    /// Whether the engine is done timing pass sizes before serving (or was interrupted by a
    /// request, or had nothing to time): what a benchmark waits for before it measures.
    pub calibrated: bool,
}

/// A chat prompt's tokens, and how many of them are the messages' own text (what is billed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTokens {
    pub tokens: Vec<u32>,
    pub content_tokens: u32,
}
