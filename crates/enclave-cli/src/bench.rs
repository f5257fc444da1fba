//! `enclave bench generate`: streaming chat load through the real HTTP path, reported as JSON.
//! It speaks the OpenAI protocol, so `--url` can point it at any compatible server (llama.cpp's
//! `llama-server` included) and both are measured by the same client.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::bench_stats::{percentile, round2};
use crate::bench_workload::{messages, Workload};
use crate::EngineArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Concurrent streaming chat completions at each concurrency level.
    Generate(GenerateArgs),
    /// Embeds 1,000 generated sentences of about 30 words through `/v2/embed`.
    Embed(EmbedArgs),
    /// Reranks generated documents through `/v2/rerank` and reports documents per second.
    Rerank(RerankArgs),
    /// What auth, admission and metering add per request, against the same routes without them.
    Overhead(crate::bench_overhead::OverheadArgs),
    /// Fills a ledger with a million events and times usage reports (roll-ups vs events).
    Usage(crate::bench_usage::UsageBenchArgs),
    /// Ingest, search at 100,000 chunks and grounded chat's first token, through HTTP.
    Rag(crate::bench_rag::RagBenchArgs),
    /// Constrained decoding: grammar build time and tokens/s under llguidance and GBNF.
    Constrained(crate::bench_constrained::ConstrainedArgs),
    /// Guardrails on vs off: deterministic checks per KB, the injection monitor per request,
    /// streaming throughput.
    Guard(crate::bench_guard::GuardBenchArgs),
}

