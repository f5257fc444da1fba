//! Output encodings of embedding vectors, as Cohere names them (float, int8, uint8, binary,
//! ubinary, base64); OpenAI's base64 is the same little-endian float32 bytes.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

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
    pub fn parse(name: &str) -> Result<Self, ApiError> {
        Ok(match name {
            "float" => Self::Float,
            "int8" => Self::Int8,
            "uint8" => Self::Uint8,
            "binary" => Self::Binary,
            "ubinary" => Self::Ubinary,
            "base64" => Self::Base64,
            other => {
                return Err(ApiError::invalid(
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
