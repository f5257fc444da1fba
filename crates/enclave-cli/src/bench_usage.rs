//! `enclave bench usage`: fills a ledger with a million events spread over tenants, keys,
//! capabilities, models and days, then times usage reports read from the daily roll-ups against
//! the same report computed from the events themselves.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use enclave_store::ledger::MS_PER_DAY;
use enclave_store::{
    now_ms, Capability, GroupBy, ModelType, NewEvent, ReportQuery, Store, UnitPrices, Units,
};
use serde_json::{json, Value};

use crate::bench_stats::{bench_store, round2};

#[derive(Args, Debug)]
pub struct UsageBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    #[arg(long, default_value_t = 5)]
    pub keys_per_tenant: usize,
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// A database to fill (default: a temporary SQLite file).
    #[arg(long)]
    pub database_url: Option<String>,
}

const CAPABILITIES: [Capability; 3] = [Capability::Chat, Capability::Embed, Capability::Rerank];
const MODELS: [&str; 2] = ["model-a", "model-b"];
const BATCH: usize = 5_000;

/// The median time of `runs` runs of a report, in ms, and its row count.
async fn time_report(store: &Store, query: &ReportQuery, runs: usize) -> Result<(f64, usize)> {
    let mut times = Vec::with_capacity(runs);
    let mut rows = 0;
    for _ in 0..runs {
        let started = Instant::now();
        rows = store.report(query).await?.len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((round2(times[times.len() / 2]), rows))
}

pub async fn usage(args: UsageBenchArgs) -> Result<Value> {
    let (store, _scratch) = bench_store(args.database_url.as_deref()).await?;
    let mut tenants = Vec::new();
    for i in 0..args.tenants {
        let name = format!("bench-{i}-{}", uuid_suffix());
        tenants.push(store.create_tenant(&name, None).await?.id);
    }
    let now = now_ms();
    let first_day = now.div_euclid(MS_PER_DAY) - args.days + 1;
    let prices = UnitPrices {
        input_tokens: 150_000,
        output_tokens: 600_000,
        search_units: 2_000_000_000,
        classifications: 0,
    };
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..args.events {
        let tenant = &tenants[next(tenants.len() as u64) as usize];
        let key = next(args.keys_per_tenant as u64);
        let capability = CAPABILITIES[next(3) as usize];
        let day = first_day + next(args.days as u64) as i64;
        let units = match capability {
            Capability::Rerank => Units {
                search_units: 1,
                ..Units::default()
            },
            Capability::Embed => Units {
                input_tokens: 20 + next(200) as i64,
                ..Units::default()
            },
            _ => Units {
                input_tokens: 50 + next(500) as i64,
                output_tokens: 10 + next(300) as i64,
                ..Units::default()
            },
        };
        let event = NewEvent {
            request_id: format!("bench-{i}-{}", uuid_suffix()),
            tenant_id: tenant.clone(),
            key_id: format!("{tenant}-key-{key}"),
            capability,
            model: MODELS[next(2) as usize].to_string(),
            model_type: ModelType::Base,
            units,
            price_version: 1,
            prices,
            idempotency_key: None,
            request_fingerprint: None,
        };
        batch.push((event, day * MS_PER_DAY + next(MS_PER_DAY as u64) as i64));
        if batch.len() == BATCH {
            store.record_batch(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.record_batch(batch).await?;
    }
    let insert_s = started.elapsed().as_secs_f64();

    let by_tenant_capability_model = ReportQuery {
        group_by: GroupBy::parse_list("tenant,capability,model,model_type")?,
        ..ReportQuery::default()
    };
    let by_day_last_week = ReportQuery {
        group_by: vec![GroupBy::Day],
        from_ms: Some((now.div_euclid(MS_PER_DAY) - 6) * MS_PER_DAY),
        ..ReportQuery::default()
    };
    // One millisecond off a day boundary: the same report, computed from the events.
    let from_events = ReportQuery {
        from_ms: Some(first_day * MS_PER_DAY + 1),
        ..by_tenant_capability_model.clone()
    };
    let (rollup_ms, rollup_rows) = time_report(&store, &by_tenant_capability_model, 5).await?;
    let (week_ms, _) = time_report(&store, &by_day_last_week, 5).await?;
    let (events_ms, _) = time_report(&store, &from_events, 3).await?;
    Ok(json!({
        "store": store.backend().name(),
        "events": args.events,
        "insert_events_per_s": (args.events as f64 / insert_s).round(),
        "report_rows": rollup_rows,
        "report_ms_from_rollups": rollup_ms,
        "report_by_day_last_7_days_ms": week_ms,
        "same_report_from_events_ms": events_ms,
        "rollups_speedup": round2(events_ms / rollup_ms.max(0.01)),
    }))
}

fn uuid_suffix() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().gen::<u32>())
}
