//! Tenants and their API keys. A key's secret is shown once, at creation; the store keeps only
//! its SHA-256 (secrets are 190 random bits, so a fast hash is enough) and a visible prefix.

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use crate::budgets::{self, BudgetSpec, Period};
use crate::{col, now_ms, Capability, Result, Store, StoreError};

/// The tenant that holds the platform's own admin keys.
pub const SYSTEM_TENANT: &str = "system";
/// Every tenant id starts with this; tenant names may not, so a name never reads as an id.
pub const TENANT_ID_PREFIX: &str = "tn_";

const SECRET_LEN: usize = 32;
const PREFIX_LEN: usize = 11;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

/// What a key may do beyond calling models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages every tenant, key and price (the bootstrap key).
    Admin,
    /// Manages its own tenant's keys and reads its own tenant's usage.
    TenantAdmin,
    /// Calls models only.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::TenantAdmin => "tenant_admin",
            Self::Member => "member",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "admin" => Some(Self::Admin),
            "tenant_admin" => Some(Self::TenantAdmin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// Which capabilities and models a key may use; empty lists allow all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes {
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    pub models: Vec<String>,
}

impl Scopes {
    /// Parses a list of scope names: capability names (`chat`, `embed`, ...) and `model:NAME`.
    pub fn parse(names: &[String]) -> Result<Self> {
        let mut scopes = Scopes::default();
        for name in names {
            if let Some(model) = name.strip_prefix("model:") {
                if model.is_empty() {
                    return Err(StoreError::Invalid(
                        "scope 'model:' needs a model name".into(),
                    ));
                }
                scopes.models.push(model.to_string());
            } else if let Some(capability) = Capability::parse(name) {
                scopes.capabilities.push(capability);
            } else {
                return Err(StoreError::Invalid(format!(
                    "unknown scope '{name}'; use chat, generate, embed, rerank, classify, summarize or model:NAME"
                )));
            }
        }
        Ok(scopes)
    }

    /// The scope names [`Scopes::parse`] reads back.
    pub fn names(&self) -> Vec<String> {
        let capabilities = self.capabilities.iter().map(|c| c.as_str().to_string());
        let models = self.models.iter().map(|m| format!("model:{m}"));
        capabilities.chain(models).collect()
    }

    pub fn allows_capability(&self, capability: Capability) -> bool {
        self.capabilities.is_empty() || self.capabilities.contains(&capability)
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// A key as authentication sees it, with the budgets that apply to it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub scopes: Scopes,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub created_ms: i64,
    pub budget: Option<BudgetSpec>,
    pub tenant_budget: Option<BudgetSpec>,
    /// Groups the key belongs to: it sees collection documents whose acl names one of them
    /// (and those with no acl).
    pub groups: Vec<String>,
}

impl KeyRecord {
    /// Whether the key may be used at `now` (not revoked, not expired).
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now < e)
    }
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub tenant_id: String,
    pub name: String,
    pub role: Role,
    pub scopes: Scopes,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub expires_ms: Option<i64>,
    pub budget: Option<BudgetSpec>,
    /// Use this secret instead of a generated one (the operator's bootstrap key).
    pub secret: Option<String>,
}

impl NewKey {
    pub fn member(tenant_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_string(),
            name: String::new(),
            role: Role::Member,
            scopes: Scopes::default(),
            rpm: None,
            tpm: None,
            expires_ms: None,
            budget: None,
            secret: None,
        }
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn generate_secret() -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    format!("ek_{body}")
}

fn prefix_of(secret: &str) -> String {
    secret.chars().take(PREFIX_LEN).collect()
}

const KEY_COLUMNS: &str = "k.id, k.tenant_id, t.name AS tenant_name, k.name, k.prefix, k.role, k.scopes, \
     k.rpm, k.tpm, k.expires_ms, k.revoked_ms, k.created_ms, k.groups, \
     kb.limit_pico AS key_limit, kb.period AS key_period, tb.limit_pico AS tenant_limit, tb.period AS tenant_period \
     FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
     LEFT JOIN budgets kb ON kb.owner_id = k.id \
     LEFT JOIN budgets tb ON tb.owner_id = k.tenant_id";

