//! Collections of a tenant's documents: documents with their extracted text, their chunks
//! (spans of that text with embeddings), the change feed every node follows to keep its search
//! index current, and receipts of what was forgotten.

use base64::Engine as _;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{col, now_ms, Result, Store, StoreError};

/// A collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The embedding model its vectors come from.
    pub embed_model: String,
    pub created_ms: i64,
}

/// A document of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    pub collection_id: String,
    pub id: String,
    pub title: String,
    /// A JSON object.
    pub metadata: String,
    pub acl: Vec<String>,
    /// The extracted text that chunks and citations point into.
    pub text: String,
    pub created_ms: i64,
}

/// A chunk: code points `[start, end)` of its document's text.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub chunk_id: i64,
    pub start: i64,
    pub end: i64,
    pub context: String,
    pub vector: Vec<f32>,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// A document was written or replaced.
    Put,
    /// A document was forgotten.
    Delete,
    /// A whole collection was deleted.
    Drop,
}

impl ChangeOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Drop => "drop",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "put" => Ok(Self::Put),
            "delete" => Ok(Self::Delete),
            "drop" => Ok(Self::Drop),
            other => Err(StoreError::Invalid(format!("bad change op {other}"))),
        }
    }
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub collection_id: String,
    pub document_id: String,
    pub op: ChangeOp,
}

/// What forgetting a document removed, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetReceipt {
    pub id: String,
    pub collection_id: String,
    pub document_id: String,
    pub chunks_removed: i64,
    pub removed_ms: i64,
}

fn encode_vector(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_vector(text: &str) -> Result<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| StoreError::Invalid(format!("bad stored vector: {e}")))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn collection_from_row(row: &AnyRow) -> Result<CollectionRecord> {
    Ok(CollectionRecord {
        id: col(row, "id")?,
        tenant_id: col(row, "tenant_id")?,
        name: col(row, "name")?,
        embed_model: col(row, "embed_model")?,
        created_ms: col(row, "created_ms")?,
    })
}

fn document_from_row(row: &AnyRow) -> Result<DocumentRecord> {
    let acl: String = col(row, "acl")?;
    Ok(DocumentRecord {
        collection_id: col(row, "collection_id")?,
        id: col(row, "id")?,
        title: col(row, "title")?,
        metadata: col(row, "metadata")?,
        acl: serde_json::from_str(&acl)
            .map_err(|e| StoreError::Invalid(format!("bad acl: {e}")))?,
        text: col(row, "text")?,
        created_ms: col(row, "created_ms")?,
    })
}

/// Takes the next change number inside `tx` (its row lock orders numbers as commits happen).
async fn next_seq(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE collection_sequence SET value = value + 1 WHERE name = 'changes' RETURNING value",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get::<i64, _>("value")?)
}

