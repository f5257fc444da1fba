//! Cohere's legacy protocol: `POST /v1/chat` (message, chat_history, preamble; JSON or NDJSON
//! stream) and `POST /v1/generate` (raw prompt completion; JSON or NDJSON stream).

use axum::response::Response;
use enclave_engine::tools::{ToolCall, ToolChoice, ToolSpec, ToolUse};
use enclave_engine::ChatMessage;
use enclave_rag::{Citation, SourceDocument};
use enclave_store::Capability;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Call;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::guard::SafetyMode;
use crate::pipeline::tools::{new_call_id, tool};
use crate::pipeline::{
    cohere_v1_finish_reason, generate as run_generation, Completion, DocumentInput,
    GenerationRequest, GroundedAnswer, Prompt, StreamEnd, StreamFormat, Structure, Usage,
    COHERE_BOUNDS,
};
use crate::routes::cohere_common::{
    echoed, grounding_json, json_format, new_id, refuse_unsupported, v1_citation, v1_meta,
    CohereSampling, GroundingFields,
};

/// v1 generate's documented default.
const GENERATE_DEFAULT_MAX_TOKENS: i64 = 256;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    message: String,
    model: Option<String>,
    preamble: Option<String>,
    chat_history: Option<Vec<HistoryEntry>>,
    stream: Option<bool>,
    #[serde(flatten)]
    sampling: CohereSampling,
    tools: Option<Vec<V1Tool>>,
    tool_results: Option<Vec<ToolResult>>,
    force_single_step: Option<bool>,
    response_format: Option<ResponseFormat>,
    documents: Option<Vec<Value>>,
    citation_quality: Option<String>,
    safety_mode: Option<String>,
    /// The prompt as the model read it comes back in the response's `prompt`.
    return_prompt: Option<bool>,
    /// Extension: `flag` (default) or `decline` claims the documents do not support.
    on_unsupported: Option<String>,
    /// Extension: collections (names or ids) whose best chunks ground the answer.
    collections: Option<Vec<String>>,
    connectors: Option<Vec<Value>>,
    conversation_id: Option<String>,
    search_queries_only: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct HistoryEntry {
    role: String,
    message: Option<String>,
    tool_results: Option<Vec<ToolResult>>,
}

/// A v1 tool: parameters described one by one with Python type names.
#[derive(Debug, Deserialize)]
struct V1Tool {
    name: String,
    description: Option<String>,
    parameter_definitions: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct ParameterDefinition {
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    required: Option<bool>,
}

impl V1Tool {
    /// The tool with its parameters as a JSON Schema object.
    fn into_spec(self) -> Result<ToolSpec, ApiError> {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        for (name, definition) in self.parameter_definitions.unwrap_or_default() {
            let definition: ParameterDefinition =
                serde_json::from_value(definition).map_err(|e| {
                    ApiError::invalid(format!("tool '{}' parameter '{name}': {e}", self.name))
                })?;
            let mut schema = serde_json::Map::new();
            if let Some(kind) = definition.kind.as_deref().and_then(json_type) {
                schema.insert("type".into(), json!(kind));
            }
            if let Some(description) = definition.description {
                schema.insert("description".into(), json!(description));
            }
            if definition.required == Some(true) {
                required.push(json!(name));
            }
            properties.insert(name, Value::Object(schema));
        }
        let parameters =
            json!({ "type": "object", "properties": properties, "required": required });
        Ok(tool(self.name, self.description, Some(parameters)))
    }
}

/// The JSON Schema type of a Python type name (`str`, `int`, `List[str]`, ...); unknown names
/// leave the parameter's type open.
fn json_type(python: &str) -> Option<&'static str> {
    let base = python
        .split('[')
        .next()
        .unwrap_or(python)
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "str" | "string" => Some("string"),
        "int" | "integer" => Some("integer"),
        "float" | "number" => Some("number"),
        "bool" | "boolean" => Some("boolean"),
        "list" | "array" | "tuple" => Some("array"),
        "dict" | "object" => Some("object"),
        _ => None,
    }
}

