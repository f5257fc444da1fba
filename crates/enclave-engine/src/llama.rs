//! [`TextGenerator`] on llama.cpp: loads a GGUF (mmap), owns its chat template and vocabulary, and
//! runs one scheduler thread per model that batches every active sequence (see `scheduler`).

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use crate::catalog::ModelKind;
use crate::generator::{
    ChatMessage, ChatTokens, EngineStats, GenerationStream, GeneratorError, ModelInfo,
    ScoreReceiver, TextGenerator,
};
use crate::llama_constraint::Grammars;
use crate::sampling::{Constraint, SamplingParams};
use crate::scheduler::{self, Counters, Job, Reply, SchedulerSetup};
use crate::tools::render::{render, Turn};
use crate::tools::{ToolFormat, ToolSpec};

/// How a model is run. Zero values mean "pick for me".
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Sequences decoded together (slots).
    pub parallel: u32,
    /// Tokens each sequence may hold; 0 = the model's training context, capped at 4096.
    pub context_per_sequence: u32,
    /// CPU threads; 0 = all available cores.
    pub threads: u32,
    /// Most tokens in one scheduler step (prefill chunks and decode tokens together); llama.cpp
    /// runs them in passes of at most 512. A step large enough for all arriving prompts keeps
    /// sequences in step with each other, so later steps are pure decode steps.
    pub batch_tokens: u32,
    /// Requests allowed to wait for a free slot.
    pub queue_capacity: usize,
    /// One KV buffer shared by all sequences instead of one per sequence. A shared buffer runs
    /// any batch in one pass and shares prefix cells between sequences, but llama.cpp's CPU
    /// attention walks every cell of the buffer (masked) for every token, so long contexts and
    /// idle prefixes slow every step; per-sequence buffers read only their own cells, and the
    /// scheduler keeps their batches to one pass (see `scheduler::fill_batch`).
    pub unified_kv: bool,
    /// Most tokens a sequence guesses from its prompt per step, verified in the same forward
    /// pass (speculative decoding; 0 turns it off). The length adapts to each sequence's
    /// acceptance up to this.
    pub draft_max: u32,
    /// Start prompts from KV cells that already hold their beginning (a finished request's, or
    /// a busy sequence's, shared or copied; see `prefix_cache`).
    pub prefix_reuse: bool,
    /// llama.cpp's flash attention instead of attention as matrix products. Off by default: on
    /// a CPU its kernel walks the KV cells once per token row, with a scalar softmax step per
    /// cell, where the matrix products read a sequence's cells once for all its rows in the pass
    /// (a token and its guesses) — decode over a 1,800-token grounded prompt ran 2.8x faster
    /// without it on SmolLM2, at a 15% slower prefill (docs/engine.md).
    pub flash_attention: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            parallel: 8,
            context_per_sequence: 0,
            threads: 0,
            batch_tokens: 2048,
            queue_capacity: 64,
            unified_kv: false,
            draft_max: DEFAULT_DRAFT_MAX,
            prefix_reuse: true,
            flash_attention: false,
        }
    }
}

pub(crate) use crate::llama_backend::backend;
pub use crate::llama_backend::LoadError;

