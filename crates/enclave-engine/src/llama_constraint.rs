//! Constrained decoding on llama.cpp: a [`Constraint`] becomes a sampler that masks every token
//! that would leave the grammar. Lark grammars run on llguidance (pure Rust, a token trie walked
//! per step); GBNF on llama.cpp's own grammar sampler, kept so the two can be measured side by
//! side (`enclave bench constrained`). Compiled grammars are kept by their text, so a schema is
//! compiled once and each request starts from a copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use crate::sampling::Constraint;

/// Distinct grammars kept compiled (a full cache is cleared: schemas are small to rebuild).
const KEPT_GRAMMARS: usize = 256;

#[derive(Default)]
pub(crate) struct Grammars {
    factory: OnceLock<Result<ParserFactory, String>>,
    compiled: Mutex<HashMap<Arc<str>, Matcher>>,
}

impl Grammars {
    /// A fresh sampler enforcing `constraint`, or why it cannot be enforced.
    pub fn sampler(
        &self,
        model: &LlamaModel,
        constraint: &Constraint,
    ) -> Result<LlamaSampler, String> {
        match constraint {
            Constraint::Lark(text) => Ok(LlamaSampler::from(self.matcher(model, text)?)),
            Constraint::Gbnf(text) => LlamaSampler::grammar(model, text, "root")
                .map_err(|e| format!("the grammar cannot be used: {e}")),
        }
    }

    /// Compiles `constraint` into the cache.
    pub fn prepare(&self, model: &LlamaModel, constraint: &Constraint) -> Result<(), String> {
        match constraint {
            Constraint::Lark(text) => self.matcher(model, text).map(drop),
            Constraint::Gbnf(_) => self.sampler(model, constraint).map(drop),
        }
    }

    fn matcher(&self, model: &LlamaModel, text: &Arc<str>) -> Result<Matcher, String> {
        if let Some(matcher) = self.lock().get(text) {
            return Ok(matcher.deep_clone());
        }
        let factory = self
            .factory
            .get_or_init(|| {
                let env = LlamaSampler::llguidance_tok_env(model);
                ParserFactory::new_simple(&env)
                    .map(|mut f| {
                        f.quiet();
                        f
                    })
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| format!("constrained decoding is unavailable for this model: {e}"))?;
        let parser = factory
            .create_parser(TopLevelGrammar::from_lark(text.to_string()))
            .map_err(|e| schema_error(&e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(schema_error(&error));
        }
        let mut kept = self.lock();
        if kept.len() >= KEPT_GRAMMARS {
            kept.clear();
        }
        kept.insert(Arc::clone(text), matcher.deep_clone());
        Ok(matcher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Matcher>> {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// llguidance's compile error, cut to the part a caller can act on (it names the keyword).
fn schema_error(error: &str) -> String {
    let first = error.lines().next().unwrap_or(error).trim();
    format!("the schema cannot be enforced: {first}")
}

/// llama.cpp's GBNF for a JSON schema (for measuring the GBNF path).
pub fn gbnf_for_schema(schema: &serde_json::Value) -> Result<Constraint, String> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map(|g| Constraint::Gbnf(Arc::from(g)))
        .map_err(|e| e.to_string())
}