/// A call the caller ran and what it returned.
#[derive(Debug, Deserialize)]
struct ToolResult {
    call: V1Call,
    outputs: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct V1Call {
    name: String,
    parameters: Option<Value>,
}

/// Tool results as the conversation's assistant call and tool result turns.
fn result_messages(results: Vec<ToolResult>) -> Vec<ChatMessage> {
    let mut assistant = ChatMessage::new("assistant", "");
    let mut answers = Vec::new();
    for result in results {
        let id = new_call_id(&result.call.name);
        let arguments = result
            .call
            .parameters
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        assistant.tool_calls.push(ToolCall {
            id: id.clone(),
            name: result.call.name,
            arguments: arguments.to_string(),
        });
        let mut answer = ChatMessage::new("tool", Value::Array(result.outputs).to_string());
        answer.tool_call_id = Some(id);
        answers.push(answer);
    }
    if assistant.tool_calls.is_empty() {
        return Vec::new();
    }
    std::iter::once(assistant).chain(answers).collect()
}

/// `{type: "text"}` or `{type: "json_object", schema?}`.
#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    schema: Option<Value>,
}

/// v1 documents: string maps with an optional `id` and `_excludes` (fields echoed in
/// citations but hidden from the model); a bare string is read as `{"text": ...}`.
fn documents(documents: Vec<Value>) -> Result<Vec<DocumentInput>, ApiError> {
    documents
        .into_iter()
        .enumerate()
        .map(|(n, doc)| {
            let mut fields = match doc {
                Value::Object(fields) => fields,
                Value::String(text) => Map::from_iter([("text".to_string(), Value::String(text))]),
                _ => {
                    return Err(ApiError::invalid(format!(
                        "documents[{n}] must be an object of string fields"
                    )))
                }
            };
            let id = match fields.remove("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id),
                Some(_) => {
                    return Err(ApiError::invalid(format!(
                        "documents[{n}].id must be a string"
                    )))
                }
            };
            let hidden = match fields.remove("_excludes") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(keys)) => keys
                    .into_iter()
                    .map(|k| match k {
                        Value::String(k) => Ok(k),
                        _ => Err(ApiError::invalid(format!(
                            "documents[{n}]._excludes must list field names"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(ApiError::invalid(format!(
                        "documents[{n}]._excludes must list field names"
                    )))
                }
            };
            Ok(DocumentInput {
                id,
                fields,
                hidden,
                ..DocumentInput::default()
            })
        })
        .collect()
}

fn history_role(role: &str) -> Result<&'static str, ApiError> {
    match role.to_ascii_uppercase().as_str() {
        "USER" => Ok("user"),
        "CHATBOT" => Ok("assistant"),
        "SYSTEM" => Ok("system"),
        "TOOL" => Ok("tool"),
        _ => Err(ApiError::invalid(format!(
            "chat_history role must be USER, CHATBOT, SYSTEM or TOOL, got {role}"
        ))),
    }
}

pub async fn chat(call: Call, ApiJson(req): ApiJson<ChatRequest>) -> Result<Response, ApiError> {
    refuse_unsupported(&[
        (
            "connectors",
            req.connectors.as_ref().is_some_and(|c| !c.is_empty()),
        ),
        ("conversation_id", req.conversation_id.is_some()),
        ("search_queries_only", req.search_queries_only == Some(true)),
    ])?;
    if req.message.trim().is_empty() {
        return Err(ApiError::invalid("message must not be empty"));
    }
    let mut messages = Vec::new();
    if let Some(preamble) = &req.preamble {
        messages.push(ChatMessage::new("system", preamble.clone()));
    }
    let mut history = Vec::new();
    for entry in req.chat_history.unwrap_or_default() {
        let role = history_role(&entry.role)?;
        if role == "tool" {
            messages.extend(result_messages(entry.tool_results.unwrap_or_default()));
            continue;
        }
        let text = entry.message.unwrap_or_default();
        history.push(json!({ "role": entry.role.to_ascii_uppercase(), "message": text }));
        messages.push(ChatMessage::new(role, text));
    }
    messages.push(ChatMessage::new("user", req.message.clone()));
    history.push(json!({ "role": "USER", "message": req.message }));
    messages.extend(result_messages(req.tool_results.unwrap_or_default()));
    // Single- and multi-step use are the same here: each request is one step.
    let _ = req.force_single_step;
    let tools = req
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(V1Tool::into_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let json = req
        .response_format
        .map(|f| json_format(&f.kind, f.schema))
        .transpose()?
        .flatten();
    let structure = Structure {
        tools: ToolUse {
            tools,
            choice: ToolChoice::Auto,
            parallel: true,
            strict: false,
        },
        json,
        answered: Vec::new(),
    };
    let safety = req
        .safety_mode
        .as_deref()
        .map(|m| SafetyMode::parse(Some(m)))
        .transpose()?;
    let grounding = GroundingFields {
        documents: documents(req.documents.unwrap_or_default())?,
        collections: req.collections,
        id_prefix: "doc_",
        mode: req.citation_quality.as_deref(),
        on_unsupported: req.on_unsupported.as_deref(),
    }
    .request(&call, &messages)
    .await?;
    let request = GenerationRequest {
        capability: Capability::Chat,
        model: req.model,
        prompt: Prompt::Chat(messages),
        sampling: req.sampling.into_input(None),
        bounds: COHERE_BOUNDS,
        stream: req.stream == Some(true),
        grounding,
        structure,
        safety,
        route: "/v1/chat",
        return_prompt: req.return_prompt == Some(true),
    };
    let format = ChatStream {
        reply: ChatReply {
            generation_id: new_id(),
            response_id: new_id(),
            history,
        },
        text: String::new(),
        calls: Vec::new(),
    };
    run_generation(&call, request, format).await
}

/// What a v1 chat response carries besides the text.
struct ChatReply {
    generation_id: String,
    response_id: String,
    history: Vec<Value>,
}

impl ChatReply {
    fn body(
        &self,
        text: &str,
        calls: &[ToolCall],
        finish_reason: &str,
        usage: &Usage,
        grounding: Option<&GroundedAnswer>,
    ) -> Value {
        let mut history = self.history.clone();
        let mut turn = json!({ "role": "CHATBOT", "message": text });
        if !calls.is_empty() {
            turn["tool_calls"] = v1_calls(calls);
        }
        history.push(turn);
        let mut body = json!({
            "response_id": self.response_id,
            "generation_id": self.generation_id,
            "text": text,
            "finish_reason": finish_reason,
            "chat_history": history,
            "meta": v1_meta(Some(usage)),
        });
        if !calls.is_empty() {
            body["tool_calls"] = v1_calls(calls);
        }
        if let Some(answer) = grounding {
            if answer.cite {
                let docs = &answer.documents;
                let citations: Vec<Value> = answer
                    .grounding
                    .citations
                    .iter()
                    .map(|c| v1_citation(c, docs))
                    .collect();
                // The documents the answer cites, in the order given.
                let cited: Vec<Value> = docs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        answer
                            .grounding
                            .citations
                            .iter()
                            .any(|c| c.sources.iter().any(|s| s.passage == *i))
                    })
                    .map(|(_, d)| echoed(d))
                    .collect();
                body["citations"] = Value::Array(citations);
                body["documents"] = Value::Array(cited);
            }
            body["grounding"] = grounding_json(answer);
        }
        body
    }
}

