//! The store's behaviour, run against both backends: SQLite in a temporary directory and a fresh
//! PostgreSQL database (ENCLAVE_TEST_POSTGRES, default postgres://root@127.0.0.1:5432/postgres).

use std::future::Future;

use enclave_store::{
    BudgetSpec, Capability, GroupBy, ModelType, NewEvent, NewKey, Period, PriceRow, RateLimited,
    ReportQuery, Role, Store, StoreError, UnitPrices, Units,
};
use sqlx::Executor;

fn admin_url() -> String {
    std::env::var("ENCLAVE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database; returns its URL.
async fn fresh_postgres() -> String {
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url())
        .await
        .expect("PostgreSQL must run for the store tests");
    let name = format!("enclave_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    admin.close().await;
    let base = admin_url();
    let root = base.rsplit_once('/').map_or(base.as_str(), |(r, _)| r);
    format!("{root}/{name}")
}

/// Runs `test` on a SQLite store and on a PostgreSQL store.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::open(&Store::default_url(dir.path()))
        .await
        .expect("open sqlite");
    test(sqlite.clone()).await;
    sqlite.close().await;
    let url = fresh_postgres().await;
    let postgres = Store::open(&url).await.expect("open postgres");
    test(postgres.clone()).await;
    postgres.close().await;
    drop_database(&url).await;
}

async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap_or_default();
    let admin = sqlx::AnyPool::connect(&admin_url()).await.expect("connect");
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop database");
    admin.close().await;
}

fn event(store_tenant: &str, key: &str, request: &str, units: Units) -> NewEvent {
    NewEvent {
        request_id: request.to_string(),
        tenant_id: store_tenant.to_string(),
        key_id: key.to_string(),
        capability: Capability::Chat,
        model: "m".into(),
        model_type: ModelType::Base,
        units,
        price_version: 1,
        prices: UnitPrices {
            input_tokens: 150_000,
            output_tokens: 600_000,
            ..Default::default()
        },
        idempotency_key: None,
        request_fingerprint: None,
    }
}

fn tokens(input: i64, output: i64) -> Units {
    Units {
        input_tokens: input,
        output_tokens: output,
        ..Default::default()
    }
}

