//! `POST /v1/tokenize` and `POST /v1/detokenize` with the model's own vocabulary: any served
//! model's, generative or encoder (so documents can be sized for an embedding model).

use std::sync::Arc;

use axum::Json;
use enclave_engine::encoder::TextEncoder;
use enclave_engine::TextGenerator;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Call;
use crate::blocking::off_runtime_if_large;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::cohere_common::v1_meta;
/// The documented bound for both text characters and token counts.
const MAX_ITEMS: usize = 65_536;

/// The vocabulary of a served model, of either engine.
enum Vocabulary {
    Generator(Arc<dyn TextGenerator>),
    Encoder(Arc<dyn TextEncoder>),
}

impl Vocabulary {
    /// The named model's vocabulary, or the default generative model's, if the caller's key
    /// may use that model.
    fn of(call: &Call, name: Option<&str>) -> Result<Self, ApiError> {
        let vocabulary = match name.and_then(|n| call.state.encoder_or_alias(n)) {
            Some(encoder) => Vocabulary::Encoder(Arc::clone(encoder)),
            None => Vocabulary::Generator(call.state.model(name)?),
        };
        call.caller.require_model(vocabulary.model_name())?;
        Ok(vocabulary)
    }

    fn model_name(&self) -> &str {
        match self {
            Vocabulary::Generator(g) => &g.info().name,
            Vocabulary::Encoder(e) => &e.info().name,
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
            Vocabulary::Generator(g) => g.detokenize(tokens).map_err(ApiError::invalid),
            Vocabulary::Encoder(e) => Ok(e.detokenize(tokens)?),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    text: String,
    model: Option<String>,
}

pub async fn tokenize(
    call: Call,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let chars = req.text.chars().count();
    if chars == 0 || chars > MAX_ITEMS {
        return Err(ApiError::invalid(format!(
            "text must be 1 to {MAX_ITEMS} characters, got {chars}"
        )));
    }
    let vocabulary = Vocabulary::of(&call, req.model.as_deref())?;
    // Up to 64 Ki characters of tokenizing: off the async workers unless it is small.
    let bytes = req.text.len();
    let (tokens, token_strings) =
        off_runtime_if_large(bytes, move || vocabulary.tokenize(&req.text)).await?;
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
    call: Call,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    if req.tokens.is_empty() || req.tokens.len() > MAX_ITEMS {
        return Err(ApiError::invalid(format!(
            "tokens must hold 1 to {MAX_ITEMS} ids, got {}",
            req.tokens.len()
        )));
    }
    let vocabulary = Vocabulary::of(&call, req.model.as_deref())?;
    // A token is several bytes of text: size the work by that.
    let bytes = req.tokens.len() * 8;
    let text = off_runtime_if_large(bytes, move || vocabulary.detokenize(&req.tokens)).await??;
    Ok(Json(json!({ "text": text, "meta": v1_meta(None) })))
}
