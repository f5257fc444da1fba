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
use tokio::sync::mpsc;

use crate::generator::{FinishReason, GenEvent};
use crate::sampling::SamplingParams;
use crate::text::{StopMatcher, Utf8Assembler};

pub(crate) struct Job {
    pub prompt: Vec<LlamaToken>,
    pub params: SamplingParams,
    /// Set for scoring jobs: report these tokens' logits instead of sampling.
    pub score: Option<Vec<LlamaToken>>,
    pub tx: mpsc::UnboundedSender<GenEvent>,
}

pub(crate) struct SchedulerSetup {
    pub model: Arc<LlamaModel>,
    pub ctx_params: LlamaContextParams,
    pub parallel: u32,
    pub context_per_sequence: u32,
    pub batch_tokens: u32,
    pub eog_tokens: Vec<LlamaToken>,
    pub active: Arc<AtomicUsize>,
}

struct Slot {
    seq_id: i32,
    tx: mpsc::UnboundedSender<GenEvent>,
    sampler: LlamaSampler,
    prompt: Vec<LlamaToken>,
    prefilled: usize,
    n_past: i32,
    /// Sampled but not yet fed back through the model.
    next_token: Option<LlamaToken>,
    /// Index in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    generated: u32,
    max_tokens: u32,
    ignore_eos: bool,
    score: Option<Vec<LlamaToken>>,
    utf8: Utf8Assembler,
    stops: StopMatcher,
}

impl Slot {
    fn send_text(&self, text: String) {
        if !text.is_empty() {
            let _ = self.tx.send(GenEvent::Text(text));
        }
    }

    /// Flushes held-back text (unless a stop sequence cut it) and reports the end.
    fn finish(mut self, reason: FinishReason) -> i32 {
        if reason != FinishReason::StopSequence {
            let rest = self.utf8.finish();
            let outcome = self.stops.push(&rest);
            let mut tail = outcome.emit;
            if !outcome.stopped {
                tail.push_str(&self.stops.finish());
            }
            self.send_text(tail);
        }
        let _ = self.tx.send(GenEvent::Done {
            reason,
            prompt_tokens: self.prompt.len() as u32,
            completion_tokens: self.generated,
        });
        self.seq_id
    }
}

pub(crate) fn run(
    mut setup: SchedulerSetup,
    mut jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let backend = match crate::llama::backend() {
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
    let mut free_seqs: Vec<i32> = (0..setup.parallel as i32).rev().collect();
    let mut slots: Vec<Slot> = Vec::with_capacity(setup.parallel as usize);
    let mut batch = LlamaBatch::new(setup.batch_tokens as usize, 1);

    loop {
        // Admit: block only when there is nothing else to do.
        while let Some(seq_id) = free_seqs.last().copied() {
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
            if job.tx.is_closed() {
                continue;
            }
            free_seqs.pop();
            let sampler = job.params.build_sampler(n_vocab, &setup.eog_tokens);
            slots.push(Slot {
                seq_id,
                tx: job.tx,
                sampler,
                prompt: job.prompt,
                prefilled: 0,
                n_past: 0,
                next_token: None,
                logits_at: None,
                generated: 0,
                max_tokens: job.params.max_tokens,
                ignore_eos: job.params.ignore_eos,
                score: job.score,
                utf8: Utf8Assembler::default(),
                stops: StopMatcher::new(job.params.stop),
            });
        }

        // Callers that went away free their slot and KV cells now.
        let mut i = 0;
        while i < slots.len() {
            if slots[i].tx.is_closed() {
                let slot = slots.swap_remove(i);
                release(&mut ctx, &mut free_seqs, slot.seq_id);
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
            for slot in slots.drain(..) {
                let _ = slot
                    .tx
                    .send(GenEvent::Error(format!("decode failed: {err}")));
                release(&mut ctx, &mut free_seqs, slot.seq_id);
            }
            continue;
        }

        let mut i = 0;
        while i < slots.len() {
            match sample_step(&ctx, &mut slots[i], &setup) {
                None => i += 1,
                Some(reason) => {
                    let slot = slots.swap_remove(i);
                    let seq_id = slot.finish(reason);
                    release(&mut ctx, &mut free_seqs, seq_id);
                }
            }
        }
    }
}

fn release(ctx: &mut LlamaContext<'_>, free_seqs: &mut Vec<i32>, seq_id: i32) {
    let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
    free_seqs.push(seq_id);
}

/// One decode token per generating slot first (latency), then prompt chunks in admission order.
fn fill_batch(batch: &mut LlamaBatch, slots: &mut [Slot], capacity: usize) {
    batch.clear();
    for slot in slots.iter_mut() {
        if let Some(token) = slot.next_token.take() {
            // Capacity is at least `parallel`, so every decode token fits.
            if batch.add(token, slot.n_past, &[slot.seq_id], true).is_ok() {
                slot.logits_at = Some(batch.n_tokens() - 1);
                slot.n_past += 1;
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
    if let Some(candidates) = &slot.score {
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
        let _ = slot.tx.send(GenEvent::Logits(picked));
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
