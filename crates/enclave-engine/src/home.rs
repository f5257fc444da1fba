//! Where Enclave keeps its data: `ENCLAVE_HOME`, else `~/.enclave` (models, conversion cache,
//! the SQLite database).

use std::path::PathBuf;

/// The data folder (not created here).
pub fn enclave_home() -> PathBuf {
    if let Some(home) = std::env::var_os("ENCLAVE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    user_home.join(".enclave")
}
