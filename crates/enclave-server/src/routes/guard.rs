//! `POST /v1/guard/check` (Enclave's own) and `POST /v1/moderations` (OpenAI's shape): the
//! same checks the request path runs, on text a caller hands in, billed as `guard`.

use std::sync::Arc;

use axum::response::Response;
use enclave_guard::policy::{findings_json, strictest, Decided, Direction, STRICT};
use enclave_guard::Policy;
use enclave_store::{Capability, Units};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Call;
use crate::capability::run_billed;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::guard::monitor::score_texts;
use crate::guard::{effective, SafetyMode};

/// Longest text one check reads, in characters.
const MAX_CHECK_CHARS: usize = 200_000;
/// Most texts one moderation call reads.
const MAX_MODERATION_INPUTS: usize = 32;
/// What the checks are billed as: the guard model, whatever policy ran.
const GUARD_MODEL: &str = "enclave-guard";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    text: String,
    policy: Option<String>,
    direction: Option<String>,
}

/// The findings of `policy` on each text, with the monitor's where the policy runs it on input.
async fn decide(
    call: &Call,
    policy: &Arc<Policy>,
    texts: &[String],
    direction: Direction,
) -> Result<Vec<Vec<Decided>>, ApiError> {
    let mut decided: Vec<Vec<Decided>> = texts.iter().map(|t| policy.scan(t, direction)).collect();
    if policy.wants_monitor(direction) {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let scores = score_texts(&call.state, &refs, true)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the injection monitor is not served here (no embedding model it was trained on)",
            )
            })?;
        for (found, s) in decided.iter_mut().zip(scores) {
            found.extend(policy.judge_injection(s.score, s.start, s.end));
        }
    }
    Ok(decided)
}

/// The policy a check runs: the one named, else the caller's attached one, else `strict`
/// (which looks for everything).
async fn check_policy(call: &Call, named: Option<&str>) -> Result<Arc<Policy>, ApiError> {
    let policies = &call.state.guardrails().policies;
    if let Some(name) = named {
        return policies.get(name).ok_or_else(|| {
            let known: Vec<&String> = policies.names().collect();
            ApiError::invalid(format!("unknown policy '{name}'; defined: {known:?}"))
        });
    }
    let attached = effective(call, SafetyMode::Strict).await?;
    Ok(attached.policy)
}

fn classifications(texts: &[String]) -> i64 {
    texts
        .iter()
        .map(|t| t.chars().count().div_ceil(1000).max(1) as i64)
        .sum()
}

pub async fn check(call: Call, ApiJson(req): ApiJson<CheckRequest>) -> Result<Response, ApiError> {
    let direction = match req.direction.as_deref() {
        None => Direction::Input,
        Some(d) => Direction::parse(d).ok_or_else(|| {
            ApiError::invalid(format!("direction must be input or output, got '{d}'"))
        })?,
    };
    if req.text.is_empty() {
        return Err(ApiError::invalid("text must not be empty"));
    }
    if req.text.chars().count() > MAX_CHECK_CHARS {
        return Err(ApiError::invalid(format!(
            "text is longer than {MAX_CHECK_CHARS} characters"
        )));
    }
    let policy = check_policy(&call, req.policy.as_deref()).await?;
    let texts = vec![req.text];
    let units = Units {
        classifications: classifications(&texts),
        ..Units::default()
    };
    let work = async {
        let decided = decide(&call, &policy, &texts, direction).await?;
        Ok((decided, units))
    };
    run_billed(
        &call,
        Capability::Guard,
        GUARD_MODEL,
        units,
        work,
        |decided, units| {
            let found = &decided[0];
            json!({
                "id": call.request_id,
                "policy": policy.name,
                "direction": direction.as_str(),
                "action": strictest(found).as_str(),
                "findings": findings_json(&texts[0], found),
                "meta": { "billed_units": { "classifications": units.classifications } },
            })
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct ModerationRequest {
    input: ModerationInput,
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ModerationInput {
    One(String),
    Many(Vec<String>),
    Parts(Vec<ModerationPart>),
}

#[derive(Debug, Deserialize)]
struct ModerationPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// OpenAI's categories, none of which Enclave classifies: always reported, never flagged.
const OPENAI_CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// Enclave's categories and the finding types each covers.
const ENCLAVE_CATEGORIES: &[(&str, &[&str])] = &[
    ("pii", &["EMAIL", "PHONE", "CARD", "IBAN", "US_SSN", "IP"]),
    ("secrets", &["SECRET"]),
    ("prompt_injection", &["INJECTION"]),
];

pub async fn moderations(
    call: Call,
    ApiJson(req): ApiJson<ModerationRequest>,
) -> Result<Response, ApiError> {
    let texts: Vec<String> = match req.input {
        ModerationInput::One(text) => vec![text],
        ModerationInput::Many(texts) => texts,
        ModerationInput::Parts(parts) => parts
            .into_iter()
            .map(|p| match (p.kind.as_str(), p.text) {
                ("text", Some(text)) => Ok(text),
                (kind, _) => Err(ApiError::invalid(format!(
                    "only text inputs are moderated here, got a '{kind}' part"
                ))),
            })
            .collect::<Result<_, _>>()?,
    };
    if texts.is_empty() || texts.len() > MAX_MODERATION_INPUTS {
        return Err(ApiError::invalid(format!(
            "input must hold 1 to {MAX_MODERATION_INPUTS} texts"
        )));
    }
    if texts.iter().any(|t| t.chars().count() > MAX_CHECK_CHARS) {
        return Err(ApiError::invalid(format!(
            "each input is at most {MAX_CHECK_CHARS} characters"
        )));
    }
    let model = req.model.unwrap_or_else(|| GUARD_MODEL.to_string());
    let policy = check_policy(&call, Some(STRICT)).await?;
    let units = Units {
        classifications: classifications(&texts),
        ..Units::default()
    };
    let work = async {
        let decided = decide(&call, &policy, &texts, Direction::Input).await?;
        Ok((decided, units))
    };
    run_billed(&call, Capability::Guard, GUARD_MODEL, units, work, |decided, _| {
        let results: Vec<Value> = decided
            .iter()
            .map(|found| {
                let mut categories = serde_json::Map::new();
                let mut scores = serde_json::Map::new();
                let mut applied = serde_json::Map::new();
                for name in OPENAI_CATEGORIES {
                    categories.insert(name.to_string(), json!(false));
                    scores.insert(name.to_string(), json!(0.0));
                    applied.insert(name.to_string(), json!([]));
                }
                for (name, kinds) in ENCLAVE_CATEGORIES {
                    let hits: Vec<&Decided> = found.iter().filter(|d| kinds.contains(&d.finding.kind.as_str())).collect();
                    let score = hits.iter().map(|d| d.finding.score).fold(0.0f32, f32::max);
                    categories.insert(name.to_string(), json!(!hits.is_empty()));
                    scores.insert(name.to_string(), json!(score));
                    applied.insert(name.to_string(), json!(["text"]));
                }
                json!({
                    "flagged": !found.is_empty(),
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": applied,
                })
            })
            .collect();
        json!({ "id": format!("modr-{}", call.request_id.trim_start_matches("req_")), "model": model, "results": results })
    })
    .await
}
