//! What every text-generation route shares: checking sampling fields against their bounds,
//! building the prompt, queueing it on the model's engine, and either collecting the whole answer
//! or streaming it in the route's wire format. Routes only translate shapes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use enclave_engine::{
    ChatMessage, FinishReason, GenEvent, GenerationStream, SamplingParams, TextGenerator,
};
use futures::stream::{self, Stream};

use enclave_store::{Capability, Units};

use crate::auth::MaybeCaller;
use crate::state::AppState;

use crate::error::{ApiError, Family};
use crate::metering::{Bill, REQUEST_ID};

/// Sampling fields as a request carries them, before validation.
#[derive(Debug, Default, Clone)]
pub struct SamplingInput {
    pub temperature: Option<f64>,
    pub k: Option<i64>,
    pub p: Option<f64>,
    pub seed: Option<u64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub max_tokens: Option<i64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

/// Each API family's documented bounds and defaults.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub temperature_max: f64,
    pub penalty_min: f64,
    pub penalty_max: f64,
    pub default_temperature: f64,
    pub default_p: f64,
    pub max_stops: usize,
    /// Used when the request names no `max_tokens` (None = all remaining context).
    pub default_max_tokens: Option<u32>,
}

pub const COHERE_BOUNDS: Bounds = Bounds {
    temperature_max: 5.0,
    penalty_min: 0.0,
    penalty_max: 1.0,
    default_temperature: 0.3,
    default_p: 0.75,
    max_stops: 5,
    default_max_tokens: None,
};

pub const OPENAI_BOUNDS: Bounds = Bounds {
    temperature_max: 2.0,
    penalty_min: -2.0,
    penalty_max: 2.0,
    default_temperature: 1.0,
    default_p: 1.0,
    max_stops: 4,
    default_max_tokens: None,
};

/// Longest stop sequence accepted, in bytes.
const MAX_STOP_LEN: usize = 256;

fn in_range(family: Family, name: &str, value: f64, min: f64, max: f64) -> Result<f64, ApiError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            family,
            format!("{name} must be between {min} and {max}, got {value}"),
        ))
    }
}

/// A prompt ready for the engine, with what it costs.
pub struct Prepared {
    pub generator: Arc<dyn TextGenerator>,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub usage: Usage,
}

/// Token counts of one call: `billed_input` counts only the caller's text (no template tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub billed_input: u32,
    pub prompt_tokens: u32,
    /// Prompt tokens served from KV kept from an earlier request (not recomputed).
    pub cached_tokens: u32,
    pub completion_tokens: u32,
}

/// Builds the prompt of a chat request through the model's template.
pub fn chat_prompt(
    family: Family,
    generator: &Arc<dyn TextGenerator>,
    messages: &[ChatMessage],
) -> Result<(Vec<u32>, u32), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(family, "messages must not be empty"));
    }
    let rendered = generator
        .render_chat(messages)
        .map_err(|e| ApiError::from_generator(family, e))?;
    let billed = messages
        .iter()
        .map(|m| generator.tokenize(&m.content, false).len() as u32)
        .sum();
    Ok((generator.tokenize(&rendered, true), billed))
}

/// Builds the prompt of a raw completion request (no template).
pub fn raw_prompt(
    family: Family,
    generator: &Arc<dyn TextGenerator>,
    prompt: &str,
) -> Result<(Vec<u32>, u32), ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid(family, "prompt must not be empty"));
    }
    let billed = generator.tokenize(prompt, false).len() as u32;
    Ok((generator.tokenize(prompt, true), billed))
}

