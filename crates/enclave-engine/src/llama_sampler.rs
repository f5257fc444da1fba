//! The llama.cpp sampler chain built from engine-neutral [`SamplingParams`].

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::sampling::SamplingParams;

/// How far back the frequency and presence penalties look.
const PENALTY_WINDOW: i32 = 64;

/// llama.cpp's sampler chain for `params`: the grammar (when constrained), EOG ban
/// (ignore_eos), penalties, then greedy or top-k → top-p → temperature → seeded draw.
pub(crate) fn build_sampler(
    params: &SamplingParams,
    n_vocab: i32,
    eog_tokens: &[LlamaToken],
    constraint: Option<LlamaSampler>,
) -> LlamaSampler {
    let mut chain: Vec<LlamaSampler> = constraint.into_iter().collect();
    if params.ignore_eos && !eog_tokens.is_empty() {
        let biases: Vec<LlamaLogitBias> = eog_tokens
            .iter()
            .map(|&t| LlamaLogitBias::new(t, f32::NEG_INFINITY))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if params.frequency_penalty != 0.0 || params.presence_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            PENALTY_WINDOW,
            1.0,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if params.top_k > 0 {
        chain.push(LlamaSampler::top_k(
            i32::try_from(params.top_k).unwrap_or(i32::MAX),
        ));
    }
    if params.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(params.top_p, 1));
    }
    chain.push(LlamaSampler::temp(params.temperature));
    let seed = params
        .seed
        .map_or_else(rand_seed, |s| (s % u64::from(u32::MAX)) as u32);
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

fn rand_seed() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}