pub struct LlamaGenerator {
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
    tool_format: ToolFormat,
    grammars: Grammars,
    info: ModelInfo,
    queue: mpsc::Sender<Job>,
    active: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

/// Guesses per step at most, by default: a quoted passage is often longer (a 64-row pass costs
/// about ten one-row passes on two cores and can take 64 tokens at once), and the length a plan
/// uses follows the odds of the match and what passes cost (`speculate::plan`).
pub const DEFAULT_DRAFT_MAX: u32 = 64;

/// llama.cpp's name for the template used when a GGUF carries none.
const FALLBACK_TEMPLATE: &str = "chatml";
const DEFAULT_MAX_CONTEXT: u32 = 4096;
/// Tokens llama.cpp computes in one physical pass; a larger logical batch is split into these.
const MAX_UBATCH: u32 = 512;

impl LlamaGenerator {
    /// Loads the model and starts its scheduler thread.
    pub fn load(
        name: &str,
        kind: ModelKind,
        path: &Path,
        config: &GeneratorConfig,
    ) -> Result<Self, LoadError> {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| LoadError::Model {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let model = Arc::new(model);
        let template = model
            .chat_template(None)
            .or_else(|_| LlamaChatTemplate::new(FALLBACK_TEMPLATE))
            .map_err(|e| LoadError::Model {
                path: path.display().to_string(),
                reason: format!("chat template: {e}"),
            })?;

        let tool_format = ToolFormat::for_template(template.to_str().unwrap_or_default());
        let context_train = model.n_ctx_train();
        let parallel = config.parallel.max(1);
        let context_per_sequence = match config.context_per_sequence {
            0 => context_train.min(DEFAULT_MAX_CONTEXT),
            n => n.min(context_train),
        };
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            n => n,
        };
        let threads = i32::try_from(threads).unwrap_or(2);
        let batch_tokens = config.batch_tokens.max(parallel).max(32);
        let total_context = NonZeroU32::new(context_per_sequence * parallel)
            .ok_or_else(|| LoadError::Context("zero context".into()))?;
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(Some(total_context))
            .with_n_batch(batch_tokens)
            .with_n_ubatch(batch_tokens.min(MAX_UBATCH))
            .with_n_seq_max(parallel)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_kv_unified(config.unified_kv)
            .with_flash_attention_policy(if config.flash_attention {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
            } else {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
            });

        let vocab = model.vocab();
        let vocab_size = u32::try_from(vocab.n_tokens()).unwrap_or(0);
        let eog_tokens: Vec<LlamaToken> = vocab.tokens().filter(|&t| vocab.is_eog(t)).collect();

        let queue_capacity = config.queue_capacity.max(1);
        let (queue, jobs) = mpsc::channel(queue_capacity);
        let active = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let setup = SchedulerSetup {
            model: Arc::clone(&model),
            reuse_prefixes: config.prefix_reuse,
            unified_kv: config.unified_kv,
            draft_max: config.draft_max as usize,
            counters: Arc::clone(&counters),
            ctx_params,
            parallel,
            context_per_sequence,
            batch_tokens,
            eog_tokens,
            active: Arc::clone(&active),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || scheduler::run(setup, jobs, ready_tx))
            .map_err(|e| LoadError::Context(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|_| LoadError::Context("engine thread exited".into()))?
            .map_err(LoadError::Context)?;

        Ok(Self {
            model,
            template,
            tool_format,
            grammars: Grammars::default(),
            info: ModelInfo {
                name: name.to_string(),
                kind,
                context_per_sequence,
                context_train,
                vocab_size,
                parallel_sequences: parallel,
                queue_capacity,
            },
            queue,
            active,
            counters,
        })
    }
}

/// Token ids of `text` in `model`'s vocabulary; `with_special` adds the model's opening token(s)
/// and parses special tokens written in the text.
pub(crate) fn tokenize_text(model: &LlamaModel, text: &str, with_special: bool) -> Vec<u32> {
    tokenize_parts(model, text, with_special, with_special)
}

fn tokenize_parts(model: &LlamaModel, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
    model
        .vocab()
        .tokenize(text.as_bytes(), add_bos, parse_special)
        .into_iter()
        .map(|t| t.0 as u32)
        .collect()
}

/// Stands in for message `index`'s text while the template renders; private-use characters
/// that no template writes.
fn content_marker(index: usize) -> String {
    format!("\u{F8F0}{index}\u{F8F1}")
}

/// Text of `tokens`; the first id outside `0..vocab_size` is the error.
pub(crate) fn detokenize_ids(
    model: &LlamaModel,
    tokens: &[i64],
    vocab_size: i64,
) -> Result<String, i64> {
    let tokens = tokens
        .iter()
        .map(|&t| {
            if (0..vocab_size).contains(&t) {
                Ok(LlamaToken(t as i32))
            } else {
                Err(t)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = model.vocab().detokenize(&tokens, false, true);
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The text piece of each token (for token strings in API responses).
pub(crate) fn token_pieces(model: &LlamaModel, tokens: &[u32]) -> Vec<String> {
    let vocab = model.vocab();
    tokens
        .iter()
        .map(|&t| {
            let bytes = vocab.token_to_piece(LlamaToken(t as i32), true, None);
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .collect()
}

impl TextGenerator for LlamaGenerator {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str, with_special: bool) -> Vec<u32> {
        tokenize_text(&self.model, text, with_special)
    }

    fn detokenize(&self, tokens: &[i64]) -> Result<String, GeneratorError> {
        detokenize_ids(&self.model, tokens, i64::from(self.info.vocab_size))
            .map_err(GeneratorError::InvalidToken)
    }

    fn token_pieces(&self, tokens: &[u32]) -> Vec<String> {
        token_pieces(&self.model, tokens)
    }

    fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, GeneratorError> {
        let messages = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| GeneratorError::Template(e.to_string()))?;
        self.model
            .apply_chat_template(&self.template, &messages, true)
            .map_err(|e| GeneratorError::Template(e.to_string()))
    }

    fn chat_tokens(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
    ) -> Result<ChatTokens, GeneratorError> {
        let turns = render(self.tool_format, messages, tools);
        self.turn_tokens(&turns)
    }

    fn prepare(&self, constraint: &Constraint) -> Result<(), GeneratorError> {
        self.grammars
            .prepare(&self.model, constraint)
            .map_err(GeneratorError::Grammar)
    }

    fn submit(
        &self,
        prompt: Vec<u32>,
        params: SamplingParams,
    ) -> Result<GenerationStream, GeneratorError> {
        let constraint = params
            .constraint
            .as_ref()
            .map(|c| self.grammars.sampler(&self.model, c))
            .transpose()
            .map_err(GeneratorError::Grammar)?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.enqueue(prompt, params, constraint, Reply::Stream(tx))?;
        Ok(rx)
    }

    fn score_next(
        &self,
        prompt: Vec<u32>,
        candidates: Vec<u32>,
    ) -> Result<ScoreReceiver, GeneratorError> {
        if let Some(&bad) = candidates.iter().find(|&&t| t >= self.info.vocab_size) {
            return Err(GeneratorError::InvalidToken(i64::from(bad)));
        }
        let params = SamplingParams {
            max_tokens: 1,
            ..SamplingParams::default()
        };
        let candidates = candidates
            .into_iter()
            .map(|t| LlamaToken(t as i32))
            .collect();
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            prompt,
            params,
            None,
            Reply::Score {
                candidates,
                tx: Some(tx),
            },
        )?;
        Ok(rx)
    }

    fn load(&self) -> (usize, usize) {
        let waiting = self.info.queue_capacity - self.queue.capacity();
        (self.active.load(Ordering::Relaxed), waiting)
    }

    fn stats(&self) -> EngineStats {
        self.counters.snapshot()
    }

    fn is_running(&self) -> bool {
        // The engine thread owns the queue's receiver; it is dropped when the thread ends.
        !self.queue.is_closed()
    }
}

impl LlamaGenerator {
    /// The prompt of `turns`: the template's text with special tokens read, each markup part
    /// the same way, and each content part as plain text (the billed input).
    fn turn_tokens(&self, turns: &[Turn]) -> Result<ChatTokens, GeneratorError> {
        let marked = turns
            .iter()
            .enumerate()
            .map(|(i, t)| LlamaChatMessage::new(t.role.clone(), content_marker(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| GeneratorError::Template(e.to_string()))?;
        let rendered = self
            .model
            .apply_chat_template(&self.template, &marked, true)
            .map_err(|e| GeneratorError::Template(e.to_string()))?;
        let unsafe_template = || {
            GeneratorError::Template(
                "the chat template rewrites message text, so it cannot be tokenized safely".into(),
            )
        };
        let mut tokens = Vec::new();
        let mut content_tokens = 0;
        let mut rest = rendered.as_str();
        for (i, turn) in turns.iter().enumerate() {
            let (template, after) = rest
                .split_once(content_marker(i).as_str())
                .ok_or_else(unsafe_template)?;
            if template.contains('\u{F8F0}') {
                return Err(unsafe_template());
            }
            tokens.extend(tokenize_parts(&self.model, template, i == 0, true));
            for part in &turn.parts {
                let piece = tokenize_parts(&self.model, &part.text, false, part.markup);
                if !part.markup {
                    content_tokens += piece.len() as u32;
                }
                tokens.extend(piece);
            }
            rest = after;
        }
        if rest.contains('\u{F8F0}') {
            return Err(unsafe_template());
        }
        tokens.extend(tokenize_parts(&self.model, rest, turns.is_empty(), true));
        Ok(ChatTokens {
            tokens,
            content_tokens,
        })
    }

    /// Checks that the request fits and queues it; fails at once when the queue is full.
    fn enqueue(
        &self,
        prompt: Vec<u32>,
        params: SamplingParams,
        constraint: Option<llama_cpp_2::sampling::LlamaSampler>,
        reply: Reply,
    ) -> Result<(), GeneratorError> {
        if prompt.is_empty() {
            return Err(GeneratorError::EmptyPrompt);
        }
        let context = self.info.context_per_sequence;
        if prompt.len() as u64 + u64::from(params.max_tokens) > u64::from(context) {
            return Err(GeneratorError::ContextExceeded {
                prompt: prompt.len(),
                max_tokens: params.max_tokens,
                context,
            });
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t >= self.info.vocab_size) {
            return Err(GeneratorError::InvalidToken(i64::from(bad)));
        }
        let job = Job {
            prompt: prompt.into_iter().map(|t| LlamaToken(t as i32)).collect(),
            params,
            constraint,
            reply,
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                GeneratorError::QueueFull(self.info.queue_capacity)
            }
            mpsc::error::TrySendError::Closed(_) => GeneratorError::Stopped,
        })
    }
}
