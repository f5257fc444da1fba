//! Cohere's embed routes: `POST /v2/embed` (typed embeddings) and `POST /v1/embed` (floats, or
//! typed when `embedding_types` is sent).

use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Call;
use enclave_engine::encoder::InputType;

use crate::capability::embed::{check_count, embed, for_task, parse_truncate, MAX_TEXTS};
use crate::capability::vectors::{by_type, EmbeddingType};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::cohere_common::{check_priority, new_id, refuse_unsupported};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct InputContent {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Input {
    content: Vec<InputContent>,
}

#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    model: Option<String>,
    input_type: Option<String>,
    texts: Option<Vec<String>>,
    images: Option<Vec<String>>,
    inputs: Option<Vec<Input>>,
    embedding_types: Option<Vec<String>>,
    truncate: Option<String>,
    max_tokens: Option<i64>,
    output_dimension: Option<i64>,
    priority: Option<i64>,
}

/// Validated pieces of an embed request common to both versions.
struct Checked {
    texts: Vec<String>,
    types: Option<Vec<EmbeddingType>>,
    input_type: Option<InputType>,
}

fn check(
    state: &AppState,
    req: EmbedRequest,
    require_model: bool,
) -> Result<(Checked, Option<String>), ApiError> {
    if require_model && req.model.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("model is required"));
    }
    refuse_unsupported(&[
        ("images", req.images.as_ref().is_some_and(|i| !i.is_empty())),
        ("max_tokens", req.max_tokens.is_some()),
    ])?;
    let input_type = match req.input_type.as_deref() {
        None if require_model => return Err(ApiError::invalid("input_type is required")),
        None => None,
        Some("image") => {
            return Err(ApiError::invalid(
                "image inputs are not supported by the served models",
            ))
        }
        Some(kind) => Some(InputType::parse(kind).ok_or_else(|| {
            ApiError::invalid(format!(
                "input_type must be one of search_document, search_query, classification, clustering, got {kind}"
            ))
        })?),
    };
    check_priority(req.priority)?;
    let texts = match (req.texts, req.inputs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("send either texts or inputs, not both"))
        }
        (Some(texts), None) => texts,
        (None, Some(inputs)) => inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| {
                input
                    .content
                    .into_iter()
                    .map(|part| match (part.kind.as_str(), part.text) {
                        ("text", Some(text)) => Ok(text),
                        (kind, _) => Err(ApiError::invalid(format!(
                            "inputs[{i}]: content type '{kind}' is not supported"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|parts| parts.join("\n"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        (None, None) => return Err(ApiError::invalid("texts is required")),
    };
    check_count(
        texts.len(),
        Some(MAX_TEXTS),
        state.config().max_client_batch_size,
    )?;
    let types = req
        .embedding_types
        .map(|names| {
            let mut types = Vec::new();
            for name in &names {
                let kind = EmbeddingType::parse(name)?;
                if !types.contains(&kind) {
                    types.push(kind);
                }
            }
            if types.is_empty() {
                return Err(ApiError::invalid("embedding_types must not be empty"));
            }
            Ok(types)
        })
        .transpose()?;
    Ok((
        Checked {
            texts,
            types,
            input_type,
        },
        req.model,
    ))
}

/// Which body an embed route answers with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

async fn run(call: Call, req: EmbedRequest, version: Version) -> Result<Response, ApiError> {
    let truncate = parse_truncate(req.truncate.as_deref())?;
    let dimension = req.output_dimension;
    let (checked, model) = check(&call.state, req, version == Version::V2)?;
    let encoder = call.state.encoder(model.as_deref())?;
    if let Some(d) = dimension {
        if d != encoder.info().dimensions as i64 {
            return Err(ApiError::invalid(format!(
                "output_dimension {d} is not offered; {} produces {} dimensions",
                encoder.info().name,
                encoder.info().dimensions
            )));
        }
    }
    let Checked {
        texts,
        types,
        input_type,
    } = checked;
    let echoed = texts.clone();
    let texts = for_task(encoder.as_ref(), input_type, texts);
    embed(&call, &encoder, texts, truncate, move |embedded| {
        let meta = json!({
            "api_version": { "version": if version == Version::V1 { "1" } else { "2" } },
            "billed_units": { "input_tokens": embedded.tokens },
        });
        // Only the types asked for; v2 and typed v1 default to float.
        let embeddings = by_type(
            &embedded.vectors,
            types.as_deref().unwrap_or(&[EmbeddingType::Float]),
        );
        match (version, types.is_some()) {
            (Version::V1, false) => json!({
                "id": new_id(),
                "response_type": "embeddings_floats",
                "embeddings": embeddings["float"],
                "texts": echoed,
                "meta": meta,
            }),
            _ => json!({
                "id": new_id(),
                "response_type": "embeddings_by_type",
                "embeddings": embeddings,
                "texts": echoed,
                "meta": meta,
            }),
        }
    })
    .await
}

pub async fn embed_v2(
    call: Call,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Response, ApiError> {
    run(call, req, Version::V2).await
}

pub async fn embed_v1(
    call: Call,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Response, ApiError> {
    run(call, req, Version::V1).await
}
