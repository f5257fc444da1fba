//! The batching thread of an encoder: packs queued inputs into batches bounded by a token budget
//! and a sequence count, runs each batch in one forward pass — on the native engine
//! ([`super::native`]) or on llama.cpp's BERT path — and answers each request with pooled (mean
//! or first token), L2-normalised vectors (a sentence encoder) or classifier logits (a
//! cross-encoder).

use std::collections::{HashMap, VecDeque};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::EncoderError;
use crate::llama_backend::backend;

/// One request: its tokenized inputs and where their outputs go.
pub(super) struct Job {
    pub inputs: Vec<Vec<u32>>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, EncoderError>>,
}

/// A job's progress inside the batching thread.
struct Pending {
    results: Vec<Option<Vec<f32>>>,
    remaining: usize,
    reply: Option<oneshot::Sender<Result<Vec<Vec<f32>>, EncoderError>>>,
}

fn normalise(vector: &[f32]) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    vector.iter().map(|x| x / norm).collect()
}

/// Batch sizes of the batching thread.
pub(super) struct Limits {
    /// Tokens the context holds (at least one input of the model's maximum length).
    pub capacity: usize,
    /// Tokens packed into one batch when several inputs share it.
    pub budget: usize,
    pub max_seqs: usize,
    /// L2-normalise outputs (embeddings); classifier logits are returned as they are.
    pub normalize: bool,
}

/// Runs batches on a llama.cpp context made on this thread (contexts stay on one thread).
pub(super) fn run_llama(
    model: &LlamaModel,
    params: LlamaContextParams,
    limits: &Limits,
    jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let context = backend().map_err(|e| e.to_string()).and_then(|backend| {
        model
            .new_context(backend, params)
            .map_err(|e| e.to_string())
    });
    let mut ctx = match context {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(limits.capacity, 1);
    let forward = |inputs: &[&[u32]]| -> Result<Vec<Vec<f32>>, String> {
        batch.clear();
        for (seq, tokens) in inputs.iter().enumerate() {
            for (pos, &token) in tokens.iter().enumerate() {
                batch
                    .add(LlamaToken(token as i32), pos as i32, &[seq as i32], true)
                    .map_err(|e| e.to_string())?;
            }
        }
        ctx.decode(&mut batch).map_err(|e| e.to_string())?;
        (0..inputs.len())
            .map(|seq| {
                ctx.embeddings_seq_ith(seq as i32)
                    .map(<[f32]>::to_vec)
                    .map_err(|e| e.to_string())
            })
            .collect()
    };
    pack_batches(forward, limits, jobs);
}

/// The batching loop: takes queued jobs, packs their inputs in arrival order into batches
/// within the limits, runs `forward` (one output per input) and answers each job when all its
/// inputs are done. Returns when the queue closes.
pub(super) fn pack_batches(
    mut forward: impl FnMut(&[&[u32]]) -> Result<Vec<Vec<f32>>, String>,
    limits: &Limits,
    mut jobs: mpsc::Receiver<Job>,
) {
    let mut next_job: u64 = 0;
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    // (job, input index, tokens), in arrival order.
    let mut queue: VecDeque<(u64, usize, Vec<u32>)> = VecDeque::new();

    loop {
        let mut admit = |job: Job, queue: &mut VecDeque<(u64, usize, Vec<u32>)>| {
            let id = next_job;
            next_job += 1;
            let count = job.inputs.len();
            for (index, tokens) in job.inputs.into_iter().enumerate() {
                queue.push_back((id, index, tokens));
            }
            pending.insert(
                id,
                Pending {
                    results: vec![None; count],
                    remaining: count,
                    reply: Some(job.reply),
                },
            );
        };
        if queue.is_empty() {
            match jobs.blocking_recv() {
                Some(job) => admit(job, &mut queue),
                None => return,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            admit(job, &mut queue);
        }
        // Callers that went away take their inputs out of the queue.
        pending.retain(|_, p| p.reply.as_ref().is_some_and(|r| !r.is_closed()));
        queue.retain(|(id, _, _)| pending.contains_key(id));

        let mut members = Vec::new();
        let mut used = 0usize;
        while let Some((_, _, tokens)) = queue.front() {
            let over_budget = used + tokens.len() > limits.budget && !members.is_empty();
            if members.len() == limits.max_seqs || over_budget {
                break;
            }
            let Some(member) = queue.pop_front() else {
                break;
            };
            used += member.2.len();
            members.push(member);
        }
        if members.is_empty() {
            continue;
        }
        let inputs: Vec<&[u32]> = members.iter().map(|(_, _, t)| t.as_slice()).collect();
        // A panic fails this batch only; the loop and the other requests go on.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| forward(&inputs)));
        let outcome = run
            .unwrap_or_else(|_| Err("the encoder failed on this batch".to_string()))
            .and_then(|outputs| {
                if outputs.len() == members.len() {
                    Ok(outputs)
                } else {
                    Err(format!(
                        "{} outputs for {} inputs",
                        outputs.len(),
                        members.len()
                    ))
                }
            });
        match outcome {
            Ok(outputs) => {
                for ((id, index, _), output) in members.into_iter().zip(outputs) {
                    let Some(job) = pending.get_mut(&id) else {
                        continue;
                    };
                    job.results[index] = Some(if limits.normalize {
                        normalise(&output)
                    } else {
                        output
                    });
                    job.remaining -= 1;
                    if job.remaining == 0 {
                        if let Some(job) = pending.remove(&id) {
                            let vectors = job.results.into_iter().flatten().collect();
                            if let Some(reply) = job.reply {
                                let _ = reply.send(Ok(vectors));
                            }
                        }
                    }
                }
            }
            Err(message) => {
                for (id, _, _) in members {
                    if let Some(job) = pending.remove(&id) {
                        if let Some(reply) = job.reply {
                            let _ = reply.send(Err(EncoderError::Engine(message.clone())));
                        }
                    }
                }
            }
        }
    }
}
