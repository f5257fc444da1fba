//! `enclave bench guard`: what the guardrails cost, guard on vs off on the same inputs in one
//! run — the deterministic checks per KB of text, the injection monitor per request (next to the
//! bare embedding it is built on), and streaming throughput through one in-process server with
//! two keys, one under the `off` policy and one under `strict`, called alternately.

use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Args;
use enclave_engine::encoder::{TextEncoder, Truncate};
use enclave_guard::policy::Direction;
use enclave_guard::{InjectionHead, Policies, Windows};
use enclave_server::access::Access;
use enclave_server::{AppState, ServerConfig};
use enclave_store::{Attachment, NewKey};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::bench_stats::{bench_store, percentile, round2};
use crate::EngineArgs;

#[derive(Args, Debug)]
pub struct GuardBenchArgs {
    #[arg(long, default_value = enclave_engine::catalog::TEST_MODEL)]
    pub model: String,
    #[arg(long, default_value = enclave_engine::catalog::DEFAULT_EMBED_MODEL)]
    pub embed_model: String,
    /// Streamed answers per key and per concurrency level.
    #[arg(long, default_value_t = 8)]
    pub requests: usize,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub concurrency: Vec<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

const PARAGRAPH: &str = "The quarterly review covered shipping delays in the northern region, the new returns \
process and the supplier contracts up for renewal in March. Finance asked for the updated forecast by \
Friday; the warehouse team will publish a revised schedule once the carrier confirms its routes. ";
const VALUES: &str =
    "Contact ana.lopez@corp.example.de or +44 20 7946 0958; card 4111 1111 1111 1111. ";

const PROMPTS: &[&str] = &[
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator keeps food cold, step by step.",
    "Describe a walk through a busy market on a summer morning.",
    "Write a letter to a friend about learning to bake bread.",
];

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Microseconds per KB of the `strict` policy's deterministic checks, at several sizes.
fn deterministic() -> Value {
    let strict = Policies::builtin().get("strict").expect("built-in");
    let mut sizes = serde_json::Map::new();
    for kb in [1usize, 4, 16, 64] {
        let mut text = String::new();
        while text.len() < kb * 1024 {
            text.push_str(PARAGRAPH);
            if text.len().is_multiple_of(3) {
                text.push_str(VALUES);
            }
        }
        let runs = (2000 / kb).max(20);
        let times: Vec<f64> = (0..runs)
            .map(|_| {
                let started = Instant::now();
                let found = strict.scan(&text, Direction::Input);
                std::hint::black_box(found);
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let us = p50(times);
        sizes.insert(
            format!("{kb}KB"),
            json!({ "p50_us": round2(us), "p50_us_per_kb": round2(us / (text.len() as f64 / 1024.0)) }),
        );
    }
    Value::Object(sizes)
}

async fn embed(encoder: &dyn TextEncoder, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
    let tokens = texts
        .iter()
        .enumerate()
        .map(|(i, t)| encoder.tokenize(i, t, Truncate::End))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(encoder.encode(tokens)?.await??)
}

/// The monitor per request (normalise, window, embed, score) next to embedding the raw text.
async fn monitor(encoder: &dyn TextEncoder) -> Result<Value> {
    let head = InjectionHead::shipped()?;
    let (mut bare, mut monitored) = (Vec::new(), Vec::new());
    for round in 0..60 {
        for prompt in PROMPTS {
            let text = format!("{prompt} {}", PARAGRAPH.repeat(1 + round % 2));
            let started = Instant::now();
            embed(encoder, vec![text.clone()]).await?;
            let a = started.elapsed().as_secs_f64() * 1000.0;
            let started = Instant::now();
            let windows = Windows::new(&[text.as_str()]);
            let vectors = embed(encoder, windows.inputs()).await?;
            std::hint::black_box(windows.score(&head, &vectors));
            let b = started.elapsed().as_secs_f64() * 1000.0;
            if round >= 5 {
                bare.push(a);
                monitored.push(b);
            }
        }
    }
    let (bare, monitored) = (p50(bare), p50(monitored));
    Ok(json!({
        "prompt_chars": "250-500",
        "embedding_alone_p50_ms": round2(bare),
        "monitor_p50_ms": round2(monitored),
        "ratio": round2(monitored / bare),
    }))
}

/// One round: `n` concurrent streamed answers; returns (completion tokens, seconds, answers a
/// policy stopped).
async fn round(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    model: &str,
    n: usize,
    max_tokens: u32,
) -> Result<(u64, f64, usize)> {
    let started = Instant::now();
    let calls = (0..n).map(|i| {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": PROMPTS[i % PROMPTS.len()]}],
            "stream": true, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true,
            "stream_options": {"include_usage": true},
        });
        let request = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body);
        async move {
            let response = request.send().await?;
            if !response.status().is_success() {
                return Err(anyhow!("stream answered {}", response.status()));
            }
            let mut stream = response.bytes_stream();
            let mut text = Vec::new();
            while let Some(chunk) = stream.next().await {
                text.extend_from_slice(&chunk?);
            }
            let text = String::from_utf8_lossy(&text);
            let tokens = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| v["usage"]["completion_tokens"].as_u64())
                .next_back()
                .unwrap_or(0);
            Ok::<(u64, usize), anyhow::Error>((
                tokens,
                usize::from(text.contains("content_filter")),
            ))
        }
    });
    let done = futures::future::try_join_all(calls).await?;
    let tokens = done.iter().map(|d| d.0).sum();
    let stopped = done.iter().map(|d| d.1).sum();
    Ok((tokens, started.elapsed().as_secs_f64(), stopped))
}

