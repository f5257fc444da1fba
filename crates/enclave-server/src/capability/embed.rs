//! The embed capability shared by every route: tokenize the texts (off the async runtime),
//! queue them on the encoder, and bill the tokens embedded.

use std::sync::Arc;

use axum::response::Response;
use enclave_engine::encoder::{EncoderError, InputType, TextEncoder, Truncate};
use enclave_store::{Capability, Units};
use serde_json::Value;

use super::run_billed;
use crate::auth::Call;
use crate::blocking::off_runtime_if_large;
use crate::error::ApiError;

/// Cohere's documented bound on texts per call.
pub const MAX_TEXTS: usize = 96;

pub fn parse_truncate(value: Option<&str>) -> Result<Truncate, ApiError> {
    match value.map(str::to_ascii_uppercase).as_deref() {
        None | Some("END") => Ok(Truncate::End),
        Some("START") => Ok(Truncate::Start),
        Some("NONE") => Ok(Truncate::None),
        Some(other) => Err(ApiError::invalid(format!(
            "truncate must be NONE, START or END, got {other}"
        ))),
    }
}

/// Checks the number of texts against the route's bound and the server's batch limit (413).
pub fn check_count(
    count: usize,
    route_max: Option<usize>,
    server_max: usize,
) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::invalid("at least one text is required"));
    }
    if let Some(max) = route_max {
        if count > max {
            return Err(ApiError::invalid(format!(
                "at most {max} texts per call, got {count}"
            )));
        }
    }
    if count > server_max {
        return Err(ApiError::too_large(format!(
            "this server accepts at most {server_max} inputs per call (--max-client-batch-size), got {count}"
        )));
    }
    Ok(())
}

/// An upper bound on the tokens `texts` can become (every token covers at least one byte,
/// plus the two markers around each text), which is what an embed call holds against budgets.
pub fn max_tokens(texts: &[String]) -> i64 {
    texts.iter().map(|t| t.len() as i64 + 2).sum()
}

/// Embeds `texts` as one billed call and answers with `render`'s JSON of the vectors.
pub async fn embed(
    call: &Call,
    encoder: &Arc<dyn TextEncoder>,
    texts: Vec<String>,
    truncate: Truncate,
    render: impl FnOnce(Embedded) -> Value,
) -> Result<Response, ApiError> {
    let max = Units::tokens(max_tokens(&texts), 0);
    let work = async {
        let embedded = embed_texts(encoder, texts, truncate).await?;
        let units = Units::tokens(i64::from(embedded.tokens), 0);
        Ok((embedded, units))
    };
    let model = encoder.info().name.clone();
    run_billed(call, Capability::Embed, &model, max, work, |e, _| render(e)).await
}

/// `texts` as the encoder should see them when embedded as `kind` (task prefixes for encoders
/// trained with them).
pub fn for_task(
    encoder: &dyn TextEncoder,
    kind: Option<InputType>,
    texts: Vec<String>,
) -> Vec<String> {
    if !encoder.info().input_prefixes {
        return texts;
    }
    texts
        .iter()
        .map(|text| encoder.info().input_text(kind, text).into_owned())
        .collect()
}

/// Vectors of a call and the tokens it consumed.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u32,
}

/// Tokenizes (on a blocking thread) and embeds `texts`.
pub async fn embed_texts(
    encoder: &Arc<dyn TextEncoder>,
    texts: Vec<String>,
    truncate: Truncate,
) -> Result<Embedded, ApiError> {
    let bytes = texts.iter().map(String::len).sum();
    encode_with(encoder, bytes, move |encoder| {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| encoder.tokenize(i, text, truncate))
            .collect()
    })
    .await
}

/// Runs `tokenize` over `bytes` of text (on a blocking thread unless it is small: tokenizing is
/// CPU work), then the encoder on its output: one output per tokenized input, and the tokens
/// consumed.
pub async fn encode_with<F>(
    encoder: &Arc<dyn TextEncoder>,
    bytes: usize,
    tokenize: F,
) -> Result<Embedded, ApiError>
where
    F: FnOnce(&dyn TextEncoder) -> Result<Vec<Vec<u32>>, EncoderError> + Send + 'static,
{
    let tokenizer = Arc::clone(encoder);
    let tokenized = off_runtime_if_large(bytes, move || tokenize(tokenizer.as_ref())).await??;
    let tokens = tokenized.iter().map(|t| t.len() as u32).sum();
    let vectors = encoder
        .encode(tokenized)?
        .await
        .map_err(|_| ApiError::internal("the encoder stopped"))??;
    Ok(Embedded { vectors, tokens })
}
