//! OpenAI's protocol: `POST /v1/chat/completions` and `POST /v1/completions`, JSON or SSE.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::Response;
use enclave_engine::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::MaybeCaller;
use crate::error::{ApiError, Family};
use crate::extract::{ApiJson, OpenAiJson};
use crate::generation::{
    chat_prompt, openai_finish_reason, prepare, raw_prompt, sse_frame, Completion, SamplingInput,
    StreamEnd, StreamFormat, Usage, OPENAI_BOUNDS,
};
use crate::state::AppState;
use enclave_store::Capability;

const FAMILY: Family = Family::OpenAi;
/// OpenAI's documented default for `/v1/completions`.
const COMPLETIONS_DEFAULT_MAX_TOKENS: i64 = 16;

/// `stop`: one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn into_vec(stop: Option<Stop>) -> Vec<String> {
        match stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Message content: a string, a list of typed parts, or null (assistant turns with tool calls).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Option<Content>,
}

fn to_message(message: Message) -> Result<ChatMessage, ApiError> {
    let role = match message.role.as_str() {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        other => {
            return Err(ApiError::invalid(
                FAMILY,
                format!(
                "message role '{other}' is not supported; use system, developer, user or assistant"
            ),
            ))
        }
    };
    let text = match message.content {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for part in parts {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(text)) => out.push_str(&text),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            FAMILY,
                            format!("content part type '{kind}' is not supported"),
                        ))
                    }
                }
            }
            out
        }
    };
    Ok(ChatMessage::new(role, text))
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    n: Option<i64>,
    stop: Option<Stop>,
    seed: Option<u64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    tools: Option<Vec<Value>>,
    logprobs: Option<bool>,
    /// llama.cpp's extension, used by benchmarks to force a fixed answer length.
    ignore_eos: Option<bool>,
}

fn check_n(n: Option<i64>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::invalid(
            FAMILY,
            format!("n must be 1 on this server, got {n}"),
        )),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": usage.cached_tokens },
    })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    check_n(req.n)?;
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid(
            FAMILY,
            "'tools' is not supported by this server yet",
        ));
    }
    if req.logprobs == Some(true) {
        return Err(ApiError::invalid(
            FAMILY,
            "'logprobs' is not supported by this server yet",
        ));
    }
    let generator = state.chat_model(FAMILY, Some(&req.model))?;
    let messages = req
        .messages
        .into_iter()
        .map(to_message)
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = chat_prompt(FAMILY, &generator, &messages)?;
    let prepared = prepare(
        FAMILY,
        OPENAI_BOUNDS,
        generator,
        prompt,
        SamplingInput {
            temperature: req.temperature,
            k: req.top_k,
            p: req.top_p,
            seed: req.seed,
            frequency_penalty: req.frequency_penalty,
            presence_penalty: req.presence_penalty,
            max_tokens: req.max_completion_tokens.or(req.max_tokens),
            stop: Stop::into_vec(req.stop),
            ignore_eos: req.ignore_eos.unwrap_or(false),
        },
    )?;
    let format = OpenAiStream {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        model: req.model,
        created: unix_now(),
        chat: true,
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
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

/// `prompt`: one string, or a list holding exactly one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: String,
    prompt: Prompt,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    n: Option<i64>,
    stop: Option<Stop>,
    seed: Option<u64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    echo: Option<bool>,
    logprobs: Option<i64>,
    ignore_eos: Option<bool>,
}

