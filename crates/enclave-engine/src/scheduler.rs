//! The continuous-batching loop. One thread per model owns the llama.cpp context; every step it
//! admits waiting requests into free slots (starting from any KV cells that already hold the
//! prompt's beginning, see `prefix_cache`), drops sequences whose caller went away (freeing their
//! KV cells), packs each generating slot's next token — with tokens guessed from its prompt
//! after it (see `speculate`) — plus prefill chunks of new prompts into a single batch, runs it,
//! and samples each slot's next tokens, keeping the guesses the model agrees with.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use crate::generator::{EngineStats, FinishReason, GenEvent, Scores};
use crate::llama_sampler::build_sampler;
use crate::pass_cost::{PassCost, PassTiming};
use crate::prefix_cache::{common_prefix, SeqPool, MIN_SHARED_TO_WAIT};
use crate::sampling::SamplingParams;
use crate::speculate::{self, Acceptance, Candidate, Draft, MatchOdds};
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
    /// Keep finished sequences' KV cells for later prompts with the same beginning, and start
    /// new ones from a busy sequence's prefix.
    pub reuse_prefixes: bool,
    /// One KV buffer shared by all sequences (else one per sequence).
    pub unified_kv: bool,
    /// Most tokens a slot guesses per step (0: no speculation).
    pub draft_max: usize,
    pub ctx_params: LlamaContextParams,
    pub parallel: u32,
    pub context_per_sequence: u32,
    pub batch_tokens: u32,
    pub eog_tokens: Vec<LlamaToken>,
    pub active: Arc<AtomicUsize>,
    pub counters: Arc<Counters>,
}

/// The engine's running totals (see [`EngineStats`]), written by the scheduler thread only.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    prompt_tokens: AtomicU64,
    reused_prompt_tokens: AtomicU64,
    prefix_copies: AtomicU64,
    generated_tokens: AtomicU64,
    drafted_tokens: AtomicU64,
    accepted_tokens: AtomicU64,
    decode_steps: AtomicU64,
    pass_timings: Mutex<Vec<PassTiming>>,
    calibrated: AtomicBool,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> EngineStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EngineStats {
            prompt_tokens: get(&self.prompt_tokens),
            reused_prompt_tokens: get(&self.reused_prompt_tokens),
            prefix_copies: get(&self.prefix_copies),
            generated_tokens: get(&self.generated_tokens),
            drafted_tokens: get(&self.drafted_tokens),
            accepted_tokens: get(&self.accepted_tokens),
            decode_steps: get(&self.decode_steps),
            pass_timings: self
                .pass_timings
                .lock()
                .map(|t| t.clone())
                .unwrap_or_default(),
            calibrated: self.calibrated.load(Ordering::Relaxed),
        }
    }

    fn record_pass_costs(&self, cost: &PassCost) {
        if let Ok(mut timings) = self.pass_timings.lock() {
            *timings = cost.timings();
        }
    }
}

struct Slot {
    seq_id: i32,
    reply: Reply,
    sampler: LlamaSampler,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens whose KV cells were already computed when the request was admitted.
    reused: usize,
    /// Tokens whose KV cells this sequence holds, in position order (guesses not yet verified
    /// are not here).
    history: Vec<LlamaToken>,
    prefilled: usize,
    n_past: i32,
    /// Sampled but not yet fed back through the model.
    next_token: Option<LlamaToken>,
    /// Index in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    /// Tokens guessed to follow `next_token`, in the current batch right after it (the guesses,
    /// then any padding: see `fill_batch`).
    draft: Vec<LlamaToken>,
    /// The chance the odds gave each guess of `draft` (padding is no guess and has none), and
    /// the match that proposed them.
    guessed_rates: Vec<f32>,
    guessed_match: usize,
    acceptance: Acceptance,
    generated: u32,
    max_tokens: u32,
    ignore_eos: bool,
    utf8: Utf8Assembler,
    stops: StopMatcher,
    /// Text produced this step, sent as one event.
    outbox: String,
}

