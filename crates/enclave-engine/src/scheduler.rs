//! The continuous-batching loop. One thread per model owns the llama.cpp context; every step it
//! admits waiting requests into free slots, drops sequences whose caller went away (freeing their
//! KV cells), packs one decode token per generating slot plus prefill chunks of new prompts into a
//! single batch, runs it, and samples each slot's next token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use crate::generator::{FinishReason, GenEvent, Scores};
use crate::llama_sampler::build_sampler;
use crate::sampling::SamplingParams;
use crate::text::{StopMatcher, Utf8Assembler};

pub(crate) struct Job {
    pub prompt: Vec<LlamaToken>,
    pub params: SamplingParams,
    /// The grammar sampler of a constrained generation (first in its sampler chain).
    pub constraint: Option<LlamaSampler>,
    pub reply: Reply,
}

/// Where a job's results go: a generation streams events; a scoring pass answers once with
/// the logits of its candidate tokens (nothing is sampled).
pub(crate) enum Reply {
    Stream(mpsc::UnboundedSender<GenEvent>),
    Score {
        candidates: Vec<LlamaToken>,
        /// Taken when the answer is sent.
        tx: Option<oneshot::Sender<Scores>>,
    },
}

impl Reply {
    /// The caller went away (or was answered): the job's slot can be freed.
    fn is_closed(&self) -> bool {
        match self {
            Reply::Stream(tx) => tx.is_closed(),
            Reply::Score { tx, .. } => tx.as_ref().is_none_or(oneshot::Sender::is_closed),
        }
    }

    fn send(&self, event: GenEvent) {
        if let Reply::Stream(tx) = self {
            let _ = tx.send(event);
        }
    }

    fn fail(&mut self, message: String) {
        match self {
            Reply::Stream(tx) => {
                let _ = tx.send(GenEvent::Error(message));
            }
            Reply::Score { tx, .. } => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Err(message));
                }
            }
        }
    }
}

pub(crate) struct SchedulerSetup {
    pub model: Arc<LlamaModel>,
    /// Keep a finished sequence's KV cells for a later prompt with the same beginning. Only
    /// with per-sequence KV buffers: in a shared one, idle cells would crowd out live sequences.
    pub reuse_prefixes: bool,
    pub ctx_params: LlamaContextParams,
    pub parallel: u32,
    pub context_per_sequence: u32,
    pub batch_tokens: u32,
    pub eog_tokens: Vec<LlamaToken>,
    pub active: Arc<AtomicUsize>,
}

struct Slot {
    seq_id: i32,
    reply: Reply,
    sampler: LlamaSampler,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens whose KV cells were kept from the previous request on this sequence.
    reused: usize,
    /// Tokens whose KV cells this sequence holds, in position order.
    history: Vec<LlamaToken>,
    prefilled: usize,
    n_past: i32,
    /// Sampled but not yet fed back through the model.
    next_token: Option<LlamaToken>,
    /// Index in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    generated: u32,
    max_tokens: u32,
    ignore_eos: bool,
    utf8: Utf8Assembler,
    stops: StopMatcher,
}

impl Slot {
    fn send_text(&self, text: String) {
        if !text.is_empty() {
            self.reply.send(GenEvent::Text {
                text,
                generated: self.generated,
            });
        }
    }

    /// Flushes held-back text (unless a stop sequence cut it) and reports the end; returns the
    /// sequence id and the tokens its KV cells hold.
    fn finish(mut self, reason: FinishReason) -> (i32, Vec<LlamaToken>) {
        if reason != FinishReason::StopSequence {
            let rest = self.utf8.finish();
            let outcome = self.stops.push(&rest);
            let mut tail = outcome.emit;
            if !outcome.stopped {
                tail.push_str(&self.stops.finish());
            }
            self.send_text(tail);
        }
        self.reply.send(GenEvent::Done {
            reason,
            prompt_tokens: self.prompt.len() as u32,
            cached_tokens: self.reused as u32,
            completion_tokens: self.generated,
        });
        (self.seq_id, self.history)
    }
}

