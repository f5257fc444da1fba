//! The classify capability: a linear head fitted on the embeddings of the call's labelled
//! examples, then applied to its inputs. Billed per input classified (Cohere's unit); the
//! examples' embedded tokens are metered too, as input tokens, so the price book can charge
//! for the work they cause.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::response::Response;
use enclave_engine::classifier::{FitOptions, LinearClassifier};
use enclave_engine::encoder::{InputType, TextEncoder, Truncate};
use enclave_store::{Capability, Units};
use serde_json::Value;

use super::embed::{embed_texts, for_task, max_tokens};
use super::run_billed;
use crate::auth::Call;
use crate::error::ApiError;

/// Most labelled examples per call.
pub const MAX_EXAMPLES: usize = 2500;

/// One classify call: labelled examples (text, label) and the inputs to label.
pub struct ClassifyJob {
    pub examples: Vec<(String, String)>,
    pub inputs: Vec<String>,
    pub truncate: Truncate,
}

/// The fitted head's labels (sorted) and, per input, a probability per label.
pub struct Predictions {
    pub labels: Vec<String>,
    pub probabilities: Vec<Vec<f32>>,
}

/// Checks the examples and returns the labels (sorted) and each example's label index.
fn check_examples(examples: &[(String, String)]) -> Result<(Vec<String>, Vec<usize>), ApiError> {
    if examples.len() > MAX_EXAMPLES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_EXAMPLES} examples, got {}",
            examples.len()
        )));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (text, label)) in examples.iter().enumerate() {
        if text.trim().is_empty() {
            return Err(ApiError::invalid(format!(
                "examples[{i}] has an empty text"
            )));
        }
        if label.trim().is_empty() {
            return Err(ApiError::invalid(format!(
                "examples[{i}] has an empty label"
            )));
        }
        *counts.entry(label.as_str()).or_default() += 1;
    }
    if counts.len() < 2 {
        return Err(ApiError::invalid(format!(
            "examples need at least 2 distinct labels, got {}",
            counts.len()
        )));
    }
    if let Some((label, n)) = counts.iter().find(|(_, &n)| n < 2) {
        return Err(ApiError::invalid(format!(
            "label '{label}' has {n} example; each label needs at least 2"
        )));
    }
    let labels: Vec<String> = counts.keys().map(|l| l.to_string()).collect();
    let indices = examples
        .iter()
        .map(|(_, label)| labels.iter().position(|l| l == label).unwrap_or(0))
        .collect();
    Ok((labels, indices))
}

/// Classifies `job`'s inputs as one billed call and answers with `render`'s JSON.
pub async fn classify(
    call: &Call,
    encoder: &Arc<dyn TextEncoder>,
    job: ClassifyJob,
    render: impl FnOnce(Predictions) -> Value,
) -> Result<Response, ApiError> {
    let (labels, targets) = check_examples(&job.examples)?;
    let inputs = job.inputs.len() as i64;
    let mut texts: Vec<String> = job.examples.into_iter().map(|(text, _)| text).collect();
    let example_count = texts.len();
    texts.extend(job.inputs);
    let max = Units {
        classifications: inputs,
        ..Units::tokens(max_tokens(&texts), 0)
    };
    let work = async {
        let texts = for_task(encoder.as_ref(), Some(InputType::Classification), texts);
        let embedded = embed_texts(encoder, texts, job.truncate).await?;
        let (example_vectors, input_vectors) = embedded.vectors.split_at(example_count);
        let training: Vec<(Vec<f32>, usize)> =
            example_vectors.iter().cloned().zip(targets).collect();
        let inputs: Vec<Vec<f32>> = input_vectors.to_vec();
        let embedded_tokens = embedded.tokens;
        let predictions = crate::blocking::off_runtime(move || {
            let head = LinearClassifier::fit(labels, &training, FitOptions::default());
            let probabilities = inputs.iter().map(|v| head.predict(v)).collect();
            Predictions {
                labels: head.labels,
                probabilities,
            }
        })
        .await?;
        let units = Units {
            classifications: predictions.probabilities.len() as i64,
            ..Units::tokens(i64::from(embedded_tokens), 0)
        };
        Ok((predictions, units))
    };
    let model = encoder.info().name.clone();
    run_billed(call, Capability::Classify, &model, max, work, |p, _| {
        render(p)
    })
    .await
}
