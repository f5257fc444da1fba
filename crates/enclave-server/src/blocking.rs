//! CPU-heavy work (tokenizing, chunking, fitting) runs here, on tokio's blocking threads, never
//! on the async workers that serve every connection.

use crate::error::ApiError;

/// Runs `work` on a blocking thread; a panic in it is a 500, not a dead worker.
pub async fn off_runtime<T, F>(work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))
}
