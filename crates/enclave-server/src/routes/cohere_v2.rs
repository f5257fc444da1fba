//! `POST /v2/chat`: Cohere's current chat protocol, JSON or SSE.

use axum::response::Response;
use enclave_engine::ChatMessage;
use enclave_rag::{Citation, SourceDocument};
use enclave_store::Capability;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Call;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::guard::SafetyMode;
use crate::pipeline::{
    cohere_finish_reason, generate, sse_frame, Completion, DocumentInput, GenerationRequest,
    Prompt, StreamEnd, StreamFormat, Structure, COHERE_BOUNDS,
};
use crate::routes::cohere_common::{
    check_priority, grounding_json, json_format, new_id, refuse_unsupported, tool_documents,
    usage_json, v2_citation, CohereSampling, Content, GroundingFields,
};
use crate::routes::tool_shapes::{call_json, calls, specs, FunctionCall, FunctionTool};
use enclave_engine::tools::{ToolCall, ToolChoice, ToolUse};

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
    #[serde(flatten)]
    sampling: CohereSampling,
    tools: Option<Vec<FunctionTool>>,
    tool_choice: Option<String>,
    strict_tools: Option<bool>,
    documents: Option<Vec<Value>>,
    citation_options: Option<CitationOptions>,
    /// Extension: `flag` (default) or `decline` claims the documents do not support.
    on_unsupported: Option<String>,
    /// Extension: collections (names or ids) whose best chunks ground the answer.
    collections: Option<Vec<String>>,
    response_format: Option<ResponseFormat>,
    logprobs: Option<bool>,
    safety_mode: Option<String>,
    thinking: Option<Value>,
    priority: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct CitationOptions {
    mode: Option<String>,
}

/// v2 documents: a string, or `{id?, data: {...}}`.
fn documents(documents: Vec<Value>) -> Result<Vec<DocumentInput>, ApiError> {
    documents
        .into_iter()
        .enumerate()
        .map(|(n, doc)| match doc {
            Value::String(text) => {
                let mut fields = Map::new();
                fields.insert("text".into(), Value::String(text));
                Ok(DocumentInput {
                    fields,
                    ..DocumentInput::default()
                })
            }
            Value::Object(mut doc) => {
                let id = match doc.remove("id") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(id)) => Some(id),
                    Some(_) => {
                        return Err(ApiError::invalid(format!(
                            "documents[{n}].id must be a string"
                        )))
                    }
                };
                match doc.remove("data") {
                    Some(Value::Object(data)) => Ok(DocumentInput {
                        id,
                        fields: data,
                        ..DocumentInput::default()
                    }),
                    _ => Err(ApiError::invalid(format!(
                        "documents[{n}].data must be an object of the document's fields"
                    ))),
                }
            }
            _ => Err(ApiError::invalid(format!(
                "documents[{n}] must be a string or an object {{id?, data}}"
            ))),
        })
        .collect()
}

/// `{type: "text"}` or `{type: "json_object", json_schema?}` (the docs' own examples say
/// `schema`; both are read).
#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<Value>,
    schema: Option<Value>,
}

