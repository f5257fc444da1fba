//! Per-key rate windows shared by every node (PostgreSQL mode): one row per key per minute,
//! bumped with a conditional upsert so concurrent requests on different nodes cannot both take
//! the last slot.

use crate::{col, Result, Store};

pub const WINDOW_MS: i64 = 60_000;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    Requests { limit: i64, resets_ms: i64 },
    Tokens { limit: i64, resets_ms: i64 },
}

impl Store {
    /// Counts one request against the key's window at `now`; refuses when the requests-per-minute
    /// limit is reached, or the tokens already used this minute reach `tpm`.
    pub async fn take_rate_slot(
        &self,
        key_id: &str,
        now_ms: i64,
        rpm: Option<i64>,
        tpm: Option<i64>,
    ) -> Result<Result<(), RateLimited>> {
        let window = now_ms - now_ms.rem_euclid(WINDOW_MS);
        let resets_ms = window + WINDOW_MS;
        let row = sqlx::query(
            "INSERT INTO rate_windows (key_id, window_ms, requests, tokens) VALUES ($1, $2, 1, 0) \
             ON CONFLICT (key_id, window_ms) DO UPDATE SET requests = rate_windows.requests + 1 \
             WHERE ($3 IS NULL OR rate_windows.requests < $3) AND ($4 IS NULL OR rate_windows.tokens < $4) \
             RETURNING requests",
        )
        .bind(key_id)
        .bind(window)
        .bind(rpm)
        .bind(tpm)
        .fetch_optional(self.pool())
        .await?;
        if row.is_some() {
            return Ok(Ok(()));
        }
        let current = sqlx::query(
            "SELECT requests, tokens FROM rate_windows WHERE key_id = $1 AND window_ms = $2",
        )
        .bind(key_id)
        .bind(window)
        .fetch_one(self.pool())
        .await?;
        let requests: i64 = col(&current, "requests")?;
        Ok(Err(match rpm {
            Some(limit) if requests >= limit => RateLimited::Requests { limit, resets_ms },
            _ => RateLimited::Tokens {
                limit: tpm.unwrap_or(0),
                resets_ms,
            },
        }))
    }

    /// Adds the tokens a finished call used to the key's current window.
    pub async fn add_rate_tokens(&self, key_id: &str, now_ms: i64, tokens: i64) -> Result<()> {
        let window = now_ms - now_ms.rem_euclid(WINDOW_MS);
        sqlx::query(
            "INSERT INTO rate_windows (key_id, window_ms, requests, tokens) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (key_id, window_ms) DO UPDATE SET tokens = rate_windows.tokens + excluded.tokens",
        )
        .bind(key_id)
        .bind(window)
        .bind(tokens)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Drops windows older than the current minute.
    pub async fn prune_rate_windows(&self, now_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM rate_windows WHERE window_ms < $1")
            .bind(now_ms - 2 * WINDOW_MS)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