/// Calls in v1's shape: `{name, parameters}`.
fn v1_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| {
            let parameters: Value =
                serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
            json!({ "name": c.name, "parameters": parameters })
        })
        .collect()
}

/// v1's last NDJSON line: how the stream ended and the whole response, as `body` renders it.
fn stream_end(
    end: &StreamEnd,
    body: impl FnOnce(&str, &Usage, Option<&GroundedAnswer>) -> Value,
) -> String {
    let (reason, usage, grounding) = match end {
        StreamEnd::Finished {
            reason,
            usage,
            grounding,
        } => (
            cohere_v1_finish_reason(*reason),
            *usage,
            grounding.as_deref(),
        ),
        StreamEnd::Failed(_) => ("ERROR", Usage::default(), None),
    };
    ndjson(json!({
        "is_finished": true,
        "event_type": "stream-end",
        "finish_reason": reason,
        "response": body(reason, &usage, grounding),
    }))
}

fn ndjson(value: Value) -> String {
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// v1 chat NDJSON: stream-start, text-generation…, stream-end with the full response.
struct ChatStream {
    reply: ChatReply,
    text: String,
    calls: Vec<ToolCall>,
}

impl StreamFormat for ChatStream {
    fn whole(&self, done: &Completion) -> Value {
        let mut body = self.reply.body(
            &done.text,
            &done.tool_calls,
            cohere_v1_finish_reason(done.reason),
            &done.usage,
            done.grounding.as_deref(),
        );
        if let (Some(prompt), Some(obj)) = (&done.prompt, body.as_object_mut()) {
            obj.insert("prompt".into(), Value::String(prompt.clone()));
        }
        body
    }

    fn content_type(&self) -> &'static str {
        "application/stream+json"
    }

    fn start(&mut self) -> String {
        ndjson(
            json!({ "is_finished": false, "event_type": "stream-start", "generation_id": self.reply.generation_id }),
        )
    }

    fn text(&mut self, text: &str) -> String {
        self.text.push_str(text);
        ndjson(json!({ "is_finished": false, "event_type": "text-generation", "text": text }))
    }

    /// Calls are sent together in one `tool-calls-generation` line at the end.
    fn tool_call(&mut self, _index: usize, call: &ToolCall) -> String {
        self.calls.push(call.clone());
        String::new()
    }

    fn citation(
        &mut self,
        _index: usize,
        citation: &Citation,
        documents: &[SourceDocument],
    ) -> String {
        ndjson(json!({
            "is_finished": false,
            "event_type": "citation-generation",
            "citations": [v1_citation(citation, documents)],
        }))
    }

    fn end(&mut self, end: &StreamEnd) -> String {
        let mut out = String::new();
        if !self.calls.is_empty() && matches!(end, StreamEnd::Finished { .. }) {
            out.push_str(&ndjson(json!({
                "is_finished": false,
                "event_type": "tool-calls-generation",
                "text": self.text,
                "tool_calls": v1_calls(&self.calls),
            })));
        }
        out.push_str(&stream_end(end, |reason, usage, grounding| {
            self.reply
                .body(&self.text, &self.calls, reason, usage, grounding)
        }));
        out
    }
}