#[tokio::test]
async fn tenants_and_keys() {
    on_both(|store| async move {
        let acme = store.create_tenant("acme", None).await.expect("tenant");
        assert!(matches!(
            store.create_tenant("acme", None).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.find_tenant("acme").await.expect("by name"), acme);
        assert_eq!(store.find_tenant(&acme.id).await.expect("by id"), acme);
        let other = store.create_tenant("globex", None).await.expect("tenant");

        let mut new = NewKey::member(&acme.id);
        new.name = "ci".into();
        new.rpm = Some(10);
        new.scopes.capabilities = vec![Capability::Embed];
        new.budget = Some(BudgetSpec {
            limit_pico: 5,
            period: Period::Monthly,
        });
        let (key, secret) = store.create_key(new).await.expect("key");
        assert!(secret.starts_with(&key.prefix));
        let found = store
            .authenticate(&secret)
            .await
            .expect("auth")
            .expect("known");
        assert_eq!(found, key);
        assert_eq!(found.tenant_name, "acme");
        assert!(found.scopes.allows_capability(Capability::Embed));
        assert!(!found.scopes.allows_capability(Capability::Chat));
        assert_eq!(found.budget.map(|b| b.limit_pico), Some(5));
        assert!(store
            .authenticate("nope-nope")
            .await
            .expect("auth")
            .is_none());

        // A tenant cannot revoke another tenant's key; the owner can.
        assert!(matches!(
            store.revoke_key(&key.id, Some(&other.id)).await,
            Err(StoreError::NotFound(_))
        ));
        let revoked = store
            .revoke_key(&key.id, Some(&acme.id))
            .await
            .expect("revoke");
        assert!(!revoked.is_live(enclave_store::now_ms()));
        assert_eq!(
            store.list_keys(Some(&acme.id)).await.expect("list").len(),
            1
        );
        assert!(store
            .list_keys(Some(&other.id))
            .await
            .expect("list")
            .is_empty());

        // The bootstrap admin key: generated once, or set by the operator, idempotently.
        let first = store.ensure_admin_key(None).await.expect("admin");
        assert!(first.is_some());
        assert_eq!(store.ensure_admin_key(None).await.expect("again"), None);
        assert!(store
            .ensure_admin_key(Some("operator-key-1"))
            .await
            .expect("given")
            .is_some());
        assert_eq!(
            store
                .ensure_admin_key(Some("operator-key-1"))
                .await
                .expect("given again"),
            None
        );
        let admin = store
            .authenticate("operator-key-1")
            .await
            .expect("auth")
            .expect("admin");
        assert_eq!(admin.role, Role::Admin);
    })
    .await;
}

#[tokio::test]
async fn the_ledger_chain_verifies_and_catches_tampering() {
    on_both(|store| async move {
        let a = store.create_tenant("a", None).await.expect("tenant");
        let b = store.create_tenant("b", None).await.expect("tenant");
        for i in 0..5 {
            let recorded = store
                .record(
                    event(&a.id, "k1", &format!("req-a-{i}"), tokens(10, 20)),
                    &[],
                )
                .await
                .expect("record");
            assert_eq!(recorded.seq, i + 1);
            assert_eq!(recorded.cost_pico, 10 * 150_000 + 20 * 600_000);
        }
        store
            .record(event(&b.id, "k2", "req-b-0", tokens(1, 1)), &[])
            .await
            .expect("record");
        assert!(matches!(
            store
                .record(event(&a.id, "k1", "req-a-0", tokens(1, 1)), &[])
                .await,
            Err(StoreError::Conflict(_))
        ));
        // One event per tenant and Idempotency-Key; the key is part of the hashed event.
        let mut keyed = event(&b.id, "k2", "req-b-1", tokens(2, 2));
        keyed.idempotency_key = Some("client-retry-1".into());
        store.record(keyed.clone(), &[]).await.expect("keyed");
        keyed.request_id = "req-b-2".into();
        assert!(matches!(
            store.record(keyed.clone(), &[]).await,
            Err(StoreError::Conflict(_))
        ));
        let found = store
            .event_by_idempotency_key(&b.id, "client-retry-1")
            .await
            .expect("lookup")
            .expect("found");
        assert_eq!(found.request_id, "req-b-1");
        assert!(store
            .event_by_idempotency_key(&a.id, "client-retry-1")
            .await
            .expect("lookup")
            .is_none());
        keyed.tenant_id = a.id.clone();
        keyed.request_id = "req-a-keyed".into();
        store
            .record(keyed, &[])
            .await
            .expect("same key, other tenant");
        assert_eq!(
            store
                .event_by_request_id("req-b-1")
                .await
                .expect("by id")
                .map(|e| e.seq),
            Some(2)
        );
        let report = store.verify().await.expect("verify");
        assert!(report.ok(), "{report:?}");
        let a_events = report
            .tenants
            .iter()
            .find(|t| t.tenant_id == a.id)
            .map(|t| t.events);
        assert_eq!(a_events, Some(6));

        // Editing a row breaks the chain at that row.
        store
            .pool()
            .execute("UPDATE usage_events SET output_tokens = 2 WHERE request_id = 'req-a-2'")
            .await
            .expect("tamper");
        let report = store.verify().await.expect("verify");
        assert!(!report.ok());
        let problem = report
            .tenants
            .iter()
            .find(|t| t.tenant_id == a.id)
            .and_then(|t| t.problem.clone())
            .expect("problem");
        assert!(problem.contains("event 3 was altered"), "{problem}");
        // Tenant b is untouched.
        assert!(report
            .tenants
            .iter()
            .any(|t| t.tenant_id == b.id && t.problem.is_none()));

        // Removing the last event is caught by the chain head.
        store
            .pool()
            .execute("UPDATE usage_events SET output_tokens = 20 WHERE request_id = 'req-a-2'")
            .await
            .expect("restore");
        assert!(store.verify().await.expect("verify").ok());
        store
            .pool()
            .execute("DELETE FROM usage_events WHERE request_id = 'req-a-keyed'")
            .await
            .expect("delete");
        assert!(!store.verify().await.expect("verify").ok());
    })
    .await;
}

#[tokio::test]
async fn concurrent_reservations_never_overspend() {
    on_both(|store| async move {
        let tenant = store.create_tenant("t", None).await.expect("tenant");
        let budget = BudgetSpec {
            limit_pico: 10_000,
            period: Period::Daily,
        };
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            let tenant_id = tenant.id.clone();
            tasks.push(tokio::spawn(async move {
                let request = format!("r{i}");
                match store
                    .reserve(&request, 1_000, &[("tenant", tenant_id.as_str(), budget)])
                    .await
                    .expect("reserve")
                {
                    Ok(_) => Some(request),
                    Err(_) => None,
                }
            }));
        }
        let mut held = Vec::new();
        for task in tasks {
            if let Some(request) = task.await.expect("task") {
                held.push(request);
            }
        }
        assert_eq!(held.len(), 10, "exactly the budget's worth is held");
        assert_eq!(
            store
                .budget_state(&tenant.id, Period::Daily)
                .await
                .expect("state"),
            (0, 10_000)
        );
        // Settle half at a lower real cost, release the rest.
        for (i, request) in held.iter().enumerate() {
            if i % 2 == 0 {
                let mut e = event(&tenant.id, "k", request, tokens(0, 0));
                e.prices = UnitPrices {
                    classifications: 400,
                    ..Default::default()
                };
                e.units.classifications = 1;
                store.record(e, &[]).await.expect("settle");
            } else {
                store.release(request).await.expect("release");
            }
        }
        assert_eq!(
            store
                .budget_state(&tenant.id, Period::Daily)
                .await
                .expect("state"),
            (5 * 400, 0)
        );
        let refused = store
            .reserve("big", 9_000, &[("tenant", tenant.id.as_str(), budget)])
            .await
            .expect("reserve")
            .expect_err("over budget");
        assert_eq!(refused.owner, "tenant");
        assert_eq!(refused.spent_pico, 2_000);
        assert!(refused.resets_ms.is_some());

        // A call that outlives its hold (expired and swept) still spends from its budget.
        let long = store
            .reserve("long", 1_000, &[("tenant", tenant.id.as_str(), budget)])
            .await
            .expect("reserve")
            .expect("fits");
        store
            .pool()
            .execute("UPDATE reservations SET expires_ms = 0 WHERE request_id = 'long'")
            .await
            .expect("expire");
        assert_eq!(store.sweep_expired_reservations().await.expect("sweep"), 1);
        assert_eq!(
            store
                .budget_state(&tenant.id, Period::Daily)
                .await
                .expect("state"),
            (2_000, 0)
        );
        let mut e = event(&tenant.id, "k", "long", tokens(0, 0));
        e.prices = UnitPrices {
            classifications: 700,
            ..Default::default()
        };
        e.units.classifications = 1;
        store.record(e, &long.holds).await.expect("settle late");
        assert_eq!(
            store
                .budget_state(&tenant.id, Period::Daily)
                .await
                .expect("state"),
            (2_700, 0)
        );
    })
    .await;
}

