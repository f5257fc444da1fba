//! `POST /v1/summarize`.

use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Call;
use crate::capability::summarize::{summarize, Length, Style};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::cohere_common::{new_id, v1_meta};

/// The documented upper bound on the text.
const MAX_CHARS: usize = 100_000;
const MAX_COMMAND_CHARS: usize = 1_000;

#[derive(Debug, Deserialize)]
pub struct SummarizeRequest {
    text: String,
    model: Option<String>,
    length: Option<String>,
    format: Option<String>,
    extractiveness: Option<String>,
    temperature: Option<f64>,
    additional_command: Option<String>,
}

fn choice<'a>(
    name: &str,
    value: Option<&'a str>,
    allowed: &[&'a str],
    default: &'a str,
) -> Result<&'a str, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if allowed.contains(&v) => Ok(v),
        Some(v) => Err(ApiError::invalid(format!(
            "{name} must be one of {}, got {v}",
            allowed.join(", ")
        ))),
    }
}

pub async fn summarize_route(
    call: Call,
    ApiJson(req): ApiJson<SummarizeRequest>,
) -> Result<Response, ApiError> {
    let chars = req.text.chars().count();
    if req.text.trim().is_empty() || chars > MAX_CHARS {
        return Err(ApiError::invalid(format!(
            "text must hold 1 to {MAX_CHARS} characters, got {chars}"
        )));
    }
    let length = match choice(
        "length",
        req.length.as_deref(),
        &["short", "medium", "long", "auto"],
        "medium",
    )? {
        "short" => Length::Short,
        "long" => Length::Long,
        _ => Length::Medium,
    };
    let bullets = choice(
        "format",
        req.format.as_deref(),
        &["paragraph", "bullets", "auto"],
        "paragraph",
    )? == "bullets";
    let extractiveness = choice(
        "extractiveness",
        req.extractiveness.as_deref(),
        &["low", "medium", "high", "auto"],
        "low",
    )?;
    let temperature = req.temperature.unwrap_or(0.3);
    if !(0.0..=5.0).contains(&temperature) {
        return Err(ApiError::invalid(format!(
            "temperature must be between 0 and 5, got {temperature}"
        )));
    }
    if req
        .additional_command
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMAND_CHARS)
    {
        return Err(ApiError::invalid(format!(
            "additional_command is limited to {MAX_COMMAND_CHARS} characters"
        )));
    }
    let extractiveness = match extractiveness {
        "high" => "high",
        "medium" => "medium",
        _ => "low",
    };
    let generator = call.state.chat_model(req.model.as_deref())?;
    let style = Style {
        length,
        bullets,
        extractiveness,
        additional_command: req.additional_command,
        temperature,
    };
    summarize(&call, generator, req.text, style, |summary, usage| {
        json!({ "id": new_id(), "summary": summary, "meta": v1_meta(Some(usage)) })
    })
    .await
}
