//! `POST /v1/tokenize` and `POST /v1/detokenize` with the model's own vocabulary: any served
//! model's, generative or encoder (so documents can be sized for an embedding model).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use enclave_engine::encoder::TextEncoder;
use enclave_engine::TextGenerator;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::embedding::encoder_error;
use crate::error::{ApiError, Family};
use crate::extract::{ApiJson, CohereJson};
use crate::routes::cohere_common::v1_meta;
use crate::state::AppState;

const FAMILY: Family = Family::Cohere;
/// The documented bound for both text characters and token counts.
const MAX_ITEMS: usize = 65_536;

/// The vocabulary of a served model, of either engine.
enum Vocabulary {
    Generator(Arc<dyn TextGenerator>),
    Encoder(Arc<dyn TextEncoder>),
}

impl Vocabulary {
    /// The named model's vocabulary, or the default generative model's.
    fn of(state: &AppState, name: Option<&str>) -> Result<Self, ApiError> {
        match name.and_then(|n| state.encoder_named(n)) {
            Some(encoder) => Ok(Vocabulary::Encoder(Arc::clone(encoder))),
            None => state.model(FAMILY, name).map(Vocabulary::Generator),
        }
    }

    /// The text's tokens (no special tokens) and their pieces.
    fn tokenize(&self, text: &str) -> (Vec<u32>, Vec<String>) {
        match self {
            Vocabulary::Generator(g) => {
                let tokens = g.tokenize(text, false);
                let pieces = g.token_pieces(&tokens);
                (tokens, pieces)
            }
            Vocabulary::Encoder(e) => {
                let tokens = e.text_tokens(text);
                let pieces = e.token_pieces(&tokens);
                (tokens, pieces)
            }
        }
    }

    fn detokenize(&self, tokens: &[i64]) -> Result<String, ApiError> {
        match self {
            Vocabulary::Generator(g) => g
                .detokenize(tokens)
                .map_err(|e| ApiError::invalid(FAMILY, e)),
            Vocabulary::Encoder(e) => e
                .detokenize(tokens)
                .map_err(|err| encoder_error(FAMILY, err)),
        }
    }
}

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
    let (tokens, token_strings) = Vocabulary::of(&state, req.model.as_deref())?.tokenize(&req.text);
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
    let text = Vocabulary::of(&state, req.model.as_deref())?.detokenize(&req.tokens)?;
    Ok(Json(json!({ "text": text, "meta": v1_meta(None) })))
}
