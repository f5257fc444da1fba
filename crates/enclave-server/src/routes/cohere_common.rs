//! Pieces both Cohere API versions share: message content shapes and the usage block.

use enclave_engine::ChatMessage;
use enclave_rag::{Citation, CitedSpan, SourceDocument};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Call;
use crate::collections::retrieve::{documents_for, question_of};
use crate::error::ApiError;
use crate::pipeline::grounding::parse_unsupported;
use crate::pipeline::{
    CitationMode, DocumentInput, GroundedAnswer, GroundingRequest, JsonFormat, SamplingInput, Usage,
};

/// Message content: a plain string or an array of typed parts (only text parts are served).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: Value },
    Thinking { thinking: String },
    Document { document: Value },
}

impl Content {
    /// The text of the content; parts this server cannot read yet are a clear 400.
    pub fn into_text(self) -> Result<String, ApiError> {
        match self {
            Content::Text(text) => Ok(text),
            Content::Parts(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        ContentPart::Text { text } => out.push_str(&text),
                        ContentPart::Thinking { .. } => {}
                        ContentPart::ImageUrl { .. } => {
                            return Err(ApiError::invalid(
                                "image content is not supported by the served models",
                            ))
                        }
                        ContentPart::Document { .. } => {
                            return Err(ApiError::invalid(
                                "document content parts are not supported yet",
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// A tool message's content: the text the model reads, and one document per content item
/// (`<call id>:<n>`) for citations. `data` may be an object or a JSON string; nested values are
/// echoed as JSON text, as Cohere does.
pub fn tool_documents(
    call_id: &str,
    tool_name: &str,
    content: Content,
) -> Result<(String, Vec<DocumentInput>), ApiError> {
    let items: Vec<Value> = match content {
        Content::Text(text) => vec![Value::String(text)],
        Content::Parts(parts) => parts
            .into_iter()
            .map(|part| match part {
                ContentPart::Text { text } => Ok(Value::String(text)),
                ContentPart::Document { document } => match document {
                    Value::Object(mut doc) => Ok(doc.remove("data").unwrap_or(Value::Null)),
                    _ => Err(ApiError::invalid(
                        "a tool result's document must be an object {data, id?}",
                    )),
                },
                _ => Err(ApiError::invalid(
                    "tool results may hold text and document parts only",
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut text = Vec::with_capacity(items.len());
    let mut documents = Vec::with_capacity(items.len());
    for (n, item) in items.into_iter().enumerate() {
        let parsed = match &item {
            Value::String(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object),
            Value::Object(_) => Some(item.clone()),
            _ => None,
        };
        text.push(match &item {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let fields: Map<String, Value> = match parsed {
            Some(Value::Object(obj)) if !obj.is_empty() => obj
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(_) => (k, v),
                    other => (k, Value::String(other.to_string())),
                })
                .collect(),
            _ if text[n].trim().is_empty() => continue,
            _ => Map::from_iter([("text".to_string(), Value::String(text[n].clone()))]),
        };
        documents.push(DocumentInput {
            id: Some(format!("{call_id}:{n}")),
            fields,
            from_tool: true,
            tool_name: tool_name.to_string(),
            ..DocumentInput::default()
        });
    }
    Ok((text.join("\n"), documents))
}

/// Cohere's `response_format` (both versions): `text`, or `json_object` with an optional schema,
/// enforced strictly (keywords the decoder cannot enforce are refused).
pub fn json_format(kind: &str, schema: Option<Value>) -> Result<Option<JsonFormat>, ApiError> {
    match kind.to_ascii_lowercase().as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(JsonFormat {
            schema: schema.filter(|s| !s.is_null()),
            strict: true,
        })),
        other => Err(ApiError::invalid(format!(
            "response_format type must be text or json_object, got {other}"
        ))),
    }
}

/// `billed_units` and `tokens` as Cohere reports them.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "billed_units": {
            "input_tokens": usage.billed_input,
            "output_tokens": usage.completion_tokens,
        },
        "tokens": {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
        },
        "cached_tokens": usage.cached_tokens,
    })
}

/// `meta` of v1 responses.
pub fn v1_meta(usage: Option<&Usage>) -> Value {
    let mut meta = json!({ "api_version": { "version": "1" } });
    if let (Some(usage), Some(obj)) = (usage, meta.as_object_mut()) {
        let u = usage_json(usage);
        obj.insert("billed_units".into(), u["billed_units"].clone());
        obj.insert("tokens".into(), u["tokens"].clone());
        obj.insert("cached_tokens".into(), u["cached_tokens"].clone());
    }
    meta
}

/// Refuses capabilities the request asks for that this server does not provide yet, instead of
/// silently ignoring them.
pub fn refuse_unsupported(fields: &[(&str, bool)]) -> Result<(), ApiError> {
    match fields.iter().find(|(_, present)| *present) {
        Some((name, _)) => Err(ApiError::invalid(format!(
            "'{name}' is not supported by this server yet"
        ))),
        None => Ok(()),
    }
}

/// `priority` is accepted for compatibility (0–999); requests are served in arrival order.
pub fn check_priority(priority: Option<i64>) -> Result<(), ApiError> {
    match priority {
        Some(p) if !(0..=999).contains(&p) => Err(ApiError::invalid(format!(
            "priority must be between 0 and 999, got {p}"
        ))),
        _ => Ok(()),
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The sampling fields every Cohere generation route carries, flattened into its request.
#[derive(Debug, Default, Deserialize)]
pub struct CohereSampling {
    max_tokens: Option<i64>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f64>,
    seed: Option<u64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    k: Option<i64>,
    p: Option<f64>,
}

impl CohereSampling {
    /// The pipeline's sampling input; `default_max_tokens` applies when the request names none.
    pub fn into_input(self, default_max_tokens: Option<i64>) -> SamplingInput {
        SamplingInput {
            temperature: self.temperature,
            k: self.k,
            p: self.p,
            seed: self.seed,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            max_tokens: self.max_tokens.or(default_max_tokens),
            stop: self.stop_sequences.unwrap_or_default(),
            ignore_eos: false,
        }
    }

    /// Adds stop sequences (v1 generate's `end_sequences` end generation the same way).
    pub fn stop_also(&mut self, more: Option<Vec<String>>) {
        if let Some(more) = more {
            self.stop_sequences
                .get_or_insert_with(Vec::new)
                .extend(more);
        }
    }
}

/// A document as citations echo it: the caller's fields plus `id`.
pub fn echoed(doc: &SourceDocument) -> Value {
    let mut fields = doc.fields.clone();
    fields.insert("id".into(), Value::String(doc.id.clone()));
    Value::Object(fields)
}

/// A citation's source in v2's shape; `span` (an Enclave extension) says which field of the
/// document holds the supporting text and where, in code points; a chunk retrieved from a
/// collection also names its stored document and the span's offsets in it.
fn source_json(doc: &SourceDocument, span: &CitedSpan) -> Value {
    if doc.from_tool {
        return json!({ "type": "tool", "id": doc.id, "tool_output": doc.fields });
    }
    let mut source = json!({ "type": "document", "id": doc.id, "document": echoed(doc) });
    let Some(at) = doc.locate(span) else {
        return source;
    };
    source["span"] =
        json!({ "field": at.field, "start": at.start, "end": at.end, "text": at.text });
    // A retrieved chunk: where the span lies in its stored document, so a UI can open it.
    if let (Some(origin), "text") = (&doc.origin, at.field.as_str()) {
        source["collection_id"] = json!(origin.collection_id);
        source["document_id"] = json!(origin.document_id);
        source["title"] = json!(origin.title);
        source["start"] = json!(origin.start + at.start);
        source["end"] = json!(origin.start + at.end);
    }
    source
}

/// A v2 citation.
pub fn v2_citation(citation: &Citation, documents: &[SourceDocument]) -> Value {
    let sources: Vec<Value> = citation
        .sources
        .iter()
        .filter_map(|s| documents.get(s.passage).map(|d| source_json(d, s)))
        .collect();
    json!({
        "start": citation.start,
        "end": citation.end,
        "text": citation.text,
        "type": "TEXT_CONTENT",
        "sources": sources,
    })
}

/// A v1 citation: the cited documents by id.
pub fn v1_citation(citation: &Citation, documents: &[SourceDocument]) -> Value {
    let ids: Vec<&str> = citation
        .sources
        .iter()
        .filter_map(|s| documents.get(s.passage).map(|d| d.id.as_str()))
        .collect();
    json!({ "start": citation.start, "end": citation.end, "text": citation.text, "document_ids": ids })
}

/// The answer check (an Enclave extension): the share of claims the documents support, whether
/// the answer declined, and the claims they do not support (left out when `withheld`).
pub fn grounding_json(answer: &GroundedAnswer) -> Value {
    let unsupported: Vec<Value> = answer
        .grounding
        .unsupported()
        .map(|c| json!({ "start": c.start, "end": c.end, "text": c.text, "support": c.support }))
        .collect();
    json!({
        "groundedness": answer.grounding.groundedness(),
        "declined": answer.grounding.is_decline(),
        "withheld": answer.withheld,
        "unsupported": unsupported,
    })
}

/// The grounding fields both versions share: the caller's documents, the extension
/// `collections` (their best chunks for the chat's question join the documents), the citation
/// mode and the extension `on_unsupported`.
pub struct GroundingFields<'a> {
    pub documents: Vec<DocumentInput>,
    pub collections: Option<Vec<String>>,
    pub id_prefix: &'a str,
    pub mode: Option<&'a str>,
    pub on_unsupported: Option<&'a str>,
}

impl GroundingFields<'_> {
    /// The grounding request of a chat of `messages`, if it has any documents.
    pub async fn request(
        mut self,
        call: &Call,
        messages: &[ChatMessage],
    ) -> Result<Option<GroundingRequest>, ApiError> {
        let mode = self
            .mode
            .map_or(Ok(CitationMode::Accurate), CitationMode::parse)?;
        let unsupported = parse_unsupported(self.on_unsupported)?;
        let question = question_of(messages);
        if let Some(names) = self.collections.filter(|c| !c.is_empty()) {
            let key = call
                .caller
                .caller
                .as_ref()
                .ok_or_else(ApiError::unauthorized)?;
            let question = question.ok_or_else(|| {
                ApiError::invalid("collections need a user message to search for")
            })?;
            let found = documents_for(&call.state, &key.0, &names, question).await?;
            self.documents.extend(found);
        }
        let mut request = GroundingRequest::new(self.documents, self.id_prefix, mode, unsupported)?;
        if let Some(request) = &mut request {
            request.question = question.map(str::to_string);
        }
        Ok(request)
    }
}
