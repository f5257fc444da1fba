//! The function-tool shapes Cohere v2 and OpenAI share: a declared function
//! (`{type: "function", function: {name, description, parameters}}`) and a call
//! (`{id, type: "function", function: {name, arguments}}` with `arguments` as JSON text).

use enclave_engine::tools::{ToolCall, ToolSpec};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::pipeline::tools::tool;

#[derive(Debug, Deserialize)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: FunctionDecl,
}

#[derive(Debug, Deserialize)]
struct FunctionDecl {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    /// OpenAI's per-function strict flag.
    strict: Option<bool>,
}

impl FunctionTool {
    /// The tool, and whether the caller asked for its schema to be enforced strictly.
    pub fn into_spec(self) -> Result<(ToolSpec, bool), ApiError> {
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != "function") {
            return Err(ApiError::invalid(format!(
                "tool type must be 'function', got '{kind}'"
            )));
        }
        let strict = self.function.strict.unwrap_or(false);
        let spec = tool(
            self.function.name,
            self.function.description,
            self.function.parameters,
        );
        Ok((spec, strict))
    }
}

/// Declared tools; the second value says whether any asked for strict enforcement.
pub fn specs(tools: Option<Vec<FunctionTool>>) -> Result<(Vec<ToolSpec>, bool), ApiError> {
    let mut strict = false;
    let mut out = Vec::new();
    for t in tools.unwrap_or_default() {
        let (spec, s) = t.into_spec()?;
        strict |= s;
        out.push(spec);
    }
    Ok((out, strict))
}

/// A call in an assistant message of the conversation.
#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<CallBody>,
}

#[derive(Debug, Deserialize)]
struct CallBody {
    name: Option<String>,
    /// JSON text (an object is accepted too).
    arguments: Option<Value>,
}

impl FunctionCall {
    pub fn into_call(self) -> Result<ToolCall, ApiError> {
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != "function") {
            return Err(ApiError::invalid(format!(
                "tool call type must be 'function', got '{kind}'"
            )));
        }
        let id = self
            .id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ApiError::invalid("a tool call in the conversation has no id"))?;
        let body = self
            .function
            .ok_or_else(|| ApiError::invalid(format!("tool call '{id}' has no function")))?;
        let name = body
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid(format!("tool call '{id}' has no function name")))?;
        let arguments = match body.arguments {
            None | Some(Value::Null) => "{}".to_string(),
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
        };
        Ok(ToolCall {
            id,
            name,
            arguments,
        })
    }
}

pub fn calls(calls: Option<Vec<FunctionCall>>) -> Result<Vec<ToolCall>, ApiError> {
    calls
        .unwrap_or_default()
        .into_iter()
        .map(FunctionCall::into_call)
        .collect()
}

/// A call as both families return it.
pub fn call_json(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": { "name": call.name, "arguments": call.arguments },
    })
}
