//! Cohere's legacy protocol: `POST /v1/chat` (message, chat_history, preamble; JSON or NDJSON
//! stream) and `POST /v1/generate` (raw prompt completion; JSON or NDJSON stream).

use axum::response::Response;
use enclave_engine::ChatMessage;
use enclave_store::Capability;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Call;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::pipeline::{
    cohere_finish_reason, generate as run_generation, Completion, GenerationRequest, Prompt,
    StreamEnd, StreamFormat, Usage, COHERE_BOUNDS,
};
use crate::routes::cohere_common::{new_id, refuse_unsupported, v1_meta, CohereSampling};

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
    tools: Option<Vec<Value>>,
    tool_results: Option<Vec<Value>>,
    documents: Option<Vec<Value>>,
    connectors: Option<Vec<Value>>,
    conversation_id: Option<String>,
    search_queries_only: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct HistoryEntry {
    role: String,
    message: Option<String>,
}

fn history_role(role: &str) -> Result<&'static str, ApiError> {
    match role.to_ascii_uppercase().as_str() {
        "USER" => Ok("user"),
        "CHATBOT" => Ok("assistant"),
        "SYSTEM" => Ok("system"),
        "TOOL" => Err(ApiError::invalid(
            "TOOL history entries are not supported by this server yet",
        )),
        _ => Err(ApiError::invalid(format!(
            "chat_history role must be USER, CHATBOT or SYSTEM, got {role}"
        ))),
    }
}

pub async fn chat(call: Call, ApiJson(req): ApiJson<ChatRequest>) -> Result<Response, ApiError> {
    refuse_unsupported(&[
        ("tools", req.tools.as_ref().is_some_and(|t| !t.is_empty())),
        (
            "tool_results",
            req.tool_results.as_ref().is_some_and(|t| !t.is_empty()),
        ),
        (
            "documents",
            req.documents.as_ref().is_some_and(|d| !d.is_empty()),
        ),
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
        let text = entry.message.unwrap_or_default();
        history.push(json!({ "role": entry.role.to_ascii_uppercase(), "message": text }));
        messages.push(ChatMessage::new(role, text));
    }
    messages.push(ChatMessage::new("user", req.message.clone()));
    history.push(json!({ "role": "USER", "message": req.message }));
    let request = GenerationRequest {
        capability: Capability::Chat,
        model: req.model,
        prompt: Prompt::Chat(messages),
        sampling: req.sampling.into_input(None),
        bounds: COHERE_BOUNDS,
        stream: req.stream == Some(true),
    };
    let format = ChatStream {
        reply: ChatReply {
            generation_id: new_id(),
            response_id: new_id(),
            history,
        },
        text: String::new(),
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
    fn body(&self, text: &str, finish_reason: &str, usage: &Usage) -> Value {
        let mut history = self.history.clone();
        history.push(json!({ "role": "CHATBOT", "message": text }));
        json!({
            "response_id": self.response_id,
            "generation_id": self.generation_id,
            "text": text,
            "finish_reason": finish_reason,
            "chat_history": history,
            "meta": v1_meta(Some(usage)),
        })
    }
}

/// v1's last NDJSON line: how the stream ended and the whole response, as `body` renders it.
fn stream_end(end: &StreamEnd, body: impl FnOnce(&str, &Usage) -> Value) -> String {
    let (reason, usage) = match end {
        StreamEnd::Finished { reason, usage } => (cohere_finish_reason(*reason), *usage),
        StreamEnd::Failed(_) => ("ERROR", Usage::default()),
    };
    ndjson(json!({
        "is_finished": true,
        "event_type": "stream-end",
        "finish_reason": reason,
        "response": body(reason, &usage),
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
}

impl StreamFormat for ChatStream {
    fn whole(&self, done: &Completion) -> Value {
        self.reply
            .body(&done.text, cohere_finish_reason(done.reason), &done.usage)
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

    fn end(&mut self, end: &StreamEnd) -> String {
        stream_end(end, |reason, usage| {
            self.reply.body(&self.text, reason, usage)
        })
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
        self.body(&done.text, cohere_finish_reason(done.reason), &done.usage)
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
        stream_end(end, |reason, usage| self.body(&self.text, reason, usage))
    }
}
