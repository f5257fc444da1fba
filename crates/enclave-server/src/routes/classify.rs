//! `POST /v1/classify`: a classifier head fitted on the embeddings of the request's examples,
//! then applied to its inputs.

use std::collections::BTreeMap;

use axum::extract::State;
use enclave_engine::classifier::{FitOptions, LinearClassifier};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::MaybeCaller;
use crate::embedding::{embed_texts, parse_truncate, MAX_TEXTS};
use crate::error::{ApiError, Family};
use crate::extract::{ApiJson, CohereJson};
use crate::metering::Bill;
use crate::routes::cohere_common::new_id;
use crate::state::AppState;
use axum::response::Response;
use enclave_store::{Capability, Units};

const FAMILY: Family = Family::Cohere;
const MAX_EXAMPLES: usize = 2500;

#[derive(Debug, Deserialize)]
struct Example {
    text: String,
    label: String,
}

#[derive(Debug, Deserialize)]
pub struct ClassifyRequest {
    inputs: Vec<String>,
    examples: Option<Vec<Example>>,
    model: Option<String>,
    preset: Option<String>,
    truncate: Option<String>,
}

/// Checks the examples and returns the labels (sorted) and each example's label index.
fn check_examples(examples: &[Example]) -> Result<(Vec<String>, Vec<usize>), ApiError> {
    if examples.len() > MAX_EXAMPLES {
        return Err(ApiError::invalid(
            FAMILY,
            format!("at most {MAX_EXAMPLES} examples, got {}", examples.len()),
        ));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, example) in examples.iter().enumerate() {
        if example.text.trim().is_empty() {
            return Err(ApiError::invalid(
                FAMILY,
                format!("examples[{i}] has an empty text"),
            ));
        }
        if example.label.trim().is_empty() {
            return Err(ApiError::invalid(
                FAMILY,
                format!("examples[{i}] has an empty label"),
            ));
        }
        *counts.entry(example.label.as_str()).or_default() += 1;
    }
    if counts.len() < 2 {
        return Err(ApiError::invalid(
            FAMILY,
            format!(
                "examples need at least 2 distinct labels, got {}",
                counts.len()
            ),
        ));
    }
    if let Some((label, n)) = counts.iter().find(|(_, &n)| n < 2) {
        return Err(ApiError::invalid(
            FAMILY,
            format!("label '{label}' has {n} example; each label needs at least 2"),
        ));
    }
    let labels: Vec<String> = counts.keys().map(|l| l.to_string()).collect();
    let indices = examples
        .iter()
        .map(|e| labels.iter().position(|l| l == &e.label).unwrap_or(0))
        .collect();
    Ok((labels, indices))
}

pub async fn classify(
    State(state): State<AppState>,
    caller: MaybeCaller,
    ApiJson(req, _): CohereJson<ClassifyRequest>,
) -> Result<Response, ApiError> {
    if req.preset.is_some() {
        return Err(ApiError::invalid(
            FAMILY,
            "presets are not supported; send examples",
        ));
    }
    if req.inputs.is_empty() || req.inputs.len() > MAX_TEXTS {
        return Err(ApiError::invalid(
            FAMILY,
            format!(
                "inputs must hold 1 to {MAX_TEXTS} texts, got {}",
                req.inputs.len()
            ),
        ));
    }
    if let Some(i) = req.inputs.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(FAMILY, format!("inputs[{i}] is empty")));
    }
    let examples = req
        .examples
        .ok_or_else(|| ApiError::invalid(FAMILY, "examples are required (at least 2 per label)"))?;
    let (labels, targets) = check_examples(&examples)?;
    let truncate = parse_truncate(FAMILY, req.truncate.as_deref())?;
    let encoder = state.encoder(FAMILY, req.model.as_deref())?;

    let mut texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    texts.extend(req.inputs.iter().cloned());
    let units = Units::classifications(req.inputs.len() as i64);
    let bill = Bill::admit(
        &state,
        &caller,
        FAMILY,
        Capability::Classify,
        &encoder.info().name,
        units,
    )
    .await?;
    let embedded = embed_texts(FAMILY, &encoder, texts, truncate).await?;
    let (example_vectors, input_vectors) = embedded.vectors.split_at(examples.len());
    let training: Vec<(Vec<f32>, usize)> = example_vectors.iter().cloned().zip(targets).collect();
    let head = tokio::task::spawn_blocking(move || {
        LinearClassifier::fit(labels, &training, FitOptions::default())
    })
    .await
    .map_err(|e| ApiError::internal(FAMILY, format!("fitting failed: {e}")))?;

    let classifications: Vec<Value> = req
        .inputs
        .iter()
        .zip(input_vectors)
        .map(|(input, vector)| {
            let probabilities = head.predict(vector);
            let best = probabilities
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            let mut per_label = Map::new();
            for (label, p) in head.labels.iter().zip(&probabilities) {
                per_label.insert(label.clone(), json!({ "confidence": p }));
            }
            json!({
                "id": new_id(),
                "input": input,
                "prediction": head.labels[best],
                "predictions": [head.labels[best]],
                "confidence": probabilities[best],
                "confidences": [probabilities[best]],
                "labels": per_label,
                "classification_type": "single-label",
            })
        })
        .collect();
    let receipt = bill.settle(units).await?;
    Ok(receipt.json(json!({
        "id": new_id(),
        "classifications": classifications,
        "meta": {
            "api_version": { "version": "1" },
            "billed_units": { "classifications": req.inputs.len() },
        },
    })))
}
