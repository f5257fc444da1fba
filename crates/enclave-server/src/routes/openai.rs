//! OpenAI's protocol: `POST /v1/chat/completions` and `POST /v1/completions`, JSON or SSE.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::Response;
use enclave_engine::ChatMessage;
use enclave_store::Capability;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Call;
use crate::capability::embed::{check_count, embed};
use crate::capability::vectors::to_base64;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::pipeline::{
    generate, openai_finish_reason, sse_frame, Completion, GenerationRequest, JsonFormat, Prompt,
    SamplingInput, StreamEnd, StreamFormat, Structure, Usage, OPENAI_BOUNDS,
};
use crate::routes::tool_shapes::{call_json, calls, specs, FunctionCall, FunctionTool};
use enclave_engine::tools::{ToolCall, ToolChoice, ToolUse};
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
    tool_calls: Option<Vec<FunctionCall>>,
    tool_call_id: Option<String>,
}

fn to_message(message: Message) -> Result<ChatMessage, ApiError> {
    let role = match message.role.as_str() {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" => "tool",
        other => {
            return Err(ApiError::invalid(format!(
                "message role '{other}' is not supported; use system, developer, user, assistant or tool"
            )))
        }
    };
    let tool_calls = calls(message.tool_calls)?;
    if !tool_calls.is_empty() && role != "assistant" {
        return Err(ApiError::invalid(
            "only assistant messages carry tool_calls",
        ));
    }
    let tool_call_id = match (role, message.tool_call_id) {
        ("tool", Some(id)) => Some(id),
        ("tool", None) => return Err(ApiError::invalid("a tool message needs tool_call_id")),
        _ => None,
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
                        return Err(ApiError::invalid(format!(
                            "content part type '{kind}' is not supported"
                        )))
                    }
                }
            }
            out
        }
    };
    let mut message = ChatMessage::new(role, text);
    message.tool_calls = tool_calls;
    message.tool_call_id = tool_call_id;
    Ok(message)
}

/// `tool_choice`: `auto`, `none`, `required`, or `{type: "function", function: {name}}`.
fn tool_choice(choice: Option<Value>) -> Result<ToolChoice, ApiError> {
    match choice {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(ApiError::invalid(format!(
                "tool_choice must be auto, none, required or a named function, got {other}"
            ))),
        },
        Some(Value::Object(obj)) => obj
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|name| ToolChoice::Named(name.to_string()))
            .ok_or_else(|| {
                ApiError::invalid("tool_choice must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}")
            }),
        Some(_) => Err(ApiError::invalid("tool_choice must be a string or an object")),
    }
}

/// `response_format`: `text`, `json_object`, or `json_schema` with `{name, schema, strict}`.
fn response_format(format: Option<Value>) -> Result<Option<JsonFormat>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(JsonFormat::default())),
        Some("json_schema") => {
            let spec = format.get("json_schema").ok_or_else(|| {
                ApiError::invalid("response_format json_schema needs a json_schema object")
            })?;
            let schema = spec.get("schema").filter(|s| !s.is_null()).cloned();
            let strict = spec.get("strict").and_then(Value::as_bool).unwrap_or(false);
            Ok(Some(JsonFormat { schema, strict }))
        }
        _ => Err(ApiError::invalid(
            "response_format type must be text, json_object or json_schema",
        )),
    }
}

/// The sampling fields both OpenAI generation routes carry, flattened into their requests.
#[derive(Debug, Deserialize)]
pub struct OpenAiSampling {
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    n: Option<i64>,
    stop: Option<Stop>,
    seed: Option<u64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    /// llama.cpp's extension, used by benchmarks to force a fixed answer length.
    ignore_eos: Option<bool>,
}

