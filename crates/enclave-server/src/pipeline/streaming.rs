//! Streamed generations: each wire family's frames behind [`StreamFormat`], and one loop that
//! sends them, keeps the bill current while text flows, settles it before the last frame, and
//! records what was sent for retries under an Idempotency-Key.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use enclave_engine::tools::ToolCall;
use enclave_engine::{FinishReason, GenEvent, GenerationStream};
use enclave_rag::{Checked, Citation, SourceDocument};
use futures::stream::{self, Stream};
use tokio::time::Instant;

use super::grounding::{Checking, GroundedAnswer};
use super::tools::{check_streamed_json, CallStream, Streamed, Structure};
use super::{billed, Completion, Retry, Usage};
use crate::billing::{Bill, REQUEST_ID};
use crate::guard::output::{Blocked, OutputGuard};

/// How a stream ended.
#[derive(Debug, Clone)]
pub enum StreamEnd {
    Finished {
        reason: FinishReason,
        usage: Usage,
        /// The check of a grounded answer.
        grounding: Option<Arc<GroundedAnswer>>,
    },
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
    /// Text the model wrote before its tool calls (a plan); formats without plans send it as
    /// text.
    fn plan(&mut self, text: &str) -> String {
        self.text(text)
    }
    /// One tool call, whole; `index` counts the answer's calls from 0. Formats without tools
    /// send nothing.
    fn tool_call(&mut self, _index: usize, _call: &ToolCall) -> String {
        String::new()
    }
    /// A citation of text already sent; `index` counts the stream's citations from 0. Formats
    /// without citations send nothing.
    fn citation(
        &mut self,
        _index: usize,
        _citation: &Citation,
        _documents: &[SourceDocument],
    ) -> String {
        String::new()
    }
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
struct Sending<F> {
    generation: GenerationStream,
    usage: Usage,
    generated: u32,
    format: F,
    /// Settled at the end; while streaming, dropping it bills what was sent.
    bill: Option<Bill>,
    /// When the stream is cut short, so it never outlives its budget hold.
    deadline: Instant,
    /// A grounded answer's check; `None` while it is being fed or for plain chats.
    checking: Option<Box<Checking>>,
    /// Citations sent so far.
    citations: usize,
    /// Tool calls sent so far.
    tool_calls: usize,
    /// The shape the answer must take.
    structure: Structure,
    /// Reads calls out of the answer when tools are offered.
    calls: Option<CallStream>,
    /// A JSON answer so far (checked whole at the end).
    json: String,
    /// Asks again for text when the model calls a tool that was not declared.
    retry: Option<Retry>,
    /// The generation was just replaced by its text-only retry.
    restarted: bool,
    /// The caller's policy on the answer's text and calls.
    guard: Option<OutputGuard>,
    /// Set when the policy stopped the answer: it ends as `Blocked` after what was sent.
    blocked: Option<Blocked>,
}

impl<F: StreamFormat> Sending<F> {
    fn sent(&mut self, frame: &str, generated: u32) {
        self.generated = generated;
        let so_far = Usage {
            completion_tokens: generated,
            ..self.usage
        };
        if let Some(bill) = &mut self.bill {
            bill.bill_on_drop(billed(&so_far));
            bill.note_sent(frame);
        }
    }

    /// The last frame: settles the bill first, so the client sees the end only once it is
    /// billed, then stores everything sent for retries under the call's Idempotency-Key.
    async fn finish(&mut self, reason: FinishReason, completion: u32, cached: u32) -> String {
        self.usage.completion_tokens = completion;
        self.usage.cached_tokens = cached;
        // Text the guard still holds goes out (checked) before the end, unless it blocks.
        let mut reason = reason;
        let mut held = String::new();
        if let Some(guard) = self
            .guard
            .as_mut()
            .filter(|_| reason != FinishReason::Blocked)
        {
            match guard.finish() {
                Ok(text) if !text.is_empty() => match self.checked_text(text).await {
                    Ok(frames) => held = frames,
                    Err(message) => return self.fail(message),
                },
                Ok(_) => {}
                Err(blocked) => {
                    tracing::info!("{}", blocked.0);
                    reason = FinishReason::Blocked;
                }
            }
        }
        if let Some(guard) = self.guard.as_mut() {
            guard.record().await;
        }
        if reason == FinishReason::Complete {
            if let Err(e) = check_streamed_json(&self.structure, &self.json) {
                return self.fail(e.message);
            }
        }
        // The rest of a grounded answer (its last unit and citations) goes out before the end.
        let (rest, grounding) = match self.checking.take() {
            Some(checking) => match checking.feed(None).await {
                Ok((checking, out)) => {
                    self.checking = Some(checking);
                    let rest = self.render(out);
                    let answer = self.checking.as_ref().map(|c| Arc::new(c.answer()));
                    (rest, answer)
                }
                Err(e) => return self.fail(e.message),
            },
            None => (String::new(), None),
        };
        let rest = held + &rest;
        let finished = StreamEnd::Finished {
            reason,
            usage: self.usage,
            grounding,
        };
        let Some(bill) = self.bill.take() else {
            return rest + &self.format.end(&finished);
        };
        match bill.settle(billed(&self.usage)).await {
            Ok(mut settled) => {
                let end = rest + &self.format.end(&finished);
                let mut transcript = settled.take_transcript();
                transcript.push_str(&end);
                settled.keep(self.format.content_type(), transcript).await;
                end
            }
            Err(e) => self.format.end(&StreamEnd::Failed(e.message)),
        }
    }

