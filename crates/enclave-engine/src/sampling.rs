//! Sampling parameters shared by every API family, and their translation into a llama.cpp
//! sampler chain.

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

/// How to pick each next token and when to stop. Validated by the caller (the API layer).
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    pub seed: Option<u64>,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// Keep generating through end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.3,
            top_k: 0,
            top_p: 0.75,
            seed: None,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// How far back the frequency and presence penalties look.
const PENALTY_WINDOW: i32 = 64;

impl SamplingParams {
    pub(crate) fn build_sampler(&self, n_vocab: i32, eog_tokens: &[LlamaToken]) -> LlamaSampler {
        let mut chain = Vec::new();
        if self.ignore_eos && !eog_tokens.is_empty() {
            let biases: Vec<LlamaLogitBias> = eog_tokens
                .iter()
                .map(|&t| LlamaLogitBias::new(t, f32::NEG_INFINITY))
                .collect();
            chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
        }
        if self.frequency_penalty != 0.0 || self.presence_penalty != 0.0 {
            chain.push(LlamaSampler::penalties(
                n_vocab,
                PENALTY_WINDOW,
                1.0,
                self.frequency_penalty,
                self.presence_penalty,
            ));
        }
        if self.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
            return LlamaSampler::chain_simple(chain);
        }
        if self.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(self.top_k).unwrap_or(i32::MAX),
            ));
        }
        if self.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(self.top_p, 1));
        }
        chain.push(LlamaSampler::temp(self.temperature));
        let seed = self
            .seed
            .map_or_else(rand_seed, |s| (s % u64::from(u32::MAX)) as u32);
        chain.push(LlamaSampler::dist(seed));
        LlamaSampler::chain_simple(chain)
    }
}

fn rand_seed() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}
