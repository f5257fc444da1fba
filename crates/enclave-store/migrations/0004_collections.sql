-- Collections of a tenant's documents for grounded answers. The database is the source of
-- truth; each node keeps a search index in memory, rebuilt from here at start and kept current
-- by reading `collection_changes` past the last sequence number it applied. A document and
-- its chunks are written in one transaction (whole or not at all), and every write takes the
-- next number from `collection_sequence`, whose row lock orders numbers as commits happen.
CREATE TABLE collections (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    embed_model TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE collection_documents (
    collection_id TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    metadata TEXT NOT NULL,
    acl TEXT NOT NULL,
    text TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (collection_id, id)
);

-- A chunk is a span of its document's text (code points); `context` is what frames it
-- (headings, a table's header row); `vector` its embedding (base64 of little-endian f32).
CREATE TABLE collection_chunks (
    collection_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    chunk_id BIGINT NOT NULL,
    start_char BIGINT NOT NULL,
    end_char BIGINT NOT NULL,
    context TEXT NOT NULL,
    vector TEXT NOT NULL,
    PRIMARY KEY (collection_id, document_id, chunk_id)
);

CREATE TABLE collection_sequence (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO collection_sequence (name, value) VALUES ('changes', 0);

-- op: 'put' (a document written or replaced), 'delete' (a document forgotten) or 'drop' (a
-- collection deleted).
CREATE TABLE collection_changes (
    seq BIGINT PRIMARY KEY,
    collection_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    op TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

-- What forgetting removed and when: kept after the document itself is gone.
CREATE TABLE forget_receipts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    chunks_removed BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    removed_ms BIGINT NOT NULL
);

-- Groups a key belongs to (comma-separated); documents with an acl are visible only to keys
-- sharing one of its groups.
ALTER TABLE api_keys ADD COLUMN groups TEXT NOT NULL DEFAULT '';