    /// Frames for checked output: text, and citations where the caller wants them.
    fn render(&mut self, out: Vec<Checked>) -> String {
        let cite = self
            .checking
            .as_ref()
            .is_none_or(|c| c.request.citations != super::CitationMode::Off);
        let mut frames = String::new();
        for piece in out {
            match piece {
                Checked::Text(text) => frames.push_str(&self.format.text(&text)),
                Checked::Cite(citation) if cite => {
                    let documents = self.documents();
                    frames.push_str(&self.format.citation(self.citations, &citation, &documents));
                    self.citations += 1;
                }
                Checked::Cite(_) => {}
            }
        }
        frames
    }

    fn documents(&self) -> Arc<Vec<SourceDocument>> {
        self.checking
            .as_ref()
            .map(|c| Arc::clone(&c.request.documents))
            .unwrap_or_default()
    }

    /// The end of the generated text: the calls still held (bare calls are read whole here),
    /// and the finish reason they make. Sets `restarted` when the answer is asked again as text.
    async fn flush_calls(
        &mut self,
        reason: FinishReason,
    ) -> Result<(String, FinishReason), String> {
        let Some(mut calls) = self.calls.take() else {
            return Ok((String::new(), reason));
        };
        let out = calls.finish(&self.structure).map_err(|e| e.message)?;
        let frames = self.streamed(out).await?;
        Ok((frames, calls.finish_reason(reason)))
    }

    /// The frames for a piece of generated text: read for tool calls when tools are offered,
    /// then as is or through the grounded answer's check.
    async fn text(&mut self, text: String) -> Result<String, String> {
        if self.structure.json.is_some() {
            self.json.push_str(&text);
        }
        let Some(mut calls) = self.calls.take() else {
            return self.answer_text(text).await;
        };
        let out = calls.push(&self.structure, &text);
        self.calls = Some(calls);
        self.streamed(out.map_err(|e| e.message)?).await
    }

    /// Frames for what the call reader let through.
    async fn streamed(&mut self, out: Vec<Streamed>) -> Result<String, String> {
        let mut frames = String::new();
        for piece in out {
            if self.blocked.is_some() {
                break;
            }
            match piece {
                Streamed::Text(text) => frames.push_str(&self.answer_text(text).await?),
                Streamed::Plan(text) => {
                    // A plan is answer text too: it passes the policy's scanner.
                    if let Some(text) = self.guarded(&text, false) {
                        frames.push_str(&self.format.plan(&text));
                    }
                }
                Streamed::Call(mut call) => {
                    // The plan's held text goes out before the call, checked.
                    if let Some(rest) = self.guarded("", true) {
                        frames.push_str(&self.format.plan(&rest));
                    }
                    if self.blocked.is_some() {
                        break;
                    }
                    if let Some(Err(blocked)) = self.guard.as_mut().map(|g| g.call(&mut call)) {
                        // The call is never sent as one to execute; the answer ends here.
                        tracing::info!("{}", blocked.0);
                        self.blocked = Some(blocked);
                        break;
                    }
                    frames.push_str(&self.format.tool_call(self.tool_calls, &call));
                    self.tool_calls += 1;
                }
                Streamed::Invented => {
                    // Nothing of this answer was sent: the text answer takes its place.
                    let retry = self
                        .retry
                        .take()
                        .ok_or("the model called an undeclared tool")?;
                    self.generation = retry.submit().map_err(|e| e.message)?;
                    self.structure = self.structure.text_only();
                    self.calls = None;
                    self.restarted = true;
                    break;
                }
            }
        }
        Ok(frames)
    }

    /// Text through the policy's hold-back scanner (`flush`: everything it holds): what may be
    /// sent now, `None` when nothing may (held, or blocked — then `blocked` is set).
    fn guarded(&mut self, text: &str, flush: bool) -> Option<String> {
        let Some(guard) = self.guard.as_mut() else {
            return (!text.is_empty()).then(|| text.to_string());
        };
        let step = if flush {
            guard.finish()
        } else {
            guard.push(text)
        };
        match step {
            Ok(text) => (!text.is_empty()).then_some(text),
            Err(blocked) => {
                tracing::info!("{}", blocked.0);
                self.blocked = Some(blocked);
                None
            }
        }
    }

