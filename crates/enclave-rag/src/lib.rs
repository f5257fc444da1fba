//! Enclave's retrieval room: reading documents into text, cutting them into chunks that keep
//! their offsets, indexing and searching them, and checking an answer against its sources
//! (citations computed after generation, never trusted from the model).
//!
//! It knows nothing about HTTP, tenants' keys or billing, and runs no model itself: callers
//! hand it embeddings when it needs them.

pub mod checker;
pub mod chunking;
pub mod documents;
pub mod extract;
pub mod grounding;
pub mod index;
pub mod prompt;
pub mod terms;
pub mod units;

pub use checker::{AnswerChecker, Checked, Unsupported};
pub use documents::{FieldSpan, Origin, SourceDocument};
pub use grounding::{
    Citation, CitedSpan, Claim, Embedder, Grounder, Grounding, Passage, DECLINE_TEXT,
};
pub use prompt::{grounding_instructions, grounding_rules};
