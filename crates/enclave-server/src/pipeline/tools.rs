//! Tool use and structured output in the pipeline: the bounds a request's tools and schemas must
//! keep, the grammar that makes the answer valid by construction, and the answer read back —
//! calls given ids and every call's arguments (or the JSON answer) checked against its schema
//! again before anything is returned. Each wire family maps its own fields to a [`Structure`].

use std::collections::HashSet;

use enclave_engine::tools::grammar::{json_grammar, tool_grammar};
use enclave_engine::tools::parse::{parse_call, CallSplitter, Piece};
use enclave_engine::tools::{validate, ToolCall, ToolChoice, ToolSpec, ToolUse};
use enclave_engine::{ChatMessage, Constraint, FinishReason};
use serde_json::Value;

use crate::error::ApiError;

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 64;
/// Longest tool name (OpenAI's limit).
pub const MAX_TOOL_NAME: usize = 64;
/// Largest schema (one tool's parameters, or a response format), as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// Deepest nesting of a schema.
pub const MAX_SCHEMA_DEPTH: usize = 12;
/// Largest arguments of one call in the conversation's history, as JSON text.
pub const MAX_ARGUMENTS_BYTES: usize = 32 * 1024;
/// Text before any call that, once this long, is streamed as the answer rather than held back
/// as a possible plan.
const PLAN_HOLD_BYTES: usize = 600;

/// A JSON answer: an object following `schema`, or any object.
#[derive(Debug, Clone, Default)]
pub struct JsonFormat {
    pub schema: Option<Value>,
    /// Refuse schema keywords the decoder cannot enforce (otherwise they are enforced as far
    /// as possible and checked afterwards).
    pub strict: bool,
}

/// The shape a chat's answer must take: calls to its tools, a JSON object, or free text.
#[derive(Debug, Clone, Default)]
pub struct Structure {
    pub tools: ToolUse,
    pub json: Option<JsonFormat>,
    /// Calls made since the last user turn whose results are in the conversation (name and
    /// arguments): making one again would loop, so it is answered as text instead.
    pub answered: Vec<(String, Value)>,
}

impl Structure {
    /// Bytes of the caller's tool definitions (they are input the model reads).
    pub fn bytes(&self) -> usize {
        self.tools
            .offered()
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
            .sum()
    }

    pub fn is_free(&self) -> bool {
        self.tools.offered().is_empty() && self.json.is_none()
    }

