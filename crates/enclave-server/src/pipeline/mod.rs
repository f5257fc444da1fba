//! The one generation pipeline. Each wire family (Cohere v2 chat, v1 chat, v1 generate, OpenAI
//! chat and completions) maps its JSON to a [`GenerationRequest`] and a [`StreamFormat`];
//! [`generate`] runs every request the same way: bounds and size checks → admission (scopes,
//! Idempotency-Key, budget, rate) → tokenizing off the async runtime → engine → settlement →
//! rendering, whole or streamed. A new request field is one change here plus each family's
//! mapping.

pub mod grounding;
pub mod sampling;
pub mod streaming;
pub mod tools;

use std::sync::Arc;

use axum::response::Response;
use enclave_engine::tools::{ToolCall, ToolChoice, ToolSpec};
use enclave_engine::{
    ChatMessage, Constraint, FinishReason, GenEvent, GenerationStream, SamplingParams,
    TextGenerator,
};
use enclave_store::{Capability, Units};

use crate::auth::Call;
use crate::billing::{Admission, Bill};
use crate::error::ApiError;
use crate::guard::{self, OutputGuard, SafetyMode};
pub use grounding::{CitationMode, DocumentInput, GroundedAnswer, GroundingRequest};
pub use sampling::{Bounds, SamplingInput, COHERE_BOUNDS, OPENAI_BOUNDS};
pub use streaming::{sse_frame, StreamEnd, StreamFormat};
pub use tools::{JsonFormat, Structure};

/// Bytes of prompt text one token may stand for, at most, when a prompt is sized before it is
/// tokenized: a prompt larger than the context times this cannot fit and is refused unread.
const MAX_BYTES_PER_TOKEN: usize = 32;

/// What the caller wants generated from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Messages rendered through the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, no template.
    Text(String),
}

impl Prompt {
    /// Bytes of the caller's own text, and an upper bound on the tokens it can become.
    fn size(&self) -> (usize, usize) {
        match self {
            Prompt::Chat(messages) => {
                let bytes: usize = messages
                    .iter()
                    .map(|m| {
                        m.content.len()
                            + m.tool_calls
                                .iter()
                                .map(|c| c.name.len() + c.arguments.len())
                                .sum::<usize>()
                    })
                    .sum();
                (bytes, bytes + messages.len())
            }
            Prompt::Text(text) => (text.len(), text.len() + 1),
        }
    }

    /// Refuses an empty prompt, and one whose bytes cannot fit `context` tokens (unread);
    /// returns the upper bound on its tokens.
    fn check_size(&self, context: u32, extra_bytes: usize) -> Result<usize, ApiError> {
        match self {
            Prompt::Chat(m) if m.is_empty() => Err(ApiError::invalid("messages must not be empty")),
            Prompt::Text(t) if t.is_empty() => Err(ApiError::invalid("prompt must not be empty")),
            _ => Ok(()),
        }?;
        let (bytes, max_tokens) = self.size();
        let (bytes, max_tokens) = (bytes + extra_bytes, max_tokens + extra_bytes);
        if bytes > context as usize * MAX_BYTES_PER_TOKEN {
            return Err(ApiError::bad_request(format!(
                "too many tokens: the prompt's {bytes} bytes cannot fit the model's context of {context} tokens"
            )));
        }
        Ok(max_tokens)
    }
}

/// One generation as every wire family describes it.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// `Chat` or `Generate`: what the call is billed as.
    pub capability: Capability,
    /// `None`: the default model.
    pub model: Option<String>,
    pub prompt: Prompt,
    pub sampling: SamplingInput,
    /// The family's documented sampling bounds.
    pub bounds: Bounds,
    pub stream: bool,
    /// Documents to answer from (chat only); the answer is checked and cited against them.
    pub grounding: Option<GroundingRequest>,
    /// Tools the model may call, or the JSON shape of the answer (chat only).
    pub structure: Structure,
    /// Cohere's `safety_mode` (the default where the family has none); `Some` when the caller
    /// named one, which then also puts its safety instruction into the prompt.
    pub safety: Option<SafetyMode>,
    /// The route, as the audit trail names it (`/v2/chat`).
    pub route: &'static str,
    /// Return the prompt as the model read it (whole answers only).
    pub return_prompt: bool,
}

