//! Grounded generation: the caller's documents go before the model as a system text, and the
//! answer is checked against them as it is generated (enclave-rag's [`AnswerChecker`]), so every
//! citation is computed and true. Each wire family maps its own fields to a
//! [`GroundingRequest`] and renders [`GroundedAnswer`] in its own shape.

use std::sync::Arc;

use enclave_engine::encoder::{TextEncoder, Truncate};
use enclave_engine::ChatMessage;
use enclave_rag::{
    grounding_instructions, AnswerChecker, Checked, Embedder, Grounding, Origin, SourceDocument,
    Unsupported,
};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::{AppState, ModelRole};

/// Most documents one grounded chat may carry.
pub const MAX_DOCUMENTS: usize = 256;

/// How citations are computed, from Cohere's `citation_options.mode` / `citation_quality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CitationMode {
    /// Words, numbers and meaning (embedding similarity): Cohere's default.
    Accurate,
    /// Words and numbers only.
    Fast,
    /// No citations are returned (the answer is still checked).
    Off,
}

impl CitationMode {
    /// Cohere's mode names, in any case.
    pub fn parse(mode: &str) -> Result<Self, ApiError> {
        match mode.to_ascii_uppercase().as_str() {
            "ACCURATE" | "ENABLED" => Ok(Self::Accurate),
            "FAST" => Ok(Self::Fast),
            "OFF" | "DISABLED" => Ok(Self::Off),
            _ => Err(ApiError::invalid(format!(
                "citation mode must be ACCURATE, FAST, ENABLED, DISABLED or OFF, got {mode}"
            ))),
        }
    }
}

/// `on_unsupported` (an Enclave extension): what happens to claims no document supports.
pub fn parse_unsupported(value: Option<&str>) -> Result<Unsupported, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("flag") => Ok(Unsupported::Flag),
        Some("decline") => Ok(Unsupported::Withhold),
        Some(other) => Err(ApiError::invalid(format!(
            "on_unsupported must be flag or decline, got {other}"
        ))),
    }
}

/// A document as a wire family hands it over.
#[derive(Debug, Clone, Default)]
pub struct DocumentInput {
    /// `None`: made up from the document's position.
    pub id: Option<String>,
    pub fields: Map<String, Value>,
    /// Fields echoed in citations but never shown to the model.
    pub hidden: Vec<String>,
    /// Set for chunks retrieved from a collection.
    pub origin: Option<Origin>,
    /// A tool's result: already in the conversation, cited as a tool source.
    pub from_tool: bool,
    /// The tool that produced it (read by the answer check, not echoed).
    pub tool_name: String,
}

/// The documents of a grounded chat and how to check the answer.
#[derive(Debug, Clone)]
pub struct GroundingRequest {
    pub documents: Arc<Vec<SourceDocument>>,
    pub citations: CitationMode,
    pub unsupported: Unsupported,
    /// The question answered (the chat's last user message).
    pub question: Option<String>,
}

