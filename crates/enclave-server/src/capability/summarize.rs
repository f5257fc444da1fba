//! The summarize capability: one pass when the text fits the model's context, otherwise
//! map-reduce (summarize chunks, then summarize the joined partial summaries, repeating until
//! the text fits).

use std::sync::Arc;

use axum::response::Response;
use enclave_engine::{ChatMessage, TextGenerator};
use enclave_store::{Capability, Units};
use serde_json::Value;

use super::run_billed;
use crate::auth::Call;
use crate::error::ApiError;
use crate::pipeline::{billed, collect, tokenize, Prompt, SamplingInput, Usage, COHERE_BOUNDS};

/// How the summary should read.
#[derive(Debug, Clone)]
pub struct Style {
    pub length: Length,
    pub bullets: bool,
    pub extractiveness: &'static str,
    pub additional_command: Option<String>,
    pub temperature: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    Short,
    Medium,
    Long,
}

impl Length {
    fn instruction(self) -> &'static str {
        match self {
            Length::Short => "in one or two sentences",
            Length::Medium => "in three to five sentences",
            Length::Long => "in six to ten sentences",
        }
    }

    fn max_tokens(self) -> u32 {
        match self {
            Length::Short => 96,
            Length::Medium => 192,
            Length::Long => 384,
        }
    }
}

/// Deepest map-reduce recursion (each level shrinks the text several times over).
const MAX_LEVELS: usize = 4;

fn instructions(style: &Style) -> String {
    let mut text = format!("Summarize the text {}.", style.length.instruction());
    if style.bullets {
        text.push_str(
            " Write the summary as a bulleted list, one point per line starting with '- '.",
        );
    }
    text.push(' ');
    text.push_str(match style.extractiveness {
        "high" => "Reuse sentences from the text wherever possible.",
        "medium" => "Mix your own words with phrases from the text.",
        _ => "Use your own words.",
    });
    if let Some(extra) = &style.additional_command {
        text.push(' ');
        text.push_str(extra);
    }
    text
}

async fn summarize_once(
    generator: &Arc<dyn TextGenerator>,
    text: &str,
    style: &Style,
) -> Result<(String, Usage), ApiError> {
    let messages = vec![
        ChatMessage::new("system", instructions(style)),
        ChatMessage::new("user", text.to_string()),
    ];
    let sampling = SamplingInput {
        temperature: Some(style.temperature),
        max_tokens: Some(i64::from(style.length.max_tokens())),
        ..SamplingInput::default()
    }
    .check(COHERE_BOUNDS)?;
    let (prompt, billed_input) = tokenize(generator, Prompt::Chat(messages)).await?;
    let prompt_tokens = prompt.len() as u32;
    let params = sampling.fit(prompt_tokens, generator.info().context_per_sequence)?;
    let usage = Usage {
        billed_input,
        prompt_tokens,
        ..Usage::default()
    };
    let done = collect(generator.submit(prompt, params)?, usage).await?;
    Ok((done.text.trim().to_string(), done.usage))
}

/// Splits `text` into pieces of at most `max_tokens` tokens, on word boundaries; `None` when
/// it fits whole. Runs on a blocking thread: it tokenizes word by word.
async fn pieces(
    generator: &Arc<dyn TextGenerator>,
    text: String,
    max_tokens: usize,
) -> Result<Option<Vec<String>>, ApiError> {
    let generator = Arc::clone(generator);
    crate::blocking::off_runtime(move || {
        if generator.tokenize(&text, false).len() <= max_tokens {
            return None;
        }
        let mut pieces = Vec::new();
        let mut current = String::new();
        let mut current_tokens = 0;
        for paragraph in text.split_inclusive('\n') {
            for word in paragraph.split_inclusive(' ') {
                let n = generator.tokenize(word, false).len();
                if current_tokens + n > max_tokens && !current.is_empty() {
                    pieces.push(std::mem::take(&mut current));
                    current_tokens = 0;
                }
                current.push_str(word);
                current_tokens += n;
            }
        }
        if !current.trim().is_empty() {
            pieces.push(current);
        }
        Some(pieces)
    })
    .await
}

/// Most tokens of text one summarizing call reads: the context less room for the
/// instructions, the template and the answer.
fn chunk_budget(generator: &Arc<dyn TextGenerator>, style: &Style) -> usize {
    let context = generator.info().context_per_sequence as usize;
    context
        .saturating_sub(style.length.max_tokens() as usize + 128)
        .max(64)
}

/// A generous bound on what summarizing `text` can bill, held against budgets before anything
/// is tokenized (a token is at least one byte): every level of the map-reduce reads at most
/// the whole text plus one set of instructions per piece, and writes at most one answer per
/// piece.
fn max_units(generator: &Arc<dyn TextGenerator>, text: &str, style: &Style) -> Units {
    let text_tokens = text.len() as i64 + 1;
    let instruction_tokens = instructions(style).len() as i64 + 1;
    let half_chunk = (chunk_budget(generator, style) / 2).max(1) as i64;
    let pieces = text_tokens / half_chunk + 1;
    let levels = MAX_LEVELS as i64;
    Units::tokens(
        levels * (text_tokens + pieces * instruction_tokens),
        levels * pieces * i64::from(style.length.max_tokens()),
    )
}

/// Summarizes `text` in `style` as one billed call and answers with `render`'s JSON.
pub async fn summarize(
    call: &Call,
    generator: Arc<dyn TextGenerator>,
    text: String,
    style: Style,
    render: impl FnOnce(String, &Usage) -> Value,
) -> Result<Response, ApiError> {
    let max = max_units(&generator, &text, &style);
    let model = generator.info().name.clone();
    let work = async {
        let (summary, usage) = map_reduce(&generator, text, &style).await?;
        Ok(((summary, usage), billed(&usage)))
    };
    run_billed(
        call,
        Capability::Summarize,
        &model,
        max,
        work,
        |(s, u), _| render(s, &u),
    )
    .await
}

/// Summarizes `text` in `style`, by map-reduce when it does not fit the context.
async fn map_reduce(
    generator: &Arc<dyn TextGenerator>,
    text: String,
    style: &Style,
) -> Result<(String, Usage), ApiError> {
    let budget = chunk_budget(generator, style);
    let mut usage = Usage::default();
    let mut current = text;
    for _ in 0..MAX_LEVELS {
        let Some(pieces) = pieces(generator, current.clone(), budget).await? else {
            let (summary, part) = summarize_once(generator, &current, style).await?;
            usage.add(part);
            return Ok((summary, usage));
        };
        // Short partial summaries keep the reduce step within the context in one level.
        let piece_style = Style {
            length: Length::Short,
            bullets: false,
            additional_command: None,
            ..style.clone()
        };
        // The chunks are independent: queue them together so the engine batches them.
        let maps = pieces
            .iter()
            .map(|piece| summarize_once(generator, piece, &piece_style));
        let mut partials = Vec::with_capacity(pieces.len());
        for result in futures::future::join_all(maps).await {
            let (summary, part) = result?;
            usage.add(part);
            partials.push(summary);
        }
        current = partials.join("\n\n");
    }
    Err(ApiError::bad_request(
        "too many tokens: the text is too long to summarize with this model's context",
    ))
}