    /// Checks the tools and schemas against the server's bounds.
    pub fn check(&self) -> Result<(), ApiError> {
        let tools = &self.tools.tools;
        if tools.len() > MAX_TOOLS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_TOOLS} tools may be offered, got {}",
                tools.len()
            )));
        }
        let mut names = HashSet::new();
        for tool in tools {
            check_name(&tool.name)?;
            if !names.insert(tool.name.as_str()) {
                return Err(ApiError::invalid(format!(
                    "tool name '{}' is declared twice",
                    tool.name
                )));
            }
            check_schema(
                &format!("tool '{}' parameters", tool.name),
                &tool.parameters,
            )?;
            if tool.parameters.get("type").is_some_and(|t| t != "object") {
                return Err(ApiError::invalid(format!(
                    "tool '{}' parameters must be a JSON Schema of type object",
                    tool.name
                )));
            }
        }
        match &self.tools.choice {
            ToolChoice::Required if tools.is_empty() => Err(ApiError::invalid(
                "tool_choice REQUIRED needs at least one tool",
            )),
            ToolChoice::Named(name) if !names.contains(name.as_str()) => Err(ApiError::invalid(
                format!("tool_choice names '{name}', which is not among the tools"),
            )),
            _ => Ok(()),
        }?;
        if let Some(JsonFormat {
            schema: Some(schema),
            ..
        }) = &self.json
        {
            check_schema("response_format schema", schema)?;
            if schema.get("type").is_some_and(|t| t != "object") {
                return Err(ApiError::invalid(
                    "response_format schema must be of type object at its top level",
                ));
            }
        }
        if self.json.is_some() && !self.tools.offered().is_empty() {
            return Err(ApiError::invalid(
                "response_format json_object cannot be combined with tools",
            ));
        }
        Ok(())
    }

    /// The grammar the answer is generated under; `None` for free text.
    pub fn constraint(&self) -> Option<Constraint> {
        let lark = match &self.json {
            Some(format) => Some(json_grammar(format.schema.as_ref(), format.strict)),
            None => tool_grammar(&self.tools),
        }?;
        Some(Constraint::Lark(lark.into()))
    }

    /// The finished answer read back: calls given ids and checked, or the JSON answer checked.
    /// Calls are read the way a stream reads them ([`CallStream`]), so both end alike.
    pub fn finish(&self, text: String, reason: FinishReason) -> Result<Shaped, ApiError> {
        if let Some(format) = self
            .json
            .as_ref()
            .filter(|_| reason == FinishReason::Complete)
        {
            check_json(&text, format)?;
        }
        let mut shaped = Shaped {
            text: String::new(),
            calls: Vec::new(),
            reason,
            invented: false,
        };
        let Some(mut reader) = self.stream() else {
            shaped.text = text;
            return Ok(shaped);
        };
        let mut out = reader.push(self, &text)?;
        out.extend(reader.finish(self)?);
        for piece in out {
            match piece {
                Streamed::Text(t) | Streamed::Plan(t) => shaped.text.push_str(&t),
                Streamed::Call(call) => shaped.calls.push(call),
                Streamed::Invented => shaped.invented = true,
            }
        }
        if !shaped.calls.is_empty() {
            shaped.text.truncate(shaped.text.trim_end().len());
        }
        shaped.reason = reader.finish_reason(reason);
        Ok(shaped)
    }

    /// One generated call: parsed, its tool found, its arguments checked, an id given; `None`
    /// when it names a tool that was not declared (the grammar lets the model say so, and the
    /// server then asks for text instead).
    fn call(&self, body: &str) -> Result<Option<ToolCall>, ApiError> {
        let parsed = parse_call(body).map_err(|e| invalid_output(&e.to_string()))?;
        let Some(tool) = self.tools.offered().iter().find(|t| t.name == parsed.name) else {
            return Ok(None);
        };
        let arguments: Value =
            serde_json::from_str(&parsed.arguments).map_err(|e| invalid_output(&e.to_string()))?;
        if self
            .answered
            .iter()
            .any(|(name, args)| *name == parsed.name && *args == arguments)
        {
            return Ok(None);
        }
        validate(&arguments, &tool.parameters).map_err(|e| invalid_output(&e))?;
        Ok(Some(ToolCall {
            id: new_call_id(&tool.name),
            name: parsed.name,
            arguments: parsed.arguments,
        }))
    }

    /// The same request, answered in text: no call may be written.
    pub fn text_only(&self) -> Structure {
        let mut tools = self.tools.clone();
        tools.choice = ToolChoice::TextOnly;
        Structure {
            tools,
            json: None,
            answered: Vec::new(),
        }
    }

    /// A streamed answer's reader, when the answer may hold calls.
    pub fn stream(&self) -> Option<CallStream> {
        (self.json.is_none() && self.tools.may_call()).then(|| CallStream {
            splitter: CallSplitter::default(),
            held: String::new(),
            streaming_text: false,
            calls: 0,
            cut: false,
        })
    }
}

/// An answer read back.
#[derive(Debug, Clone)]
pub struct Shaped {
    /// The answer, or the plan before the calls.
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub reason: FinishReason,
    /// The model called a tool that was not declared: nothing of this answer is returned.
    pub invented: bool,
}

/// What a streamed answer sends next.
#[derive(Debug, Clone)]
pub enum Streamed {
    Text(String),
    /// Text written before the calls.
    Plan(String),
    Call(ToolCall),
    /// The model called a tool that was not declared: the answer is asked for again as text.
    Invented,
}

/// Reads calls out of a streamed answer. Text before any call is held back (it is a plan if a
/// call follows) until it is long enough to be the answer itself.
pub struct CallStream {
    splitter: CallSplitter,
    held: String,
    streaming_text: bool,
    calls: usize,
    cut: bool,
}

impl CallStream {
    pub fn push(&mut self, structure: &Structure, text: &str) -> Result<Vec<Streamed>, ApiError> {
        let pieces = self.splitter.push(text);
        self.take(structure, pieces)
    }

    pub fn finish(&mut self, structure: &Structure) -> Result<Vec<Streamed>, ApiError> {
        let pieces = self.splitter.finish();
        let mut out = self.take(structure, pieces)?;
        if !self.held.is_empty() {
            out.push(Streamed::Text(std::mem::take(&mut self.held)));
        }
        Ok(out)
    }

    /// How the answer ended, given how the generation did: cut inside a call (the token limit;
    /// no half call is returned), with calls, or as the generation says.
    pub fn finish_reason(&self, generation: FinishReason) -> FinishReason {
        if self.cut {
            FinishReason::MaxTokens
        } else if self.calls > 0 {
            FinishReason::ToolCalls
        } else {
            generation
        }
    }

