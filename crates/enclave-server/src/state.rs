//! What every handler can reach: the loaded models and the server's settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enclave_engine::catalog::ModelKind;
use enclave_engine::encoder::TextEncoder;
use enclave_engine::TextGenerator;

use enclave_store::ModelType;

use crate::access::Access;
use crate::collections::Library;
use crate::error::ApiError;
use crate::guard::Guardrails;
use crate::http::HttpLimits;

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest file upload (multipart documents into a collection), in bytes.
    pub max_upload_bytes: usize,
    /// Most inputs one embed call may carry (more: 413).
    pub max_client_batch_size: usize,
    /// Longest a streamed answer may run; it then ends as if it reached its token limit.
    /// Shorter than a budget hold lasts, so a stream never outlives its hold.
    pub longest_stream: Duration,
    /// Model names clients may use for served models (`command-r` → the default chat model),
    /// on top of [`DEFAULT_ALIASES`]; an alias naming no served model is ignored.
    pub aliases: Vec<(String, String)>,
    /// Header and body deadlines, connection cap.
    pub http: HttpLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_upload_bytes: 64 * 1024 * 1024,
            max_client_batch_size: 96,
            longest_stream: Duration::from_secs(30 * 60),
            aliases: Vec::new(),
            http: HttpLimits::default(),
        }
    }
}

/// What a model does for a request: which served model a Cohere public name stands for, and
/// which one a request that names none gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRole {
    Chat,
    Embed,
    Rerank,
}

/// Cohere's public model names, so code written for the hosted API runs unchanged; each
/// resolves to the default served model of its kind.
pub const DEFAULT_ALIASES: &[(&str, ModelRole)] = &[
    ("command", ModelRole::Chat),
    ("command-light", ModelRole::Chat),
    ("command-r", ModelRole::Chat),
    ("command-r-08-2024", ModelRole::Chat),
    ("command-r-plus", ModelRole::Chat),
    ("command-r-plus-08-2024", ModelRole::Chat),
    ("command-r7b-12-2024", ModelRole::Chat),
    ("command-a-03-2025", ModelRole::Chat),
    ("embed-english-v3.0", ModelRole::Embed),
    ("embed-english-light-v3.0", ModelRole::Embed),
    ("embed-multilingual-v3.0", ModelRole::Embed),
    ("embed-multilingual-light-v3.0", ModelRole::Embed),
    ("embed-v4.0", ModelRole::Embed),
    ("rerank-english-v3.0", ModelRole::Rerank),
    ("rerank-multilingual-v3.0", ModelRole::Rerank),
    ("rerank-v3.5", ModelRole::Rerank),
];

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    /// In the order given at start-up; the first is the default model.
    models: Vec<Arc<dyn TextGenerator>>,
    /// Encoders in start-up order: sentence encoders (the first is the default embedding model)
    /// and cross-encoder rerankers.
    encoders: Vec<Arc<dyn TextEncoder>>,
    /// Keys, limits and metering; `None` only for benchmarks of the bare engine path.
    access: Option<Arc<Access>>,
    /// Alias → served model name.
    aliases: BTreeMap<String, String>,
    /// Document collections; `None` without accounts.
    library: Option<Arc<Library>>,
    /// Policies and the injection monitor's head.
    guardrails: Arc<Guardrails>,
}

impl AppState {
    pub fn new(
        config: ServerConfig,
        models: Vec<Arc<dyn TextGenerator>>,
        encoders: Vec<Arc<dyn TextEncoder>>,
        access: Option<Arc<Access>>,
    ) -> Self {
        let mut state = Self {
            inner: Arc::new(Inner {
                aliases: BTreeMap::new(),
                config,
                models,
                encoders,
                access,
                library: None,
                guardrails: Arc::new(Guardrails::default()),
            }),
        };
        let aliases = state.alias_table();
        if let Some(inner) = Arc::get_mut(&mut state.inner) {
            inner.aliases = aliases;
        }
        state
    }

    /// The model a request for `role` uses when it names none: the first chat model; the first
    /// embedding model; for rerank a served cross-encoder, else the embedding model by cosine,
    /// else the chat model as judge.
    pub fn default_name(&self, role: ModelRole) -> Option<String> {
        let first_chat = || {
            self.inner
                .models
                .iter()
                .find(|m| m.info().kind == ModelKind::Chat)
                .map(|m| m.info().name.clone())
        };
        let first_embedding = || {
            self.encoders_where(true)
                .next()
                .map(|e| e.info().name.clone())
        };
        match role {
            ModelRole::Chat => first_chat(),
            ModelRole::Embed => first_embedding(),
            // An LLM judge only when named: small chat models rank near random as judges
            // (the 135M one at random), while embedding cosine scored higher on the rerank set.
            ModelRole::Rerank => self
                .first_cross_encoder()
                .map(|e| e.info().name.clone())
                .or_else(first_embedding)
                .or_else(first_chat),
        }
    }

    /// The built-in aliases whose role is served, then the configured ones (which win).
    fn alias_table(&self) -> BTreeMap<String, String> {
        let mut table = BTreeMap::new();
        for (alias, role) in DEFAULT_ALIASES {
            if let Some(name) = self.default_name(*role) {
                table.insert(alias.to_string(), name);
            }
        }
        for (alias, target) in &self.inner.config.aliases {
            if self.is_served(target) {
                table.insert(alias.clone(), target.clone());
            } else {
                tracing::warn!("alias '{alias}' names '{target}', which is not served; ignored");
            }
        }
        table
    }

    fn is_served(&self, name: &str) -> bool {
        self.inner.models.iter().any(|m| m.info().name == name)
            || self.encoder_named(name).is_some()
    }