async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    collection_id: &str,
    document_id: &str,
    op: ChangeOp,
) -> Result<i64> {
    let seq = next_seq(tx).await?;
    sqlx::query(
        "INSERT INTO collection_changes (seq, collection_id, document_id, op, at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(seq)
    .bind(collection_id)
    .bind(document_id)
    .bind(op.as_str())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

impl Store {
    /// Creates a collection named `name` for a tenant; a name already taken is a conflict.
    pub async fn create_collection(
        &self,
        tenant_id: &str,
        name: &str,
        embed_model: &str,
    ) -> Result<CollectionRecord> {
        let record = CollectionRecord {
            id: format!("col_{}", uuid::Uuid::new_v4().simple()),
            tenant_id: tenant_id.to_string(),
            name: name.to_string(),
            embed_model: embed_model.to_string(),
            created_ms: now_ms(),
        };
        let inserted = sqlx::query(
            "INSERT INTO collections (id, tenant_id, name, embed_model, created_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(&record.id)
        .bind(&record.tenant_id)
        .bind(&record.name)
        .bind(&record.embed_model)
        .bind(record.created_ms)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "a collection named '{name}' exists"
            )));
        }
        Ok(record)
    }

    /// A tenant's collections, oldest first.
    pub async fn list_collections(&self, tenant_id: &str) -> Result<Vec<CollectionRecord>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, embed_model, created_ms FROM collections WHERE tenant_id = $1 ORDER BY created_ms, id",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(collection_from_row).collect()
    }

    /// A tenant's collection by id or name; another tenant's is not found.
    pub async fn find_collection(
        &self,
        tenant_id: &str,
        id_or_name: &str,
    ) -> Result<Option<CollectionRecord>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, embed_model, created_ms FROM collections \
             WHERE tenant_id = $1 AND (id = $2 OR name = $2) ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(tenant_id)
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(collection_from_row).transpose()
    }

    /// Every collection (for building the nodes' indexes).
    pub async fn all_collections(&self) -> Result<Vec<CollectionRecord>> {
        let rows =
            sqlx::query("SELECT id, tenant_id, name, embed_model, created_ms FROM collections")
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(collection_from_row).collect()
    }

    /// Deletes a tenant's collection with all its documents and chunks; returns how many
    /// documents it held, or `None` if there was no such collection.
    pub async fn delete_collection(&self, tenant_id: &str, id: &str) -> Result<Option<i64>> {
        let mut tx = self.pool().begin().await?;
        let deleted = sqlx::query("DELETE FROM collections WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query("DELETE FROM collection_chunks WHERE collection_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let documents = sqlx::query("DELETE FROM collection_documents WHERE collection_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        record_change(&mut tx, id, "", ChangeOp::Drop).await?;
        tx.commit().await?;
        Ok(Some(documents.rows_affected() as i64))
    }

    /// Writes a document and its chunks in one transaction, replacing an earlier version with
    /// the same id; returns the change number.
    pub async fn put_document(
        &self,
        document: &DocumentRecord,
        chunks: &[ChunkRow],
    ) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM collection_chunks WHERE collection_id = $1 AND document_id = $2")
            .bind(&document.collection_id)
            .bind(&document.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM collection_documents WHERE collection_id = $1 AND id = $2")
            .bind(&document.collection_id)
            .bind(&document.id)
            .execute(&mut *tx)
            .await?;
        let acl = serde_json::to_string(&document.acl)
            .map_err(|e| StoreError::Invalid(format!("bad acl: {e}")))?;
        sqlx::query(
            "INSERT INTO collection_documents (collection_id, id, title, metadata, acl, text, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&document.collection_id)
        .bind(&document.id)
        .bind(&document.title)
        .bind(&document.metadata)
        .bind(acl)
        .bind(&document.text)
        .bind(document.created_ms)
        .execute(&mut *tx)
        .await?;
        for chunk in chunks {
            sqlx::query(
                "INSERT INTO collection_chunks (collection_id, document_id, chunk_id, start_char, end_char, context, vector) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&document.collection_id)
            .bind(&document.id)
            .bind(chunk.chunk_id)
            .bind(chunk.start)
            .bind(chunk.end)
            .bind(&chunk.context)
            .bind(encode_vector(&chunk.vector))
            .execute(&mut *tx)
            .await?;
        }
        let seq = record_change(
            &mut tx,
            &document.collection_id,
            &document.id,
            ChangeOp::Put,
        )
        .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Forgets a document of a tenant's collection: its text and chunks are deleted and a
    /// receipt is kept. `None` if there was no such document.
    pub async fn forget_document(
        &self,
        tenant_id: &str,
        collection_id: &str,
        document_id: &str,
        key_id: &str,
    ) -> Result<Option<ForgetReceipt>> {
        let mut tx = self.pool().begin().await?;
        let owned = sqlx::query("SELECT id FROM collections WHERE id = $1 AND tenant_id = $2")
            .bind(collection_id)
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let chunks = sqlx::query(
            "DELETE FROM collection_chunks WHERE collection_id = $1 AND document_id = $2",
        )
        .bind(collection_id)
        .bind(document_id)
        .execute(&mut *tx)
        .await?;
        let documents =
            sqlx::query("DELETE FROM collection_documents WHERE collection_id = $1 AND id = $2")
                .bind(collection_id)
                .bind(document_id)
                .execute(&mut *tx)
                .await?;
        if documents.rows_affected() == 0 {
            return Ok(None);
        }
        record_change(&mut tx, collection_id, document_id, ChangeOp::Delete).await?;
        let receipt = ForgetReceipt {
            id: format!("fgt_{}", uuid::Uuid::new_v4().simple()),
            collection_id: collection_id.to_string(),
            document_id: document_id.to_string(),
            chunks_removed: chunks.rows_affected() as i64,
            removed_ms: now_ms(),
        };
        sqlx::query(
            "INSERT INTO forget_receipts (id, tenant_id, collection_id, document_id, chunks_removed, key_id, removed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&receipt.id)
        .bind(tenant_id)
        .bind(&receipt.collection_id)
        .bind(&receipt.document_id)
        .bind(receipt.chunks_removed)
        .bind(key_id)
        .bind(receipt.removed_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(receipt))
    }

    /// A document with its chunks, if it exists.
    pub async fn load_document(
        &self,
        collection_id: &str,
        document_id: &str,
    ) -> Result<Option<(DocumentRecord, Vec<ChunkRow>)>> {
        let Some(row) = sqlx::query(
            "SELECT collection_id, id, title, metadata, acl, text, created_ms FROM collection_documents \
             WHERE collection_id = $1 AND id = $2",
        )
        .bind(collection_id)
        .bind(document_id)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let document = document_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT chunk_id, start_char, end_char, context, vector FROM collection_chunks \
             WHERE collection_id = $1 AND document_id = $2 ORDER BY chunk_id",
        )
        .bind(collection_id)
        .bind(document_id)
        .fetch_all(self.pool())
        .await?;
        let chunks = rows
            .iter()
            .map(|r| {
                Ok(ChunkRow {
                    chunk_id: col(r, "chunk_id")?,
                    start: col(r, "start_char")?,
                    end: col(r, "end_char")?,
                    context: col(r, "context")?,
                    vector: decode_vector(&col::<String>(r, "vector")?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((document, chunks)))
    }

    /// Ids of a collection's documents.
    pub async fn document_ids(&self, collection_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT id FROM collection_documents WHERE collection_id = $1 ORDER BY id")
                .bind(collection_id)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(|r| col(r, "id")).collect()
    }

    /// Changes after `seq`, in order, at most `limit`.
    pub async fn changes_since(&self, seq: i64, limit: i64) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT seq, collection_id, document_id, op FROM collection_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Change {
                    seq: col(r, "seq")?,
                    collection_id: col(r, "collection_id")?,
                    document_id: col(r, "document_id")?,
                    op: ChangeOp::parse(&col::<String>(r, "op")?)?,
                })
            })
            .collect()
    }

    /// The newest change number (0 before any change).
    pub async fn last_change(&self) -> Result<i64> {
        let row = sqlx::query("SELECT value FROM collection_sequence WHERE name = 'changes'")
            .fetch_one(self.pool())
            .await?;
        col(&row, "value")
    }
}
