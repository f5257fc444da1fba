//! Sampling parameters shared by every API family and every engine (the seam); each engine
//! translates them into its own sampler (llama.cpp: `llama_sampler.rs`).

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
