//! [`TextEncoder`] for BERT-family models: loading (the converted folder, the engine and its
//! precision) and tokenizing with the converted model's vocabulary, loaded through llama.cpp.
//! Requests are tokenized by the caller (off the engine thread); the batching thread of each
//! model is [`super::batcher`]. A bounded queue answers `Busy` instead of letting latency pile
//! up.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use tokio::sync::{mpsc, oneshot};

use super::batcher::{pack_batches, run_llama, Job, Limits};
use super::convert::{self, Precision};
use super::native::{self, NativeBert};
use super::{EncoderError, EncoderHead, EncoderInfo, OutputsReceiver, TextEncoder, Truncate};
use crate::llama::{self, backend, LoadError};

/// How an encoder is run. Zero values mean "pick for me".
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    /// Tokens packed into one forward pass; 0 = the engine's best, measured with MiniLM on two
    /// cores: native 256 per thread, 512 on two cores (attention stays within each input);
    /// llama.cpp 256 (attention runs over the whole batch under a mask, whose cost grows with
    /// the batch's square). A single longer input still runs, up to the model's own limit.
    pub max_batch_tokens: usize,
    /// Most inputs in one forward pass (at most 256, llama.cpp's limit); 0 = 256 native, 64
    /// llama.cpp.
    pub max_batch_sequences: usize,
    /// Requests in flight before callers get `Busy` (429).
    pub max_concurrent_requests: usize,
    /// CPU threads; 0 = all cores.
    pub threads: u32,
    /// Weights: the native engine runs bf16 (where the CPU has AVX-512 BF16) or f32 and
    /// refuses q8; llama.cpp runs each as stored.
    pub precision: Precision,
    pub engine: EncoderEngine,
}

/// What runs an encoder's forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderEngine {
    /// Enclave's own BERT forward pass ([`super::native`]).
    Native,
    /// llama.cpp's BERT path.
    Llama,
}

impl EncoderEngine {
    /// The name `--encoder-engine` takes.
    pub fn name(self) -> &'static str {
        match self {
            EncoderEngine::Native => "native",
            EncoderEngine::Llama => "llama",
        }
    }

    /// The faster engine for `precision` on this CPU, as measured (docs/benchmarks.md): the
    /// native engine wherever it has a vector kernel for the precision (bf16: AVX-512 BF16;
    /// f32: AVX-512F or AVX2+FMA), llama.cpp for 8-bit weights and on other CPUs.
    pub fn fastest(precision: Precision) -> Self {
        let native = match precision {
            Precision::Bf16 => native::bf16_supported(),
            Precision::F32 => native::f32_vectorised(),
            Precision::Q8 => false,
        };
        if native {
            EncoderEngine::Native
        } else {
            EncoderEngine::Llama
        }
    }
}

/// The fastest precision on this CPU that keeps embeddings within cosine 0.999 of full
/// precision: bf16 with AVX-512 BF16 (cosine 0.99998 on MiniLM), else f32 where the native
/// engine has fp32 vector kernels, else llama.cpp's 8-bit blocks (cosine 0.9994).
pub fn fastest_precision() -> Precision {
    if native::bf16_supported() {
        Precision::Bf16
    } else if native::f32_vectorised() {
        Precision::F32
    } else {
        Precision::Q8
    }
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 0,
            max_batch_sequences: 0,
            max_concurrent_requests: 512,
            threads: 0,
            precision: fastest_precision(),
            engine: EncoderEngine::fastest(fastest_precision()),
        }
    }
}

/// A loaded forward pass, before its thread starts.
enum Engine {
    Native(NativeBert),
    /// llama.cpp's context is made on the batching thread itself.
    Llama(LlamaContextParams),
}

pub struct BertEncoder {
    model: Arc<LlamaModel>,
    info: EncoderInfo,
    queue: mpsc::Sender<Job>,
    cls: u32,
    sep: u32,
    /// Where the segment-B copies of the vocabulary start (cross-encoders with token types).
    segment_b_offset: Option<u32>,
    /// RoBERTa joins a pair with two separators (`<s> a </s></s> b </s>`), BERT with one.
    double_separator: bool,
}

