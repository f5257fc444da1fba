//! `enclave tenants`, `enclave keys` and `enclave usage`: the admin API's verbs, run directly
//! against the database (the SQLite file under ENCLAVE_HOME, or `--database-url`).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use enclave_engine::pull;
use enclave_store::money::pico_to_usd;
use enclave_store::reports::{parse_time, rfc3339, to_csv};
use enclave_store::{BudgetSpec, GroupBy, NewKey, ReportQuery, Role, Scopes, Store};

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// postgres://... to share one database between nodes; default: SQLite under ENCLAVE_HOME.
    #[arg(long, env = "ENCLAVE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    pub fn url(&self) -> Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => {
                let home = pull::enclave_home();
                std::fs::create_dir_all(&home)
                    .with_context(|| format!("creating {}", home.display()))?;
                Ok(Store::default_url(&home))
            }
        }
    }

    pub async fn open(&self) -> Result<Store> {
        let url = self.url()?;
        // Name the database, but never with its password: errors end up in logs.
        Store::open(&url).await.with_context(|| {
            format!(
                "opening the accounts database {}",
                enclave_store::redact_url(&url)
            )
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant (an organization whose keys share a ledger and, optionally, a budget).
    Create {
        name: String,
        #[arg(long)]
        budget_usd: Option<f64>,
        /// daily, monthly (default) or total.
        #[arg(long)]
        budget_period: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; the secret is printed once and never stored.
    Create {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "")]
        name: String,
        /// member (default) or tenant_admin (manages its own tenant's keys, reads its usage).
        #[arg(long, default_value = "member")]
        role: String,
        /// Capabilities (chat, embed, ...) and model:NAME entries; none allows everything.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        rpm: Option<i64>,
        #[arg(long)]
        tpm: Option<i64>,
        #[arg(long)]
        budget_usd: Option<f64>,
        #[arg(long)]
        budget_period: Option<String>,
        /// RFC 3339 time or YYYY-MM-DD after which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List keys (prefixes only; secrets are never stored).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a key; every node refuses it within a second.
    Revoke {
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Set the groups a key belongs to (it sees collection documents whose acl names one).
    Groups {
        id: String,
        /// Group names; none clears them.
        groups: Vec<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub command: Option<UsageCommand>,
    /// Any of tenant, key, capability, model, model_type, day.
    #[arg(long, default_value = "tenant,capability,model,model_type")]
    pub group_by: String,
    /// YYYY-MM-DD, RFC 3339 or Unix seconds/ms (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// YYYY-MM-DD (that day included), RFC 3339 or Unix seconds/ms (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

#[derive(Subcommand, Debug)]
pub enum UsageCommand {
    /// Re-walk every tenant's hash chain; exits non-zero when any event was altered or removed.
    Verify {
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn tenants(command: TenantsCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            TenantsCommand::Create {
                name,
                budget_usd,
                budget_period,
                db,
            } => {
                let store = db.open().await?;
                let tenant = store
                    .create_tenant(
                        &name,
                        BudgetSpec::optional(budget_usd, budget_period.as_deref())?,
                    )
                    .await?;
                println!("{}\t{}", tenant.id, tenant.name);
            }
            TenantsCommand::List { db } => {
                for tenant in db.open().await?.list_tenants().await? {
                    println!(
                        "{}\t{}\t{}",
                        tenant.id,
                        tenant.name,
                        rfc3339(tenant.created_ms)
                    );
                }
            }
        }
        Ok(())
    })
}

pub fn keys(command: KeysCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            KeysCommand::Create {
                tenant,
                name,
                role,
                scopes,
                rpm,
                tpm,
                budget_usd,
                budget_period,
                expires_at,
                db,
            } => {
                let store = db.open().await?;
                let tenant = store.find_tenant(&tenant).await?;
                let role = Role::parse(&role)
                    .with_context(|| format!("role must be member or tenant_admin, got {role}"))?;
                if role == Role::Admin && tenant.name != enclave_store::accounts::SYSTEM_TENANT {
                    bail!("admin keys belong to the system tenant");
                }
                let key = NewKey {
                    tenant_id: tenant.id,
                    name,
                    role,
                    scopes: Scopes::parse(&scopes)?,
                    rpm,
                    tpm,
                    expires_ms: expires_at
                        .as_deref()
                        .map(|t| parse_time(t, false))
                        .transpose()?,
                    budget: BudgetSpec::optional(budget_usd, budget_period.as_deref())?,
                    secret: None,
                };
                let (record, secret) = store.create_key(key).await?;
                println!("id:     {}", record.id);
                println!("tenant: {} ({})", record.tenant_name, record.tenant_id);
                println!("key:    {secret}");
                eprintln!("The key is shown only now; store it safely.");
            }
            KeysCommand::List { tenant, db } => {
                let store = db.open().await?;
                let tenant = match tenant {
                    Some(t) => Some(store.find_tenant(&t).await?.id),
                    None => None,
                };
                for key in store.list_keys(tenant.as_deref()).await? {
                    let state = if key.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        key.id,
                        key.prefix,
                        key.tenant_name,
                        key.role.as_str(),
                        state,
                        key.name
                    );
                }
            }
            KeysCommand::Revoke { id, db } => {
                let key = db.open().await?.revoke_key(&id, None).await?;
                println!("revoked {} ({})", key.id, key.prefix);
            }
            KeysCommand::Groups { id, groups, db } => {
                let key = db.open().await?.set_key_groups(&id, None, &groups).await?;
                println!(
                    "{} ({}) groups: {}",
                    key.id,
                    key.prefix,
                    key.groups.join(",")
                );
            }
        }
        Ok(())
    })
}

pub fn usage(args: UsageArgs) -> Result<()> {
    runtime()?.block_on(async move {
        if let Some(UsageCommand::Verify { db }) = args.command {
            // `enclave usage --database-url URL verify` names the database before the verb.
            let db = DatabaseArgs {
                database_url: db.database_url.or(args.db.database_url),
            };
            let report = db.open().await?.verify().await?;
            for tenant in &report.tenants {
                match &tenant.problem {
                    None => println!("{}\t{} events\tok", tenant.tenant_id, tenant.events),
                    Some(problem) => println!(
                        "{}\t{} events\tFAILED: {problem}",
                        tenant.tenant_id, tenant.events
                    ),
                }
            }
            if !report.ok() {
                bail!("the usage ledger does not verify");
            }
            println!("ledger verified: {} tenants", report.tenants.len());
            return Ok(());
        }
        let store = args.db.open().await?;
        let group_by = GroupBy::parse_list(&args.group_by)?;
        let tenant_id = match &args.tenant {
            Some(t) => Some(store.find_tenant(t).await?.id),
            None => None,
        };
        let rows = store
            .report(&ReportQuery {
                group_by: group_by.clone(),
                from_ms: args
                    .from
                    .as_deref()
                    .map(|t| parse_time(t, false))
                    .transpose()?,
                to_ms: args
                    .to
                    .as_deref()
                    .map(|t| parse_time(t, true))
                    .transpose()?,
                tenant_id,
                key_id: None,
            })
            .await?;
        let csv = to_csv(&rows, &group_by);
        if args.csv {
            print!("{csv}");
        } else {
            print_table(&csv);
            let total: i64 = rows.iter().map(|r| r.cost_pico).sum();
            println!("total cost: ${:.6}", pico_to_usd(total));
        }
        Ok(())
    })
}

/// Lays CSV out as aligned columns (report fields never hold commas of their own).
fn print_table(csv: &str) {
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |f| f.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(field, width)| format!("{field:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
