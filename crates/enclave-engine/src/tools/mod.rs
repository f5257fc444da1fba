//! Tool use behind the engine seam: how tools, tool calls and tool results are written into a
//! model's prompt ([`render`]), the grammar that makes a call well-formed and limited to the
//! declared tools ([`grammar`]), and reading calls back out of the generated text ([`parse`]).
//! The llama.cpp bindings render no tools and parse no calls, so this is the one place it is done.
//!
//! Two formats, chosen from the model's chat template:
//! - **Qwen** (a template that defines `<tool_call>`): Qwen2.5's own convention — tool
//!   signatures in `<tools>` inside the system turn, each call as
//!   `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, results as `<tool_response>`
//!   blocks in a user turn — with Qwen's default system text when the caller sends none.
//! - **Generic** (every other template): the same tags and layout, written as plain text, with
//!   no model-specific system text. Documented in `docs/tools.md`.

pub mod grammar;
pub mod parse;
pub mod render;

use serde_json::Value;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// A call the model made (or made in an earlier turn of the conversation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// Whether the model may, must or must not call a tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Text or calls, as the model decides.
    #[default]
    Auto,
    /// At least one call, no text.
    Required,
    /// No calls: the tools are not shown to the model.
    None,
    /// Exactly this tool.
    Named(String),
    /// The answer must be text and the tools are not shown: the server's second try after the
    /// model called a tool that was not declared, or repeated a call already answered.
    TextOnly,
}

/// The tools of one chat and how they may be used.
#[derive(Debug, Clone, Default)]
pub struct ToolUse {
    pub tools: Vec<ToolSpec>,
    pub choice: ToolChoice,
    /// More than one call in one answer.
    pub parallel: bool,
    /// Refuse argument schemas the decoder cannot enforce in full (instead of enforcing what it can).
    pub strict: bool,
}

impl ToolUse {
    /// Whether the answer may hold calls.
    pub fn may_call(&self) -> bool {
        !matches!(self.choice, ToolChoice::None | ToolChoice::TextOnly) && !self.tools.is_empty()
    }

    /// Tools the model is shown (none under `ToolChoice::None` and `TextOnly`).
    pub fn offered(&self) -> &[ToolSpec] {
        if matches!(self.choice, ToolChoice::None | ToolChoice::TextOnly) {
            &[]
        } else {
            &self.tools
        }
    }
}

/// A model's convention for tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Qwen,
    Generic,
}

impl ToolFormat {
    /// The format a chat template implies.
    pub fn for_template(template: &str) -> Self {
        if template.contains("<tool_call>") {
            Self::Qwen
        } else {
            Self::Generic
        }
    }
}

/// Opens and closes one call in the generated text.
pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";
/// Small models often write a call as fenced JSON instead; the grammar accepts that form too.
pub const FENCE_OPEN: &str = "```json";

/// Checks `value` against `schema` (every constrained answer is checked again before it is
/// returned: the grammar is the guarantee, this is the proof).
pub fn validate(value: &Value, schema: &Value) -> Result<(), String> {
    let validator =
        jsonschema::validator_for(schema).map_err(|e| format!("invalid schema: {e}"))?;
    let first = validator
        .iter_errors(value)
        .next()
        .map(|error| format!("{error} (at {})", error.instance_path));
    match first {
        None => Ok(()),
        Some(message) => Err(message),
    }
}
