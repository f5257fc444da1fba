//! `enclave bench overhead`: the same model behind two in-process servers, one without accounts
//! and one with them (SQLite store, a key with rate limits and a budget), called alternately so
//! machine noise hits both alike. Tokenize shows what auth and admission cost; embed adds the
//! durable ledger write of a billable call.

use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Args;
use enclave_server::access::Access;
use enclave_server::{AppState, ServerConfig};
use enclave_store::{BudgetSpec, NewKey, Period};
use serde_json::{json, Value};

use crate::bench_stats::{bench_store, percentile, round2};
use crate::EngineArgs;

#[derive(Args, Debug)]
pub struct OverheadArgs {
    /// Chat model whose tokenizer serves /v1/tokenize.
    #[arg(long, default_value = enclave_engine::catalog::TEST_MODEL)]
    pub model: String,
    /// Embedding model for the billable route.
    #[arg(long, default_value = enclave_engine::catalog::DEFAULT_EMBED_MODEL)]
    pub embed_model: String,
    /// Requests per route and per server.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Measure with this database (e.g. postgres://...) instead of a scratch SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

async fn timed(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> Result<f64> {
    let started = Instant::now();
    let response = client.post(url).bearer_auth(key).json(body).send().await?;
    let status = response.status();
    let _ = response.bytes().await?;
    if !status.is_success() {
        return Err(anyhow!("{url} answered {status}"));
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Milliseconds to the microsecond.
fn ms3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn latency(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "p50_ms": ms3(percentile(&samples, 0.5)),
        "p99_ms": ms3(percentile(&samples, 0.99)),
    })
}

/// Calls `path` on both servers alternately, `requests` times each.
async fn compare(
    client: &reqwest::Client,
    (off, on): (&str, &str),
    key: &str,
    path: &str,
    body: &Value,
    requests: usize,
) -> Result<Value> {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for i in 0..requests + 20 {
        let a = timed(client, &format!("{off}{path}"), key, body).await?;
        let b = timed(client, &format!("{on}{path}"), key, body).await?;
        // The first calls warm connections and caches.
        if i >= 20 {
            without.push(a);
            with.push(b);
        }
    }
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 0.5)
    };
    let (off_p50, on_p50) = (p50(&mut without), p50(&mut with));
    Ok(json!({
        "metering_off": latency(without),
        "metering_on": latency(with),
        "added_p50_ms": ms3(on_p50 - off_p50),
        "ratio_p50": round2(on_p50 / off_p50),
    }))
}

pub async fn overhead(args: OverheadArgs) -> Result<Value> {
    let specs = vec![args.model.clone(), args.embed_model.clone()];
    let (config, encoder_config) = (args.engine.config(), args.engine.encoder_config());
    let loaded = tokio::task::spawn_blocking(move || {
        crate::serve::load_models(&specs, &config, &encoder_config)
    })
    .await??;
    let (store, _scratch) = bench_store(args.database_url.as_deref()).await?;
    let backend = store.backend().name();
    let tenant_name = format!("bench-overhead-{}", enclave_store::now_ms());
    let tenant = store.create_tenant(&tenant_name, None).await?;
    let mut key = NewKey::member(&tenant.id);
    // Limits that never trip but are checked on every call.
    key.rpm = Some(1_000_000_000);
    key.tpm = Some(1_000_000_000_000);
    key.budget = Some(BudgetSpec {
        limit_pico: i64::MAX / 4,
        period: Period::Monthly,
    });
    let (_, secret) = store.create_key(key).await?;
    let access = Access::start(store).await?;
    let (off, _off_server) = crate::bench_stats::serve(AppState::new(
        ServerConfig::default(),
        loaded.generators.clone(),
        loaded.encoders.clone(),
        None,
    ))
    .await?;
    let (on, _on_server) = crate::bench_stats::serve(AppState::new(
        ServerConfig::default(),
        loaded.generators,
        loaded.encoders,
        Some(access),
    ))
    .await?;
    let client = reqwest::Client::new();
    let tokenize = compare(
        &client,
        (&off, &on),
        &secret,
        "/v1/tokenize",
        &json!({ "text": "How much does a metered call cost?", "model": args.model }),
        args.requests,
    )
    .await?;
    let embed = compare(
        &client,
        (&off, &on),
        &secret,
        "/v2/embed",
        &json!({ "model": args.embed_model, "texts": ["How much does a metered call cost?"],
                 "input_type": "search_query", "embedding_types": ["float"] }),
        (args.requests / 4).max(50),
    )
    .await?;
    Ok(json!({
        "store": backend,
        "requests": args.requests,
        "tokenize (auth + admission)": tokenize,
        "embed (auth + admission + budget hold + durable ledger write)": embed,
    }))
}