impl Slot {
    fn flush(&mut self) {
        if !self.outbox.is_empty() {
            self.reply.send(GenEvent::Text {
                text: std::mem::take(&mut self.outbox),
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
            self.outbox.push_str(&outcome.emit);
            if !outcome.stopped {
                let tail = self.stops.finish();
                self.outbox.push_str(&tail);
            }
        }
        self.flush();
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
    let capacity = (setup.parallel * setup.context_per_sequence) as usize;
    let mut pool = SeqPool::new(
        setup.parallel,
        setup.reuse_prefixes,
        setup.unified_kv,
        capacity,
    );
    let mut slots: Vec<Slot> = Vec::with_capacity(setup.parallel as usize);
    let mut batch = LlamaBatch::new(setup.batch_tokens as usize, 1);
    let counters = &setup.counters;

    let mut cost = PassCost::default();
    let mut odds = MatchOdds::default();
    // Jobs held back until a running slot has computed the prefix they share with it.
    let mut held: Vec<Job> = Vec::new();
    if setup.draft_max > 0 {
        held.extend(calibrate(&mut ctx, &setup, &mut jobs, &mut cost));
    }
    counters.calibrated.store(true, Ordering::Relaxed);
    loop {
        // Admit: block only when there is nothing else to do. Held jobs are looked at first.
        let mut recheck = std::mem::take(&mut held).into_iter();
        while pool.has_free() {
            let job = if let Some(job) = recheck.next() {
                job
            } else if held.len() >= pool.free_count() {
                break;
            } else if slots.is_empty() && held.is_empty() {
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
            if setup.reuse_prefixes && shares_a_prefix_being_computed(&job.prompt, &slots, &pool) {
                held.push(job);
                continue;
            }
            let busy = slots.iter().map(|s| (s.seq_id, s.history.as_slice()));
            let reserve = job.prompt.len() + job.params.max_tokens as usize + setup.draft_max + 1;
            let Some(taken) = pool.take(&mut ctx, &job.prompt, reserve, busy) else {
                held.push(job);
                break;
            };
            Counters::add(&counters.prompt_tokens, job.prompt.len());
            Counters::add(&counters.reused_prompt_tokens, taken.reused);
            Counters::add(&counters.prefix_copies, usize::from(taken.copied));
            let sampler = build_sampler(&job.params, n_vocab, &setup.eog_tokens, job.constraint);
            let reused = taken.reused;
            slots.push(Slot {
                seq_id: taken.seq_id,
                reply: job.reply,
                sampler,
                history: job.prompt[..reused].to_vec(),
                reused,
                prompt: job.prompt,
                prefilled: reused,
                n_past: reused as i32,
                next_token: None,
                logits_at: None,
                draft: Vec::new(),
                guessed_rates: Vec::new(),
                guessed_match: 0,
                acceptance: Acceptance::default(),
                generated: 0,
                max_tokens: job.params.max_tokens,
                ignore_eos: job.params.ignore_eos,
                utf8: Utf8Assembler::default(),
                stops: StopMatcher::new(job.params.stop),
                outbox: String::new(),
            });
        }
        held.extend(recheck);

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

        fill_batch(&mut batch, &mut slots, &setup, &cost, &odds);
        if batch.n_tokens() == 0 {
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = ctx.decode(&mut batch);
        cost.observe(batch.n_tokens() as usize, started.elapsed().as_secs_f64());
        counters.record_pass_costs(&cost);
        if let Err(err) = outcome {
            // A failed forward pass leaves the KV state of every sequence in it unknown.
            for mut slot in slots.drain(..) {
                slot.reply.fail(format!("decode failed: {err}"));
                pool.give_back(&mut ctx, slot.seq_id, None);
            }
            continue;
        }

        let mut decoded = false;
        let mut i = 0;
        while i < slots.len() {
            decoded |= slots[i].logits_at.is_some() && slots[i].prefilled == slots[i].prompt.len();
            match sample_step(&mut ctx, &mut slots[i], &setup, &mut odds) {
                None => i += 1,
                Some(reason) => {
                    let slot = slots.swap_remove(i);
                    let (seq_id, history) = slot.finish(reason);
                    pool.give_back(&mut ctx, seq_id, Some(history));
                }
            }
        }
        Counters::add(&counters.decode_steps, usize::from(decoded));
    }
}

/// Times a pass of each of `pass_cost::calibration_sizes` on an empty sequence before the first
/// request, so the first plans see where the kernels' tiling makes a size cheap (a size never
/// timed is priced by interpolation and a cheap step between neighbours would never be tried).
/// Stops at the first job that arrives and hands it back: a request waits at most one pass.
fn calibrate(
    ctx: &mut LlamaContext<'_>,
    setup: &SchedulerSetup,
    jobs: &mut mpsc::Receiver<Job>,
    cost: &mut PassCost,
) -> Option<Job> {
    let largest =
        (setup.batch_tokens as usize).min((setup.context_per_sequence as usize).saturating_sub(1));
    let mut batch = LlamaBatch::new(largest.max(1), 1);
    // The first pass also allocates llama.cpp's buffers; it is run and not timed.
    for (i, rows) in std::iter::once(1)
        .chain(crate::pass_cost::calibration_sizes(largest))
        .enumerate()
    {
        if let Ok(job) = jobs.try_recv() {
            return Some(job);
        }
        batch.clear();
        for position in 0..rows {
            // Every row asks for logits, as a verifying pass's rows do.
            if batch
                .add(LlamaToken(0), position as i32, &[0], true)
                .is_err()
            {
                return None;
            }
        }
        let started = std::time::Instant::now();
        let outcome = ctx.decode(&mut batch);
        let seconds = started.elapsed().as_secs_f64();
        let _ = ctx.clear_kv_cache_seq(Some(0), None, None);
        if outcome.is_err() {
            return None;
        }
        if i > 0 {
            cost.observe_calibration(rows, seconds);
        }
    }
    setup.counters.record_pass_costs(cost);
    None
}

/// Whether `prompt` begins with a long stretch that a running slot is still computing: waiting
/// for it and then copying its cells costs one prefill of that stretch instead of two.
fn shares_a_prefix_being_computed(prompt: &[LlamaToken], slots: &[Slot], pool: &SeqPool) -> bool {
    let already = pool.best_cached(prompt);
    slots.iter().any(|slot| {
        let shared = common_prefix(&slot.prompt, prompt);
        shared >= MIN_SHARED_TO_WAIT && shared > already && slot.prefilled < shared
    })
}

/// Each generating slot's next token and its guesses first (latency), then prompt chunks in
/// admission order. `cost`: what passes of each size cost; `odds`: how often guesses hold (see
/// `speculate::plan`).
fn fill_batch(
    batch: &mut LlamaBatch,
    slots: &mut [Slot],
    setup: &SchedulerSetup,
    cost: &PassCost,
    odds: &MatchOdds,
) {
    batch.clear();
    let capacity = setup.batch_tokens as usize;
    // Decode tokens in sequence order: while the set of generating sequences stays the same
    // (and nothing is guessed), every step has the same shape and llama.cpp can reuse its
    // compute graph.
    let mut decode_order: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].next_token.is_some())
        .collect();
    decode_order.sort_by_key(|&i| slots[i].seq_id);
    let mut lookups: Vec<Draft> = decode_order
        .iter()
        .map(|&i| guesses(&slots[i], setup))
        .collect();
    let mut rates: Vec<Vec<f32>> = decode_order
        .iter()
        .zip(&lookups)
        .map(|(&i, d)| odds.rates(d.matched, d.guesses.len(), &slots[i].acceptance))
        .collect();
    if lookups.iter().any(|d| !d.guesses.is_empty()) {
        let prompt_rows: usize = slots.iter().map(|s| s.prompt.len() - s.prefilled).sum();
        let rows = decode_order.len() + prompt_rows.min(capacity);
        let candidates: Vec<Candidate<'_>> = decode_order
            .iter()
            .zip(lookups.iter().zip(&rates))
            .map(|(&i, (d, rates))| Candidate {
                guesses: &d.guesses,
                rates,
                probe: slots[i].acceptance.due_for_probe(),
            })
            .collect();
        if setup.unified_kv || candidates.len() == 1 {
            let lengths = speculate::plan(&candidates, rows, cost);
            for ((d, length), rates) in lookups.iter_mut().zip(lengths).zip(&mut rates) {
                d.guesses.truncate(length);
                rates.truncate(length);
            }
        } else {
            // Per-sequence buffers: llama.cpp runs the batch in one pass only when its sequences
            // have the same number of tokens, so every slot gets `k` guesses, padded with its
            // last one (checked like any guess, so padding never changes what is kept).
            let k = speculate::plan_uniform(&candidates, rows, cost);
            for ((d, &i), rates) in lookups.iter_mut().zip(&decode_order).zip(&mut rates) {
                let k = k.min(guess_room(&slots[i], setup));
                d.guesses.truncate(k);
                rates.truncate(k);
                if let Some(filler) = d.guesses.last().copied().or(slots[i].next_token) {
                    d.guesses.resize(k, filler);
                }
            }
        }
    }
    for ((&i, d), rates) in decode_order.iter().zip(lookups).zip(rates) {
        let slot = &mut slots[i];
        let Some(token) = slot.next_token.take() else {
            continue;
        };
        // Capacity is at least `parallel`, so every decode token fits.
        if batch.add(token, slot.n_past, &[slot.seq_id], true).is_err() {
            continue;
        }
        slot.logits_at = Some(batch.n_tokens() - 1);
        slot.n_past += 1;
        slot.history.push(token);
        slot.draft = d.guesses;
        slot.guessed_rates = rates;
        slot.guessed_match = d.matched;
        for (offset, &guess) in slot.draft.iter().enumerate() {
            let position = slot.n_past + offset as i32;
            if batch.add(guess, position, &[slot.seq_id], true).is_err() {
                slot.draft.truncate(offset);
                break;
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

/// The tokens a generating slot could guess after its next token (looked up in its prompt and
/// answer), within its remaining answer and context.
fn guesses(slot: &Slot, setup: &SchedulerSetup) -> Draft {
    match slot.next_token {
        Some(token) => speculate::draft(&slot.history, token, guess_room(slot, setup)),
        None => Draft::default(),
    }
}

/// How many guesses a generating slot may put after its next token: within `--draft-max`, its
/// remaining answer and its context; none for a scoring pass.
fn guess_room(slot: &Slot, setup: &SchedulerSetup) -> usize {
    if setup.draft_max == 0 || !matches!(slot.reply, Reply::Stream(_)) {
        return 0;
    }
    let answer_left = slot.max_tokens.saturating_sub(slot.generated + 1) as usize;
    // The token goes at `n_past`, its guesses after it.
    let context_left =
        (setup.context_per_sequence as usize).saturating_sub(slot.n_past as usize + 2);
    setup.draft_max.min(answer_left).min(context_left)
}

/// Samples the slot's next tokens if this batch produced logits for it: the token after the one
/// it fed, then, while the sampler agrees with each guess, the token after that guess. Returns
/// why it finished.
fn sample_step(
    ctx: &mut LlamaContext<'_>,
    slot: &mut Slot,
    setup: &SchedulerSetup,
    odds: &mut MatchOdds,
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
    let draft = std::mem::take(&mut slot.draft);
    let mut accepted = 0;
    let mut finished = None;
    loop {
        let token = slot.sampler.sample(ctx, at + accepted as i32);
        if let Some(reason) = emit(slot, token, setup) {
            finished = Some(reason);
            break;
        }
        match draft.get(accepted) {
            // The guess's KV cells (computed in this batch) are the ones the token needs.
            Some(&guess) if guess == token => {
                slot.history.push(token);
                slot.n_past += 1;
                accepted += 1;
            }
            _ => {
                slot.next_token = Some(token);
                break;
            }
        }
    }
    if accepted < draft.len() {
        // Drop the cells of the guesses that were not taken.
        let _ = ctx.clear_kv_cache_seq(Some(slot.seq_id as u32), Some(slot.n_past as u32), None);
    }
    // What the odds learn from: the guesses alone (padding was never a guess).
    let mut rates = std::mem::take(&mut slot.guessed_rates);
    rates.truncate(draft.len());
    slot.acceptance.record(&rates, accepted);
    odds.record(slot.guessed_match, rates.len(), accepted.min(rates.len()));
    let counters = &setup.counters;
    Counters::add(&counters.drafted_tokens, draft.len());
    Counters::add(&counters.accepted_tokens, accepted);
    slot.flush();
    finished
}

/// Takes one sampled token into the answer; returns why the answer ends, if it does.
fn emit(slot: &mut Slot, token: LlamaToken, setup: &SchedulerSetup) -> Option<FinishReason> {
    if !slot.ignore_eos && setup.model.vocab().is_eog(token) {
        return Some(FinishReason::Complete);
    }
    slot.generated += 1;
    Counters::add(&setup.counters.generated_tokens, 1);
    let piece = setup.model.vocab().token_to_piece(token, false, None);
    let text = slot.utf8.push(&piece);
    let outcome = slot.stops.push(&text);
    slot.outbox.push_str(&outcome.emit);
    if outcome.stopped {
        return Some(FinishReason::StopSequence);
    }
    if slot.generated >= slot.max_tokens || slot.n_past as u32 + 1 >= setup.context_per_sequence {
        return Some(FinishReason::MaxTokens);
    }
    None
}