fn budget_of(row: &AnyRow, limit: &str, period: &str) -> Result<Option<BudgetSpec>> {
    let limit: Option<i64> = col(row, limit)?;
    let period: Option<String> = col(row, period)?;
    Ok(match (limit, period) {
        (Some(limit_pico), Some(period)) => Some(BudgetSpec {
            limit_pico,
            period: Period::parse(&period)
                .ok_or_else(|| StoreError::Invalid(format!("bad budget period {period}")))?,
        }),
        _ => None,
    })
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord> {
    let role: String = col(row, "role")?;
    let scopes: String = col(row, "scopes")?;
    Ok(KeyRecord {
        id: col(row, "id")?,
        tenant_id: col(row, "tenant_id")?,
        tenant_name: col(row, "tenant_name")?,
        name: col(row, "name")?,
        prefix: col(row, "prefix")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Invalid(format!("bad role {role}")))?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::Invalid(format!("bad scopes: {e}")))?,
        rpm: col(row, "rpm")?,
        tpm: col(row, "tpm")?,
        expires_ms: col(row, "expires_ms")?,
        revoked_ms: col(row, "revoked_ms")?,
        created_ms: col(row, "created_ms")?,
        budget: budget_of(row, "key_limit", "key_period")?,
        tenant_budget: budget_of(row, "tenant_limit", "tenant_period")?,
        groups: split_groups(&col::<String>(row, "groups")?),
    })
}