pub(crate) fn run(
    mut setup: SchedulerSetup,
    mut jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let backend = match crate::llama_backend::backend() {
        Ok(backend) => backend,
        Err(err) => {
            let _ = ready.send(Err(err.to_string()));
            return;
        }
    };
    let mut ctx = match setup
        .model
        .new_context(backend, std::mem::take(&mut setup.ctx_params))
    {
        Ok(ctx) => ctx,
        Err(err) => {
            let _ = ready.send(Err(err.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));

    let n_vocab = setup.model.n_vocab();
    let mut pool = SeqPool::new(setup.parallel, setup.reuse_prefixes);
    let mut slots: Vec<Slot> = Vec::with_capacity(setup.parallel as usize);
    let mut batch = LlamaBatch::new(setup.batch_tokens as usize, 1);

    loop {
        // Admit: block only when there is nothing else to do.
        while pool.has_free() {
            let job = if slots.is_empty() {
                setup.active.store(0, Ordering::Relaxed);
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            if job.reply.is_closed() {
                continue;
            }
            let Some((seq_id, reused)) = pool.take(&mut ctx, &job.prompt) else {
                break;
            };
            let sampler = build_sampler(&job.params, n_vocab, &setup.eog_tokens, job.constraint);
            slots.push(Slot {
                seq_id,
                reply: job.reply,
                sampler,
                history: job.prompt[..reused].to_vec(),
                reused,
                prompt: job.prompt,
                prefilled: reused,
                n_past: reused as i32,
                next_token: None,
                logits_at: None,
                generated: 0,
                max_tokens: job.params.max_tokens,
                ignore_eos: job.params.ignore_eos,
                utf8: Utf8Assembler::default(),
                stops: StopMatcher::new(job.params.stop),
            });
        }

        // Callers that went away free their slot and KV cells now.
        let mut i = 0;
        while i < slots.len() {
            if slots[i].reply.is_closed() {
                let slot = slots.swap_remove(i);
                pool.give_back(&mut ctx, slot.seq_id, None);
            } else {
                i += 1;
            }
        }
        setup.active.store(slots.len(), Ordering::Relaxed);
        if slots.is_empty() {
            continue;
        }

        fill_batch(&mut batch, &mut slots, setup.batch_tokens as usize);
        if batch.n_tokens() == 0 {
            continue;
        }
        if let Err(err) = ctx.decode(&mut batch) {
            // A failed forward pass leaves the KV state of every sequence in it unknown.
            for mut slot in slots.drain(..) {
                slot.reply.fail(format!("decode failed: {err}"));
                pool.give_back(&mut ctx, slot.seq_id, None);
            }
            continue;
        }

        let mut i = 0;
        while i < slots.len() {
            match sample_step(&ctx, &mut slots[i], &setup) {
                None => i += 1,
                Some(reason) => {
                    let slot = slots.swap_remove(i);
                    let (seq_id, history) = slot.finish(reason);
                    pool.give_back(&mut ctx, seq_id, Some(history));
                }
            }
        }
    }
}

/// Free sequence ids, and for each id the tokens its KV cells still hold from its last request.
struct SeqPool {
    free: Vec<i32>,
    cached: Vec<Vec<LlamaToken>>,
    keep: bool,
}

impl SeqPool {
    fn new(parallel: u32, keep: bool) -> Self {
        Self {
            free: (0..parallel as i32).rev().collect(),
            cached: vec![Vec::new(); parallel as usize],
            keep,
        }
    }

    fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Takes the free sequence whose cached tokens share the longest prefix with `prompt`, drops
    /// its KV cells past that prefix, and returns it with the number of tokens reused.
    fn take(&mut self, ctx: &mut LlamaContext<'_>, prompt: &[LlamaToken]) -> Option<(i32, usize)> {
        let common = |seq: i32| {
            self.cached[seq as usize]
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let (position, seq_id) = self
            .free
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|&(_, seq)| common(seq))?;
        self.free.swap_remove(position);
        // At least one prompt token must run to produce the logits of the next one.
        let mut reused = common(seq_id).min(prompt.len().saturating_sub(1));
        let trimmed = ctx.clear_kv_cache_seq(Some(seq_id as u32), Some(reused as u32), None);
        if !matches!(trimmed, Ok(true)) {
            // Some models cannot drop part of a sequence; start it afresh.
            let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
            reused = 0;
        }
        self.cached[seq_id as usize].clear();
        Some((seq_id, reused))
    }

    /// Returns a sequence. With `history` (a request that finished normally) its KV cells are
    /// kept for a later prompt that starts the same way; otherwise they are freed now.
    fn give_back(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        seq_id: i32,
        history: Option<Vec<LlamaToken>>,
    ) {
        match history.filter(|_| self.keep) {
            Some(tokens) => self.cached[seq_id as usize] = tokens,
            None => {
                let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
                self.cached[seq_id as usize].clear();
            }
        }
        self.free.push(seq_id);
    }
}

/// One decode token per generating slot first (latency), then prompt chunks in admission order.
fn fill_batch(batch: &mut LlamaBatch, slots: &mut [Slot], capacity: usize) {
    batch.clear();
    // Decode tokens in sequence order: while the set of generating sequences stays the same,
    // every step has the same shape and llama.cpp can reuse its compute graph.
    let mut decode_order: Vec<usize> = (0..slots.len()).collect();
    decode_order.sort_by_key(|&i| slots[i].seq_id);
    for i in decode_order {
        let slot = &mut slots[i];
        if let Some(token) = slot.next_token.take() {
            // Capacity is at least `parallel`, so every decode token fits.
            if batch.add(token, slot.n_past, &[slot.seq_id], true).is_ok() {
                slot.logits_at = Some(batch.n_tokens() - 1);
                slot.n_past += 1;
                slot.history.push(token);
            }
        }
    }
    for slot in slots.iter_mut() {
        let remaining = slot.prompt.len() - slot.prefilled;
        let room = capacity.saturating_sub(batch.n_tokens() as usize);
        if remaining == 0 || room == 0 {
            continue;
        }
        let take = remaining.min(room);
        for offset in 0..take {
            let index = slot.prefilled + offset;
            let last = index + 1 == slot.prompt.len();
            if batch
                .add(slot.prompt[index], slot.n_past, &[slot.seq_id], last)
                .is_err()
            {
                break;
            }
            slot.n_past += 1;
            slot.history.push(slot.prompt[index]);
            if last {
                slot.logits_at = Some(batch.n_tokens() - 1);
            }
        }
        slot.prefilled += take;
    }
}

/// Samples the slot's next token if this batch produced logits for it; returns why it finished.
fn sample_step(
    ctx: &LlamaContext<'_>,
    slot: &mut Slot,
    setup: &SchedulerSetup,
) -> Option<FinishReason> {
    let at = slot.logits_at.take()?;
    if let Reply::Score { candidates, tx } = &mut slot.reply {
        let logits = ctx.get_logits_ith(at);
        let picked = candidates
            .iter()
            .map(|t| {
                logits
                    .get(t.0 as usize)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY)
            })
            .collect();
        if let Some(tx) = tx.take() {
            let _ = tx.send(Ok(picked));
        }
        return Some(FinishReason::Complete);
    }
    let token = slot.sampler.sample(ctx, at);
    if !slot.ignore_eos && setup.model.vocab().is_eog(token) {
        return Some(FinishReason::Complete);
    }
    slot.generated += 1;
    let piece = setup.model.vocab().token_to_piece(token, false, None);
    let text = slot.utf8.push(&piece);
    let outcome = slot.stops.push(&text);
    slot.send_text(outcome.emit);
    if outcome.stopped {
        return Some(FinishReason::StopSequence);
    }
    if slot.generated >= slot.max_tokens || slot.n_past as u32 + 1 >= setup.context_per_sequence {
        return Some(FinishReason::MaxTokens);
    }
    slot.next_token = Some(token);
    None
}