#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    prompt: String,
    model: Option<String>,
    stream: Option<bool>,
    num_generations: Option<i64>,
    #[serde(flatten)]
    sampling: CohereSampling,
    end_sequences: Option<Vec<String>>,
    return_likelihoods: Option<String>,
    raw_prompting: Option<bool>,
}

pub async fn generate(
    call: Call,
    ApiJson(mut req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    if req.num_generations.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "num_generations must be 1 on this server",
        ));
    }
    refuse_unsupported(&[(
        "return_likelihoods",
        req.return_likelihoods
            .as_deref()
            .is_some_and(|r| r != "NONE"),
    )])?;
    // Generate never applies a chat template, so `raw_prompting` changes nothing here.
    let _ = req.raw_prompting;
    // end_sequences are stop sequences whose text is also cut; both end generation here.
    req.sampling.stop_also(req.end_sequences.take());
    let format = GenerateStream {
        id: new_id(),
        prompt: req.prompt.clone(),
        text: String::new(),
    };
    let request = GenerationRequest {
        capability: Capability::Generate,
        model: req.model,
        prompt: Prompt::Text(req.prompt),
        sampling: req.sampling.into_input(Some(GENERATE_DEFAULT_MAX_TOKENS)),
        bounds: COHERE_BOUNDS,
        stream: req.stream == Some(true),
        grounding: None,
        structure: Structure::default(),
        safety: None,
        route: "/v1/generate",
        return_prompt: false,
    };
    run_generation(&call, request, format).await
}

/// v1 generate NDJSON: text-generation…, then stream-end with the full response.
struct GenerateStream {
    id: String,
    prompt: String,
    text: String,
}

impl GenerateStream {
    fn body(&self, text: &str, finish_reason: &str, usage: &Usage) -> Value {
        json!({
            "id": self.id,
            "prompt": self.prompt,
            "generations": [{ "id": self.id, "text": text, "index": 0, "finish_reason": finish_reason }],
            "meta": v1_meta(Some(usage)),
        })
    }
}

impl StreamFormat for GenerateStream {
    fn whole(&self, done: &Completion) -> Value {
        self.body(
            &done.text,
            cohere_v1_finish_reason(done.reason),
            &done.usage,
        )
    }

    fn content_type(&self) -> &'static str {
        "application/stream+json"
    }

    fn start(&mut self) -> String {
        String::new()
    }

    fn text(&mut self, text: &str) -> String {
        self.text.push_str(text);
        ndjson(
            json!({ "is_finished": false, "event_type": "text-generation", "text": text, "index": 0 }),
        )
    }

    fn end(&mut self, end: &StreamEnd) -> String {
        stream_end(end, |reason, usage, _| self.body(&self.text, reason, usage))
    }
}