pub async fn completions(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): OpenAiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    check_n(req.n)?;
    if req.echo == Some(true) || req.logprobs.is_some() {
        return Err(ApiError::invalid(
            FAMILY,
            "'echo' and 'logprobs' are not supported by this server yet",
        ));
    }
    let prompt_text = match req.prompt {
        Prompt::One(text) => text,
        Prompt::Many(mut list) if list.len() == 1 => list.remove(0),
        Prompt::Many(list) => {
            return Err(ApiError::invalid(
                FAMILY,
                format!("prompt must be one string; got a list of {}", list.len()),
            ))
        }
    };
    let generator = state.model(FAMILY, Some(&req.model))?;
    let prompt = raw_prompt(FAMILY, &generator, &prompt_text)?;
    let prepared = prepare(
        FAMILY,
        OPENAI_BOUNDS,
        generator,
        prompt,
        SamplingInput {
            temperature: req.temperature,
            k: req.top_k,
            p: req.top_p,
            seed: req.seed,
            frequency_penalty: req.frequency_penalty,
            presence_penalty: req.presence_penalty,
            max_tokens: Some(req.max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS)),
            stop: Stop::into_vec(req.stop),
            ignore_eos: req.ignore_eos.unwrap_or(false),
        },
    )?;
    let format = OpenAiStream {
        id: format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
        model: req.model,
        created: unix_now(),
        chat: false,
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
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

/// OpenAI SSE chunks for both chat and text completions, ending with `data: [DONE]`.
struct OpenAiStream {
    id: String,
    model: String,
    created: u64,
    chat: bool,
    include_usage: bool,
}

impl OpenAiStream {
    fn chunk(&self, choice: Value, usage: Option<Value>) -> String {
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if let (Some(usage), Some(obj)) = (usage, body.as_object_mut()) {
            obj.insert("usage".into(), usage);
        }
        sse_frame(None, &body.to_string())
    }

    fn delta(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        if self.chat {
            let delta = match (first, text) {
                (true, _) => json!({ "role": "assistant", "content": "" }),
                (false, Some(text)) => json!({ "content": text }),
                (false, None) => json!({}),
            };
            json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
        } else {
            json!({ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish })
        }
    }
}

impl StreamFormat for OpenAiStream {
    fn whole(&self, done: &Completion) -> Value {
        let reason = openai_finish_reason(done.reason);
        let (object, choice) = if self.chat {
            let message = json!({ "role": "assistant", "content": done.text });
            let choice = json!({ "index": 0, "message": message, "logprobs": null, "finish_reason": reason });
            ("chat.completion", choice)
        } else {
            let choice =
                json!({ "index": 0, "text": done.text, "logprobs": null, "finish_reason": reason });
            ("text_completion", choice)
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage_json(&done.usage),
        })
    }

    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn start(&mut self) -> String {
        if self.chat {
            self.chunk(self.delta(None, true, None), None)
        } else {
            String::new()
        }
    }

    fn text(&mut self, text: &str) -> String {
        self.chunk(self.delta(Some(text), false, None), None)
    }

    fn end(&mut self, end: &StreamEnd) -> String {
        let mut out = match end {
            StreamEnd::Finished { reason, usage } => {
                let mut out = self.chunk(self.delta(None, false, Some(openai_finish_reason(*reason))), None);
                if self.include_usage {
                    let object = if self.chat { "chat.completion.chunk" } else { "text_completion" };
                    let body = json!({
                        "id": self.id, "object": object, "created": self.created, "model": self.model,
                        "choices": [], "usage": usage_json(usage),
                    });
                    out.push_str(&sse_frame(None, &body.to_string()));
                }
                out
            }
            StreamEnd::Failed(message) => sse_frame(
                None,
                &json!({ "error": { "message": message, "type": "server_error", "param": null, "code": "500" } })
                    .to_string(),
            ),
        };
        out.push_str(&sse_frame(None, "[DONE]"));
        out
    }
}

/// `input`: one string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    model: String,
    input: EmbeddingInput,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
    user: Option<String>,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): OpenAiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    use crate::embedding::{check_count, embed_billed, to_base64};
    use enclave_engine::encoder::Truncate;

    let texts = match req.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
    };
    check_count(
        FAMILY,
        texts.len(),
        None,
        state.config().max_client_batch_size,
    )?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                FAMILY,
                format!("encoding_format must be float or base64, got {other}"),
            ))
        }
    };
    // `user` is an end-user label for abuse tracking; it is accepted and not stored.
    let _ = req.user;
    let encoder = state.encoder(FAMILY, Some(&req.model))?;
    if let Some(d) = req.dimensions {
        if d != encoder.info().dimensions as i64 {
            return Err(ApiError::invalid(
                FAMILY,
                format!(
                    "dimensions {d} is not offered; {} produces {}",
                    req.model,
                    encoder.info().dimensions
                ),
            ));
        }
    }
    // OpenAI truncates silently at the model's limit; so does this route.
    let (embedded, receipt) =
        embed_billed(&state, &caller, FAMILY, &encoder, texts, Truncate::End).await?;
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                json!(to_base64(v))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(receipt.json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": { "prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens },
    })))
}
