//! Who is calling and whether they may go on: keys looked up in the store behind a short cache
//! (so a revocation on any node takes effect here within [`KEY_CACHE_TTL`]), per-key rate
//! limits, and the price book kept in memory. In SQLite mode this node is the only one, so rate
//! windows live in memory; with PostgreSQL they are shared rows every node counts against.

mod keys;
mod prices;
mod rate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use enclave_store::{now_ms, Backend, KeyRecord, PriceBook, Store};

use keys::CachedKey;
pub use keys::KEY_CACHE_TTL;
use rate::Window;

/// How often this node tells the store it is alive.
const BEAT: Duration = Duration::from_millis(enclave_store::idempotency::NODE_BEAT_MS as u64);
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

/// Keys, rate windows and prices of one node, over the shared store.
pub struct Access {
    store: Store,
    /// This process's id among the nodes sharing the store (claims of Idempotency-Keys name it).
    node_id: String,
    keys: Mutex<HashMap<String, CachedKey>>,
    lookups: tokio::sync::Semaphore,
    key_checks: Mutex<(Instant, u32)>,
    prices: RwLock<Arc<PriceBook>>,
    local_windows: Mutex<HashMap<String, Window>>,
}

impl Access {
    pub async fn start(store: Store) -> Result<Arc<Self>, enclave_store::StoreError> {
        let prices = store.price_book().await?;
        let node_id = format!("node_{}", uuid::Uuid::new_v4().simple());
        store.beat(&node_id).await?;
        let access = Arc::new(Self {
            store,
            node_id,
            keys: Mutex::new(HashMap::new()),
            lookups: tokio::sync::Semaphore::new(keys::KEY_LOOKUPS),
            key_checks: Mutex::new((Instant::now(), 0)),
            prices: RwLock::new(Arc::new(prices)),
            local_windows: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&access);
        tokio::spawn(async move {
            let (mut last_sweep, mut last_refresh) = (Instant::now(), Instant::now());
            loop {
                tokio::time::sleep(BEAT).await;
                let Some(access) = weak.upgrade() else { break };
                if let Err(e) = access.store.beat(&access.node_id).await {
                    tracing::warn!("node heartbeat failed: {e}");
                }
                if last_refresh.elapsed() >= PRICE_REFRESH {
                    last_refresh = Instant::now();
                    if let Err(e) = access.refresh_prices().await {
                        tracing::warn!("price book refresh failed: {e}");
                    }
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

    pub fn node_id(&self) -> &str {
        &self.node_id
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
}