impl BertEncoder {
    /// Converts (once) and loads the BERT model in `dir`, then starts its batching thread.
    pub fn load(name: &str, dir: &Path, config: &EncoderConfig) -> Result<Self, LoadError> {
        // Initialised first so llama.cpp's log settings also cover the one-time quantization.
        let backend = backend()?;
        let model_err = |path: &Path, reason: String| LoadError::Model {
            path: path.display().to_string(),
            reason,
        };
        // A ready GGUF (nomic-bert) runs on llama.cpp only, at the precision asked for (f32
        // measured as fast as 8-bit blocks on an AVX2 CPU, and closer to the F16 original).
        let prebuilt = convert::prebuilt_gguf(dir);
        let native_engine = config.engine == EncoderEngine::Native && prebuilt.is_none();
        // What the forward pass multiplies with: the native engine runs bf16 (where the CPU
        // has it) or f32; llama.cpp runs the file at the precision asked for.
        let precision = match (native_engine, config.precision) {
            (false, precision) | (true, precision @ Precision::F32) => precision,
            (true, Precision::Bf16) if native::bf16_supported() => Precision::Bf16,
            (true, Precision::Bf16) => {
                let reason = "the native engine runs bf16 only on CPUs with AVX-512 BF16; use f32, or the llama engine";
                return Err(model_err(dir, reason.into()));
            }
            (true, Precision::Q8) => {
                let reason =
                    "the native engine runs bf16 or f32 weights; q8 runs on the llama engine";
                return Err(model_err(dir, reason.into()));
            }
        };
        // The native engine takes only the vocabulary and hyper-parameters from llama.cpp's
        // model, so it opens the full-precision file (written from the same conversion its
        // weights come from) without loading its tensors (`no_alloc`). (Not `vocab_only`: that
        // skips the hyper-parameters, and BERT's tokenizer then adds a second [SEP].)
        let converted = if native_engine {
            Some(convert::convert(dir).map_err(|e| model_err(dir, e.to_string()))?)
        } else {
            None
        };
        let gguf = match (&converted, &prebuilt) {
            (Some(converted), _) => convert::f32_gguf_of(dir, converted),
            (None, Some(prebuilt)) => convert::prebuilt_at(dir, prebuilt, precision),
            (None, None) => convert::gguf_for(dir, precision),
        }
        .map_err(|e| model_err(dir, e.to_string()))?;
        let model_params = LlamaModelParams::default().with_no_alloc(native_engine);
        let model = LlamaModel::load_from_file(backend, &gguf, &model_params)
            .map_err(|e| model_err(&gguf, e.to_string()))?;
        let model = Arc::new(model);
        let labels = match prebuilt {
            // The prebuilt encoders are sentence encoders; a classifier comes as safetensors.
            Some(_) => None,
            None => convert::classifier_labels(dir).map_err(|e| model_err(dir, e.to_string()))?,
        };
        let input_prefixes = model
            .meta_val_str("general.architecture")
            .is_ok_and(|arch| arch == "nomic-bert");
        let segment_b_offset = model
            .meta_val_str(convert::SEGMENT_B_OFFSET_KEY)
            .ok()
            .and_then(|v| v.parse().ok());
        let double_separator = model
            .meta_val_str(convert::PAIR_STYLE_KEY)
            .is_ok_and(|style| style == "roberta");
        let (head, pooling) = match labels {
            Some(labels) => (EncoderHead::Classifier { labels }, LlamaPoolingType::Rank),
            // Mean or first-token pooling, as the converted model says.
            None => (EncoderHead::Embedding, LlamaPoolingType::Unspecified),
        };
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            n => n,
        };
        let max_batch_tokens = match config.max_batch_tokens {
            // 256 tokens a thread: 512 on two cores, where it measured best; more cores split
            // larger batches so each keeps as many rows.
            0 if native_engine => 256 * (threads as usize).max(2),
            0 => 256,
            n => n.max(16),
        };
        // One input may be as long as the model allows even when the packing budget is smaller.
        let max_tokens = model.n_ctx_train() as usize;
        let context_tokens = max_batch_tokens.max(max_tokens);
        let max_seqs = match config.max_batch_sequences {
            // Enough for a full token budget of short inputs on the native engine.
            0 if native_engine => 256,
            0 => 64,
            n => n.clamp(1, 256),
        };
        let engine = if let Some(converted) = converted {
            let bf16 = precision == Precision::Bf16;
            let native = NativeBert::new(&converted, bf16, threads as usize)
                .map_err(|e| model_err(dir, e))?;
            Engine::Native(native)
        } else {
            let threads = i32::try_from(threads).unwrap_or(2);
            let batch_tokens = u32::try_from(context_tokens).unwrap_or(512);
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(batch_tokens))
                .with_n_batch(batch_tokens)
                .with_n_ubatch(batch_tokens)
                .with_n_seq_max(max_seqs as u32)
                .with_n_threads(threads)
                .with_n_threads_batch(threads)
                .with_embeddings(true)
                .with_pooling_type(pooling)
                // Flash attention skips the masked tiles between packed inputs: without it the
                // batch's full square of attention is computed (half the speed, measured).
                .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED);
            Engine::Llama(params)
        };
        let vocab = model.vocab();
        let (cls, sep) = (vocab.bos().0 as u32, vocab.sep().0 as u32);
        let dimensions = match &head {
            EncoderHead::Embedding => usize::try_from(model.n_embd()).unwrap_or(0),
            EncoderHead::Classifier { labels } => labels.len(),
        };
        let normalize = head == EncoderHead::Embedding;

        let capacity = config.max_concurrent_requests.max(1);
        let (queue, jobs) = mpsc::channel(capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_model = Arc::clone(&model);
        std::thread::Builder::new()
            .name(format!("encoder-{name}"))
            .spawn(move || {
                let limits = Limits {
                    capacity: context_tokens,
                    budget: max_batch_tokens,
                    max_seqs,
                    normalize,
                };
                match engine {
                    Engine::Native(native) => {
                        let _ = ready_tx.send(Ok(()));
                        pack_batches(|inputs| native.forward(inputs), &limits, jobs);
                    }
                    Engine::Llama(params) => {
                        run_llama(&thread_model, params, &limits, jobs, ready_tx)
                    }
                }
            })
            .map_err(|e| LoadError::Context(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|_| LoadError::Context("encoder thread exited".into()))?
            .map_err(LoadError::Context)?;
        Ok(Self {
            model,
            info: EncoderInfo {
                name: name.to_string(),
                head,
                dimensions,
                max_tokens,
                max_concurrent_requests: capacity,
                engine: if native_engine {
                    EncoderEngine::Native
                } else {
                    EncoderEngine::Llama
                },
                precision,
                input_prefixes,
            },
            queue,
            cls,
            sep,
            segment_b_offset,
            double_separator,
        })
    }

    /// Token ids of `text` with `[CLS]` and `[SEP]`, untruncated.
    fn token_ids(&self, text: &str) -> Result<Vec<u32>, EncoderError> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), true, false)
            .into_iter()
            .map(|t| {
                u32::try_from(t.0)
                    .map_err(|_| EncoderError::Engine("the tokenizer gave no token id".into()))
            })
            .collect()
    }

    /// The text's own tokens: `ids` without the `[CLS]` and `[SEP]` around them.
    fn text_part<'a>(&self, ids: &'a [u32]) -> &'a [u32] {
        let ids = ids.strip_prefix(&[self.cls]).unwrap_or(ids);
        ids.strip_suffix(&[self.sep]).unwrap_or(ids)
    }
}

