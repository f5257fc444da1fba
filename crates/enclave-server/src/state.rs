//! What every handler can reach: the loaded models and the server's settings.

use std::sync::Arc;

use enclave_engine::catalog::ModelKind;
use enclave_engine::encoder::TextEncoder;
use enclave_engine::TextGenerator;

use enclave_store::ModelType;

use crate::access::Access;
use crate::error::{ApiError, Family};

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most inputs one embed call may carry (more: 413).
    pub max_client_batch_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_client_batch_size: 96,
        }
    }
}

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
}

impl AppState {
    pub fn new(
        config: ServerConfig,
        models: Vec<Arc<dyn TextGenerator>>,
        encoders: Vec<Arc<dyn TextEncoder>>,
        access: Option<Arc<Access>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                models,
                encoders,
                access,
            }),
        }
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

    /// The named embedding model, or the default one when the request may omit it.
    pub fn encoder(
        &self,
        family: Family,
        name: Option<&str>,
    ) -> Result<Arc<dyn TextEncoder>, ApiError> {
        if let Some(encoder) = pick(self.encoders_where(true), name, |m| &m.info().name) {
            return Ok(encoder);
        }
        // Not an embedding model: a named encoder can only be a cross-encoder.
        match name.filter(|n| !n.is_empty()).and_then(|n| self.encoder_named(n)) {
            Some(reranker) => Err(ApiError::bad_request(
                family,
                format!(
                    "model '{}' is a cross-encoder reranker; it serves only /v1/rerank and /v2/rerank",
                    reranker.info().name
                ),
            )),
            None if name.is_none_or(str::is_empty) => Err(ApiError::not_found(
                family,
                format!(
                    "no embedding model is served; this server serves: {}",
                    self.served_names()
                ),
            )),
            None => Err(self.unknown_model(family, name)),
        }
    }

    /// The first cross-encoder reranker served (the default reranker).
    pub fn first_cross_encoder(&self) -> Option<Arc<dyn TextEncoder>> {
        self.encoders_where(false).next().cloned()
    }

    fn unknown_model(&self, family: Family, name: Option<&str>) -> ApiError {
        ApiError::not_found(
            family,
            format!(
                "model '{}' not found; this server serves: {}",
                name.unwrap_or_default(),
                self.served_names()
            ),
        )
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn models(&self) -> &[Arc<dyn TextGenerator>] {
        &self.inner.models
    }

    fn served_names(&self) -> String {
        let generators = self.inner.models.iter().map(|m| m.info().name.clone());
        let encoders = self.inner.encoders.iter().map(|m| m.info().name.clone());
        generators.chain(encoders).collect::<Vec<_>>().join(", ")
    }

    /// The named model, or the default one when the request may omit it; 404 names what is served.
    pub fn model(
        &self,
        family: Family,
        name: Option<&str>,
    ) -> Result<Arc<dyn TextGenerator>, ApiError> {
        if let Some(model) = pick(&self.inner.models, name, |m| &m.info().name) {
            return Ok(model);
        }
        match name.and_then(|n| self.encoder_named(n)) {
            Some(encoder) => Err(ApiError::bad_request(
                family,
                format!(
                    "model '{}' is an encoder ({}); this route needs a generative model",
                    encoder.info().name,
                    if encoder.info().head.is_embedding() {
                        "embed, classify and rerank"
                    } else {
                        "rerank only"
                    }
                ),
            )),
            None => Err(self.unknown_model(family, name)),
        }
    }

    /// Like [`Self::model`], but only models with a chat template may be chatted with.
    pub fn chat_model(
        &self,
        family: Family,
        name: Option<&str>,
    ) -> Result<Arc<dyn TextGenerator>, ApiError> {
        let model = self.model(family, name)?;
        if model.info().kind != ModelKind::Chat {
            return Err(ApiError::bad_request(
                family,
                format!(
                    "model '{}' is a base (completion) model without a chat template; use /v1/generate or /v1/completions",
                    model.info().name
                ),
            ));
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
