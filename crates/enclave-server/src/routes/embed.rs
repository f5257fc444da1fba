//! Cohere's embed routes: `POST /v2/embed` (typed embeddings) and `POST /v1/embed` (floats, or
//! typed when `embedding_types` is sent).

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::MaybeCaller;
use crate::embedding::{
    by_type, check_count, embed_billed, parse_truncate, EmbeddingType, MAX_TEXTS,
};
use crate::error::{ApiError, Family};
use crate::extract::{ApiJson, CohereJson};
use crate::metering::Receipt;
use crate::routes::cohere_common::{check_priority, new_id, refuse_unsupported};
use crate::state::AppState;
use axum::response::Response;

const FAMILY: Family = Family::Cohere;
const INPUT_TYPES: [&str; 4] = [
    "search_document",
    "search_query",
    "classification",
    "clustering",
];

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
}

fn check(
    state: &AppState,
    req: EmbedRequest,
    require_model: bool,
) -> Result<(Checked, Option<String>), ApiError> {
    if require_model && req.model.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(FAMILY, "model is required"));
    }
    refuse_unsupported(
        FAMILY,
        &[
            ("images", req.images.as_ref().is_some_and(|i| !i.is_empty())),
            ("max_tokens", req.max_tokens.is_some()),
        ],
    )?;
    match req.input_type.as_deref() {
        None if require_model => return Err(ApiError::invalid(FAMILY, "input_type is required")),
        Some("image") => {
            return Err(ApiError::invalid(
                FAMILY,
                "image inputs are not supported by the served models",
            ))
        }
        Some(kind) if !INPUT_TYPES.contains(&kind) => {
            return Err(ApiError::invalid(
                FAMILY,
                format!(
                    "input_type must be one of {}, got {kind}",
                    INPUT_TYPES.join(", ")
                ),
            ))
        }
        _ => {}
    }
    check_priority(req.priority)?;
    let texts = match (req.texts, req.inputs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                FAMILY,
                "send either texts or inputs, not both",
            ))
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
                        (kind, _) => Err(ApiError::invalid(
                            FAMILY,
                            format!("inputs[{i}]: content type '{kind}' is not supported"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|parts| parts.join("\n"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        (None, None) => return Err(ApiError::invalid(FAMILY, "texts is required")),
    };
    check_count(
        FAMILY,
        texts.len(),
        Some(MAX_TEXTS),
        state.config().max_client_batch_size,
    )?;
    let types = req
        .embedding_types
        .map(|names| {
            let mut types = Vec::new();
            for name in &names {
                let kind = EmbeddingType::parse(FAMILY, name)?;
                if !types.contains(&kind) {
                    types.push(kind);
                }
            }
            if types.is_empty() {
                return Err(ApiError::invalid(
                    FAMILY,
                    "embedding_types must not be empty",
                ));
            }
            Ok(types)
        })
        .transpose()?;
    Ok((Checked { texts, types }, req.model))
}

/// What an embed call returns to its route: vectors by type, meta, texts, the types asked for,
/// and the receipt of the settled bill.
type Embedding = (
    Value,
    Value,
    Vec<String>,
    Option<Vec<EmbeddingType>>,
    Receipt,
);

async fn run(
    state: &AppState,
    caller: &MaybeCaller,
    req: EmbedRequest,
    require_model: bool,
) -> Result<Embedding, ApiError> {
    let truncate = parse_truncate(FAMILY, req.truncate.as_deref())?;
    let dimension = req.output_dimension;
    let (checked, model) = check(state, req, require_model)?;
    let encoder = state.encoder(FAMILY, model.as_deref())?;
    if let Some(d) = dimension {
        if d != encoder.info().dimensions as i64 {
            return Err(ApiError::invalid(
                FAMILY,
                format!(
                    "output_dimension {d} is not offered; {} produces {} dimensions",
                    encoder.info().name,
                    encoder.info().dimensions
                ),
            ));
        }
    }
    let (embedded, receipt) = embed_billed(
        state,
        caller,
        FAMILY,
        &encoder,
        checked.texts.clone(),
        truncate,
    )
    .await?;
    let meta = json!({
        "api_version": { "version": "2" },
        "billed_units": { "input_tokens": embedded.tokens },
    });
    let types = checked
        .types
        .clone()
        .unwrap_or_else(|| vec![EmbeddingType::Float]);
    Ok((
        by_type(&embedded.vectors, &types),
        meta,
        checked.texts,
        checked.types,
        receipt,
    ))
}

pub async fn embed_v2(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): CohereJson<EmbedRequest>,
) -> Result<Response, ApiError> {
    let (embeddings, meta, texts, _, receipt) = run(&state, &caller, req, true).await?;
    Ok(receipt.json(json!({
        "id": new_id(),
        "response_type": "embeddings_by_type",
        "embeddings": embeddings,
        "texts": texts,
        "meta": meta,
    })))
}

pub async fn embed_v1(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): CohereJson<EmbedRequest>,
) -> Result<Response, ApiError> {
    let (embeddings, mut meta, texts, types, receipt) = run(&state, &caller, req, false).await?;
    meta["api_version"]["version"] = json!("1");
    if types.is_some() {
        return Ok(receipt.json(json!({
            "id": new_id(),
            "response_type": "embeddings_by_type",
            "embeddings": embeddings,
            "texts": texts,
            "meta": meta,
        })));
    }
    Ok(receipt.json(json!({
        "id": new_id(),
        "response_type": "embeddings_floats",
        "embeddings": embeddings["float"],
        "texts": texts,
        "meta": meta,
    })))
}