    /// Every alias and the served model it stands for.
    pub fn aliases(&self) -> &BTreeMap<String, String> {
        &self.inner.aliases
    }

    /// The served model a requested name stands for: itself when served, else its alias.
    pub fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        if self.is_served(name) {
            return name;
        }
        self.inner.aliases.get(name).map_or(name, String::as_str)
    }

    /// The same state with document collections (set once, at start).
    pub fn with_library(mut self, library: Arc<Library>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.library = Some(library),
            None => tracing::error!("collections must be attached before the state is shared"),
        }
        self
    }

    /// The same state with these guardrails (set once, at start).
    pub fn with_guardrails(mut self, guardrails: Guardrails) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.guardrails = Arc::new(guardrails),
            None => tracing::error!("guardrails must be attached before the state is shared"),
        }
        self
    }

    pub fn guardrails(&self) -> &Guardrails {
        &self.inner.guardrails
    }

    pub fn library(&self) -> Option<&Arc<Library>> {
        self.inner.library.as_ref()
    }

    pub fn access(&self) -> Option<&Arc<Access>> {
        self.inner.access.as_ref()
    }

    /// Whether a served model is a base model or a tenant's custom one. Every model served
    /// today ships with Enclave; custom models arrive with fine-tuning.
    pub fn model_type(&self, _model: &str) -> ModelType {
        ModelType::Base
    }

    pub fn encoders(&self) -> &[Arc<dyn TextEncoder>] {
        &self.inner.encoders
    }

    /// Sentence encoders (`embedding`) or cross-encoders, in start-up order.
    fn encoders_where(&self, embedding: bool) -> impl Iterator<Item = &Arc<dyn TextEncoder>> {
        self.inner
            .encoders
            .iter()
            .filter(move |e| e.info().head.is_embedding() == embedding)
    }

    /// The encoder (of either head) served under exactly `name`.
    pub fn encoder_named(&self, name: &str) -> Option<&Arc<dyn TextEncoder>> {
        self.inner.encoders.iter().find(|e| e.info().name == name)
    }

    /// The encoder `name` or its alias stands for.
    pub fn encoder_or_alias(&self, name: &str) -> Option<&Arc<dyn TextEncoder>> {
        self.encoder_named(self.resolve(name))
    }

    /// The named embedding model, or the default one when the request may omit it.
    pub fn encoder(&self, name: Option<&str>) -> Result<Arc<dyn TextEncoder>, ApiError> {
        let name = name.map(|n| self.resolve(n));
        if let Some(encoder) = pick(self.encoders_where(true), name, |m| &m.info().name) {
            return Ok(encoder);
        }
        // Not an embedding model: a named encoder can only be a cross-encoder.
        match name
            .filter(|n| !n.is_empty())
            .and_then(|n| self.encoder_named(n))
        {
            Some(reranker) => Err(ApiError::bad_request(format!(
                "model '{}' is a cross-encoder reranker; it serves only /v1/rerank and /v2/rerank",
                reranker.info().name
            ))),
            None if name.is_none_or(str::is_empty) => Err(ApiError::not_found(format!(
                "no embedding model is served; this server serves: {}",
                self.served_names()
            ))),
            None => Err(self.unknown_model(name)),
        }
    }

    /// The first cross-encoder reranker served (the default reranker).
    pub fn first_cross_encoder(&self) -> Option<Arc<dyn TextEncoder>> {
        self.encoders_where(false).next().cloned()
    }

    fn unknown_model(&self, name: Option<&str>) -> ApiError {
        ApiError::not_found(format!(
            "model '{}' not found; this server serves: {}",
            name.unwrap_or_default(),
            self.served_names()
        ))
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The generative models, in start-up order (the first is the default).
    pub fn generators(&self) -> &[Arc<dyn TextGenerator>] {
        &self.inner.models
    }

    fn served_names(&self) -> String {
        let generators = self.inner.models.iter().map(|m| m.info().name.clone());
        let encoders = self.inner.encoders.iter().map(|m| m.info().name.clone());
        generators.chain(encoders).collect::<Vec<_>>().join(", ")
    }

    /// The named model, or the default one when the request may omit it; 404 names what is served.
    pub fn model(&self, name: Option<&str>) -> Result<Arc<dyn TextGenerator>, ApiError> {
        let name = name.map(|n| self.resolve(n));
        if let Some(model) = pick(&self.inner.models, name, |m| &m.info().name) {
            return Ok(model);
        }
        match name.and_then(|n| self.encoder_named(n)) {
            Some(encoder) => Err(ApiError::bad_request(format!(
                "model '{}' is an encoder ({}); this route needs a generative model",
                encoder.info().name,
                if encoder.info().head.is_embedding() {
                    "embed, classify and rerank"
                } else {
                    "rerank only"
                }
            ))),
            None => Err(self.unknown_model(name)),
        }
    }

    /// Like [`Self::model`], but only models with a chat template may be chatted with.
    pub fn chat_model(&self, name: Option<&str>) -> Result<Arc<dyn TextGenerator>, ApiError> {
        let model = self.model(name)?;
        if model.info().kind != ModelKind::Chat {
            return Err(ApiError::bad_request(format!(
                "model '{}' is a base (completion) model without a chat template; use /v1/generate or /v1/completions",
                model.info().name
            )));
        }
        Ok(model)
    }
}

/// The model called `name`, or the first (the default) when no name is given.
fn pick<'a, T: ?Sized + 'a>(
    models: impl IntoIterator<Item = &'a Arc<T>>,
    name: Option<&str>,
    name_of: impl Fn(&T) -> &String,
) -> Option<Arc<T>> {
    let mut models = models.into_iter();
    match name {
        None | Some("") => models.next().cloned(),
        Some(name) => models.find(|m| name_of(m) == name).cloned(),
    }
}