#[tokio::test]
async fn prices_are_versioned_and_reports_group_usage() {
    on_both(|store| async move {
        let book = store.price_book().await.expect("book");
        assert_eq!(book.versions.len(), 1);
        let (version, prices) = book.prices(
            enclave_store::now_ms(),
            Capability::Rerank,
            "x",
            ModelType::Base,
        );
        assert_eq!((version, prices.search_units), (1, 2_000_000_000));
        let future = enclave_store::now_ms() + 3_600_000;
        let v2 = store
            .add_price_version(
                Some(future),
                "rerank up",
                &[PriceRow {
                    capability: Capability::Rerank,
                    model: "*".into(),
                    model_type: ModelType::Base,
                    unit: "search_units".into(),
                    pico_per_unit: 3_000_000_000,
                }],
            )
            .await
            .expect("v2");
        assert_eq!(v2.version, 2);
        let book = store.price_book().await.expect("book");
        assert_eq!(
            book.prices(
                enclave_store::now_ms(),
                Capability::Rerank,
                "x",
                ModelType::Base
            )
            .0,
            1
        );
        assert_eq!(
            book.prices(future, Capability::Rerank, "x", ModelType::Base)
                .1
                .search_units,
            3_000_000_000
        );
        assert!(store
            .add_price_version(
                None,
                "bad",
                &[PriceRow {
                    capability: Capability::Chat,
                    model: "*".into(),
                    model_type: ModelType::Base,
                    unit: "furlongs".into(),
                    pico_per_unit: 1,
                }]
            )
            .await
            .is_err());

        let t = store.create_tenant("t", None).await.expect("tenant");
        for i in 0..3 {
            store
                .record(event(&t.id, "k1", &format!("c{i}"), tokens(5, 7)), &[])
                .await
                .expect("record");
        }
        let mut e = event(&t.id, "k2", "e0", tokens(11, 0));
        e.capability = Capability::Embed;
        store.record(e, &[]).await.expect("record");
        let rows = store
            .report(&ReportQuery {
                group_by: GroupBy::parse_list("capability,key").expect("groups"),
                tenant_id: Some(t.id.clone()),
                ..Default::default()
            })
            .await
            .expect("report");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].capability.as_deref(), Some("chat"));
        assert_eq!(
            (rows[0].events, rows[0].input_tokens, rows[0].output_tokens),
            (3, 15, 21)
        );
        assert_eq!(rows[1].capability.as_deref(), Some("embed"));
        assert_eq!(rows[1].input_tokens, 11);
        // A range that cuts through the day reads the events and agrees with the roll-ups.
        let exact = store
            .report(&ReportQuery {
                group_by: vec![GroupBy::Tenant],
                from_ms: Some(enclave_store::now_ms() - 60_000),
                to_ms: Some(enclave_store::now_ms() + 60_000),
                ..Default::default()
            })
            .await
            .expect("exact");
        assert_eq!(exact.len(), 1);
        assert_eq!(exact[0].events, 4);
        assert_eq!(
            exact[0].cost_pico,
            rows.iter().map(|r| r.cost_pico).sum::<i64>()
        );
        assert!(GroupBy::parse_list("tenant,colour").is_err());
    })
    .await;
}