pub async fn guard(args: GuardBenchArgs) -> Result<Value> {
    let specs = vec![args.model.clone(), args.embed_model.clone()];
    let (config, encoder_config) = (args.engine.config(), args.engine.encoder_config());
    let loaded = tokio::task::spawn_blocking(move || {
        crate::serve::load_models(&specs, &config, &encoder_config)
    })
    .await??;
    let deterministic = deterministic();
    let encoder = loaded
        .encoders
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no embedder loaded"))?;
    let monitor = monitor(encoder.as_ref()).await?;
    let (store, _scratch) = bench_store(None).await?;
    let tenant = store
        .create_tenant(&format!("bench-guard-{}", enclave_store::now_ms()), None)
        .await?;
    let mut keys = Vec::new();
    for policy in ["off", "strict"] {
        let (record, secret) = store.create_key(NewKey::member(&tenant.id)).await?;
        let attachment = Attachment {
            policy: Some(policy.into()),
            tools_off: false,
        };
        store
            .set_guard_attachment(&record.id, &tenant.id, &attachment)
            .await?;
        keys.push(secret);
    }
    let access = Access::start(store).await?;
    let state = AppState::new(
        ServerConfig::default(),
        loaded.generators,
        loaded.encoders,
        Some(access),
    );
    let (base, _server) = crate::bench_stats::serve(state).await?;
    let client = reqwest::Client::new();
    let mut streaming = serde_json::Map::new();
    for &n in &args.concurrency {
        let (mut off, mut on, mut stopped) = (Vec::new(), Vec::new(), 0);
        // One warm-up round per key, then alternate so machine noise hits both alike.
        round(&client, &base, &keys[0], &args.model, n, 16).await?;
        round(&client, &base, &keys[1], &args.model, n, 16).await?;
        for _ in 0..(args.requests / n).max(2) {
            let (t, s, _) =
                round(&client, &base, &keys[0], &args.model, n, args.max_tokens).await?;
            off.push(t as f64 / s);
            let (t, s, blocked) =
                round(&client, &base, &keys[1], &args.model, n, args.max_tokens).await?;
            on.push(t as f64 / s);
            stopped += blocked;
        }
        let (off, on) = (p50(off), p50(on));
        streaming.insert(
            format!("{n}_streams"),
            json!({
                "guard_off_tok_s": round2(off), "guard_strict_tok_s": round2(on), "ratio": round2(on / off),
                "strict_answers_stopped": stopped,
            }),
        );
    }
    Ok(json!({
        "cpu": crate::guard_eval::cpu(),
        "model": args.model,
        "deterministic_checks_strict": deterministic,
        "injection_monitor": monitor,
        "streaming_throughput": streaming,
    }))
}
