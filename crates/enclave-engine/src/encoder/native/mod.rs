//! The native encoder engine: a BERT-family forward pass in Rust over the converter's tensors,
//! the graph llama.cpp's BERT path runs (embeddings, N identical layers, pooling or the
//! classifier head) except for GELU, which is the exact erf form BERT was trained with (llama.cpp
//! uses the tanh approximation). It exists for speed: attention is computed per input instead of
//! over the whole packed batch under a mask, GELU and softmax are vectorised, and a batch is
//! split between threads by input, so the threads never wait on each other inside a layer.
//! Matrix products use bfloat16 weights where the CPU has AVX-512 BF16, else fp32 ([`linear`],
//! [`kernels`]).

#[cfg(target_arch = "x86_64")]
mod kernels;
mod linear;
mod ops;

use super::convert::Converted;
use super::gguf::Tensor;
use linear::{Kernel, Linear};

pub use linear::{bf16_supported, f32_vectorised};

/// How the per-token states become one output.
enum Pooling {
    Mean,
    First,
    /// The first token through the classifier head (a cross-encoder).
    Classifier(ClassifierHead),
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_output: Linear,
    attn_norm: Norm,
    ffn_up: Linear,
    ffn_down: Linear,
    output_norm: Norm,
}

/// The classifier head of a cross-encoder: an optional tanh dense layer, then the logits.
struct ClassifierHead {
    dense: Option<Linear>,
    output: Linear,
}

pub struct NativeBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    vocab: usize,
    positions: usize,
    token_embd: Vec<f32>,
    position_embd: Vec<f32>,
    /// Token type 0's embedding, added to every token (segment B is folded into the
    /// vocabulary by the converter); zeros when the model has none.
    token_type: Vec<f32>,
    embd_norm: Norm,
    layers: Vec<Layer>,
    pooling: Pooling,
    /// fp32 kernel for attention's products (their operands change with every input).
    attention_kernel: Kernel,
    threads: usize,
}

/// Fewest tokens a thread takes from a batch (or from a lone input's rows): below this, its
/// matrix products get too few rows to keep the kernels busy, and starting the thread costs
/// more than it saves.
const MIN_GROUP_TOKENS: usize = 64;

