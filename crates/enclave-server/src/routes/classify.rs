//! `POST /v1/classify`: Cohere's classify request mapped onto the classify capability.

use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Call;
use crate::capability::classify::{classify as run_classify, ClassifyJob, Predictions};
use crate::capability::embed::{parse_truncate, MAX_TEXTS};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::cohere_common::new_id;

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

pub async fn classify(
    call: Call,
    ApiJson(req): ApiJson<ClassifyRequest>,
) -> Result<Response, ApiError> {
    if req.preset.is_some() {
        return Err(ApiError::invalid(
            "presets are not supported; send examples",
        ));
    }
    if req.inputs.is_empty() || req.inputs.len() > MAX_TEXTS {
        return Err(ApiError::invalid(format!(
            "inputs must hold 1 to {MAX_TEXTS} texts, got {}",
            req.inputs.len()
        )));
    }
    if let Some(i) = req.inputs.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(format!("inputs[{i}] is empty")));
    }
    let examples = req
        .examples
        .ok_or_else(|| ApiError::invalid("examples are required (at least 2 per label)"))?;
    let truncate = parse_truncate(req.truncate.as_deref())?;
    let encoder = call.state.encoder(req.model.as_deref())?;
    let inputs = req.inputs.clone();
    let job = ClassifyJob {
        examples: examples.into_iter().map(|e| (e.text, e.label)).collect(),
        inputs: req.inputs,
        truncate,
    };
    run_classify(&call, &encoder, job, move |predictions| {
        json!({
            "id": new_id(),
            "classifications": render(&inputs, &predictions),
            "meta": {
                "api_version": { "version": "1" },
                "billed_units": { "classifications": inputs.len() },
            },
        })
    })
    .await
}

fn render(inputs: &[String], predictions: &Predictions) -> Vec<Value> {
    inputs
        .iter()
        .zip(&predictions.probabilities)
        .map(|(input, probabilities)| {
            let best = probabilities
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            let mut per_label = Map::new();
            for (label, p) in predictions.labels.iter().zip(probabilities) {
                per_label.insert(label.clone(), json!({ "confidence": p }));
            }
            let label = predictions.labels.get(best).cloned().unwrap_or_default();
            json!({
                "id": new_id(),
                "input": input,
                "prediction": label,
                "predictions": [label],
                "confidence": probabilities.get(best),
                "confidences": [probabilities.get(best)],
                "labels": per_label,
                "classification_type": "single-label",
            })
        })
        .collect()
}
