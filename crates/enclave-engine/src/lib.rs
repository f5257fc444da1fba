//! Enclave's engine: which models exist and how to fetch them (catalog, pull), and how to run them
//! (a continuous-batching scheduler over llama.cpp behind the [`TextGenerator`] seam).
//!
//! It knows nothing about HTTP, tenants or API shapes: callers hand it token ids and sampling
//! parameters and get a stream of text back.

pub mod catalog;
pub mod classifier;
pub mod encoder;
pub mod generator;
pub mod home;
pub mod llama;
mod llama_backend;
mod llama_constraint;
mod llama_sampler;
mod pass_cost;
mod prefix_cache;
pub mod pull;
pub mod sampling;
mod scheduler;
mod speculate;
pub mod testing;
pub mod text;
pub mod tools;
mod unpack;

pub use catalog::{CatalogEntry, CATALOG};
pub use generator::{
    ChatMessage, ChatTokens, EngineStats, FinishReason, GenEvent, GenerationStream, GeneratorError,
    ModelInfo, ScoreReceiver, Scores, TextGenerator,
};
pub use llama::{GeneratorConfig, LlamaGenerator};
pub use llama_constraint::gbnf_for_schema;
pub use pass_cost::PassTiming;
pub use sampling::{Constraint, SamplingParams};