fn tool_choice(choice: Option<&str>) -> Result<ToolChoice, ApiError> {
    match choice.map(str::to_ascii_uppercase).as_deref() {
        None | Some("AUTO") => Ok(ToolChoice::Auto),
        Some("REQUIRED") => Ok(ToolChoice::Required),
        Some("NONE") => Ok(ToolChoice::None),
        Some(other) => Err(ApiError::invalid(format!(
            "tool_choice must be REQUIRED or NONE, got {other}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Message {
    System {
        content: Content,
    },
    User {
        content: Content,
    },
    Assistant {
        content: Option<Content>,
        tool_calls: Option<Vec<FunctionCall>>,
        tool_plan: Option<String>,
    },
    Tool {
        tool_call_id: String,
        content: Content,
    },
}

/// The conversation, and the documents of the tool results since the last user turn (what
/// the answer is checked and cited against).
fn to_messages(messages: Vec<Message>) -> Result<(Vec<ChatMessage>, Vec<DocumentInput>), ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    let mut results = Vec::new();
    for message in messages {
        let message = match message {
            Message::System { content } => ChatMessage::new("system", content.into_text()?),
            Message::User { content } => {
                results.clear();
                ChatMessage::new("user", content.into_text()?)
            }
            Message::Assistant {
                content,
                tool_calls,
                tool_plan,
            } => {
                let calls = calls(tool_calls)?;
                let text = match content.map(Content::into_text).transpose()? {
                    Some(text) if !text.is_empty() => text,
                    // A turn of calls: what the model planned is what it said.
                    _ if !calls.is_empty() => tool_plan.unwrap_or_default(),
                    _ => String::new(),
                };
                let mut message = ChatMessage::new("assistant", text);
                message.tool_calls = calls;
                message
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                let tool_name = out
                    .iter()
                    .flat_map(|m: &ChatMessage| &m.tool_calls)
                    .find(|c| c.id == tool_call_id)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let (text, documents) = tool_documents(&tool_call_id, &tool_name, content)?;
                results.extend(documents);
                let mut message = ChatMessage::new("tool", text);
                message.tool_call_id = Some(tool_call_id);
                message
            }
        };
        out.push(message);
    }
    Ok((out, results))
}

pub async fn chat(call: Call, ApiJson(req): ApiJson<ChatRequest>) -> Result<Response, ApiError> {
    refuse_unsupported(&[("logprobs", req.logprobs == Some(true))])?;
    let safety = req
        .safety_mode
        .as_deref()
        .map(|m| SafetyMode::parse(Some(m)))
        .transpose()?;
    check_priority(req.priority)?;
    // `thinking` is accepted and has no effect: the served models do not reason in a separate block.
    let _ = req.thinking;
    let (messages, tool_results) = to_messages(req.messages)?;
    // Before the results become documents: each must answer a call made before it.
    crate::pipeline::tools::check_history(&messages)?;
    let (tools, _) = specs(req.tools)?;
    let structure = Structure {
        tools: ToolUse {
            tools,
            choice: tool_choice(req.tool_choice.as_deref())?,
            parallel: true,
            strict: req.strict_tools == Some(true),
        },
        json: req
            .response_format
            .map(|f| json_format(&f.kind, f.json_schema.or(f.schema)))
            .transpose()?
            .flatten(),
        answered: Vec::new(),
    };
    let lazy_content = !structure.tools.offered().is_empty();
    let mut grounded = documents(req.documents.unwrap_or_default())?;
    grounded.extend(tool_results);
    let grounding = GroundingFields {
        documents: grounded,
        collections: req.collections,
        id_prefix: "doc:",
        mode: req
            .citation_options
            .as_ref()
            .and_then(|o| o.mode.as_deref()),
        on_unsupported: req.on_unsupported.as_deref(),
    }
    .request(&call, &messages)
    .await?;
    let request = GenerationRequest {
        capability: Capability::Chat,
        model: Some(req.model),
        prompt: Prompt::Chat(messages),
        sampling: req.sampling.into_input(None),
        bounds: COHERE_BOUNDS,
        stream: req.stream == Some(true),
        grounding,
        structure,
        safety,
        route: "/v2/chat",
        return_prompt: false,
    };
    let format = V2Stream {
        id: new_id(),
        content_open: false,
        lazy_content,
    };
    generate(&call, request, format).await
}

/// Cohere v2 SSE: message-start, content-start, content-delta…, content-end, message-end, [DONE];
/// an answer of tool calls sends tool-plan-delta and tool-call-start/delta/end instead of content.
struct V2Stream {
    id: String,
    /// Whether content-start has been sent.
    content_open: bool,
    /// With tools offered the answer may be calls: content-start waits for the first text.
    lazy_content: bool,
}

fn event(kind: &str, body: Value) -> String {
    let mut body = body;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("type".into(), Value::String(kind.into()));
    }
    sse_frame(Some(kind), &body.to_string())
}

impl V2Stream {
    /// content-start, once, before the first text.
    fn open_content(&mut self) -> String {
        if self.content_open {
            return String::new();
        }
        self.content_open = true;
        event(
            "content-start",
            json!({ "index": 0, "delta": { "message": { "content": { "type": "text", "text": "" } } } }),
        )
    }
}

impl StreamFormat for V2Stream {
    fn whole(&self, done: &Completion) -> Value {
        let mut message = json!({ "role": "assistant" });
        if done.tool_calls.is_empty() {
            message["content"] = json!([{ "type": "text", "text": done.text }]);
        } else {
            if !done.text.is_empty() {
                message["tool_plan"] = json!(done.text);
            }
            let calls: Vec<Value> = done.tool_calls.iter().map(call_json).collect();
            message["tool_calls"] = Value::Array(calls);
        }
        let mut body = json!({
            "id": self.id,
            "finish_reason": cohere_finish_reason(done.reason),
            "message": message,
            "usage": usage_json(&done.usage),
        });
        if let Some(answer) = &done.grounding {
            if answer.cite {
                let citations: Vec<Value> = answer
                    .grounding
                    .citations
                    .iter()
                    .map(|c| v2_citation(c, &answer.documents))
                    .collect();
                body["message"]["citations"] = Value::Array(citations);
            }
            body["grounding"] = grounding_json(answer);
        }
        body
    }

    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn start(&mut self) -> String {
        let mut out = event(
            "message-start",
            json!({
                "id": self.id,
                "delta": { "message": {
                    "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []
                }},
            }),
        );
        if !self.lazy_content {
            out.push_str(&self.open_content());
        }
        out
    }

    fn text(&mut self, text: &str) -> String {
        let mut out = self.open_content();
        out.push_str(&event(
            "content-delta",
            json!({ "index": 0, "delta": { "message": { "content": { "text": text } } } }),
        ));
        out
    }

    fn plan(&mut self, text: &str) -> String {
        event(
            "tool-plan-delta",
            json!({ "delta": { "message": { "tool_plan": text } } }),
        )
    }

    fn tool_call(&mut self, index: usize, call: &ToolCall) -> String {
        let mut start = call_json(call);
        start["function"]["arguments"] = json!("");
        let mut out = event(
            "tool-call-start",
            json!({ "index": index, "delta": { "message": { "tool_calls": start } } }),
        );
        out.push_str(&event(
            "tool-call-delta",
            json!({ "index": index, "delta": { "message": { "tool_calls": { "function": { "arguments": call.arguments } } } } }),
        ));
        out.push_str(&event("tool-call-end", json!({ "index": index })));
        out
    }

    fn citation(
        &mut self,
        index: usize,
        citation: &Citation,
        documents: &[SourceDocument],
    ) -> String {
        let mut out = event(
            "citation-start",
            json!({ "index": index, "delta": { "message": { "citations": v2_citation(citation, documents) } } }),
        );
        out.push_str(&event("citation-end", json!({ "index": index })));
        out
    }

    fn end(&mut self, end: &StreamEnd) -> String {
        let mut out = String::new();
        if self.content_open {
            out.push_str(&event("content-end", json!({ "index": 0 })));
        }
        let delta = match end {
            StreamEnd::Finished {
                reason,
                usage,
                grounding,
            } => {
                let mut delta = json!({
                    "finish_reason": cohere_finish_reason(*reason),
                    "usage": usage_json(usage),
                });
                if let Some(answer) = grounding {
                    delta["grounding"] = grounding_json(answer);
                }
                delta
            }
            StreamEnd::Failed(message) => json!({ "finish_reason": "ERROR", "error": message }),
        };
        out.push_str(&event(
            "message-end",
            json!({ "id": self.id, "delta": delta }),
        ));
        out.push_str(&sse_frame(None, "[DONE]"));
        out
    }
}
