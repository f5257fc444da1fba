//! Enclave's persistent state behind one interface, [`Store`]: tenants and API keys, budgets, guardrail attachments and the audit trail,
//! the price book, the hash-chained usage ledger with its daily roll-ups, and shared rate
//! windows. The same portable SQL runs on SQLite (the embedded default, a WAL file under
//! `ENCLAVE_HOME`) and on PostgreSQL (many nodes sharing one database).
//!
//! It must not know about HTTP, models or engines: callers pass names and counts.

pub mod accounts;
pub mod budgets;
pub mod collections;
pub mod guard;
pub mod idempotency;
pub mod ledger;
pub mod money;
pub mod prices;
pub mod rate;
pub mod reports;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};

pub use accounts::{KeyRecord, NewKey, Role, Scopes, Tenant};
pub use budgets::{BudgetExceeded, BudgetSpec, Period, Reservation};
pub use collections::{
    Change, ChangeOp, ChunkRow, CollectionRecord, DocumentRecord, ForgetReceipt,
};
pub use guard::{Attachment, AuditEvent, AuditQuery};
pub use idempotency::{Claim, StoredResponse};
pub use ledger::{NewEvent, RecordedEvent, VerifyReport};
pub use money::{Capability, ModelType, Pico, UnitPrices, Units};
pub use prices::{PriceBook, PriceRow, PriceVersion};
pub use rate::RateLimited;
pub use reports::{GroupBy, ReportQuery, ReportRow};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`), creating a SQLite file when
    /// missing, and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL '{}': use sqlite://PATH or postgres://...",
                redact_url(url)
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30));
        let options = match backend {
            // WAL lets readers run beside the writer; FULL makes each commit durable before
            // the caller sees success; the busy timeout queues writers instead of failing them;
            // secure_delete overwrites deleted rows, so a forgotten document leaves no trace
            // in the file.
            Backend::Sqlite => options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;",
                    )
                    .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options,
        };
        let pool = options.connect(&url).await?;
        MIGRATIONS.run(&pool).await?;
        let store = Self { pool, backend };
        prices::seed_defaults(&store).await?;
        Ok(store)
    }

    /// The SQLite file under `home` that a single node uses when no database URL is given.
    pub fn default_url(home: &std::path::Path) -> String {
        format!("sqlite://{}", home.join("enclave.db").display())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for tools and tests that need raw SQL.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `url` with its password replaced by `***` (in `user:password@` and in a `password=` query
/// parameter), for messages and logs, which must never carry a database password.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let mut redacted = format!("{scheme}://");
    // User info runs to the last '@', so an unencoded '@', '/' or '?' in a password is still
    // hidden: hiding too much beats leaking.
    let rest = match rest.rsplit_once('@') {
        Some((user_info, after)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            redacted.push_str(user);
            if user.len() < user_info.len() {
                redacted.push_str(":***");
            }
            redacted.push('@');
            after
        }
        None => rest,
    };
    // sqlx also accepts the password as a query parameter.
    match rest.split_once('?') {
        Some((path, query)) => {
            redacted.push_str(path);
            redacted.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => param.to_string(),
                })
                .collect();
            redacted.push_str(&params.join("&"));
        }
        None => redacted.push_str(rest),
    }
    redacted
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Reads a column, turning a type mismatch into a store error.
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    Ok(row.try_get(name)?)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_hides_only_the_password() {
        let cases = [
            (
                "postgres://enclave:s3cret@db.internal:5432/enclave",
                "postgres://enclave:***@db.internal:5432/enclave",
            ),
            // Unencoded '@' and '/' in a password do not let part of it through.
            (
                "postgres://enclave:p@ss/word@db/enclave",
                "postgres://enclave:***@db/enclave",
            ),
            (
                "postgresql://db/enclave?user=enclave&password=s3cret&sslmode=require",
                "postgresql://db/enclave?user=enclave&password=***&sslmode=require",
            ),
            // Nothing secret: unchanged.
            (
                "postgres://enclave@db/enclave",
                "postgres://enclave@db/enclave",
            ),
            (
                "sqlite:///home/me/.enclave/enclave.db?mode=rwc",
                "sqlite:///home/me/.enclave/enclave.db?mode=rwc",
            ),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            let redacted = redact_url(url);
            assert_eq!(redacted, expected, "{url}");
            assert!(
                !redacted.contains("s3cret") && !redacted.contains("ss/w"),
                "{redacted}"
            );
        }
    }
}