impl GenerationRequest {
    /// The safety mode the call runs under: the one named (the default without), forced to
    /// CONTEXTUAL with documents or tools, as on the hosted platform.
    fn safety_mode(&self) -> SafetyMode {
        self.safety
            .unwrap_or_default()
            .forced(!self.structure.is_free() || self.grounding.is_some())
    }
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

impl Usage {
    pub fn add(&mut self, part: Usage) {
        self.billed_input += part.billed_input;
        self.prompt_tokens += part.prompt_tokens;
        self.cached_tokens += part.cached_tokens;
        self.completion_tokens += part.completion_tokens;
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
    /// The check of a grounded answer against its documents.
    pub grounding: Option<Arc<GroundedAnswer>>,
    /// Calls the model made (`text` is then the plan it wrote before them).
    pub tool_calls: Vec<ToolCall>,
    /// The prompt as the model read it, when the caller asked for it (Cohere v1
    /// `return_prompt`): after redaction, so it shows what the model saw.
    pub prompt: Option<String>,
}

/// Runs one generation request and renders it in `format`.
pub async fn generate<F: StreamFormat>(
    call: &Call,
    mut request: GenerationRequest,
    format: F,
) -> Result<Response, ApiError> {
    let state = &call.state;
    if let Prompt::Chat(messages) = &request.prompt {
        tools::check_history(messages)?;
        request.structure.answered = tools::answered_calls(messages);
    } else if !request.structure.is_free() {
        return Err(ApiError::invalid("tools and response_format need a chat"));
    }
    request.structure.check()?;
    let generator = match &request.prompt {
        Prompt::Chat(_) => state.chat_model(request.model.as_deref())?,
        Prompt::Text(_) => state.model(request.model.as_deref())?,
    };
    let sampling = request.sampling.clone().check(request.bounds)?;
    let context = generator.info().context_per_sequence;
    // Sized and scoped before the guard reads it: an oversized prompt, or a key that may not
    // use this model, costs no checking.
    let documents: usize = request.grounding.as_ref().map_or(0, |g| {
        g.documents.iter().map(|d| d.passage.text.len()).sum()
    });
    request
        .prompt
        .check_size(context, request.structure.bytes() + documents)?;
    crate::billing::check_scopes(call, request.capability, &generator.info().name)?;
    let output_guard = guard_input(call, &mut request).await?;
    if let Some(grounding) = &request.grounding {
        request.prompt = match request.prompt {
            Prompt::Chat(messages) => Prompt::Chat(grounding.ground(messages)),
            Prompt::Text(_) => {
                return Err(ApiError::invalid("documents can only ground a chat"));
            }
        };
    }
    let safety_words = request
        .safety
        .and_then(|_| request.safety_mode().instruction());
    if let (Some(words), Prompt::Chat(messages)) = (safety_words, &mut request.prompt) {
        guard::add_instruction(messages, words);
    }
    let max_input = request
        .prompt
        .check_size(context, request.structure.bytes())?;
    let max_output = sampling.max_tokens.map_or(context, |n| n.min(context));
    let max = Units::tokens(
        max_input.min(context as usize) as i64,
        i64::from(max_output),
    );
    let model = generator.info().name.clone();
    let bill = match Bill::admit(call, request.capability, &model, max).await? {
        Admission::Replay(response) => return Ok(response),
        Admission::Run(bill) => bill,
    };
    let constraint = request.structure.constraint();
    // Where the model may answer in text, a call to a tool it invents is answered again as text.
    let fallback = (request.structure.tools.choice == ToolChoice::Auto)
        .then(|| request.structure.text_only().constraint())
        .flatten();
    let offered = request.structure.tools.offered().to_vec();
    let constraints = constraint.iter().chain(fallback.iter()).cloned().collect();
    // The retry's prompt shows no tools: shown them, small models describe the call in words.
    let retry_prompt = fallback.as_ref().map(|_| request.prompt.clone());
    let (prompt, mut billed_input, retry_prompt) = prepare(
        &generator,
        request.prompt,
        offered,
        constraints,
        retry_prompt,
    )
    .await?;
    if request
        .grounding
        .as_ref()
        .is_some_and(GroundingRequest::prompts)
    {
        // The grounding rules are the server's words: the caller pays for its documents only.
        let rules = generator
            .tokenize(&enclave_rag::grounding_rules(), false)
            .len() as u32;
        billed_input = billed_input.saturating_sub(rules);
    }
    if let Some(words) = safety_words {
        // So is the safety instruction.
        billed_input = billed_input.saturating_sub(generator.tokenize(words, false).len() as u32);
    }
    let prompt_tokens = prompt.len() as u32;
    let prompt_text = if request.return_prompt && !request.stream {
        let ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        Some(generator.detokenize(&ids).map_err(ApiError::from)?)
    } else {
        None
    };
    let mut params = sampling.fit(prompt_tokens, context)?;
    let retry = fallback.zip(retry_prompt).map(|(c, retry_prompt)| Retry {
        generator: Arc::clone(&generator),
        prompt: retry_prompt,
        params: SamplingParams {
            constraint: Some(c),
            ..params.clone()
        },
    });
    params.constraint = constraint;
    let usage = Usage {
        billed_input,
        prompt_tokens,
        ..Usage::default()
    };
    let generation = generator.submit(prompt, params)?;
    let checking = request.grounding.map(|request| {
        Box::new(grounding::Checking {
            checker: request.checker(state),
            request,
        })
    });
    if request.stream {
        let longest = state.config().longest_stream;
        let outgoing = streaming::Outgoing {
            checking,
            structure: request.structure,
            retry,
            guard: output_guard,
        };
        return Ok(streaming::respond(
            generation, usage, format, bill, longest, outgoing,
        ));
    }
    let mut done = collect(generation, usage).await?;
    let mut shaped = request
        .structure
        .finish(std::mem::take(&mut done.text), done.reason)?;
    if let (true, Some(retry)) = (shaped.invented, &retry) {
        // The invented call is the server's own miss: only the answer given is billed.
        done = collect(retry.submit()?, usage).await?;
        shaped = request
            .structure
            .text_only()
            .finish(std::mem::take(&mut done.text), done.reason)?;
    }
    done.text = shaped.text;
    done.reason = shaped.reason;
    done.tool_calls = shaped.calls;
    done.prompt = prompt_text;
    let mut output_guard = output_guard;
    if let Some(guard) = &mut output_guard {
        guard_whole(guard, &mut done);
    }
    if let Some(checking) = checking.filter(|_| done.tool_calls.is_empty()) {
        let (checking, text) = checking.whole(std::mem::take(&mut done.text)).await?;
        done.text = text;
        done.grounding = Some(Arc::new(checking.answer()));
    }
    let settled = bill.settle(billed(&done.usage)).await?;
    if let Some(guard) = &mut output_guard {
        guard.record().await;
    }
    Ok(settled.json(&format.whole(&done)).await)
}

/// The input checks of the caller's policy (before the engine sees anything; redacting the
/// prompt and documents in place), and the output side of the policy for the answer.
async fn guard_input(
    call: &Call,
    request: &mut GenerationRequest,
) -> Result<Option<OutputGuard>, ApiError> {
    let effective = guard::effective(call, request.safety_mode()).await?;
    let checked = guard::check_input(
        call,
        &effective,
        request.route,
        &mut request.prompt,
        &mut request.grounding,
    )
    .await?;
    Ok(OutputGuard::new(effective, checked, call.state.clone()))
}

/// A whole answer through the output checks: calls the policy stops are withdrawn, and text
/// is cut before a blocked value (redacted values replaced); either ends it as `Blocked`.
fn guard_whole(guard: &mut OutputGuard, done: &mut Completion) {
    if let Some(stopped) = done.tool_calls.iter_mut().find_map(|c| guard.call(c).err()) {
        tracing::info!("{}", stopped.0);
        done.tool_calls.clear();
        done.reason = FinishReason::Blocked;
    }
    let (text, blocked) = guard.whole(&done.text);
    done.text = text;
    if let Some(blocked) = blocked {
        tracing::info!("{}", blocked.0);
        done.reason = FinishReason::Blocked;
    }
}

/// The prompt's tokens and how many of them are the caller's own text (tool definitions and
/// results included), and the tokens of the text-only retry's prompt; with grammars to compile,
/// all of it is done in one hop off the async runtime (CPU work its workers must not do).
async fn prepare(
    generator: &Arc<dyn TextGenerator>,
    prompt: Prompt,
    tools: Vec<ToolSpec>,
    constraints: Vec<Constraint>,
    retry_prompt: Option<Prompt>,
) -> Result<(Vec<u32>, u32, Option<Vec<u32>>), ApiError> {
    if constraints.is_empty() && retry_prompt.is_none() {
        let (tokens, billed) = tokenize_with(generator, prompt, tools).await?;
        return Ok((tokens, billed, None));
    }
    let generator = Arc::clone(generator);
    crate::blocking::off_runtime(move || {
        for constraint in &constraints {
            generator.prepare(constraint)?;
        }
        let (tokens, billed) = prompt_tokens(generator.as_ref(), prompt, &tools)?;
        let retry = retry_prompt
            .map(|p| prompt_tokens(generator.as_ref(), p, &[]).map(|(tokens, _)| tokens))
            .transpose()?;
        Ok((tokens, billed, retry))
    })
    .await?
}

/// The second try of an answer that called a tool that was not declared (or repeated a call
/// already answered): the chat without the tools shown, generated as text.
pub struct Retry {
    generator: Arc<dyn TextGenerator>,
    prompt: Vec<u32>,
    params: SamplingParams,
}

impl Retry {
    pub fn submit(&self) -> Result<GenerationStream, ApiError> {
        self.generator
            .submit(self.prompt.clone(), self.params.clone())
            .map_err(ApiError::from)
    }
}

/// The prompt's tokens and how many of them are the caller's own text, computed on a blocking
/// thread (tokenizing a large prompt is CPU work the async workers must not do).
pub async fn tokenize(
    generator: &Arc<dyn TextGenerator>,
    prompt: Prompt,
) -> Result<(Vec<u32>, u32), ApiError> {
    tokenize_with(generator, prompt, Vec::new()).await
}

async fn tokenize_with(
    generator: &Arc<dyn TextGenerator>,
    prompt: Prompt,
    tools: Vec<ToolSpec>,
) -> Result<(Vec<u32>, u32), ApiError> {
    let generator = Arc::clone(generator);
    let (bytes, _) = prompt.size();
    crate::blocking::off_runtime_if_large(bytes, move || {
        prompt_tokens(generator.as_ref(), prompt, &tools)
    })
    .await?
}

/// The prompt's tokens and how many of them are the caller's own text (on the calling thread).
fn prompt_tokens(
    generator: &dyn TextGenerator,
    prompt: Prompt,
    tools: &[ToolSpec],
) -> Result<(Vec<u32>, u32), ApiError> {
    match prompt {
        Prompt::Chat(messages) => generator
            .chat_tokens(&messages, tools)
            .map(|chat| (chat.tokens, chat.content_tokens))
            .map_err(ApiError::from),
        Prompt::Text(text) => {
            let billed = generator.tokenize(&text, false).len() as u32;
            Ok((generator.tokenize(&text, true), billed))
        }
    }
}

/// Waits for a generation to finish and returns the whole answer.
pub async fn collect(
    mut generation: GenerationStream,
    mut usage: Usage,
) -> Result<Completion, ApiError> {
    let mut text = String::new();
    while let Some(event) = generation.recv().await {
        match event {
            GenEvent::Text { text: piece, .. } => text.push_str(&piece),
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
                    grounding: None,
                    tool_calls: Vec::new(),
                    prompt: None,
                });
            }
            GenEvent::Error(message) => {
                return Err(ApiError::internal(format!("generation failed: {message}")))
            }
        }
    }
    Err(ApiError::internal("the engine stopped before finishing"))
}

/// Cohere's finish reason names.
pub fn cohere_finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Complete => "COMPLETE",
        FinishReason::StopSequence => "STOP_SEQUENCE",
        FinishReason::MaxTokens => "MAX_TOKENS",
        FinishReason::ToolCalls => "TOOL_CALL",
        // v2's documented reasons have no content-filter value; v1 uses `ERROR_TOXIC`.
        FinishReason::Blocked => "ERROR",
    }
}

/// Cohere v1's finish reason names (`ERROR_TOXIC` for an answer a policy stopped).
pub fn cohere_v1_finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Blocked => "ERROR_TOXIC",
        other => cohere_finish_reason(other),
    }
}

/// OpenAI's finish reason names.
pub fn openai_finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Complete | FinishReason::StopSequence => "stop",
        FinishReason::MaxTokens => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Blocked => "content_filter",
    }
}