#[tokio::test]
async fn rate_windows_hold_under_concurrency() {
    on_both(|store| async move {
        let now = 1_700_000_000_000;
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .take_rate_slot("k", now, Some(7), None)
                    .await
                    .expect("slot")
                    .is_ok()
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += usize::from(task.await.expect("task"));
        }
        assert_eq!(admitted, 7);
        assert!(matches!(
            store
                .take_rate_slot("k", now, Some(7), None)
                .await
                .expect("slot"),
            Err(RateLimited::Requests { limit: 7, .. })
        ));
        // The next minute starts afresh; tokens count against tpm.
        let later = now + 60_000;
        assert!(store
            .take_rate_slot("k", later, None, Some(100))
            .await
            .expect("slot")
            .is_ok());
        store
            .add_rate_tokens("k", later, 100)
            .await
            .expect("tokens");
        assert!(matches!(
            store
                .take_rate_slot("k", later, None, Some(100))
                .await
                .expect("slot"),
            Err(RateLimited::Tokens { limit: 100, .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_admit_one_call_and_replay_its_response() {
    use enclave_store::{Claim, StoredResponse};
    on_both(|store| async move {
        // Twenty concurrent claims of one key: exactly one runs.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .claim_idempotency_key("t", "k1", "fp", &format!("req{i}"), "n1")
                    .await
                    .expect("claim")
            }));
        }
        let mut claims = Vec::new();
        for task in tasks {
            claims.push(task.await.expect("task"));
        }
        let won: Vec<usize> = (0..20).filter(|&i| claims[i] == Claim::Claimed).collect();
        assert_eq!(won.len(), 1, "{claims:?}");
        assert!(claims
            .iter()
            .all(|c| matches!(c, Claim::Claimed | Claim::InFlight)));
        let winner = format!("req{}", won[0]);
        // Another request under the same key is a mismatch, whatever state the claim is in.
        assert_eq!(
            store
                .claim_idempotency_key("t", "k1", "other", "x", "n1")
                .await
                .expect("claim"),
            Claim::Mismatch
        );
        // Only the holder may complete it; then every retry gets the stored response.
        let response = StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            headers: "x-enclave-request-id: r".into(),
            body: "{\"text\":\"first\"}".into(),
        };
        store
            .complete_idempotency_key("t", "k1", "intruder", &response)
            .await
            .expect("complete");
        assert_eq!(
            store
                .claim_idempotency_key("t", "k1", "fp", "again", "n1")
                .await
                .expect("claim"),
            Claim::InFlight
        );
        store
            .complete_idempotency_key("t", "k1", &winner, &response)
            .await
            .expect("complete");
        assert_eq!(
            store
                .claim_idempotency_key("t", "k1", "fp", "again", "n1")
                .await
                .expect("claim"),
            Claim::Done(response.clone())
        );
        // A completed claim is never released; a failed call's claim is, and the key is free.
        store
            .release_idempotency_key("t", "k1", &winner)
            .await
            .expect("release");
        assert!(matches!(
            store
                .claim_idempotency_key("t", "k1", "fp", "z", "n1")
                .await,
            Ok(Claim::Done(_))
        ));
        assert_eq!(
            store
                .claim_idempotency_key("t", "k2", "fp", "a", "n1")
                .await
                .expect("claim"),
            Claim::Claimed
        );
        store
            .release_idempotency_key("t", "k2", "a")
            .await
            .expect("release");
        assert_eq!(
            store
                .claim_idempotency_key("t", "k2", "fp", "b", "n1")
                .await
                .expect("claim"),
            Claim::Claimed
        );
        // A claim of a node that stopped beating is taken over; a live node's is not.
        store.beat("n2").await.expect("beat");
        assert_eq!(
            store
                .claim_idempotency_key("t", "k3", "fp", "live", "n2")
                .await
                .expect("claim"),
            Claim::Claimed
        );
        let retry = store
            .claim_idempotency_key("t", "k3", "fp", "retry", "n1")
            .await
            .expect("claim");
        match store.backend() {
            // One process per SQLite file: a claim of another process is a dead one's.
            enclave_store::Backend::Sqlite => assert_eq!(retry, Claim::Claimed),
            enclave_store::Backend::Postgres => assert_eq!(retry, Claim::InFlight),
        }
        assert_eq!(
            store
                .claim_idempotency_key("t", "k4", "fp", "dead", "never-beat")
                .await
                .expect("claim"),
            Claim::Claimed
        );
        assert_eq!(
            store
                .claim_idempotency_key("t", "k4", "fp", "taker", "n1")
                .await
                .expect("claim"),
            Claim::Claimed,
            "a node that never beat is dead"
        );
        // Keys are per tenant.
        assert_eq!(
            store
                .claim_idempotency_key("other-tenant", "k1", "fp", "c", "n1")
                .await
                .expect("claim"),
            Claim::Claimed
        );
    })
    .await;
}