impl TextEncoder for BertEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn tokenize(
        &self,
        index: usize,
        text: &str,
        truncate: Truncate,
    ) -> Result<Vec<u32>, EncoderError> {
        if text.trim().is_empty() {
            return Err(EncoderError::EmptyInput { index });
        }
        let mut tokens = self.token_ids(text)?;
        let max = self.info.max_tokens;
        if tokens.len() <= max {
            return Ok(tokens);
        }
        match truncate {
            Truncate::None => Err(EncoderError::TooLong {
                index,
                tokens: tokens.len(),
                max,
            }),
            // Keep [CLS] … [SEP] around the part that survives.
            Truncate::End => {
                tokens.truncate(max - 1);
                tokens.push(self.sep);
                Ok(tokens)
            }
            Truncate::Start => {
                let keep = &tokens[tokens.len() - (max - 1)..];
                let mut out = Vec::with_capacity(max);
                out.push(self.cls);
                out.extend_from_slice(&keep[..keep.len() - 1]);
                out.push(self.sep);
                Ok(out)
            }
        }
    }

    fn tokenize_pair(
        &self,
        index: usize,
        first: &str,
        second: &str,
    ) -> Result<Vec<u32>, EncoderError> {
        if first.trim().is_empty() {
            return Err(EncoderError::EmptyInput { index });
        }
        let first = self.token_ids(first)?;
        let second = self.token_ids(second)?;
        let (a, b) = (self.text_part(&first), self.text_part(&second));
        let specials = if self.double_separator { 4 } else { 3 };
        let (na, nb) = longest_first(
            a.len(),
            b.len(),
            self.info.max_tokens.saturating_sub(specials),
        );
        let offset = self.segment_b_offset.unwrap_or(0);
        let mut tokens = Vec::with_capacity(na + nb + specials);
        tokens.push(self.cls);
        tokens.extend_from_slice(&a[..na]);
        tokens.push(self.sep);
        if self.double_separator {
            tokens.push(self.sep);
        }
        // The second text and its closing separator are segment B.
        tokens.extend(b[..nb].iter().chain([&self.sep]).map(|t| t + offset));
        Ok(tokens)
    }

    fn text_tokens(&self, text: &str) -> Vec<u32> {
        llama::tokenize_text(&self.model, text, false)
    }

    fn detokenize(&self, tokens: &[i64]) -> Result<String, EncoderError> {
        // Segment-B copies are an internal detail, not tokens a client can send.
        let vocab_size = self
            .segment_b_offset
            .map_or_else(|| i64::from(self.model.n_vocab()), i64::from);
        llama::detokenize_ids(&self.model, tokens, vocab_size).map_err(EncoderError::InvalidToken)
    }

    fn token_pieces(&self, tokens: &[u32]) -> Vec<String> {
        llama::token_pieces(&self.model, tokens)
    }

    fn encode(&self, inputs: Vec<Vec<u32>>) -> Result<OutputsReceiver, EncoderError> {
        let (reply, receiver) = oneshot::channel();
        if inputs.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(receiver);
        }
        self.queue
            .try_send(Job { inputs, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    EncoderError::Busy(self.info.max_concurrent_requests)
                }
                mpsc::error::TrySendError::Closed(_) => EncoderError::Stopped,
            })?;
        Ok(receiver)
    }

    fn is_running(&self) -> bool {
        // The batching thread owns the queue's receiver; it is dropped when the thread ends.
        !self.queue.is_closed()
    }
}

/// How many tokens of two texts of `a` and `b` tokens fit in `budget`, cut as Hugging Face's
/// `longest_first` cuts a pair: a token at a time from the longer text (the second on a tie).
fn longest_first(a: usize, b: usize, budget: usize) -> (usize, usize) {
    if a + b <= budget {
        return (a, b);
    }
    let half = budget / 2;
    if a <= half {
        (a, budget - a)
    } else if b <= half {
        (budget - b, b)
    } else {
        (budget - half, half)
    }
}

#[cfg(test)]
mod tests {
    use super::longest_first;

    /// Hugging Face's loop, one token at a time.
    fn stepwise(mut a: usize, mut b: usize, budget: usize) -> (usize, usize) {
        while a + b > budget {
            if a > b {
                a -= 1;
            } else {
                b -= 1;
            }
        }
        (a, b)
    }

    #[test]
    fn pairs_are_cut_like_hugging_face_longest_first() {
        for a in 0..40 {
            for b in 0..40 {
                for budget in 0..50 {
                    assert_eq!(
                        longest_first(a, b, budget),
                        stepwise(a, b, budget),
                        "{a} {b} {budget}"
                    );
                }
            }
        }
    }
}