fn floats(tensor: &Tensor) -> Vec<f32> {
    tensor
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl NativeBert {
    /// Builds the model from converted tensors, with bfloat16 weights when `bf16` and the CPU
    /// supports them (fp32 otherwise). `threads` split each batch.
    pub fn new(model: &Converted, bf16: bool, threads: usize) -> Result<Self, String> {
        let kernel = Kernel::detect(bf16);
        let key = |k: &str| {
            model
                .u32(k)
                .map(|v| v as usize)
                .ok_or_else(|| format!("the converted model has no {k}"))
        };
        let hidden = key("bert.embedding_length")?;
        let heads = key("bert.attention.head_count")?;
        let blocks = key("bert.block_count")?;
        if hidden == 0 || heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(format!(
                "{hidden} hidden units do not split into {heads} heads"
            ));
        }
        // llama.cpp's pooling numbers, as the converter wrote them.
        let pooling_type = key("bert.pooling_type")?;
        if ![1, 2, 4].contains(&pooling_type) {
            return Err(format!("pooling type {pooling_type} is not supported"));
        }
        let eps = model
            .f32("bert.attention.layer_norm_epsilon")
            .unwrap_or(1e-12);

        let tensor = |name: &str| {
            model
                .tensor(name)
                .map(floats)
                .ok_or_else(|| format!("the model has no tensor {name}"))
        };
        let optional = |name: &str| model.tensor(name).map(floats).unwrap_or_default();
        // A weight of `outputs × inputs` with its bias (absent: none).
        let linear = |name: &str, outputs: usize, inputs: usize| -> Result<Linear, String> {
            let w = tensor(&format!("{name}.weight"))?;
            let b = optional(&format!("{name}.bias"));
            check_shape(name, &w, &b, outputs, inputs)?;
            Ok(Linear::new(&w, &b, outputs, kernel))
        };
        let norm = |name: &str| -> Result<Norm, String> {
            let weight = tensor(&format!("{name}.weight"))?;
            let bias = tensor(&format!("{name}.bias"))?;
            if weight.len() != hidden || bias.len() != hidden {
                return Err(format!("{name} does not have {hidden} values"));
            }
            Ok(Norm { weight, bias })
        };

        let token_embd = tensor("token_embd.weight")?;
        let position_embd = tensor("position_embd.weight")?;
        if !token_embd.len().is_multiple_of(hidden) || !position_embd.len().is_multiple_of(hidden) {
            return Err("embedding tables do not match the hidden size".into());
        }
        let mut token_type = optional("token_types.weight");
        token_type.resize(hidden, 0.0);

        let feed_forward = key("bert.feed_forward_length")?;
        let mut layers = Vec::with_capacity(blocks);
        for block in 0..blocks {
            let p = format!("blk.{block}");
            let qkv = match model.tensor(&format!("{p}.attn_qkv.weight")) {
                Some(_) => linear(&format!("{p}.attn_qkv"), 3 * hidden, hidden)?,
                // Unfused projections (the converter fuses only where it can): join them here.
                None => {
                    let (mut w, mut b) = (Vec::new(), Vec::new());
                    for part in ["attn_q", "attn_k", "attn_v"] {
                        let weight = tensor(&format!("{p}.{part}.weight"))?;
                        let bias = optional(&format!("{p}.{part}.bias"));
                        check_shape(&format!("{p}.{part}"), &weight, &bias, hidden, hidden)?;
                        w.extend(weight);
                        b.extend(if bias.is_empty() {
                            vec![0.0; hidden]
                        } else {
                            bias
                        });
                    }
                    Linear::new(&w, &b, 3 * hidden, kernel)
                }
            };
            layers.push(Layer {
                qkv,
                attn_output: linear(&format!("{p}.attn_output"), hidden, hidden)?,
                attn_norm: norm(&format!("{p}.attn_output_norm"))?,
                ffn_up: linear(&format!("{p}.ffn_up"), feed_forward, hidden)?,
                ffn_down: linear(&format!("{p}.ffn_down"), hidden, feed_forward)?,
                output_norm: norm(&format!("{p}.layer_output_norm"))?,
            });
        }

        let pooling = match pooling_type {
            1 => Pooling::Mean,
            2 => Pooling::First,
            _ => {
                let output = model
                    .tensor("cls.output.weight")
                    .ok_or("a classifier without cls.output.weight")?;
                let labels = output.dims.get(1).copied().unwrap_or(1) as usize;
                let dense = match model.tensor("cls.weight") {
                    Some(_) => Some(linear("cls", hidden, hidden)?),
                    None => None,
                };
                Pooling::Classifier(ClassifierHead {
                    dense,
                    output: linear("cls.output", labels, hidden)?,
                })
            }
        };

        Ok(Self {
            hidden,
            heads,
            eps,
            vocab: token_embd.len() / hidden,
            positions: position_embd.len() / hidden,
            token_embd,
            position_embd,
            token_type,
            embd_norm: norm("token_embd_norm")?,
            layers,
            pooling,
            attention_kernel: Kernel::detect(false),
            threads: threads.max(1),
        })
    }

    /// One output per input: the pooled hidden state (not normalised), or the classifier's
    /// logits. Inputs are split between the threads by token count.
    pub fn forward(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
        for tokens in inputs {
            if tokens.is_empty() || tokens.len() > self.positions {
                return Err(format!(
                    "an input of {} tokens (1 to {} are allowed)",
                    tokens.len(),
                    self.positions
                ));
            }
            if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
                return Err(format!("token id {bad} is outside the vocabulary"));
            }
        }
        // Each thread gets enough rows for its matrix products to run at speed.
        let total: usize = inputs.iter().map(|t| t.len()).sum();
        let parts = self.threads.min(total / MIN_GROUP_TOKENS).max(1);
        let groups = split_by_tokens(inputs, parts);
        if groups.len() <= 1 {
            // One input long enough to share: its matrix products and attention heads are split
            // between the threads instead (as many as its tokens keep busy).
            return Ok(self.forward_group(inputs, parts));
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = groups[1..]
                .iter()
                .map(|group| scope.spawn(|| self.forward_group(group, 1)))
                .collect();
            let mut outputs = self.forward_group(groups[0], 1);
            // Every thread is joined, so a panic in one is reported here, not re-raised.
            let rest: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
            for more in rest {
                outputs.extend(more.map_err(|_| "an encoder thread failed".to_string())?);
            }
            Ok(outputs)
        })
    }

    /// The outputs of `inputs`, each operation split between `threads` threads.
    fn forward_group(&self, inputs: &[&[u32]], threads: usize) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let rows: usize = inputs.iter().map(|t| t.len()).sum();
        let mut x = Vec::with_capacity(rows * h);
        for tokens in inputs {
            for (position, &token) in tokens.iter().enumerate() {
                let word = &self.token_embd[token as usize * h..][..h];
                let place = &self.position_embd[position * h..][..h];
                x.extend(
                    word.iter()
                        .zip(place)
                        .zip(&self.token_type)
                        .map(|((w, p), t)| w + p + t),
                );
            }
        }
        ops::add_layer_norm(
            &mut x,
            &[],
            &self.embd_norm.weight,
            &self.embd_norm.bias,
            self.eps,
        );
        let lengths: Vec<usize> = inputs.iter().map(|t| t.len()).collect();
        for layer in &self.layers {
            let qkv = layer.qkv.forward_parallel(&x, rows, threads);
            let attended = self.attention(&qkv, &lengths, threads);
            let projected = layer.attn_output.forward_parallel(&attended, rows, threads);
            let norm = &layer.attn_norm;
            ops::add_layer_norm(&mut x, &projected, &norm.weight, &norm.bias, self.eps);
            let mut up = layer.ffn_up.forward_parallel(&x, rows, threads);
            ops::gelu(&mut up);
            let down = layer.ffn_down.forward_parallel(&up, rows, threads);
            let norm = &layer.output_norm;
            ops::add_layer_norm(&mut x, &down, &norm.weight, &norm.bias, self.eps);
        }
        let mut outputs = Vec::with_capacity(inputs.len());
        let mut start = 0;
        for &len in &lengths {
            let states = &x[start * h..(start + len) * h];
            outputs.push(self.pool(states, len));
            start += len;
        }
        outputs
    }

    /// Multi-head self-attention within each input (`qkv` rows hold Q, then K, then V), the
    /// (input, head) pairs split between `threads` threads.
    fn attention(&self, qkv: &[f32], lengths: &[usize], threads: usize) -> Vec<f32> {
        let h = self.hidden;
        let d = h / self.heads;
        let mut jobs = Vec::with_capacity(lengths.len() * self.heads);
        let mut start = 0;
        for &len in lengths {
            jobs.extend((0..self.heads).map(|head| (start, len, head)));
            start += len;
        }
        let run = |jobs: &[(usize, usize, usize)]| -> Vec<Vec<f32>> {
            jobs.iter()
                .map(|&(start, len, head)| self.attention_head(qkv, start, len, head))
                .collect()
        };
        let results: Vec<Vec<f32>> = if threads > 1 && jobs.len() > 1 {
            let chunk = jobs.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = jobs[chunk..]
                    .chunks(chunk)
                    .map(|part| scope.spawn(|| run(part)))
                    .collect();
                let mut results = run(&jobs[..chunk]);
                for handle in handles {
                    // A panic in a helper thread surfaces here, where the batch's caller catches it.
                    results.extend(
                        handle
                            .join()
                            .unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    );
                }
                results
            })
        } else {
            run(&jobs)
        };
        let mut out = vec![0.0f32; start * h];
        for (&(start, _, head), values) in jobs.iter().zip(&results) {
            for (row, v) in values.chunks_exact(d).enumerate() {
                out[(start + row) * h + head * d..][..d].copy_from_slice(v);
            }
        }
        out
    }

    /// One head of attention over the input at rows `start..start + len`: softmax(QKᵀ/√d)·V as
    /// two matrix products on the fp32 kernels → `len × d`.
    fn attention_head(&self, qkv: &[f32], start: usize, len: usize, head: usize) -> Vec<f32> {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let part =
            |row: usize, part: usize| &qkv[(start + row) * 3 * h + part * h + head * d..][..d];
        let (mut q, mut k) = (Vec::with_capacity(len * d), Vec::with_capacity(len * d));
        for row in 0..len {
            q.extend(part(row, 0).iter().map(|v| v * scale));
            k.extend_from_slice(part(row, 1));
        }
        let mut scores = Linear::new(&k, &[], len, self.attention_kernel).forward(&q, len);
        for row in scores.chunks_exact_mut(len) {
            ops::softmax(row);
        }
        // Vᵀ, so the second product is again "rows × weightsᵀ".
        let mut v_t = vec![0.0f32; d * len];
        for j in 0..len {
            for (c, value) in part(j, 2).iter().enumerate() {
                v_t[c * len + j] = *value;
            }
        }
        Linear::new(&v_t, &[], d, self.attention_kernel).forward(&scores, len)
    }

    fn pool(&self, states: &[f32], len: usize) -> Vec<f32> {
        let h = self.hidden;
        match &self.pooling {
            Pooling::Mean => {
                let mut mean = vec![0.0f32; h];
                for row in states.chunks_exact(h) {
                    for (m, v) in mean.iter_mut().zip(row) {
                        *m += v;
                    }
                }
                mean.iter_mut().for_each(|m| *m /= len as f32);
                mean
            }
            Pooling::First => states[..h].to_vec(),
            Pooling::Classifier(head) => {
                let mut first = states[..h].to_vec();
                if let Some(dense) = &head.dense {
                    first = dense.forward(&first, 1);
                    first.iter_mut().for_each(|v| *v = v.tanh());
                }
                head.output.forward(&first, 1)
            }
        }
    }
}

