//! The injection monitor on the request path: texts cut into windows and normalised by the
//! guard crate, embedded by the served embedder the head was trained on (batched with every
//! other embedding call), and scored by the head. A deterministic check never waits on it:
//! the monitor runs after them.

use std::sync::Arc;

use enclave_engine::encoder::{TextEncoder, Truncate};
use enclave_guard::{InjectionHead, Scored, Windows};

use crate::capability::embed::embed_texts;
use crate::error::ApiError;
use crate::state::AppState;

/// Most windows scored for one request (about 170 KB of text); beyond them the request is
/// refused, so an attack cannot hide past the end of what was read.
pub const MAX_WINDOWS: usize = 256;

/// The monitor's head and the encoder it reads embeddings from, when both are served.
pub fn monitor(state: &AppState) -> Option<(&InjectionHead, Arc<dyn TextEncoder>)> {
    let head = state.guardrails().head.as_ref()?;
    let encoder = state.encoder_named(&head.embedder)?.clone();
    Some((head, encoder))
}

/// Scores each text; `None` when the monitor is not available on this server. Past
/// [`MAX_WINDOWS`], `refuse` answers 400; otherwise only the first windows are scored.
pub async fn score_texts(
    state: &AppState,
    texts: &[&str],
    refuse: bool,
) -> Result<Option<Vec<Scored>>, ApiError> {
    let Some((head, encoder)) = monitor(state) else {
        return Ok(None);
    };
    let mut windows = Windows::new(texts);
    if windows.len() > MAX_WINDOWS && !refuse {
        windows.truncate(MAX_WINDOWS);
    }
    if windows.len() > MAX_WINDOWS {
        return Err(ApiError::bad_request(format!(
            "too much text for the injection monitor: at most {MAX_WINDOWS} windows of {} characters",
            enclave_guard::injection::WINDOW_CHARS
        )));
    }
    if windows.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let embedded = embed_texts(&encoder, windows.inputs(), Truncate::End).await?;
    Ok(Some(windows.score(head, &embedded.vectors)))
}