impl OpenAiSampling {
    /// The pipeline's request for `prompt`, and the stream format of the answer.
    fn request(
        self,
        capability: Capability,
        model: String,
        prompt: Prompt,
        max_tokens: Option<i64>,
        structure: Structure,
    ) -> Result<(GenerationRequest, OpenAiStream), ApiError> {
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid(format!(
                "n must be 1 on this server, got {n}"
            )));
        }
        let chat = matches!(prompt, Prompt::Chat(_));
        let format = OpenAiStream {
            id: if chat {
                format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
            } else {
                format!("cmpl-{}", uuid::Uuid::new_v4().simple())
            },
            model: model.clone(),
            created: unix_now(),
            chat,
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        };
        let request = GenerationRequest {
            capability,
            model: Some(model),
            prompt,
            sampling: SamplingInput {
                temperature: self.temperature,
                k: self.top_k,
                p: self.top_p,
                seed: self.seed,
                frequency_penalty: self.frequency_penalty,
                presence_penalty: self.presence_penalty,
                max_tokens,
                stop: Stop::into_vec(self.stop),
                ignore_eos: self.ignore_eos.unwrap_or(false),
            },
            bounds: OPENAI_BOUNDS,
            stream: self.stream == Some(true),
            grounding: None,
            structure,
            safety: None,
            route: if capability == Capability::Chat {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            },
            return_prompt: false,
        };
        Ok((request, format))
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(flatten)]
    sampling: OpenAiSampling,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    tools: Option<Vec<FunctionTool>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<Value>,
    logprobs: Option<bool>,
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
    call: Call,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if req.logprobs == Some(true) {
        return Err(ApiError::invalid(
            "'logprobs' is not supported by this server yet",
        ));
    }
    let messages = req
        .messages
        .into_iter()
        .map(to_message)
        .collect::<Result<Vec<_>, _>>()?;
    let (tools, strict) = specs(req.tools)?;
    let structure = Structure {
        tools: ToolUse {
            tools,
            choice: tool_choice(req.tool_choice)?,
            parallel: req.parallel_tool_calls.unwrap_or(true),
            strict,
        },
        json: response_format(req.response_format)?,
        answered: Vec::new(),
    };
    let (request, format) = req.sampling.request(
        Capability::Chat,
        req.model,
        Prompt::Chat(messages),
        req.max_completion_tokens.or(req.max_tokens),
        structure,
    )?;
    generate(&call, request, format).await
}

/// `prompt`: one string, or a list holding exactly one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: String,
    prompt: PromptField,
    #[serde(flatten)]
    sampling: OpenAiSampling,
    max_tokens: Option<i64>,
    echo: Option<bool>,
    logprobs: Option<i64>,
}

pub async fn completions(
    call: Call,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    if req.echo == Some(true) || req.logprobs.is_some() {
        return Err(ApiError::invalid(
            "'echo' and 'logprobs' are not supported by this server yet",
        ));
    }
    let prompt = match req.prompt {
        PromptField::One(text) => text,
        PromptField::Many(mut list) if list.len() == 1 => list.remove(0),
        PromptField::Many(list) => {
            return Err(ApiError::invalid(format!(
                "prompt must be one string; got a list of {}",
                list.len()
            )))
        }
    };
    let (request, format) = req.sampling.request(
        Capability::Generate,
        req.model,
        Prompt::Text(prompt),
        Some(req.max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS)),
        Structure::default(),
    )?;
    generate(&call, request, format).await
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
            let mut message = json!({ "role": "assistant", "content": done.text });
            if !done.tool_calls.is_empty() {
                if done.text.is_empty() {
                    message["content"] = Value::Null;
                }
                message["tool_calls"] = done.tool_calls.iter().map(call_json).collect();
            }
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

    fn tool_call(&mut self, index: usize, call: &ToolCall) -> String {
        let mut call = call_json(call);
        call["index"] = json!(index);
        let choice = json!({
            "index": 0, "delta": { "tool_calls": [call] }, "logprobs": null, "finish_reason": null,
        });
        self.chunk(choice, None)
    }

    fn end(&mut self, end: &StreamEnd) -> String {
        let mut out = match end {
            StreamEnd::Finished { reason, usage, .. } => {
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
    call: Call,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    use enclave_engine::encoder::Truncate;

    let texts = match req.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
    };
    check_count(texts.len(), None, call.state.config().max_client_batch_size)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "encoding_format must be float or base64, got {other}"
            )))
        }
    };
    // `user` is an end-user label for abuse tracking; it is accepted and not stored.
    let _ = req.user;
    let encoder = call.state.encoder(Some(&req.model))?;
    if let Some(d) = req.dimensions {
        if d != encoder.info().dimensions as i64 {
            return Err(ApiError::invalid(format!(
                "dimensions {d} is not offered; {} produces {}",
                req.model,
                encoder.info().dimensions
            )));
        }
    }
    let model = req.model;
    // OpenAI truncates silently at the model's limit; so does this route.
    embed(&call, &encoder, texts, Truncate::End, move |embedded| {
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
        json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens },
        })
    })
    .await
}
