//! Enclave's guardrails room: deterministic detectors (PII, secrets, custom patterns and
//! terms), the text normalisation monitors read, the prompt-injection monitor's head,
//! policies (which check does what, on input or output, and which tool calls may run),
//! redaction with typed placeholders, and the hold-back scanner that checks a streamed answer
//! before any of it is sent.
//!
//! It knows nothing about HTTP, tenants, storage or engines: callers hand it text and, for the
//! monitor, the text's embeddings.

pub mod detect;
pub mod finding;
pub mod injection;
pub mod normalize;
pub mod policy;
pub mod redact;
pub mod stream;
pub mod tools;

pub use detect::Detectors;
pub use finding::{char_offsets, char_offsets_all, Finding, Kind};
pub use injection::{InjectionHead, Scored, TrainingExample, Windows};
pub use policy::{Action, Direction, Policies, Policy, PolicyError};
pub use redact::{Redacted, Vault};
pub use stream::{OutputScanner, Step};
pub use tools::{CallVerdict, ToolPolicy};
