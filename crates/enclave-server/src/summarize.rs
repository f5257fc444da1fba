//! The summarize capability: one pass when the text fits the model's context, otherwise
//! map-reduce (summarize chunks, then summarize the joined partial summaries, repeating until
//! the text fits).

use std::sync::Arc;

use enclave_engine::{ChatMessage, TextGenerator};

use enclave_store::Units;

use crate::error::{ApiError, Family};
use crate::generation::{chat_prompt, prepare, SamplingInput, Usage, COHERE_BOUNDS};

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
    family: Family,
    generator: &Arc<dyn TextGenerator>,
    text: &str,
    style: &Style,
) -> Result<(String, Usage), ApiError> {
    let messages = [
        ChatMessage::new("system", instructions(style)),
        ChatMessage::new("user", text.to_string()),
    ];
    let prompt = chat_prompt(family, generator, &messages)?;
    let prepared = prepare(
        family,
        COHERE_BOUNDS,
        Arc::clone(generator),
        prompt,
        SamplingInput {
            temperature: Some(style.temperature),
            max_tokens: Some(i64::from(style.length.max_tokens())),
            ..SamplingInput::default()
        },
    )?;
    let done = prepared.complete(family).await?;
    Ok((done.text.trim().to_string(), done.usage))
}

fn add(total: &mut Usage, part: Usage) {
    total.billed_input += part.billed_input;
    total.prompt_tokens += part.prompt_tokens;
    total.cached_tokens += part.cached_tokens;
    total.completion_tokens += part.completion_tokens;
}

/// Splits `text` into pieces of at most `max_tokens` tokens, on word boundaries.
fn split_by_tokens(
    generator: &Arc<dyn TextGenerator>,
    text: &str,
    max_tokens: usize,
) -> Vec<String> {
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
    pieces
}

/// Most tokens of text one summarizing call reads: the context less room for the
/// instructions, the template and the answer.
fn chunk_budget(generator: &Arc<dyn TextGenerator>, style: &Style) -> usize {
    let context = generator.info().context_per_sequence as usize;
    context
        .saturating_sub(style.length.max_tokens() as usize + 128)
        .max(64)
}

/// A generous bound on what summarizing `text` can bill, held against budgets: every level of
/// the map-reduce reads at most the whole text plus one set of instructions per piece, and
/// writes at most one answer per piece.
pub fn max_units(generator: &Arc<dyn TextGenerator>, text: &str, style: &Style) -> Units {
    let text_tokens = generator.tokenize(text, false).len() as i64;
    let instruction_tokens = generator.tokenize(&instructions(style), false).len() as i64;
    let half_chunk = (chunk_budget(generator, style) / 2).max(1) as i64;
    let pieces = text_tokens / half_chunk + 1;
    let levels = MAX_LEVELS as i64;
    Units::tokens(
        levels * (text_tokens + pieces * instruction_tokens),
        levels * pieces * i64::from(style.length.max_tokens()),
    )
}

/// Summarizes `text` in `style`, by map-reduce when it does not fit the context.
pub async fn summarize(
    family: Family,
    generator: &Arc<dyn TextGenerator>,
    text: &str,
    style: &Style,
) -> Result<(String, Usage), ApiError> {
    let budget = chunk_budget(generator, style);
    let mut usage = Usage::default();
    let mut current = text.to_string();
    for _ in 0..MAX_LEVELS {
        if generator.tokenize(&current, false).len() <= budget {
            let (summary, part) = summarize_once(family, generator, &current, style).await?;
            add(&mut usage, part);
            return Ok((summary, usage));
        }
        // Short partial summaries keep the reduce step within the context in one level.
        let piece_style = Style {
            length: Length::Short,
            bullets: false,
            additional_command: None,
            ..style.clone()
        };
        // The chunks are independent: queue them together so the engine batches them.
        let pieces = split_by_tokens(generator, &current, budget);
        let maps = pieces
            .iter()
            .map(|piece| summarize_once(family, generator, piece, &piece_style));
        let mut partials = Vec::with_capacity(pieces.len());
        for result in futures::future::join_all(maps).await {
            let (summary, part) = result?;
            add(&mut usage, part);
            partials.push(summary);
        }
        current = partials.join("\n\n");
    }
    Err(ApiError::bad_request(
        family,
        "too many tokens: the text is too long to summarize with this model's context",
    ))
}
