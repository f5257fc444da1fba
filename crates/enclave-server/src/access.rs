//! Who is calling and whether they may go on: keys looked up in the store behind a short cache
//! (so a revocation on any node takes effect here within [`KEY_CACHE_TTL`]), per-key rate
//! limits, and the price book kept in memory. In SQLite mode this node is the only one, so rate
//! windows live in memory; with PostgreSQL they are shared rows every node counts against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use enclave_store::accounts::hash_secret;
use enclave_store::rate::WINDOW_MS;
use enclave_store::{
    now_ms, Backend, Capability, KeyRecord, ModelType, PriceBook, RateLimited, Store, UnitPrices,
};

/// How long a looked-up key is trusted before it is read again.
pub const KEY_CACHE_TTL: Duration = Duration::from_millis(500);
/// How often the price book is re-read (changes made through this node apply at once).
const PRICE_REFRESH: Duration = Duration::from_secs(5);
/// How often expired budget holds and old rate windows are cleaned up.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// An authenticated caller; handlers receive it from the auth middleware.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<KeyRecord>);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start_ms: i64,
    requests: i64,
    tokens: i64,
}

pub struct Access {
    store: Store,
    keys: Mutex<HashMap<String, (Arc<KeyRecord>, Instant)>>,
    prices: RwLock<Arc<PriceBook>>,
    local_windows: Mutex<HashMap<String, Window>>,
}

impl Access {
    /// Loads the price book and starts the background refresh and sweeps.
    pub async fn start(store: Store) -> Result<Arc<Self>, enclave_store::StoreError> {
        let prices = store.price_book().await?;
        let access = Arc::new(Self {
            store,
            keys: Mutex::new(HashMap::new()),
            prices: RwLock::new(Arc::new(prices)),
            local_windows: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&access);
        tokio::spawn(async move {
            let mut last_sweep = Instant::now();
            loop {
                tokio::time::sleep(PRICE_REFRESH).await;
                let Some(access) = weak.upgrade() else { break };
                if let Err(e) = access.refresh_prices().await {
                    tracing::warn!("price book refresh failed: {e}");
                }
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = Instant::now();
                    access.sweep().await;
                }
            }
        });
        Ok(access)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn sweep(&self) {
        match self.store.sweep_expired_reservations().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("released {n} expired budget holds"),
            Err(e) => tracing::warn!("sweeping budget holds failed: {e}"),
        }
        if self.store.backend() == Backend::Postgres {
            if let Err(e) = self.store.prune_rate_windows(now_ms()).await {
                tracing::warn!("pruning rate windows failed: {e}");
            }
        }
    }

    pub async fn refresh_prices(&self) -> Result<(), enclave_store::StoreError> {
        let book = self.store.price_book().await?;
        if let Ok(mut prices) = self.prices.write() {
            *prices = Arc::new(book);
        }
        Ok(())
    }

    /// The price-book version and unit prices for a call admitted now.
    pub fn prices(
        &self,
        capability: Capability,
        model: &str,
        model_type: ModelType,
    ) -> (i64, UnitPrices) {
        match self.prices.read() {
            Ok(book) => book.prices(now_ms(), capability, model, model_type),
            Err(_) => (0, UnitPrices::default()),
        }
    }

    /// The live key behind `secret`.
    pub async fn authenticate(
        &self,
        secret: &str,
    ) -> Result<Result<Caller, Refusal>, enclave_store::StoreError> {
        let hash = hash_secret(secret);
        let cached = self.keys.lock().ok().and_then(|keys| {
            keys.get(&hash)
                .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
                .map(|(key, _)| Arc::clone(key))
        });
        let key = match cached {
            Some(key) => key,
            None => {
                let Some(key) = self.store.authenticate(secret).await? else {
                    return Ok(Err(Refusal::Unknown));
                };
                let key = Arc::new(key);
                if let Ok(mut keys) = self.keys.lock() {
                    // Bounded: stale entries go when the map grows large.
                    if keys.len() > 10_000 {
                        keys.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
                    }
                    keys.insert(hash, (Arc::clone(&key), Instant::now()));
                }
                key
            }
        };
        if key.revoked_ms.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if !key.is_live(now_ms()) {
            return Ok(Err(Refusal::Expired));
        }
        Ok(Ok(Caller(key)))
    }

    /// Forgets cached keys, so a change made through this node applies at once here.
    pub fn forget_keys(&self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
    }

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

    /// Adds a finished call's tokens to the key's tokens-per-minute window.
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
