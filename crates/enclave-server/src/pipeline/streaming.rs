//! Streamed generations: each wire family's frames behind [`StreamFormat`], and one loop that
//! sends them, keeps the bill current while text flows, settles it before the last frame, and
//! records what was sent for retries under an Idempotency-Key.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use enclave_engine::{FinishReason, GenEvent, GenerationStream};
use futures::stream::{self, Stream};
use tokio::time::Instant;

use super::{billed, Completion, Usage};
use crate::billing::{Bill, REQUEST_ID};

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
struct Sending<F> {
    generation: GenerationStream,
    usage: Usage,
    generated: u32,
    format: F,
    /// Settled at the end; while streaming, dropping it bills what was sent.
    bill: Option<Bill>,
    /// When the stream is cut short, so it never outlives its budget hold.
    deadline: Instant,
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
        let Some(bill) = self.bill.take() else {
            return self.format.end(&StreamEnd::Finished {
                reason,
                usage: self.usage,
            });
        };
        match bill.settle(billed(&self.usage)).await {
            Ok(mut settled) => {
                let end = self.format.end(&StreamEnd::Finished {
                    reason,
                    usage: self.usage,
                });
                let mut transcript = settled.take_transcript();
                transcript.push_str(&end);
                settled.keep(self.format.content_type(), transcript).await;
                end
            }
            Err(e) => self.format.end(&StreamEnd::Failed(e.message)),
        }
    }

    /// A failed generation bills nothing.
    fn fail(&mut self, message: String) -> String {
        drop(self.bill.take());
        self.format.end(&StreamEnd::Failed(message))
    }
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
            Phase::Streaming => {
                match tokio::time::timeout_at(s.deadline, s.generation.recv()).await {
                    Ok(Some(GenEvent::Text { text, generated })) => {
                        let chunk = s.format.text(&text);
                        s.sent(&chunk, generated);
                        return Some((Ok(Bytes::from(chunk)), (s, Phase::Streaming)));
                    }
                    Ok(Some(GenEvent::Done {
                        reason,
                        completion_tokens,
                        cached_tokens,
                        ..
                    })) => s.finish(reason, completion_tokens, cached_tokens).await,
                    Ok(Some(GenEvent::Error(message))) => {
                        tracing::error!("generation failed mid-stream: {message}");
                        s.fail("generation failed".into())
                    }
                    Ok(None) => s.fail("the engine stopped".into()),
                    Err(_) => {
                        let generated = s.generated;
                        s.finish(FinishReason::MaxTokens, generated, 0).await
                    }
                }
            }
        };
        Some((Ok(Bytes::from(chunk)), (s, Phase::Done)))
    })
}