    /// Answer text through the policy's hold-back scanner, then on as checked text.
    async fn answer_text(&mut self, text: String) -> Result<String, String> {
        match self.guarded(&text, false) {
            Some(text) => self.checked_text(text).await,
            None => Ok(String::new()),
        }
    }

    /// Text the policy let through, as is or through the grounded answer's check.
    async fn checked_text(&mut self, text: String) -> Result<String, String> {
        let Some(checking) = self.checking.take() else {
            return Ok(self.format.text(&text));
        };
        let (checking, out) = checking.feed(Some(text)).await.map_err(|e| e.message)?;
        self.checking = Some(checking);
        Ok(self.render(out))
    }

    /// A failed generation bills nothing.
    fn fail(&mut self, message: String) -> String {
        drop(self.bill.take());
        self.format.end(&StreamEnd::Failed(message))
    }
}

/// What happens to a streamed answer on its way out: the grounded answer's check, the shape it
/// must take (tool calls, JSON), and the text-only retry after an invented or repeated call.
pub struct Outgoing {
    pub checking: Option<Box<Checking>>,
    pub structure: Structure,
    pub retry: Option<Retry>,
    pub guard: Option<OutputGuard>,
}

/// Turns a running generation into a streamed HTTP response. Dropping the response body (the
/// client went away) drops the receiver, which makes the engine free the sequence. A stream
/// still running after `longest` ends as if it reached its token limit, billed for what it sent.
pub fn respond<F: StreamFormat>(
    generation: GenerationStream,
    usage: Usage,
    format: F,
    mut bill: Bill,
    longest: Duration,
    outgoing: Outgoing,
) -> Response {
    let content_type = format.content_type();
    // The prompt was read: from here on, a disconnect bills at least the input.
    bill.bill_on_drop(billed(&usage));
    bill.stream_as(content_type);
    let request_id = bill.request_id().to_string();
    let sending = Sending {
        generation,
        usage,
        generated: 0,
        format,
        bill: Some(bill),
        deadline: Instant::now() + longest,
        checking: outgoing.checking,
        citations: 0,
        tool_calls: 0,
        calls: outgoing.structure.stream(),
        structure: outgoing.structure,
        json: String::new(),
        retry: outgoing.retry,
        restarted: false,
        guard: outgoing.guard,
        blocked: None,
    };
    let body = Body::from_stream(frames(sending));
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

fn frames<F: StreamFormat>(sending: Sending<F>) -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream::unfold((sending, Phase::Start), |(mut s, phase)| async move {
        let chunk = match phase {
            Phase::Done => return None,
            Phase::Start => {
                let chunk = s.format.start();
                s.sent(&chunk, 0);
                return Some((Ok(Bytes::from(chunk)), (s, Phase::Streaming)));
            }
            Phase::Streaming => loop {
                match tokio::time::timeout_at(s.deadline, s.generation.recv()).await {
                    Ok(Some(GenEvent::Text { text, generated })) => {
                        let chunk = match s.text(text).await {
                            Ok(chunk) => chunk,
                            Err(message) => break s.fail(message),
                        };
                        // A retry started here reads on in the loop like any generation.
                        s.restarted = false;
                        if s.blocked.is_some() {
                            // Dropping the generation (with the stream) stops the engine.
                            let end = s.finish(FinishReason::Blocked, generated, 0).await;
                            break chunk + &end;
                        }
                        s.sent(&chunk, generated);
                        // Text held back for checking sends nothing yet.
                        if chunk.is_empty() {
                            continue;
                        }
                        return Some((Ok(Bytes::from(chunk)), (s, Phase::Streaming)));
                    }
                    Ok(Some(GenEvent::Done {
                        reason,
                        completion_tokens,
                        cached_tokens,
                        ..
                    })) => {
                        let (held, reason) = match s.flush_calls(reason).await {
                            Ok(flushed) => flushed,
                            Err(message) => break s.fail(message),
                        };
                        if std::mem::take(&mut s.restarted) {
                            // The text-only retry is running: keep reading it.
                            if held.is_empty() {
                                continue;
                            }
                            return Some((Ok(Bytes::from(held)), (s, Phase::Streaming)));
                        }
                        let reason = if s.blocked.take().is_some() {
                            FinishReason::Blocked
                        } else {
                            reason
                        };
                        break held + &s.finish(reason, completion_tokens, cached_tokens).await;
                    }
                    Ok(Some(GenEvent::Error(message))) => {
                        tracing::error!("generation failed mid-stream: {message}");
                        break s.fail("generation failed".into());
                    }
                    Ok(None) => break s.fail("the engine stopped".into()),
                    Err(_) => {
                        let generated = s.generated;
                        break s.finish(FinishReason::MaxTokens, generated, 0).await;
                    }
                }
            },
        };
        Some((Ok(Bytes::from(chunk)), (s, Phase::Done)))
    })
}
