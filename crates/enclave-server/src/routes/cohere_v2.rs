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
use crate::pipeline::{
    cohere_finish_reason, generate, sse_frame, Completion, DocumentInput, GenerationRequest,
    Prompt, StreamEnd, StreamFormat, COHERE_BOUNDS,
};
use crate::routes::cohere_common::{
    check_priority, grounding_json, new_id, refuse_unsupported, usage_json, v2_citation,
    CohereSampling, Content, GroundingFields,
};

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
    #[serde(flatten)]
    sampling: CohereSampling,
    tools: Option<Vec<Value>>,
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

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
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
        tool_calls: Option<Vec<Value>>,
    },
    Tool {},
}

fn to_messages(messages: Vec<Message>) -> Result<Vec<ChatMessage>, ApiError> {
    messages
        .into_iter()
        .map(|message| match message {
            Message::System { content } => Ok(ChatMessage::new("system", content.into_text()?)),
            Message::User { content } => Ok(ChatMessage::new("user", content.into_text()?)),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                if tool_calls.is_some_and(|c| !c.is_empty()) {
                    return Err(ApiError::invalid(
                        "tool calls are not supported by this server yet",
                    ));
                }
                let text = content
                    .map(Content::into_text)
                    .transpose()?
                    .unwrap_or_default();
                Ok(ChatMessage::new("assistant", text))
            }
            Message::Tool { .. } => Err(ApiError::invalid(
                "tool messages are not supported by this server yet",
            )),
        })
        .collect()
}

pub async fn chat(call: Call, ApiJson(req): ApiJson<ChatRequest>) -> Result<Response, ApiError> {
    refuse_unsupported(&[
        ("tools", req.tools.as_ref().is_some_and(|t| !t.is_empty())),
        (
            "response_format json_object",
            req.response_format
                .as_ref()
                .is_some_and(|f| f.kind != "text"),
        ),
        ("logprobs", req.logprobs == Some(true)),
    ])?;
    if let Some(mode) = req.safety_mode.as_deref() {
        if !["CONTEXTUAL", "STRICT", "OFF"].contains(&mode) {
            return Err(ApiError::invalid(format!(
                "safety_mode must be CONTEXTUAL, STRICT or OFF, got {mode}"
            )));
        }
    }
    check_priority(req.priority)?;
    // `thinking` is accepted and has no effect: the served models do not reason in a separate block.
    let _ = req.thinking;
    let messages = to_messages(req.messages)?;
    let grounding = GroundingFields {
        documents: documents(req.documents.unwrap_or_default())?,
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
    };
    generate(&call, request, V2Stream { id: new_id() }).await
}

/// Cohere v2 SSE: message-start, content-start, content-delta…, content-end, message-end, [DONE].
struct V2Stream {
    id: String,
}

fn event(kind: &str, body: Value) -> String {
    let mut body = body;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("type".into(), Value::String(kind.into()));
    }
    sse_frame(Some(kind), &body.to_string())
}

impl StreamFormat for V2Stream {
    fn whole(&self, done: &Completion) -> Value {
        let mut body = json!({
            "id": self.id,
            "finish_reason": cohere_finish_reason(done.reason),
            "message": {
                "role": "assistant",
                "content": [{ "type": "text", "text": done.text }],
            },
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
        out.push_str(&event(
            "content-start",
            json!({ "index": 0, "delta": { "message": { "content": { "type": "text", "text": "" } } } }),
        ));
        out
    }

    fn text(&mut self, text: &str) -> String {
        event(
            "content-delta",
            json!({ "index": 0, "delta": { "message": { "content": { "text": text } } } }),
        )
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
        let mut out = event("content-end", json!({ "index": 0 }));
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