/// Validates sampling fields against the family's bounds and the model's context.
pub fn prepare(
    family: Family,
    bounds: Bounds,
    generator: Arc<dyn TextGenerator>,
    (prompt, billed_input): (Vec<u32>, u32),
    input: SamplingInput,
) -> Result<Prepared, ApiError> {
    let context = generator.info().context_per_sequence;
    let prompt_len = prompt.len() as u32;
    if prompt_len >= context {
        return Err(ApiError::bad_request(
            family,
            format!("too many tokens: the prompt has {prompt_len} tokens, the model's context is {context}"),
        ));
    }
    let remaining = context - prompt_len;
    let max_tokens = match input.max_tokens {
        None => bounds.default_max_tokens.unwrap_or(remaining).min(remaining),
        Some(n) if n < 1 => {
            return Err(ApiError::invalid(family, format!("max_tokens must be at least 1, got {n}")))
        }
        Some(n) if n > i64::from(remaining) => {
            return Err(ApiError::bad_request(
                family,
                format!(
                    "too many tokens: max_tokens {n} plus the prompt's {prompt_len} tokens exceeds the model's context of {context} tokens (at most {remaining} left)"
                ),
            ))
        }
        Some(n) => n as u32,
    };
    let temperature = in_range(
        family,
        "temperature",
        input.temperature.unwrap_or(bounds.default_temperature),
        0.0,
        bounds.temperature_max,
    )?;
    let top_p = in_range(
        family,
        "p (top_p)",
        input.p.unwrap_or(bounds.default_p),
        0.0,
        1.0,
    )?;
    let top_k = match input.k.unwrap_or(0) {
        k @ 0..=500 => k as u32,
        k => {
            return Err(ApiError::invalid(
                family,
                format!("k (top_k) must be between 0 and 500, got {k}"),
            ))
        }
    };
    let penalty = |name: &str, v: Option<f64>| {
        in_range(
            family,
            name,
            v.unwrap_or(0.0),
            bounds.penalty_min,
            bounds.penalty_max,
        )
    };
    let frequency_penalty = penalty("frequency_penalty", input.frequency_penalty)?;
    let presence_penalty = penalty("presence_penalty", input.presence_penalty)?;
    if input.stop.len() > bounds.max_stops {
        return Err(ApiError::invalid(
            family,
            format!(
                "at most {} stop sequences are allowed, got {}",
                bounds.max_stops,
                input.stop.len()
            ),
        ));
    }
    if let Some(bad) = input
        .stop
        .iter()
        .find(|s| s.is_empty() || s.len() > MAX_STOP_LEN)
    {
        return Err(ApiError::invalid(
            family,
            format!(
                "stop sequences must be 1 to {MAX_STOP_LEN} bytes long, got {:?}",
                bad
            ),
        ));
    }
    Ok(Prepared {
        generator,
        prompt,
        params: SamplingParams {
            temperature: temperature as f32,
            top_k,
            top_p: top_p as f32,
            seed: input.seed,
            frequency_penalty: frequency_penalty as f32,
            presence_penalty: presence_penalty as f32,
            max_tokens,
            stop: input.stop,
            ignore_eos: input.ignore_eos,
        },
        usage: Usage {
            billed_input,
            prompt_tokens: prompt_len,
            cached_tokens: 0,
            completion_tokens: 0,
        },
    })
}

impl Prepared {
    /// Queues the generation; fails at once (429) when the engine's queue is full.
    pub fn start(self, family: Family) -> Result<(GenerationStream, Usage), ApiError> {
        let stream = self
            .generator
            .submit(self.prompt, self.params)
            .map_err(|e| ApiError::from_generator(family, e))?;
        Ok((stream, self.usage))
    }

    /// Runs the generation to the end and returns the whole answer.
    pub async fn complete(self, family: Family) -> Result<Completion, ApiError> {
        let (mut stream, mut usage) = self.start(family)?;
        let mut text = String::new();
        while let Some(event) = stream.recv().await {
            match event {
                GenEvent::Text { text: piece, .. } => text.push_str(&piece),
                GenEvent::Logits(_) => {}
                GenEvent::Done {
                    reason,
                    completion_tokens,
                    cached_tokens,
                    ..
                } => {
                    usage.completion_tokens = completion_tokens;
                    usage.cached_tokens = cached_tokens;
                    return Ok(Completion {
                        text,
                        reason,
                        usage,
                    });
                }
                GenEvent::Error(message) => {
                    return Err(ApiError::internal(
                        family,
                        format!("generation failed: {message}"),
                    ))
                }
            }
        }
        Err(ApiError::internal(
            family,
            "the engine stopped before finishing",
        ))
    }
}

impl Prepared {
    /// The most this call can bill: its input and every token it may generate.
    pub fn max_units(&self) -> Units {
        billed(&Usage {
            completion_tokens: self.params.max_tokens,
            ..self.usage
        })
    }

    /// Admits the generation for billing under `capability`, then streams the answer in
    /// `format` when `stream`, otherwise waits for it and sends it whole; either way the bill is
    /// settled before the client sees the end.
    pub async fn respond<F: StreamFormat>(
        self,
        state: &AppState,
        caller: &MaybeCaller,
        capability: Capability,
        family: Family,
        stream: bool,
        format: F,
    ) -> Result<Response, ApiError> {
        let model = &self.generator.info().name;
        let bill = Bill::admit(state, caller, family, capability, model, self.max_units()).await?;
        if stream {
            let (generation, usage) = self.start(family)?;
            return Ok(stream_response(
                StreamState {
                    generation,
                    usage,
                    format,
                    bill: Some(bill),
                },
                Phase::Start,
            ));
        }
        let done = self.complete(family).await?;
        let receipt = bill.settle(billed(&done.usage)).await?;
        let mut response = axum::Json(format.whole(&done)).into_response();
        receipt.apply(&mut response);
        Ok(response)
    }
}

/// The meters of a generation: the caller's own input tokens (never the template's) and the
/// generated tokens.
pub fn billed(usage: &Usage) -> Units {
    Units::tokens(
        i64::from(usage.billed_input),
        i64::from(usage.completion_tokens),
    )
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub reason: FinishReason,
    pub usage: Usage,
}

