//! Keys looked up in the store behind a short cache: live keys and unknown ones (so a flood of
//! made-up keys costs one lookup each per TTL, queued behind a small semaphore), and the limit
//! on unauthenticated key checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_store::accounts::hash_secret;
use enclave_store::{now_ms, KeyRecord};

use super::{Access, Caller, Refusal};

/// How long a looked-up key is trusted before it is read again.
pub const KEY_CACHE_TTL: Duration = Duration::from_millis(500);
/// Store lookups of uncached keys running at once: unknown keys (a flood of made-up ones)
/// queue here instead of taking every connection the ledger needs.
pub(super) const KEY_LOOKUPS: usize = 2;
/// `/v1/check-api-key` answers per second, for all callers together (it needs no key).
const KEY_CHECKS_PER_SECOND: u32 = 50;

/// A key as last read from the store: live record, or known not to exist.
pub(super) type CachedKey = (Option<Arc<KeyRecord>>, Instant);

impl Access {
    /// The live key behind `secret`.
    pub async fn authenticate(
        &self,
        secret: &str,
    ) -> Result<Result<Caller, Refusal>, enclave_store::StoreError> {
        let hash = hash_secret(secret);
        let key = match self.cached_key(&hash) {
            Some(known) => known,
            None => {
                let _permit = self.lookups.acquire().await.ok();
                // Another request may have looked the same key up while this one queued.
                match self.cached_key(&hash) {
                    Some(known) => known,
                    None => {
                        let found = self.store.authenticate(secret).await?.map(Arc::new);
                        if let Ok(mut keys) = self.keys.lock() {
                            // Bounded: stale entries go when the map grows large.
                            if keys.len() > 10_000 {
                                keys.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
                            }
                            keys.insert(hash, (found.clone(), Instant::now()));
                        }
                        found
                    }
                }
            }
        };
        let Some(key) = key else {
            return Ok(Err(Refusal::Unknown));
        };
        if key.revoked_ms.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if !key.is_live(now_ms()) {
            return Ok(Err(Refusal::Expired));
        }
        Ok(Ok(Caller(key)))
    }

    /// A fresh cache entry for `hash`: `Some(None)` when the key is known not to exist.
    fn cached_key(&self, hash: &str) -> Option<Option<Arc<KeyRecord>>> {
        let keys = self.keys.lock().ok()?;
        keys.get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(key, _)| key.clone())
    }

    /// Whether one more unauthenticated key check may run this second.
    pub fn allow_key_check(&self) -> bool {
        let Ok(mut gate) = self.key_checks.lock() else {
            return false;
        };
        if gate.0.elapsed() >= Duration::from_secs(1) {
            *gate = (Instant::now(), 0);
        }
        gate.1 += 1;
        gate.1 <= KEY_CHECKS_PER_SECOND
    }

    /// Forgets cached keys, so a change made through this node applies at once here.
    pub fn forget_keys(&self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
    }
}
