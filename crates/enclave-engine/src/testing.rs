//! Helpers for test suites of this and downstream crates: the small test model, pulled on demand.

use crate::catalog::{self, DEFAULT_EMBED_MODEL, TEST_MODEL};
use crate::encoder::{BertEncoder, EncoderConfig};
use crate::llama::{GeneratorConfig, LlamaGenerator, LoadError};
use crate::pull;

/// Loads `smollm2-135m-instruct` (pulling it into ENCLAVE_HOME if needed) with `config`.
pub fn load_test_model(config: &GeneratorConfig) -> Result<LlamaGenerator, String> {
    let home = pull::enclave_home();
    let model = pull::resolve(&home, TEST_MODEL, false).map_err(|e| e.to_string())?;
    let kind = catalog::find(TEST_MODEL).map_or(catalog::ModelKind::Chat, |e| e.kind);
    LlamaGenerator::load(&model.name, kind, &model.path, config)
        .map_err(|e: LoadError| e.to_string())
}

/// Loads `all-minilm-l6-v2` (pulling it into ENCLAVE_HOME if needed) with `config`.
pub fn load_test_encoder(config: &EncoderConfig) -> Result<BertEncoder, String> {
    let home = pull::enclave_home();
    let model = pull::resolve(&home, DEFAULT_EMBED_MODEL, false).map_err(|e| e.to_string())?;
    BertEncoder::load(&model.name, &model.path, config).map_err(|e: LoadError| e.to_string())
}
