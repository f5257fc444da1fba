//! The embed capability shared by every route: validate and tokenize the texts (off the async
//! runtime), queue them on the encoder, and render the vectors in the requested types.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine as _;
use enclave_engine::encoder::{EncoderError, TextEncoder, Truncate};
use serde_json::{json, Map, Value};

use enclave_store::{Capability, Units};

use crate::auth::MaybeCaller;
use crate::error::{ApiError, Family};
use crate::metering::{Bill, Receipt};
use crate::state::AppState;

/// Cohere's documented bound on texts per call.
pub const MAX_TEXTS: usize = 96;

/// Maps an encoder refusal to the status a client can act on.
pub fn encoder_error(family: Family, err: EncoderError) -> ApiError {
    let status = match err {
        EncoderError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        EncoderError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        EncoderError::EmptyInput { .. }
        | EncoderError::TooLong { .. }
        | EncoderError::InvalidToken(_) => StatusCode::BAD_REQUEST,
        EncoderError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut api = ApiError::new(family, status, format!("invalid request: {err}"));
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        api.message = err.to_string();
        api.retry_after = Some(1);
    }
    api
}

pub fn parse_truncate(family: Family, value: Option<&str>) -> Result<Truncate, ApiError> {
    match value.map(str::to_ascii_uppercase).as_deref() {
        None | Some("END") => Ok(Truncate::End),
        Some("START") => Ok(Truncate::Start),
        Some("NONE") => Ok(Truncate::None),
        Some(other) => Err(ApiError::invalid(
            family,
            format!("truncate must be NONE, START or END, got {other}"),
        )),
    }
}

/// Checks the number of texts against the route's bound and the server's batch limit (413).
pub fn check_count(
    family: Family,
    count: usize,
    route_max: Option<usize>,
    server_max: usize,
) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::invalid(family, "at least one text is required"));
    }
    if let Some(max) = route_max {
        if count > max {
            return Err(ApiError::invalid(
                family,
                format!("at most {max} texts per call, got {count}"),
            ));
        }
    }
    if count > server_max {
        return Err(ApiError::new(
            family,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("this server accepts at most {server_max} inputs per call (--max-client-batch-size), got {count}"),
        ));
    }
    Ok(())
}

/// An upper bound on the tokens `texts` can become (every token covers at least one byte,
/// plus the two markers around each text), which is what an embed call holds against budgets.
fn max_tokens(texts: &[String]) -> i64 {
    texts.iter().map(|t| t.len() as i64 + 2).sum()
}

/// Embeds `texts` as one billed call: holds the most they can cost, embeds them, and settles
/// the tokens embedded.
pub async fn embed_billed(
    state: &AppState,
    caller: &MaybeCaller,
    family: Family,
    encoder: &Arc<dyn TextEncoder>,
    texts: Vec<String>,
    truncate: Truncate,
) -> Result<(Embedded, Receipt), ApiError> {
    let max = Units::tokens(max_tokens(&texts), 0);
    let model = &encoder.info().name;
    let bill = Bill::admit(state, caller, family, Capability::Embed, model, max).await?;
    let embedded = embed_texts(family, encoder, texts, truncate).await?;
    let receipt = bill
        .settle(Units::tokens(i64::from(embedded.tokens), 0))
        .await?;
    Ok((embedded, receipt))
}

/// Vectors of a call and the tokens it consumed.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u32,
}

/// Tokenizes (on a blocking thread) and embeds `texts`.
pub async fn embed_texts(
    family: Family,
    encoder: &Arc<dyn TextEncoder>,
    texts: Vec<String>,
    truncate: Truncate,
) -> Result<Embedded, ApiError> {
    encode_with(family, encoder, move |encoder| {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| encoder.tokenize(i, text, truncate))
            .collect()
    })
    .await
}

