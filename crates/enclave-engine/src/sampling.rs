//! Sampling parameters shared by every API family and every engine (the seam); each engine
//! translates them into its own sampler (llama.cpp: `llama_sampler.rs`).

use std::sync::Arc;

/// A grammar the output must follow (constrained decoding). The engine compiles it once per
/// distinct text and keeps it for later requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// llguidance's Lark dialect (JSON schemas embedded with `%json`): the served path.
    Lark(Arc<str>),
    /// llama.cpp's GBNF (root rule `root`): kept to measure the two side by side.
    Gbnf(Arc<str>),
}

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
    /// A grammar every generated token must keep the output within.
    pub constraint: Option<Constraint>,
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
            constraint: None,
        }
    }
}
