//! Claims on `Idempotency-Key`s: one running call per tenant and key, and the stored response
//! of the call that succeeded under it, replayed to every retry. A claim belongs to the node
//! (serving process) running its call; nodes beat in `nodes`, so a retry can take over the
//! claim of a node that died instead of waiting for it.

use crate::{col, now_ms, Backend, Result, Store, StoreError};

/// A claim left running this long is taken over whatever its node says: as long as the
/// longest call may run (a budget hold's lifetime).
pub const CLAIM_TTL_MS: i64 = crate::budgets::RESERVATION_TTL_MS;
/// How often a node beats.
pub const NODE_BEAT_MS: i64 = 2_000;
/// A node silent this long is taken for dead.
pub const NODE_TIMEOUT_MS: i64 = 5 * NODE_BEAT_MS;

/// A finished call's response as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    /// Response headers worth replaying (billing receipt), as `name: value` lines.
    pub headers: String,
    pub body: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This call holds the key now and may run.
    Claimed,
    /// The same request is running under the key.
    InFlight,
    /// The same request already succeeded: answer with its response.
    Done(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
}

impl Store {
    /// Claims `key` for the call `request_id`, whose request hashes to `fingerprint`.
    /// `node_id` is the claiming process's (see [`Store::beat`]).
    pub async fn claim_idempotency_key(
        &self,
        tenant_id: &str,
        key: &str,
        fingerprint: &str,
        request_id: &str,
        node_id: &str,
    ) -> Result<Claim> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO idempotent_calls (tenant_id, idempotency_key, fingerprint, request_id, node_id, claimed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(key)
        .bind(fingerprint)
        .bind(request_id)
        .bind(node_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let row = sqlx::query(
            "SELECT fingerprint, request_id, node_id, claimed_ms, status, content_type, headers, body \
             FROM idempotent_calls WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            // Released between our insert and read: the caller may simply retry.
            return Ok(Claim::InFlight);
        };
        if col::<String>(&row, "fingerprint")? != fingerprint {
            return Ok(Claim::Mismatch);
        }
        let Some(status) = col::<Option<i64>>(&row, "status")? else {
            let claimed_ms: i64 = col(&row, "claimed_ms")?;
            let holder: String = col(&row, "node_id")?;
            let holder_alive = holder == node_id || self.node_alive(&holder, now).await?;
            if holder_alive && now - claimed_ms < CLAIM_TTL_MS {
                return Ok(Claim::InFlight);
            }
            // Abandoned by a dead node: take it over, unless another call just did.
            let taken = sqlx::query(
                "UPDATE idempotent_calls SET request_id = $1, node_id = $2, claimed_ms = $3 \
                 WHERE tenant_id = $4 AND idempotency_key = $5 AND request_id = $6 AND status IS NULL",
            )
            .bind(request_id)
            .bind(node_id)
            .bind(now)
            .bind(tenant_id)
            .bind(key)
            .bind(col::<String>(&row, "request_id")?)
            .execute(self.pool())
            .await?;
            return Ok(if taken.rows_affected() == 1 {
                Claim::Claimed
            } else {
                Claim::InFlight
            });
        };
        Ok(Claim::Done(StoredResponse {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Invalid(format!("stored status {status}")))?,
            content_type: col::<Option<String>>(&row, "content_type")?.unwrap_or_default(),
            headers: col::<Option<String>>(&row, "headers")?.unwrap_or_default(),
            body: col::<Option<String>>(&row, "body")?.unwrap_or_default(),
        }))
    }

    /// Whether `node_id` beat recently. One process serves a SQLite file, so there another
    /// node's claim is a dead process's.
    async fn node_alive(&self, node_id: &str, now: i64) -> Result<bool> {
        if self.backend() == Backend::Sqlite {
            return Ok(false);
        }
        let row = sqlx::query("SELECT seen_ms FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => now - col::<i64>(&row, "seen_ms")? < NODE_TIMEOUT_MS,
            None => false,
        })
    }

    /// Records that `node_id` is alive now (every [`NODE_BEAT_MS`]); forgets nodes silent for
    /// a day.
    pub async fn beat(&self, node_id: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO nodes (id, seen_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
        )
        .bind(node_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        sqlx::query("DELETE FROM nodes WHERE seen_ms < $1")
            .bind(now - 24 * 60 * 60 * 1000)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Stores the response of the call that holds the claim; later retries are answered with it.
    pub async fn complete_idempotency_key(
        &self,
        tenant_id: &str,
        key: &str,
        request_id: &str,
        response: &StoredResponse,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotent_calls SET status = $1, content_type = $2, headers = $3, body = $4 \
             WHERE tenant_id = $5 AND idempotency_key = $6 AND request_id = $7",
        )
        .bind(i64::from(response.status))
        .bind(&response.content_type)
        .bind(&response.headers)
        .bind(&response.body)
        .bind(tenant_id)
        .bind(key)
        .bind(request_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Gives up the claim of a call that failed, so the client may retry under the same key.
    pub async fn release_idempotency_key(
        &self,
        tenant_id: &str,
        key: &str,
        request_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotent_calls \
             WHERE tenant_id = $1 AND idempotency_key = $2 AND request_id = $3 AND status IS NULL",
        )
        .bind(tenant_id)
        .bind(key)
        .bind(request_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
