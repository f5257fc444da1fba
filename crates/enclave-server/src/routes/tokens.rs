//! `POST /v1/tokenize` and `POST /v1/detokenize` with the model's own vocabulary.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, Family};
use crate::extract::{ApiJson, CohereJson};
use crate::routes::cohere_common::v1_meta;
use crate::state::AppState;

const FAMILY: Family = Family::Cohere;
/// The documented bound for both text characters and token counts.
const MAX_ITEMS: usize = 65_536;

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    text: String,
    model: Option<String>,
}

pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(req, _): CohereJson<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let chars = req.text.chars().count();
    if chars == 0 || chars > MAX_ITEMS {
        return Err(ApiError::invalid(
            FAMILY,
            format!("text must be 1 to {MAX_ITEMS} characters, got {chars}"),
        ));
    }
    let generator = state.model(FAMILY, req.model.as_deref())?;
    let tokens = generator.tokenize(&req.text, false);
    let token_strings = generator.token_pieces(&tokens);
    Ok(Json(
        json!({ "tokens": tokens, "token_strings": token_strings, "meta": v1_meta(None) }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    tokens: Vec<i64>,
    model: Option<String>,
}

pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(req, _): CohereJson<DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    if req.tokens.is_empty() || req.tokens.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            FAMILY,
            format!(
                "tokens must hold 1 to {MAX_ITEMS} ids, got {}",
                req.tokens.len()
            ),
        ));
    }
    let generator = state.model(FAMILY, req.model.as_deref())?;
    let text = generator
        .detokenize(&req.tokens)
        .map_err(|e| ApiError::invalid(FAMILY, e))?;
    Ok(Json(json!({ "text": text, "meta": v1_meta(None) })))
}