/// Runs `tokenize` on a blocking thread (tokenizing is CPU work), then the encoder on its
/// output: one output per tokenized input, and the tokens consumed.
pub async fn encode_with<F>(
    family: Family,
    encoder: &Arc<dyn TextEncoder>,
    tokenize: F,
) -> Result<Embedded, ApiError>
where
    F: FnOnce(&dyn TextEncoder) -> Result<Vec<Vec<u32>>, EncoderError> + Send + 'static,
{
    let tokenizer = Arc::clone(encoder);
    let tokenized = tokio::task::spawn_blocking(move || tokenize(tokenizer.as_ref()))
        .await
        .map_err(|e| ApiError::internal(family, format!("tokenizer task failed: {e}")))?
        .map_err(|e| encoder_error(family, e))?;
    let tokens = tokenized.iter().map(|t| t.len() as u32).sum();
    let receiver = encoder
        .encode(tokenized)
        .map_err(|e| encoder_error(family, e))?;
    let vectors = receiver
        .await
        .map_err(|_| ApiError::internal(family, "the encoder stopped"))?
        .map_err(|e| encoder_error(family, e))?;
    Ok(Embedded { vectors, tokens })
}

/// An output encoding of embeddings, as Cohere names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingType {
    Float,
    Int8,
    Uint8,
    Binary,
    Ubinary,
    Base64,
}

impl EmbeddingType {
    pub fn parse(family: Family, name: &str) -> Result<Self, ApiError> {
        Ok(match name {
            "float" => Self::Float,
            "int8" => Self::Int8,
            "uint8" => Self::Uint8,
            "binary" => Self::Binary,
            "ubinary" => Self::Ubinary,
            "base64" => Self::Base64,
            other => {
                return Err(ApiError::invalid(
                    family,
                    format!("embedding_types: unknown type '{other}'; use float, int8, uint8, binary, ubinary or base64"),
                ))
            }
        })
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Int8 => "int8",
            Self::Uint8 => "uint8",
            Self::Binary => "binary",
            Self::Ubinary => "ubinary",
            Self::Base64 => "base64",
        }
    }
}

/// int8: each vector scaled so its largest component maps to ±127 (cosine is unchanged by the
/// per-vector scale).
pub fn to_int8(vector: &[f32]) -> Vec<i8> {
    let max = vector
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(f32::MIN_POSITIVE);
    vector
        .iter()
        .map(|x| (x / max * 127.0).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

/// ubinary: one bit per dimension (1 when positive), packed 8 per byte, first dimension in the
/// highest bit; binary is the same bytes as signed values (byte − 128).
pub fn to_ubinary(vector: &[f32]) -> Vec<u8> {
    vector
        .chunks(8)
        .map(|chunk| {
            chunk.iter().enumerate().fold(
                0u8,
                |byte, (i, x)| if *x > 0.0 { byte | (0x80 >> i) } else { byte },
            )
        })
        .collect()
}

/// Little-endian float32 bytes, base64-encoded.
pub fn to_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `{"float": [...], "int8": [...], ...}` for the requested types.
pub fn by_type(vectors: &[Vec<f32>], types: &[EmbeddingType]) -> Value {
    let mut out = Map::new();
    for &kind in types {
        let values: Vec<Value> = vectors
            .iter()
            .map(|v| match kind {
                EmbeddingType::Float => json!(v),
                EmbeddingType::Int8 => json!(to_int8(v)),
                EmbeddingType::Uint8 => json!(to_int8(v)
                    .iter()
                    .map(|&x| (i16::from(x) + 128) as u8)
                    .collect::<Vec<_>>()),
                EmbeddingType::Binary => json!(to_ubinary(v)
                    .iter()
                    .map(|&b| (i16::from(b) - 128) as i8)
                    .collect::<Vec<_>>()),
                EmbeddingType::Ubinary => json!(to_ubinary(v)),
                EmbeddingType::Base64 => json!(to_base64(v)),
            })
            .collect();
        out.insert(kind.key().to_string(), Value::Array(values));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_keeps_direction() {
        let v = [0.5, -0.25, 0.0, 0.1];
        assert_eq!(to_int8(&v), vec![127, -64, 0, 25]);
    }

    #[test]
    fn binary_packs_signs_high_bit_first() {
        let mut v = vec![-1.0f32; 16];
        v[0] = 1.0;
        v[9] = 0.5;
        assert_eq!(to_ubinary(&v), vec![0b1000_0000, 0b0100_0000]);
    }

    #[test]
    fn base64_round_trips_floats() {
        let v = [1.5f32, -2.0];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(to_base64(&v))
            .expect("b64");
        assert_eq!(bytes.len(), 8);
        assert_eq!(f32::from_le_bytes(bytes[..4].try_into().expect("4")), 1.5);
    }
}