/// Groups as stored: comma-separated names.
fn split_groups(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

fn tenant_from_row(row: &AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: col(row, "id")?,
        name: col(row, "name")?,
        created_ms: col(row, "created_ms")?,
    })
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Store {
    /// Creates a tenant (and its ledger chain), with an optional budget over all its keys.
    pub async fn create_tenant(&self, name: &str, budget: Option<BudgetSpec>) -> Result<Tenant> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::Invalid(
                "tenant name must be 1 to 200 characters".into(),
            ));
        }
        if name.starts_with(TENANT_ID_PREFIX) {
            return Err(StoreError::Invalid(format!(
                "tenant names may not start with '{TENANT_ID_PREFIX}': that prefix is kept for tenant ids"
            )));
        }
        let tenant = Tenant {
            id: format!("{TENANT_ID_PREFIX}{}", uuid::Uuid::new_v4().simple()),
            name: name.to_string(),
            created_ms: now_ms(),
        };
        let mut tx = self.pool().begin().await?;
        let inserted =
            sqlx::query("INSERT INTO tenants (id, name, created_ms) VALUES ($1, $2, $3)")
                .bind(&tenant.id)
                .bind(&tenant.name)
                .bind(tenant.created_ms)
                .execute(&mut *tx)
                .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a tenant named '{name}' already exists"
                )))
            }
            other => other?,
        };
        sqlx::query("INSERT INTO ledger_heads (tenant_id, seq, head_hash) VALUES ($1, 0, $2)")
            .bind(&tenant.id)
            .bind(crate::ledger::GENESIS_HASH)
            .execute(&mut *tx)
            .await?;
        if let Some(budget) = budget {
            budgets::put_budget(&mut tx, &tenant.id, budget).await?;
        }
        tx.commit().await?;
        Ok(tenant)
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT id, name, created_ms FROM tenants ORDER BY created_ms, id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// A tenant by id, else by name. An id always wins: names shaped like ids are refused at
    /// creation, and one made before that rule cannot shadow the tenant whose id it copies.
    pub async fn find_tenant(&self, id_or_name: &str) -> Result<Tenant> {
        for query in [
            "SELECT id, name, created_ms FROM tenants WHERE id = $1",
            "SELECT id, name, created_ms FROM tenants WHERE name = $1",
        ] {
            let row = sqlx::query(query)
                .bind(id_or_name)
                .fetch_optional(self.pool())
                .await?;
            if let Some(row) = row {
                return tenant_from_row(&row);
            }
        }
        Err(StoreError::NotFound(format!("tenant '{id_or_name}'")))
    }

    /// Sets or replaces the budget over all of a tenant's keys.
    pub async fn set_tenant_budget(&self, tenant_id: &str, budget: BudgetSpec) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        budgets::put_budget(&mut tx, tenant_id, budget).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a key; returns its record and the secret, which is not stored and never shown again.
    pub async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)> {
        let tenant = self.find_tenant(&key.tenant_id).await?;
        if key.name.len() > 200 {
            return Err(StoreError::Invalid(
                "key name must be at most 200 characters".into(),
            ));
        }
        for (name, limit) in [("rpm", key.rpm), ("tpm", key.tpm)] {
            if limit.is_some_and(|n| n < 1) {
                return Err(StoreError::Invalid(format!("{name} must be at least 1")));
            }
        }
        let secret = key.secret.clone().unwrap_or_else(generate_secret);
        if secret.len() < 8 || secret.len() > 256 {
            return Err(StoreError::Invalid(
                "a key must be 8 to 256 characters".into(),
            ));
        }
        let id = format!("key_{}", uuid::Uuid::new_v4().simple());
        let scopes = serde_json::to_string(&key.scopes)
            .map_err(|e| StoreError::Invalid(format!("scopes: {e}")))?;
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, role, scopes, rpm, tpm, expires_ms, revoked_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11)",
        )
        .bind(&id)
        .bind(&tenant.id)
        .bind(&key.name)
        .bind(prefix_of(&secret))
        .bind(hash_secret(&secret))
        .bind(key.role.as_str())
        .bind(scopes)
        .bind(key.rpm)
        .bind(key.tpm)
        .bind(key.expires_ms)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict("that key already exists".into()))
            }
            other => other?,
        };
        if let Some(budget) = key.budget {
            budgets::put_budget(&mut tx, &id, budget).await?;
        }
        tx.commit().await?;
        let record = self
            .key_by_id(&id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
        Ok((record, secret))
    }

    /// The key whose secret is `secret`, live or not (callers check [`KeyRecord::is_live`]).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<KeyRecord>> {
        let sql = format!("SELECT {KEY_COLUMNS} WHERE k.secret_hash = $1");
        let row = sqlx::query(&sql)
            .bind(hash_secret(secret))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        let sql = format!("SELECT {KEY_COLUMNS} WHERE k.id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Keys of one tenant, or of all tenants when `tenant_id` is `None`.
    pub async fn list_keys(&self, tenant_id: Option<&str>) -> Result<Vec<KeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} WHERE ($1 IS NULL OR k.tenant_id = $1) ORDER BY k.created_ms, k.id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key (of `tenant_id` only, when given); revoking twice is not an error.
    pub async fn revoke_key(&self, id: &str, tenant_id: Option<&str>) -> Result<KeyRecord> {
        let updated = sqlx::query(
            "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $1) WHERE id = $2 AND ($3 IS NULL OR tenant_id = $3)",
        )
        .bind(now_ms())
        .bind(id)
        .bind(tenant_id)
        .execute(self.pool())
        .await?;
        self.updated_key(id, updated.rows_affected()).await
    }

    /// The key an update touched (`rows` rows), or not found.
    async fn updated_key(&self, id: &str, rows: u64) -> Result<KeyRecord> {
        let missing = || StoreError::NotFound(format!("key '{id}'"));
        if rows == 0 {
            return Err(missing());
        }
        self.key_by_id(id).await?.ok_or_else(missing)
    }

    /// Sets the groups a key belongs to (of `tenant_id` only, when given). Names are trimmed,
    /// must be non-empty and may not contain commas.
    pub async fn set_key_groups(
        &self,
        id: &str,
        tenant_id: Option<&str>,
        groups: &[String],
    ) -> Result<KeyRecord> {
        let mut names: Vec<&str> = groups.iter().map(|g| g.trim()).collect();
        if let Some(bad) = names
            .iter()
            .find(|g| g.is_empty() || g.contains(',') || g.len() > 100)
        {
            return Err(StoreError::Invalid(format!(
                "group name '{bad}' must be 1-100 characters without commas"
            )));
        }
        names.sort_unstable();
        names.dedup();
        let updated = sqlx::query(
            "UPDATE api_keys SET groups = $1 WHERE id = $2 AND ($3 IS NULL OR tenant_id = $3)",
        )
        .bind(names.join(","))
        .bind(id)
        .bind(tenant_id)
        .execute(self.pool())
        .await?;
        self.updated_key(id, updated.rows_affected()).await
    }

    /// Makes sure an admin key exists. With `secret`, that secret becomes (or stays) an admin
    /// key; without, one is generated only when no live admin key exists. Returns the secret
    /// when it was newly created, so the caller can print it once.
    pub async fn ensure_admin_key(&self, secret: Option<&str>) -> Result<Option<String>> {
        let system = match self.find_tenant(SYSTEM_TENANT).await {
            Ok(tenant) => tenant,
            Err(StoreError::NotFound(_)) => match self.create_tenant(SYSTEM_TENANT, None).await {
                Ok(tenant) => tenant,
                // Another node created it at the same moment.
                Err(StoreError::Conflict(_)) => self.find_tenant(SYSTEM_TENANT).await?,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        if let Some(secret) = secret {
            if let Some(existing) = self.authenticate(secret).await? {
                if existing.role == Role::Admin && existing.revoked_ms.is_none() {
                    return Ok(None);
                }
                return Err(StoreError::Conflict(
                    "the given admin key is already used by a non-admin or revoked key".into(),
                ));
            }
        } else {
            let live_admin = sqlx::query(
                "SELECT id FROM api_keys WHERE role = 'admin' AND revoked_ms IS NULL LIMIT 1",
            )
            .fetch_optional(self.pool())
            .await?;
            if live_admin.is_some() {
                return Ok(None);
            }
        }
        let mut key = NewKey::member(&system.id);
        key.name = "bootstrap admin".into();
        key.role = Role::Admin;
        key.secret = secret.map(str::to_string);
        match self.create_key(key).await {
            Ok((_, secret)) => Ok(Some(secret)),
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