/// Checks a layer's weight is `outputs × inputs` and its bias (if any) has `outputs` values.
fn check_shape(
    name: &str,
    w: &[f32],
    b: &[f32],
    outputs: usize,
    inputs: usize,
) -> Result<(), String> {
    if outputs == 0 || w.len() != outputs * inputs || (!b.is_empty() && b.len() != outputs) {
        return Err(format!(
            "{name} is not {outputs} × {inputs} with {outputs} biases"
        ));
    }
    Ok(())
}

/// Splits `inputs` (in order) into at most `parts` runs of about equal token counts.
fn split_by_tokens<'a, 'b>(inputs: &'b [&'a [u32]], parts: usize) -> Vec<&'b [&'a [u32]]> {
    let total: usize = inputs.iter().map(|t| t.len()).sum();
    let target = total.div_ceil(parts.max(1)).max(1);
    let mut groups = Vec::with_capacity(parts);
    let (mut start, mut tokens) = (0, 0);
    for (i, input) in inputs.iter().enumerate() {
        tokens += input.len();
        if tokens >= target && groups.len() + 1 < parts {
            groups.push(&inputs[start..=i]);
            start = i + 1;
            tokens = 0;
        }
    }
    if start < inputs.len() {
        groups.push(&inputs[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::split_by_tokens;

    #[test]
    fn batches_split_into_runs_of_similar_token_counts() {
        let a = [1u32; 10];
        let inputs: Vec<&[u32]> = vec![&a[..5], &a[..5], &a[..10], &a[..2], &a[..8]];
        let groups = split_by_tokens(&inputs, 2);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), inputs.len());
        assert_eq!(groups[0].len(), 3, "5+5+10 reaches half of 30");
        assert_eq!(split_by_tokens(&inputs[..1], 4).len(), 1);
        assert!(split_by_tokens(&[], 2).is_empty());
    }
}
