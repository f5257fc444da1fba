//! Cohere's legacy protocol: `POST /v1/chat` (message, chat_history, preamble; JSON or NDJSON
//! stream) and `POST /v1/generate` (raw prompt completion; JSON or NDJSON stream).

use axum::extract::State;
use axum::response::Response;
use enclave_engine::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::MaybeCaller;
use crate::error::{ApiError, Family};
use crate::extract::{ApiJson, CohereJson};
use crate::generation::{
    chat_prompt, cohere_finish_reason, prepare, raw_prompt, Completion, SamplingInput, StreamEnd,
    StreamFormat, Usage, COHERE_BOUNDS,
};
use crate::routes::cohere_common::{new_id, refuse_unsupported, v1_meta};
use crate::state::AppState;
use enclave_store::Capability;

const FAMILY: Family = Family::Cohere;
/// v1 generate's documented default.
const GENERATE_DEFAULT_MAX_TOKENS: i64 = 256;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    message: String,
    model: Option<String>,
    preamble: Option<String>,
    chat_history: Option<Vec<HistoryEntry>>,
    stream: Option<bool>,
    max_tokens: Option<i64>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f64>,
    seed: Option<u64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    k: Option<i64>,
    p: Option<f64>,
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
            FAMILY,
            "TOOL history entries are not supported by this server yet",
        )),
        _ => Err(ApiError::invalid(
            FAMILY,
            format!("chat_history role must be USER, CHATBOT or SYSTEM, got {role}"),
        )),
    }
}

fn sampling(
    req_temperature: Option<f64>,
    k: Option<i64>,
    p: Option<f64>,
    seed: Option<u64>,
    penalties: (Option<f64>, Option<f64>),
    max_tokens: Option<i64>,
    stop: Option<Vec<String>>,
) -> SamplingInput {
    SamplingInput {
        temperature: req_temperature,
        k,
        p,
        seed,
        frequency_penalty: penalties.0,
        presence_penalty: penalties.1,
        max_tokens,
        stop: stop.unwrap_or_default(),
        ignore_eos: false,
    }
}

pub async fn chat(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): CohereJson<ChatRequest>,
) -> Result<Response, ApiError> {
    refuse_unsupported(
        FAMILY,
        &[
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
        ],
    )?;
    if req.message.trim().is_empty() {
        return Err(ApiError::invalid(FAMILY, "message must not be empty"));
    }
    let generator = state.chat_model(FAMILY, req.model.as_deref())?;
    let mut messages = Vec::new();
    if let Some(preamble) = &req.preamble {
        messages.push(ChatMessage::new("system", preamble.clone()));
    }
    let mut history_out = Vec::new();
    for entry in req.chat_history.unwrap_or_default() {
        let role = history_role(&entry.role)?;
        let text = entry.message.unwrap_or_default();
        history_out.push(json!({ "role": entry.role.to_ascii_uppercase(), "message": text }));
        messages.push(ChatMessage::new(role, text));
    }
    messages.push(ChatMessage::new("user", req.message.clone()));
    let prompt = chat_prompt(FAMILY, &generator, &messages)?;
    let prepared = prepare(
        FAMILY,
        COHERE_BOUNDS,
        generator,
        prompt,
        sampling(
            req.temperature,
            req.k,
            req.p,
            req.seed,
            (req.frequency_penalty, req.presence_penalty),
            req.max_tokens,
            req.stop_sequences,
        ),
    )?;
    history_out.push(json!({ "role": "USER", "message": req.message }));
    let reply = ChatReply {
        generation_id: new_id(),
        response_id: new_id(),
        history: history_out,
    };
    let format = ChatStream {
        reply,
        text: String::new(),
    };
    prepared
        .respond(
            &state,
            &caller,
            Capability::Chat,
            FAMILY,
            req.stream == Some(true),
            format,
        )
        .await
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
        let (reason, usage) = match end {
            StreamEnd::Finished { reason, usage } => (cohere_finish_reason(*reason), *usage),
            StreamEnd::Failed(_) => ("ERROR", Usage::default()),
        };
        ndjson(json!({
            "is_finished": true,
            "event_type": "stream-end",
            "finish_reason": reason,
            "response": self.reply.body(&self.text, reason, &usage),
        }))
    }
}

#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    prompt: String,
    model: Option<String>,
    stream: Option<bool>,
    num_generations: Option<i64>,
    max_tokens: Option<i64>,
    stop_sequences: Option<Vec<String>>,
    end_sequences: Option<Vec<String>>,
    temperature: Option<f64>,
    seed: Option<u64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    k: Option<i64>,
    p: Option<f64>,
    return_likelihoods: Option<String>,
    raw_prompting: Option<bool>,
}

pub async fn generate(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): CohereJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    if req.num_generations.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            FAMILY,
            "num_generations must be 1 on this server",
        ));
    }
    refuse_unsupported(
        FAMILY,
        &[(
            "return_likelihoods",
            req.return_likelihoods
                .as_deref()
                .is_some_and(|r| r != "NONE"),
        )],
    )?;
    // Generate never applies a chat template, so `raw_prompting` changes nothing here.
    let _ = req.raw_prompting;
    let generator = state.model(FAMILY, req.model.as_deref())?;
    let prompt = raw_prompt(FAMILY, &generator, &req.prompt)?;
    // end_sequences are stop sequences whose text is also cut; both end generation here.
    let mut stops = req.stop_sequences.unwrap_or_default();
    stops.extend(req.end_sequences.unwrap_or_default());
    let prepared = prepare(
        FAMILY,
        COHERE_BOUNDS,
        generator,
        prompt,
        sampling(
            req.temperature,
            req.k,
            req.p,
            req.seed,
            (req.frequency_penalty, req.presence_penalty),
            Some(req.max_tokens.unwrap_or(GENERATE_DEFAULT_MAX_TOKENS)),
            Some(stops),
        ),
    )?;
    let format = GenerateStream {
        id: new_id(),
        prompt: req.prompt,
        text: String::new(),
    };
    prepared
        .respond(
            &state,
            &caller,
            Capability::Generate,
            FAMILY,
            req.stream == Some(true),
            format,
        )
        .await
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
        let (reason, usage) = match end {
            StreamEnd::Finished { reason, usage } => (cohere_finish_reason(*reason), *usage),
            StreamEnd::Failed(_) => ("ERROR", Usage::default()),
        };
        ndjson(json!({
            "is_finished": true,
            "event_type": "stream-end",
            "finish_reason": reason,
            "response": self.body(&self.text, reason, &usage),
        }))
    }
}
