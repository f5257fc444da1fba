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

/// Inputs this small are cheaper to work on in place than to hand to a blocking thread (the
/// hop costs tens of microseconds; tokenizing a few KB costs a few).
pub const INLINE_BYTES: usize = 4096;

/// Runs `work` in place when its input is at most [`INLINE_BYTES`], else on a blocking thread.
pub async fn off_runtime_if_large<T, F>(input_bytes: usize, work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if input_bytes <= INLINE_BYTES {
        Ok(work())
    } else {
        off_runtime(work).await
    }
}