/// How a stream ended.
#[derive(Debug, Clone)]
pub enum StreamEnd {
    Finished { reason: FinishReason, usage: Usage },
    Failed(String),
}

/// One wire format for generations (Cohere v2, v1, OpenAI, ...): the whole answer's JSON body,
/// and the frames of a streamed one.
pub trait StreamFormat: Send + 'static {
    /// The body of a non-streamed answer.
    fn whole(&self, done: &Completion) -> serde_json::Value;
    fn content_type(&self) -> &'static str;
    fn start(&mut self) -> String;
    fn text(&mut self, text: &str) -> String;
    fn end(&mut self, end: &StreamEnd) -> String;
}

/// One SSE frame: an optional `event:` line and a `data:` line.
pub fn sse_frame(event: Option<&str>, data: &str) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

enum Phase {
    Start,
    Streaming,
    Done,
}

/// A streamed generation on its way to the client.
struct StreamState<F> {
    generation: GenerationStream,
    usage: Usage,
    format: F,
    /// Settled at the end; while streaming, dropping it bills what was sent.
    bill: Option<Bill>,
}

impl<F: StreamFormat> StreamState<F> {
    fn note_sent(&mut self, generated: u32) {
        let so_far = Usage {
            completion_tokens: generated,
            ..self.usage
        };
        if let Some(bill) = &mut self.bill {
            bill.bill_on_drop(billed(&so_far));
        }
    }

    /// The last frame: settles the bill first, so the client sees the end only once it is billed.
    async fn finish(&mut self, reason: FinishReason, completion: u32, cached: u32) -> String {
        self.usage.completion_tokens = completion;
        self.usage.cached_tokens = cached;
        let settled = match self.bill.take() {
            Some(bill) => bill.settle(billed(&self.usage)).await.map(|_| ()),
            None => Ok(()),
        };
        match settled {
            Ok(()) => self.format.end(&StreamEnd::Finished {
                reason,
                usage: self.usage,
            }),
            Err(e) => self.format.end(&StreamEnd::Failed(e.message)),
        }
    }

    /// A failed generation bills nothing.
    fn fail(&mut self, message: String) -> String {
        if let Some(mut bill) = self.bill.take() {
            bill.cancel();
        }
        self.format.end(&StreamEnd::Failed(message))
    }
}

/// Turns a running generation into a streamed HTTP response. Dropping the response body (the
/// client went away) drops the receiver, which makes the engine free the sequence.
fn stream_response<F: StreamFormat>(mut state: StreamState<F>, phase: Phase) -> Response {
    let content_type = state.format.content_type();
    let request_id = state
        .bill
        .as_mut()
        .map(|bill| {
            // The prompt was read: from here on, a disconnect bills at least the input.
            bill.bill_on_drop(billed(&state.usage));
            bill.request_id().to_string()
        })
        .unwrap_or_default();
    let body = Body::from_stream(frames(state, phase));
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        if !request_id.is_empty() {
            response.headers_mut().insert(REQUEST_ID, value);
        }
    }
    response
}

fn frames<F: StreamFormat>(
    state: StreamState<F>,
    phase: Phase,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream::unfold((state, phase), |(mut state, phase)| async move {
        let chunk = match phase {
            Phase::Done => return None,
            Phase::Start => {
                let chunk = state.format.start();
                return Some((Ok(Bytes::from(chunk)), (state, Phase::Streaming)));
            }
            Phase::Streaming => match state.generation.recv().await {
                // Generation jobs never carry logits; an empty chunk keeps the stream going.
                Some(GenEvent::Logits(_)) => {
                    return Some((Ok(Bytes::new()), (state, Phase::Streaming)));
                }
                Some(GenEvent::Text { text, generated }) => {
                    let chunk = state.format.text(&text);
                    state.note_sent(generated);
                    return Some((Ok(Bytes::from(chunk)), (state, Phase::Streaming)));
                }
                Some(GenEvent::Done {
                    reason,
                    completion_tokens,
                    cached_tokens,
                    ..
                }) => state.finish(reason, completion_tokens, cached_tokens).await,
                Some(GenEvent::Error(message)) => state.fail(message),
                None => state.fail("the engine stopped".into()),
            },
        };
        Some((Ok(Bytes::from(chunk)), (state, Phase::Done)))
    })
}

/// Cohere's finish reason names.
pub fn cohere_finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Complete => "COMPLETE",
        FinishReason::StopSequence => "STOP_SEQUENCE",
        FinishReason::MaxTokens => "MAX_TOKENS",
    }
}

/// OpenAI's finish reason names.
pub fn openai_finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Complete | FinishReason::StopSequence => "stop",
        FinishReason::MaxTokens => "length",
    }
}
