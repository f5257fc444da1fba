//! llama.cpp's process-wide backend, shared by the generators and the encoders' llama.cpp
//! path, and the error of loading a model on it.

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("llama.cpp backend: {0}")]
    Backend(String),
    #[error("loading {path}: {reason}")]
    Model { path: String, reason: String },
    #[error("creating the context: {0}")]
    Context(String),
}

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// llama.cpp's process-wide backend, initialised once.
pub(crate) fn backend() -> Result<&'static LlamaBackend, LoadError> {
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            if std::env::var_os("ENCLAVE_LLAMA_LOG").is_none() {
                backend.void_logs();
            }
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| LoadError::Backend(e.clone()))
}