impl GroundingRequest {
    /// The documents of a chat; ids are made up as `prefix` + N (`doc:0`) where the caller
    /// gave none, and must be unique.
    pub fn new(
        documents: Vec<DocumentInput>,
        id_prefix: &str,
        citations: CitationMode,
        unsupported: Unsupported,
    ) -> Result<Option<Self>, ApiError> {
        if documents.is_empty() {
            return Ok(None);
        }
        if documents.len() > MAX_DOCUMENTS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_DOCUMENTS} documents may be given, got {}",
                documents.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(documents.len());
        for (n, input) in documents.into_iter().enumerate() {
            let id = input.id.unwrap_or_else(|| format!("{id_prefix}{n}"));
            if id.is_empty() {
                return Err(ApiError::invalid(format!(
                    "documents[{n}].id must not be empty"
                )));
            }
            if !seen.insert(id.clone()) {
                return Err(ApiError::invalid(format!(
                    "documents[{n}].id '{id}' is used by another document"
                )));
            }
            let mut doc = if input.from_tool {
                SourceDocument::record(id, input.fields, &input.tool_name)
            } else {
                SourceDocument::new(id, input.fields, &input.hidden)
            };
            doc.origin = input.origin;
            if doc.passage.text.trim().is_empty() {
                return Err(ApiError::invalid(format!(
                    "documents[{n}] has no text the model can read"
                )));
            }
            out.push(doc);
        }
        Ok(Some(Self {
            documents: Arc::new(out),
            citations,
            unsupported,
            question: None,
        }))
    }

    /// Whether the documents go before the chat (tool results are in it already).
    pub fn prompts(&self) -> bool {
        self.documents.iter().any(|d| !d.from_tool)
    }

    /// The chat with the documents put before it as a system text (ahead of the caller's own).
    pub fn ground(&self, messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
        let shown: Vec<SourceDocument> = self
            .documents
            .iter()
            .filter(|d| !d.from_tool)
            .cloned()
            .collect();
        if shown.is_empty() {
            return messages;
        }
        let mut instructions = grounding_instructions(&shown);
        let mut rest = messages.into_iter().peekable();
        if let Some(first) = rest.next_if(|m| m.role == "system") {
            instructions.push_str("\n\n");
            instructions.push_str(&first.content);
        }
        std::iter::once(ChatMessage::new("system", instructions))
            .chain(rest)
            .collect()
    }

    /// A checker for one answer; accurate citations compare meaning with the default embedder.
    pub fn checker(&self, state: &AppState) -> AnswerChecker {
        let embedder = match self.citations {
            CitationMode::Accurate => state
                .default_name(ModelRole::Embed)
                .and_then(|name| state.encoder_named(&name).cloned())
                .filter(|e| e.info().head.is_embedding())
                .map(|encoder| Box::new(EncoderEmbedder(encoder)) as Box<dyn Embedder + Send>),
            _ => None,
        };
        let passages: Vec<_> = self.documents.iter().map(|d| d.passage.clone()).collect();
        let mut checker = AnswerChecker::new(&passages, self.unsupported, embedder);
        if let Some(question) = &self.question {
            checker.set_question(question);
        }
        checker
    }
}

/// The check of a finished answer, for the wire formats.
#[derive(Debug, Clone)]
pub struct GroundedAnswer {
    pub documents: Arc<Vec<SourceDocument>>,
    pub grounding: Grounding,
    /// Unsupported claims were left out of the answer.
    pub withheld: bool,
    /// Whether citations are returned.
    pub cite: bool,
}

/// An answer being checked as it streams.
pub struct Checking {
    pub checker: AnswerChecker,
    pub request: GroundingRequest,
}

impl Checking {
    /// Feeds generated text (`None`: the answer is complete) and returns what to send. Meaning
    /// comparisons run the embedder, so the work leaves the async runtime.
    pub async fn feed(
        mut self: Box<Self>,
        text: Option<String>,
    ) -> Result<(Box<Self>, Vec<Checked>), ApiError> {
        let work = move || {
            let out = match &text {
                Some(text) => self.checker.push(text),
                None => self.checker.finish(),
            };
            (self, out)
        };
        crate::blocking::off_runtime(work).await
    }

    /// Checks a whole answer in one hop off the runtime; returns the text to send (unsupported
    /// claims left out when they are withheld).
    pub async fn whole(mut self: Box<Self>, text: String) -> Result<(Box<Self>, String), ApiError> {
        let work = move || {
            let mut out = self.checker.push(&text);
            out.extend(self.checker.finish());
            let sent = out
                .into_iter()
                .filter_map(|piece| match piece {
                    Checked::Text(text) => Some(text),
                    Checked::Cite(_) => None,
                })
                .collect();
            (self, sent)
        };
        crate::blocking::off_runtime(work).await
    }

    pub fn answer(&self) -> GroundedAnswer {
        GroundedAnswer {
            documents: Arc::clone(&self.request.documents),
            grounding: self.checker.grounding().clone(),
            withheld: self.checker.withheld(),
            cite: self.request.citations != CitationMode::Off,
        }
    }
}

/// Sentence embeddings from a served encoder; runs on a blocking thread.
struct EncoderEmbedder(Arc<dyn TextEncoder>);

impl Embedder for EncoderEmbedder {
    fn embed(&self, texts: &[String]) -> Option<Vec<Vec<f32>>> {
        let inputs = texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.0.tokenize(i, t, Truncate::End))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        self.0.encode(inputs).ok()?.blocking_recv().ok()?.ok()
    }
}
