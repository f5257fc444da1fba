//! Per-key rate windows: requests and tokens per fixed UTC minute. In SQLite mode this node is
//! the only one, so windows live in memory; with PostgreSQL they are shared rows.

use std::collections::HashMap;

use enclave_store::rate::WINDOW_MS;
use enclave_store::{now_ms, Backend, KeyRecord, RateLimited};

use super::Access;

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Window {
    start_ms: i64,
    requests: i64,
    tokens: i64,
}

impl Access {
    /// Counts one request against the key's per-minute limits.
    pub async fn take_request_slot(
        &self,
        key: &KeyRecord,
    ) -> Result<Result<(), RateLimited>, enclave_store::StoreError> {
        if key.rpm.is_none() && key.tpm.is_none() {
            return Ok(Ok(()));
        }
        let now = now_ms();
        if self.store.backend() == Backend::Postgres {
            return self
                .store
                .take_rate_slot(&key.id, now, key.rpm, key.tpm)
                .await;
        }
        let Ok(mut windows) = self.local_windows.lock() else {
            return Ok(Ok(()));
        };
        let window = current_window(&mut windows, &key.id, now);
        let resets_ms = window.start_ms + WINDOW_MS;
        if let Some(limit) = key.rpm.filter(|&limit| window.requests >= limit) {
            return Ok(Err(RateLimited::Requests { limit, resets_ms }));
        }
        if let Some(limit) = key.tpm.filter(|&limit| window.tokens >= limit) {
            return Ok(Err(RateLimited::Tokens { limit, resets_ms }));
        }
        window.requests += 1;
        Ok(Ok(()))
    }

    /// Adds tokens to the key's tokens-per-minute window: a call's input when it is admitted
    /// (so parallel calls see each other), the rest when it settles (negative when the input
    /// was over-estimated).
    pub async fn add_tokens(&self, key: &KeyRecord, tokens: i64) {
        if key.tpm.is_none() || tokens == 0 {
            return;
        }
        let now = now_ms();
        if self.store.backend() == Backend::Postgres {
            if let Err(e) = self.store.add_rate_tokens(&key.id, now, tokens).await {
                tracing::warn!("counting tokens against the rate limit failed: {e}");
            }
            return;
        }
        if let Ok(mut windows) = self.local_windows.lock() {
            current_window(&mut windows, &key.id, now).tokens += tokens;
        }
    }
}

fn current_window<'a>(
    windows: &'a mut HashMap<String, Window>,
    key_id: &str,
    now: i64,
) -> &'a mut Window {
    let start_ms = now - now.rem_euclid(WINDOW_MS);
    let window = windows.entry(key_id.to_string()).or_default();
    if window.start_ms != start_ms {
        *window = Window {
            start_ms,
            ..Window::default()
        };
    }
    window
}