    fn take(
        &mut self,
        structure: &Structure,
        pieces: Vec<Piece>,
    ) -> Result<Vec<Streamed>, ApiError> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) if self.streaming_text => out.push(Streamed::Text(text)),
                Piece::Text(text) => {
                    self.held.push_str(&text);
                    if self.held.len() >= PLAN_HOLD_BYTES {
                        self.streaming_text = true;
                        out.push(Streamed::Text(std::mem::take(&mut self.held)));
                    }
                }
                Piece::Call(body) => match structure.call(&body)? {
                    Some(call) => {
                        let plan = std::mem::take(&mut self.held);
                        let plan = plan.trim_end();
                        if !plan.is_empty() {
                            out.push(Streamed::Plan(plan.to_string()));
                        }
                        out.push(Streamed::Call(call));
                        self.calls += 1;
                    }
                    // Beside calls already sent, an invented one is dropped.
                    None if self.calls > 0 => {}
                    None => {
                        self.held.clear();
                        out.push(Streamed::Invented);
                        return Ok(out);
                    }
                },
                Piece::Unclosed(_) => self.cut = true,
            }
        }
        Ok(out)
    }
}

/// The caller's conversation: every tool result answers a call made before it, and calls in
/// the history are within bounds.
pub fn check_history(messages: &[ChatMessage]) -> Result<(), ApiError> {
    let mut calls: HashSet<&str> = HashSet::new();
    for (n, message) in messages.iter().enumerate() {
        for call in &message.tool_calls {
            if call.arguments.len() > MAX_ARGUMENTS_BYTES {
                return Err(ApiError::invalid(format!(
                    "messages[{n}]: tool call arguments may be at most {MAX_ARGUMENTS_BYTES} bytes"
                )));
            }
            if !serde_json::from_str::<Value>(&call.arguments).is_ok_and(|v| v.is_object()) {
                return Err(ApiError::invalid(format!(
                    "messages[{n}]: tool call '{}' arguments must be a JSON object",
                    call.id
                )));
            }
            calls.insert(call.id.as_str());
        }
        if message.role == "tool" {
            let id = message.tool_call_id.as_deref().unwrap_or_default();
            if !calls.contains(id) {
                return Err(ApiError::invalid(format!(
                    "messages[{n}]: tool_call_id '{id}' matches no tool call made before it"
                )));
            }
        }
    }
    Ok(())
}

/// The calls since the last user turn that have their results in the conversation.
pub fn answered_calls(messages: &[ChatMessage]) -> Vec<(String, Value)> {
    let since_user = messages
        .iter()
        .rposition(|m| m.role == "user")
        .map_or(0, |at| at + 1);
    let turn = &messages[since_user..];
    let results: HashSet<&str> = turn
        .iter()
        .filter_map(|m| m.tool_call_id.as_deref())
        .collect();
    turn.iter()
        .flat_map(|m| &m.tool_calls)
        .filter(|c| results.contains(c.id.as_str()))
        .filter_map(|c| Some((c.name.clone(), serde_json::from_str(&c.arguments).ok()?)))
        .collect()
}

/// A call id in Cohere's style: the tool's name and 12 random characters.
pub fn new_call_id(name: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}_{}", &random[..12])
}

/// A tool's name: 1–64 letters, digits, `_`, `-` or `.`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "tool name {name:?} must be 1 to {MAX_TOOL_NAME} letters, digits, '_', '-' or '.'"
        )))
    }
}

fn check_schema(what: &str, schema: &Value) -> Result<(), ApiError> {
    if !schema.is_object() {
        return Err(ApiError::invalid(format!(
            "{what} must be a JSON Schema object"
        )));
    }
    let bytes = schema.to_string().len();
    if bytes > MAX_SCHEMA_BYTES {
        return Err(ApiError::invalid(format!(
            "{what} is {bytes} bytes; at most {MAX_SCHEMA_BYTES} are allowed"
        )));
    }
    if depth(schema) > MAX_SCHEMA_DEPTH {
        return Err(ApiError::invalid(format!(
            "{what} nests deeper than {MAX_SCHEMA_DEPTH} levels"
        )));
    }
    Ok(())
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_json(text: &str, format: &JsonFormat) -> Result<(), ApiError> {
    let value: Value = serde_json::from_str(text).map_err(|e| invalid_output(&e.to_string()))?;
    if !value.is_object() {
        return Err(invalid_output("the answer is not a JSON object"));
    }
    match &format.schema {
        Some(schema) => validate(&value, schema).map_err(|e| invalid_output(&e)),
        None => Ok(()),
    }
}

/// A constrained answer that failed its second check: a server fault, never returned.
fn invalid_output(detail: &str) -> ApiError {
    ApiError::internal(format!("constrained output failed validation: {detail}"))
}

/// Checks a JSON answer at the end of a stream (tool calls are checked as they stream).
pub fn check_streamed_json(structure: &Structure, text: &str) -> Result<(), ApiError> {
    match &structure.json {
        Some(format) => check_json(text, format),
        None => Ok(()),
    }
}

/// The tool spec of a declared function; absent parameters mean none.
pub fn tool(name: String, description: Option<String>, parameters: Option<Value>) -> ToolSpec {
    ToolSpec {
        name,
        description: description.unwrap_or_default(),
        parameters: parameters
            .filter(|p| !p.is_null())
            .unwrap_or_else(enclave_engine::tools::grammar::no_parameters),
    }
}
