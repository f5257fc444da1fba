//! Collections on this node: the search index of every collection, built from the store at
//! start and kept current by following the store's change feed, so every node answers the same
//! search within a poll interval of a change (and the writing node at once). Ingest and search
//! live beside it; the HTTP mapping is in `routes/collections.rs`.

pub mod ingest;
pub mod retrieve;
pub mod search;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use enclave_engine::encoder::TextEncoder;
use enclave_rag::index::{ChunkRecord, CollectionIndex};
use enclave_store::{ChangeOp, CollectionRecord, KeyRecord, Role, Store, StoreError};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

use crate::error::ApiError;
use crate::state::AppState;

/// How often a node reads the change feed.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// Changes read per round trip.
const CHANGE_BATCH: i64 = 500;

/// Every collection's index on this node.
pub struct Library {
    store: Store,
    indexes: RwLock<HashMap<String, Arc<RwLock<CollectionIndex>>>>,
    /// The last change applied; held while applying so rounds never interleave.
    applied: Mutex<i64>,
}

impl Library {
    /// Builds every index from the store.
    pub async fn open(store: Store) -> Result<Arc<Self>, StoreError> {
        let library = Arc::new(Self {
            store,
            indexes: RwLock::new(HashMap::new()),
            applied: Mutex::new(0),
        });
        library.catch_up().await?;
        Ok(library)
    }

    /// Follows the change feed until the library is dropped.
    pub fn follow(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(library) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = library.catch_up().await {
                    tracing::warn!("collections: reading the change feed failed: {e}");
                }
            }
        });
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A collection's index (empty if it has no documents yet).
    pub async fn index(&self, collection_id: &str) -> Arc<RwLock<CollectionIndex>> {
        if let Some(index) = self.indexes.read().await.get(collection_id) {
            return Arc::clone(index);
        }
        let mut indexes = self.indexes.write().await;
        Arc::clone(indexes.entry(collection_id.to_string()).or_default())
    }

    /// Applies every change the store has that this node has not applied yet.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let mut applied = self.applied.lock().await;
        loop {
            let changes = self.store.changes_since(*applied, CHANGE_BATCH).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                return Ok(());
            };
            for change in changes {
                match change.op {
                    ChangeOp::Drop => {
                        self.indexes.write().await.remove(&change.collection_id);
                    }
                    ChangeOp::Delete => {
                        let index = self.index(&change.collection_id).await;
                        index.write().await.remove_document(&change.document_id);
                    }
                    ChangeOp::Put => {
                        self.load(&change.collection_id, &change.document_id)
                            .await?
                    }
                }
            }
            *applied = last;
        }
    }

    /// Loads a document's current version into its index (or removes it if it is gone).
    async fn load(&self, collection_id: &str, document_id: &str) -> Result<(), StoreError> {
        let loaded = self.store.load_document(collection_id, document_id).await?;
        let index = self.index(collection_id).await;
        let Some((document, chunks)) = loaded else {
            index.write().await.remove_document(document_id);
            return Ok(());
        };
        let metadata: Map<String, Value> =
            serde_json::from_str(&document.metadata).unwrap_or_default();
        let text: Vec<char> = document.text.chars().collect();
        let entries = chunks
            .into_iter()
            .map(|chunk| {
                let (start, end) = (chunk.start as usize, (chunk.end as usize).min(text.len()));
                let chunk_text: String = text[start.min(end)..end].iter().collect();
                let index_text =
                    ingest::embedding_text(&document.title, &chunk.context, &chunk_text);
                let record = ChunkRecord {
                    document_id: document.id.clone(),
                    chunk_id: chunk.chunk_id as u32,
                    start,
                    end,
                    text: chunk_text,
                    title: document.title.clone(),
                    metadata: metadata.clone(),
                    acl: document.acl.clone(),
                };
                (record, index_text, chunk.vector)
            })
            .collect();
        index.write().await.put_document(document_id, entries);
        Ok(())
    }
}

/// What the caller may see: its groups' documents and those without an acl; an admin key sees
/// all of its tenant's.
pub fn visibility(key: &KeyRecord) -> Option<Vec<String>> {
    (key.role != Role::Admin).then(|| key.groups.clone())
}

/// The caller's tenant's collection by id or name; anything else is the same 404.
pub async fn owned_collection(
    library: &Library,
    key: &KeyRecord,
    id: &str,
) -> Result<CollectionRecord, ApiError> {
    library
        .store()
        .find_collection(&key.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("collection '{id}' not found")))
}

/// The encoder a collection embeds with.
pub fn collection_encoder(
    state: &AppState,
    collection: &CollectionRecord,
) -> Result<Arc<dyn TextEncoder>, ApiError> {
    state
        .encoder_named(&collection.embed_model)
        .cloned()
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "collection '{}' embeds with '{}', which this server does not serve",
                collection.name, collection.embed_model
            ))
        })
}