#[derive(Args, Debug)]
pub struct RerankArgs {
    /// The rerank model: an embedding model (cosine) or a chat model (LLM judge).
    #[arg(long, default_value = enclave_engine::catalog::DEFAULT_EMBED_MODEL)]
    pub model: String,
    /// Benchmark a running server instead of starting one in-process.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, env = "ENCLAVE_API_KEY", default_value = "bench")]
    pub api_key: String,
    /// Documents per request.
    #[arg(long, default_value_t = 100)]
    pub documents: usize,
    #[arg(long, default_value_t = 5)]
    pub requests: usize,
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[arg(long, default_value = enclave_engine::catalog::DEFAULT_EMBED_MODEL)]
    pub model: String,
    /// Benchmark a running server instead of starting one in-process.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, env = "ENCLAVE_API_KEY", default_value = "bench")]
    pub api_key: String,
    #[arg(long, default_value_t = 1000)]
    pub sentences: usize,
    /// Texts per request.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Write the sentences (one JSON string per line) here, for reference engines.
    #[arg(long)]
    pub dump_sentences: Option<std::path::PathBuf>,
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model to load (or, with --url, the model name to send).
    #[arg(long, default_value = enclave_engine::catalog::TEST_MODEL)]
    pub model: String,
    /// Benchmark a running server instead of starting one in-process.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, env = "ENCLAVE_API_KEY", default_value = "bench")]
    pub api_key: String,
    /// What each request asks (chat: a filler prompt of `--prompt-tokens`).
    #[arg(long, value_enum, default_value = "chat")]
    pub workload: Workload,
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: u32,
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: u32,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,4,8", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Requests each concurrent stream sends per level.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Print JSON only (the default prints JSON too, with a one-line summary per level on stderr).
    #[arg(long)]
    pub json: bool,
    /// A label for the report (e.g. "enclave" or "llama-server").
    #[arg(long, default_value = "enclave")]
    pub label: String,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(command: BenchCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match command {
            BenchCommand::Generate(args) => generate(args).await,
            BenchCommand::Embed(args) => embed(args).await,
            BenchCommand::Rerank(args) => rerank(args).await,
            BenchCommand::Overhead(args) => crate::bench_overhead::overhead(args).await,
            BenchCommand::Usage(args) => crate::bench_usage::usage(args).await,
            BenchCommand::Rag(args) => crate::bench_rag::rag(args).await,
            BenchCommand::Constrained(args) => crate::bench_constrained::constrained(args).await,
            BenchCommand::Guard(args) => crate::bench_guard::guard(args).await,
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `count` sentences of about 30 words, the same on every run (a fixed linear congruential
/// generator over a fixed vocabulary).
pub fn bench_sentences(count: usize) -> Vec<String> {
    const WORDS: [&str; 48] = [
        "the",
        "a",
        "report",
        "customer",
        "invoice",
        "shipment",
        "delayed",
        "because",
        "warehouse",
        "in",
        "northern",
        "region",
        "was",
        "closed",
        "for",
        "maintenance",
        "and",
        "team",
        "expects",
        "delivery",
        "next",
        "week",
        "after",
        "review",
        "of",
        "contract",
        "terms",
        "with",
        "supplier",
        "quality",
        "issues",
        "were",
        "found",
        "during",
        "inspection",
        "new",
        "policy",
        "requires",
        "approval",
        "from",
        "finance",
        "before",
        "any",
        "payment",
        "is",
        "released",
        "to",
        "vendor",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..count)
        .map(|_| {
            let len = 26 + next() % 9;
            let mut words: Vec<&str> = (0..len).map(|_| WORDS[next() % WORDS.len()]).collect();
            if let Some(first) = words.first_mut() {
                *first = "The";
            }
            format!("{}.", words.join(" "))
        })
        .collect()
}

async fn embed(mut args: EmbedArgs) -> Result<Value> {
    let sentences = bench_sentences(args.sentences);
    if let Some(path) = &args.dump_sentences {
        let lines: Vec<String> = sentences.iter().map(|s| json!(s).to_string()).collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    let (base, served, _server) = server_for(
        args.url.as_deref(),
        args.model.clone(),
        args.engine.config(),
        args.engine.encoder_config(),
        args.api_key.clone(),
    )
    .await?;
    args.model = served;
    let client = bench_client()?;
    let batches: Vec<Vec<String>> = sentences
        .chunks(args.batch_size.max(1))
        .map(<[String]>::to_vec)
        .collect();
    // Warm up once so model loading and first-touch costs stay out of the figure.
    embed_request(&client, &base, &args, &batches[..1].concat()).await?;
    let started = Instant::now();
    let mut tokens = 0u64;
    let mut latencies = Vec::new();
    // Keep `concurrency` requests in flight at all times, as a busy client pool would.
    let mut results = futures::stream::iter(
        batches
            .iter()
            .map(|batch| embed_request(&client, &base, &args, batch)),
    )
    .buffer_unordered(args.concurrency.max(1));
    while let Some(result) = results.next().await {
        let (t, latency) = result?;
        tokens += t;
        latencies.push(latency.as_secs_f64() * 1000.0);
    }
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    // The engine and weights of an in-process server (a remote one does not say).
    let encoder = args.engine.encoder_config();
    let in_process = args.url.is_none();
    let precision = in_process.then(|| encoder.precision.name());
    let encoder_engine = in_process.then(|| encoder.engine.name());
    Ok(json!({
        "benchmark": "embed",
        "engine": "enclave",
        "model": args.model,
        "precision": precision,
        "encoder_engine": encoder_engine,
        "sentences": sentences.len(),
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "tokens": tokens,
        "wall_s": round2(wall),
        "sentences_per_s": round2(sentences.len() as f64 / wall),
        "tokens_per_s": round2(tokens as f64 / wall),
        "request_ms_p50": round2(percentile(&latencies, 0.5)),
        "request_ms_p99": round2(percentile(&latencies, 0.99)),
    }))
}

async fn rerank(mut args: RerankArgs) -> Result<Value> {
    let (base, served, _server) = server_for(
        args.url.as_deref(),
        args.model.clone(),
        args.engine.config(),
        args.engine.encoder_config(),
        args.api_key.clone(),
    )
    .await?;
    args.model = served;
    let client = bench_client()?;
    let documents = bench_sentences(args.documents * args.requests.max(1));
    let query = "Why was the supplier payment delayed by finance?";
    let started = Instant::now();
    for batch in documents.chunks(args.documents.max(1)) {
        let response = client
            .post(format!("{base}/v2/rerank"))
            .bearer_auth(&args.api_key)
            .json(&json!({ "model": args.model, "query": query, "documents": batch }))
            .send()
            .await?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(anyhow!(
                "server answered {status}: {}",
                response.text().await.unwrap_or_default()
            ));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(json!({
        "benchmark": "rerank",
        "model": args.model,
        "documents_per_request": args.documents,
        "requests": args.requests,
        "wall_s": round2(wall),
        "documents_per_s": round2(documents.len() as f64 / wall),
    }))
}

async fn embed_request(
    client: &reqwest::Client,
    base: &str,
    args: &EmbedArgs,
    texts: &[String],
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v2/embed"))
        .bearer_auth(&args.api_key)
        .json(&json!({ "model": args.model, "input_type": "search_document", "texts": texts }))
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(anyhow!(
            "server answered {status}: {}",
            response.text().await.unwrap_or_default()
        ));
    }
    let body: Value = response.json().await?;
    let tokens = body["meta"]["billed_units"]["input_tokens"]
        .as_u64()
        .unwrap_or(0);
    Ok((tokens, started.elapsed()))
}

/// A fresh connection per request: some servers (llama-server) close a kept-alive connection
/// after a streamed answer, and a reused one would then fail mid-run.
fn bench_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?)
}

/// One streamed request's timings.
struct Sample {
    ttft: Duration,
    total: Duration,
    prompt_tokens: u64,
    completion_tokens: u64,
}

async fn generate(mut args: GenerateArgs) -> Result<Value> {
    let mut config = args.engine.config();
    if config.context_per_sequence == 0 {
        let prompt = match args.workload {
            Workload::Chat => args.prompt_tokens,
            Workload::Grounded | Workload::SharedDocs => GROUNDED_PROMPT_ROOM,
        };
        config.context_per_sequence = (prompt + args.gen_tokens + 64).max(1024);
    }
    let (base, served, _server) = server_for(
        args.url.as_deref(),
        args.model.clone(),
        config,
        args.engine.encoder_config(),
        args.api_key.clone(),
    )
    .await?;
    args.model = served;
    let client = bench_client()?;
    wait_for_calibration(&client, &base, &args).await;
    let filler = match args.workload {
        Workload::Chat => calibrate_prompt(&client, &base, &args).await?,
        Workload::Grounded | Workload::SharedDocs => String::new(),
    };
    // Shared documents: the first request computes them; later ones should not.
    let cold = match args.workload {
        Workload::SharedDocs => {
            let body = messages(args.workload, "cold", 0, &filler);
            let sample = one_request(&client, &base, &args, body, args.gen_tokens).await?;
            Some(round2(sample.ttft.as_secs_f64() * 1000.0))
        }
        Workload::Chat | Workload::Grounded => None,
    };
    let mut levels = Vec::new();
    let mut sent = 0usize;
    for &concurrency in &args.concurrency {
        let before = engine_counters(&client, &base, &args).await;
        let started = Instant::now();
        let first_index = sent;
        sent += concurrency * args.rounds;
        let workers = (0..concurrency).map(|worker| {
            let client = client.clone();
            let base = base.clone();
            let (args, filler) = (&args, &filler);
            async move {
                let mut samples = Vec::new();
                for round in 0..args.rounds {
                    let tag = format!("c{concurrency}.w{worker}.r{round}");
                    let index = first_index + round * concurrency + worker;
                    let body = messages(args.workload, &tag, index, filler);
                    let sample = one_request(&client, &base, args, body, args.gen_tokens);
                    samples.push(sample.await?);
                }
                Ok::<_, anyhow::Error>(samples)
            }
        });
        let results = futures::future::join_all(workers).await;
        let wall = started.elapsed();
        let mut samples = Vec::new();
        for result in results {
            samples.extend(result?);
        }
        let mut level = summarize(concurrency, &samples, wall);
        let after = engine_counters(&client, &base, &args).await;
        level["engine"] = counter_delta(before.as_ref(), after.as_ref());
        if !args.json {
            eprintln!("{}", level);
        }
        levels.push(level);
    }
    // A repeated-document request's first token against the first request's (shared-docs).
    let repeat_ratio = cold.and_then(|cold| {
        let single = levels.iter().find(|l| l["concurrency"] == json!(1))?;
        Some(round2(single["ttft_ms_p50"].as_f64()? / cold.max(1e-9)))
    });
    Ok(json!({
        "benchmark": "generate",
        "repeat_ttft_ratio": repeat_ratio,
        "workload": args.workload.to_possible_value().map(|v| v.get_name().to_string()),
        "label": args.label,
        "model": args.model,
        "url": args.url,
        "prompt_tokens_target": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "rounds": args.rounds,
        "cold_ttft_ms": cold,
        "levels": levels,
    }))
}

/// Prompt tokens a grounded request may need (three documents, instructions and question).
const GROUNDED_PROMPT_ROOM: u32 = 2048;

/// Waits (up to two minutes) until the engine has timed its pass sizes, so that no measured
/// request interrupts the calibration; servers that report no such thing are measured at once.
async fn wait_for_calibration(client: &reqwest::Client, base: &str, args: &GenerateArgs) {
    for _ in 0..240 {
        let calibrated = engine_counters(client, base, args)
            .await
            .and_then(|engine| engine["calibrated"].as_bool());
        if calibrated != Some(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The served model's engine counters from `/ready` (None for servers without them).
async fn engine_counters(
    client: &reqwest::Client,
    base: &str,
    args: &GenerateArgs,
) -> Option<Value> {
    let ready: Value = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    ready["models"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == json!(args.model))
        .map(|m| m["engine"].clone())
        .filter(Value::is_object)
}

/// What the engine counted during one level: drafted and accepted guesses, reused prompt
/// tokens, with the rates (null when the server reports no counters).
fn counter_delta(before: Option<&Value>, after: Option<&Value>) -> Value {
    let (Some(before), Some(after)) = (before, after) else {
        return Value::Null;
    };
    let delta = |key: &str| {
        after[key]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before[key].as_u64().unwrap_or(0))
    };
    let rate = |part: u64, whole: u64| round2(part as f64 / whole.max(1) as f64);
    let (drafted, accepted) = (delta("drafted_tokens"), delta("accepted_tokens"));
    let (prompt, reused) = (delta("prompt_tokens"), delta("reused_prompt_tokens"));
    let (generated, steps) = (delta("generated_tokens"), delta("decode_steps"));
    json!({
        "drafted_tokens": drafted,
        "accepted_tokens": accepted,
        "acceptance_rate": rate(accepted, drafted),
        "tokens_per_decode_step": rate(generated, steps),
        "prompt_tokens": prompt,
        "reused_prompt_tokens": reused,
        "prefix_reuse_rate": rate(reused, prompt),
        "prefix_copies": delta("prefix_copies"),
        "pass_costs": after["pass_costs"],
    })
}

/// The server to measure: `url` when given, otherwise an in-process server with the one model
/// `spec` on an ephemeral port. Returns the base URL, the name the model is served under, and
/// the server task (kept by the caller so the server lives as long as it).
async fn server_for(
    url: Option<&str>,
    spec: String,
    config: enclave_engine::GeneratorConfig,
    encoder_config: enclave_engine::encoder::EncoderConfig,
    api_key: String,
) -> Result<(String, String, Option<tokio::task::JoinHandle<()>>)> {
    if let Some(url) = url {
        return Ok((url.trim_end_matches('/').to_string(), spec, None));
    }
    let loaded = tokio::task::spawn_blocking(move || {
        crate::serve::load_models(&[spec], &config, &encoder_config)
    })
    .await??;
    // A model given by path is served under its file or folder name.
    let served = loaded
        .generators
        .first()
        .map(|m| m.info().name.clone())
        .or_else(|| loaded.encoders.first().map(|m| m.info().name.clone()))
        .ok_or_else(|| anyhow!("no model was loaded"))?;
    // The bare engine path: no accounts, so no key check or metering in the measurement.
    let _ = api_key;
    let state = enclave_server::AppState::new(
        enclave_server::ServerConfig::default(),
        loaded.generators,
        loaded.encoders,
        None,
    );
    let (base, handle) = crate::bench_stats::serve(state).await?;
    Ok((base, served, Some(handle)))
}

/// Deterministic filler text whose token count is tuned to the target with the server's own
/// usage report (so the same prompt length holds for any server).
async fn calibrate_prompt(
    client: &reqwest::Client,
    base: &str,
    args: &GenerateArgs,
) -> Result<String> {
    const WORDS: [&str; 12] = [
        "river", "granite", "lantern", "orchard", "signal", "harbor", "meadow", "copper", "violet",
        "summit", "thunder", "willow",
    ];
    let text = |n: usize| -> String {
        (0..n)
            .map(|i| WORDS[(i * 7 + i / 12) % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut words = args.prompt_tokens as usize;
    for _ in 0..3 {
        let body = messages(Workload::Chat, "calibration", 0, &text(words));
        let sample = one_request(client, base, args, body, 1).await?;
        let got = sample.prompt_tokens.max(1) as f64;
        if (got - f64::from(args.prompt_tokens)).abs() <= 2.0 {
            break;
        }
        words = ((words as f64) * f64::from(args.prompt_tokens) / got)
            .round()
            .max(1.0) as usize;
    }
    Ok(text(words))
}

/// One streamed chat request of `messages`, greedy, through end-of-text to `max_tokens`.
async fn one_request(
    client: &reqwest::Client,
    base: &str,
    args: &GenerateArgs,
    messages: Value,
    max_tokens: u32,
) -> Result<Sample> {
    let body = json!({
        "model": args.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": true,
        "stream_options": { "include_usage": true },
        "ignore_eos": true,
    });
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&args.api_key)
        .json(&body)
        .send()
        .await
        .context("sending the request")?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(anyhow!("server answered {status}: {text}"));
    }
    let mut ttft = None;
    let mut chunks = 0u64;
    let mut usage = None;
    let mut buffer = String::new();
    let mut stream = response.bytes_stream();
    while let Some(bytes) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&bytes?));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                continue;
            }
            let Ok(value) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if value["usage"].is_object() {
                usage = Some(value["usage"].clone());
            }
            let content = value["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("");
            if !content.is_empty() {
                chunks += 1;
                ttft.get_or_insert_with(|| started.elapsed());
            }
        }
    }
    let total = started.elapsed();
    let usage = usage.unwrap_or(Value::Null);
    Ok(Sample {
        ttft: ttft.unwrap_or(total),
        total,
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: usage["completion_tokens"].as_u64().unwrap_or(chunks),
    })
}

fn summarize(concurrency: usize, samples: &[Sample], wall: Duration) -> Value {
    let mut ttfts: Vec<f64> = samples
        .iter()
        .map(|s| s.ttft.as_secs_f64() * 1000.0)
        .collect();
    ttfts.sort_by(f64::total_cmp);
    let n = samples.len().max(1) as f64;
    let generated: u64 = samples.iter().map(|s| s.completion_tokens).sum();
    let prompt_tokens = samples.iter().map(|s| s.prompt_tokens).sum::<u64>() as f64 / n;
    let prefill = samples
        .iter()
        .map(|s| s.prompt_tokens as f64 / s.ttft.as_secs_f64().max(1e-9))
        .sum::<f64>()
        / n;
    let decode_per_stream = samples
        .iter()
        .map(|s| {
            let decode_time = (s.total - s.ttft).as_secs_f64().max(1e-9);
            s.completion_tokens.saturating_sub(1) as f64 / decode_time
        })
        .sum::<f64>()
        / n;
    json!({
        "concurrency": concurrency,
        "requests": samples.len(),
        "prompt_tokens": round2(prompt_tokens),
        "generated_tokens": generated,
        "wall_s": round2(wall.as_secs_f64()),
        "ttft_ms_p50": round2(percentile(&ttfts, 0.5)),
        "ttft_ms_p99": round2(percentile(&ttfts, 0.99)),
        "prefill_tok_s": round2(prefill),
        "decode_tok_s_per_stream": round2(decode_per_stream),
        "aggregate_tok_s": round2(generated as f64 / wall.as_secs_f64().max(1e-9)),
    })
}
