//! Checks on everything the caller sends, before the engine sees any of it: each chat turn,
//! each document (given or retrieved) and each tool result. Deterministic detectors first;
//! then the injection monitor over what the user and the world wrote (user turns, tool
//! results, documents — never the developer's system prompt, which is theirs to write).
//! A block refuses the call naming the policy; a redaction replaces values with typed
//! placeholders (kept aside to be put back in the answer where the policy allows).

use std::sync::Arc;

use enclave_guard::policy::{strictest, Action, Decided, Direction};
use enclave_guard::Vault;

use super::monitor::score_texts;
use super::{Audit, Effective};
use crate::auth::Call;
use crate::error::ApiError;
use crate::pipeline::{GroundingRequest, Prompt};

/// What the input checks leave for the rest of the call.
pub struct Checked {
    /// The redacted values, when the policy puts them back in the answer.
    pub vault: Option<Arc<Vault>>,
    pub audit: Audit,
}

/// One text of the request: where it came from and whether the monitor reads it.
struct Source {
    name: String,
    text: String,
    monitored: bool,
    /// The document's index among the grounding documents (`None`: a chat turn or prompt).
    document: Option<usize>,
}

/// Runs the input checks of `effective`'s policy over the prompt and the documents, redacting
/// in place; a block is answered with a 400 naming the policy (recorded first).
pub async fn check_input(
    call: &Call,
    effective: &Effective,
    route: &'static str,
    prompt: &mut Prompt,
    grounding: &mut Option<GroundingRequest>,
) -> Result<Checked, ApiError> {
    let policy = Arc::clone(&effective.policy);
    let mut audit = Audit::new(call, route, &policy.name);
    if !policy.checks(Direction::Input) {
        return Ok(Checked { vault: None, audit });
    }
    let mut sources = Vec::new();
    match &*prompt {
        Prompt::Chat(messages) => {
            for (i, m) in messages.iter().enumerate() {
                sources.push(Source {
                    name: format!("message:{i}"),
                    text: m.content.clone(),
                    monitored: matches!(m.role.as_str(), "user" | "tool"),
                    document: None,
                });
            }
        }
        Prompt::Text(text) => sources.push(Source {
            name: "prompt".into(),
            text: text.clone(),
            monitored: true,
            document: None,
        }),
    }
    let documents_from = sources.len();
    if let Some(g) = grounding.as_ref() {
        // Tool results are checked as the tool turns they also are.
        for (index, d) in g.documents.iter().enumerate().filter(|(_, d)| !d.from_tool) {
            sources.push(Source {
                name: format!("document:{}", d.id),
                text: d.passage.text.clone(),
                monitored: true,
                document: Some(index),
            });
        }
    }
    let scan_policy = Arc::clone(&policy);
    let texts: Vec<String> = sources.iter().map(|s| s.text.clone()).collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut decided: Vec<Vec<Decided>> = crate::blocking::off_runtime_if_large(bytes, move || {
        texts
            .iter()
            .map(|t| scan_policy.scan(t, Direction::Input))
            .collect()
    })
    .await?;
    if policy.wants_monitor(Direction::Input) {
        let watched: Vec<usize> = (0..sources.len())
            .filter(|i| sources[*i].monitored)
            .collect();
        let texts: Vec<&str> = watched.iter().map(|i| sources[*i].text.as_str()).collect();
        // A policy that acts on the monitor refuses text past its bound; one that only flags
        // scores what fits.
        let acts = policy.injection.is_some_and(|(_, a)| a > Action::Flag);
        match score_texts(&call.state, &texts, acts).await? {
            Some(scores) => {
                for (i, scored) in watched.iter().zip(scores) {
                    if let Some(d) = policy.judge_injection(scored.score, scored.start, scored.end)
                    {
                        decided[*i].push(d);
                    }
                }
            }
            // A policy that only flags can run without the monitor; one that acts cannot.
            None if policy.injection.is_some_and(|(_, a)| a > Action::Flag) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "policy '{}' needs the injection monitor, which this server does not serve",
                        policy.name
                    ),
                ));
            }
            None => {}
        }
    }
    for (source, found) in sources.iter().zip(&decided) {
        audit.add_all(Direction::Input, &source.name, found, &source.text);
    }
    let all: Vec<Decided> = decided.iter().flatten().cloned().collect();
    if strictest(&all) == Action::Block {
        let (source, first) = sources
            .iter()
            .zip(&decided)
            .find_map(|(s, found)| {
                found
                    .iter()
                    .find(|d| d.action == Action::Block)
                    .map(|d| (s, d))
            })
            .ok_or_else(|| ApiError::internal("a block without its finding"))?;
        let message = format!(
            "blocked by guardrail policy '{}': {} found in {} (request {})",
            policy.name,
            first.finding.kind.as_str(),
            source.name,
            audit.request_id()
        );
        audit.record(&call.state).await;
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            message,
        ));
    }
    let mut vault = Vault::default();
    for (i, found) in decided.iter().enumerate() {
        let mut redact: Vec<&enclave_guard::Finding> = found
            .iter()
            .filter(|d| d.action == Action::Redact)
            .map(|d| &d.finding)
            .collect();
        redact.sort_by_key(|f| f.start);
        // Of overlapping values (a custom pattern over a card) the first is replaced.
        let mut end = 0;
        redact.retain(|f| {
            let keep = f.start >= end;
            if keep {
                end = f.end;
            }
            keep
        });
        if redact.is_empty() {
            continue;
        }
        if i < documents_from {
            let redacted = vault.redact(&sources[i].text, &redact);
            match prompt {
                Prompt::Chat(messages) => messages[i].content = redacted.text,
                Prompt::Text(text) => *text = redacted.text,
            }
        } else if let (Some(index), Some(g)) = (sources[i].document, grounding.as_mut()) {
            let documents = Arc::make_mut(&mut g.documents);
            if let Some(doc) = documents.get_mut(index) {
                let parts: Vec<(usize, usize, String)> = redact
                    .iter()
                    .map(|f| {
                        let value = &sources[i].text[f.start..f.end];
                        let whole =
                            enclave_guard::Finding::new(f.detector.clone(), f.kind, 0, value.len());
                        (f.start, f.end, vault.redact(value, &[&whole]).text)
                    })
                    .collect();
                doc.replace_in_passage(&parts);
            }
        }
    }
    audit.record(&call.state).await;
    let vault = (policy.restore && !vault.is_empty()).then(|| Arc::new(vault));
    Ok(Checked { vault, audit })
}
