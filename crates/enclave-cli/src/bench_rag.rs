//! `enclave bench rag`: a collection filled with generated documents through HTTP (ingest
//! chunks per second, against the embedder's own throughput on the same chunks in the same run),
//! search latency through HTTP at that size, and a grounded chat's time to first token.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use enclave_engine::encoder::{InputType, Truncate};
use enclave_rag::chunking::chunk;
use enclave_server::access::Access;
use enclave_server::collections::ingest::{chunk_limits, embedding_text};
use enclave_server::collections::Library;
use serde_json::{json, Value};

use crate::bench_stats::{bench_store, percentile, round2};
use crate::EngineArgs;

const KEY: &str = "bench-rag-key";

#[derive(Args, Debug)]
pub struct RagBenchArgs {
    /// Chunks to fill the collection with (six per document: one per section).
    #[arg(long, default_value_t = 100_000)]
    pub chunks: usize,
    /// Words in each section, so in each chunk. 30 made-up words are about 60 MiniLM tokens;
    /// short chunks keep filling 100,000 of them within minutes on two cores.
    #[arg(long, default_value_t = 30)]
    pub section_words: usize,
    #[arg(long, default_value = enclave_engine::catalog::DEFAULT_EMBED_MODEL)]
    pub embed_model: String,
    /// Chat model for the grounded chat's time to first token ("none" to skip).
    #[arg(long, default_value = enclave_engine::catalog::DEFAULT_CHAT_MODEL)]
    pub chat_model: String,
    /// Searches timed.
    #[arg(long, default_value_t = 200)]
    pub searches: usize,
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// A deterministic vocabulary of made-up words (so BM25 sees realistic, skewed postings).
fn vocabulary() -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fe", "gu", "hi", "ja",
        "be", "co", "di", "mo", "nu", "pe", "ri", "so", "tu",
    ];
    let mut words = Vec::new();
    for a in SYLLABLES {
        for b in SYLLABLES {
            for c in ["", "n", "r", "s", "l"] {
                words.push(format!("{a}{b}{c}"));
            }
        }
    }
    words
}

/// Document `n`: six headed sections of `section_words` words each.
fn document(n: usize, words: &[String], section_words: usize, state: &mut u64) -> String {
    let mut next = || {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Zipf-like: small indices far more often.
        let r = ((*state >> 33) as f64 / (1u64 << 31) as f64).powi(3);
        &words[(r * words.len() as f64) as usize % words.len()]
    };
    let mut text = format!("# Report {n}\n\n");
    for section in 0..6 {
        text.push_str(&format!("## Section {section}\n"));
        let sentence: Vec<&str> = (0..section_words).map(|_| next().as_str()).collect();
        text.push_str(&sentence.join(" "));
        text.push_str(".\n\n");
    }
    text
}

pub async fn rag(args: RagBenchArgs) -> Result<Value> {
    let mut specs = vec![args.embed_model.clone()];
    if args.chat_model != "none" {
        specs.push(args.chat_model.clone());
    }
    let (config, encoder_config) = (args.engine.config(), args.engine.encoder_config());
    let loaded = tokio::task::spawn_blocking(move || {
        crate::serve::load_models(&specs, &config, &encoder_config)
    })
    .await??;
    let encoder = loaded
        .encoders
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no embedding model loaded"))?;
    let (store, _scratch) = bench_store(None).await?;
    store.ensure_admin_key(Some(KEY)).await?;
    let library = Library::open(store.clone()).await?;
    let access = Access::start(store).await?;
    let state = enclave_server::AppState::new(
        enclave_server::ServerConfig::default(),
        loaded.generators,
        loaded.encoders,
        Some(access),
    )
    .with_library(Arc::clone(&library));
    let (base, _server) = crate::bench_stats::serve(state).await?;
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };

    let made: Value = post("/v1/collections".into(), json!({ "name": "bench" }))
        .await?
        .json()
        .await?;
    let cid = made["id"].as_str().context("no collection id")?.to_string();
    let words = vocabulary();
    let mut state = 42u64;
    let per_doc = 6;
    let documents: Vec<String> = (0..args.chunks.div_ceil(per_doc))
        .map(|n| document(n, &words, args.section_words, &mut state))
        .collect();

    // The embedder alone on the first documents' chunks (the same chunking ingest does).
    let sample: Vec<String> = documents.iter().take(200).cloned().collect();
    let counter = Arc::clone(&encoder);
    let limits = chunk_limits(encoder.info().max_tokens);
    let max = limits.max_tokens;
    let texts: Vec<String> = sample
        .iter()
        .enumerate()
        .flat_map(|(n, d)| {
            chunk(d, limits, &|t: &str| counter.text_tokens(t).len())
                .into_iter()
                .map(move |c| embedding_text(&format!("Report {n}"), &c.context, &c.text))
        })
        .collect();
    let started = Instant::now();
    let mut sample_tokens = 0usize;
    for batch in texts.chunks(32) {
        let inputs = batch
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let t = encoder
                    .info()
                    .input_text(Some(InputType::SearchDocument), t);
                encoder.tokenize(i, &t, Truncate::End)
            })
            .collect::<Result<Vec<_>, _>>()?;
        sample_tokens += inputs.iter().map(Vec::len).sum::<usize>();
        encoder.encode(inputs)?.await??;
    }
    let embedder_rate = texts.len() as f64 / started.elapsed().as_secs_f64();

    // Ingest through HTTP, 50 documents a call; the sample's rate is compared with the embedder's.
    let mut chunks = 0usize;
    let mut sample_rate = 0.0;
    let started = Instant::now();
    for (i, batch) in documents.chunks(50).enumerate() {
        let docs: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(j, text)| json!({ "id": format!("d{}", i * 50 + j), "title": format!("Report {}", i * 50 + j), "text": text }))
            .collect();
        let out: Value = post(
            format!("/v1/collections/{cid}/documents"),
            json!({ "documents": docs }),
        )
        .await?
        .json()
        .await?;
        let rows = out["documents"]
            .as_array()
            .with_context(|| format!("ingest failed: {out}"))?;
        chunks += rows
            .iter()
            .map(|r| r["chunks"].as_u64().unwrap_or(0) as usize)
            .sum::<usize>();
        if (i + 1) * 50 == 200 {
            sample_rate = chunks as f64 / started.elapsed().as_secs_f64();
        }
        if !args.json && i % 40 == 0 {
            eprintln!("ingested {chunks} chunks");
        }
    }
    let ingest_seconds = started.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(args.searches);
    for n in 0..args.searches {
        let query: Vec<&str> = (0..4)
            .map(|k| words[(n * 31 + k * 97) % 600].as_str())
            .collect();
        let t = Instant::now();
        let out: Value = post(
            format!("/v1/collections/{cid}/search"),
            json!({ "query": query.join(" "), "top_k": 10 }),
        )
        .await?
        .json()
        .await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        if out["results"].as_array().is_none() {
            return Err(anyhow!("search failed: {out}"));
        }
    }
    latencies.sort_by(f64::total_cmp);

    let ttft = if args.chat_model == "none" {
        Value::Null
    } else {
        let question = format!("What does section 2 of report 7 say about {}?", words[3]);
        let body = json!({ "model": args.chat_model, "stream": true, "max_tokens": 16, "collections": [cid],
                           "messages": [{ "role": "user", "content": question }] });
        let t = Instant::now();
        let mut response = post("/v2/chat".into(), body).await?;
        let mut first = None;
        while let Some(bytes) = response.chunk().await? {
            if first.is_none() && String::from_utf8_lossy(&bytes).contains("content-delta") {
                first = Some(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        json!(first.map(round2))
    };
    Ok(json!({
        "embed_model": args.embed_model,
        "chunks": chunks,
        "chunk_tokens_max": max,
        "chunk_tokens_mean": round2(sample_tokens as f64 / texts.len().max(1) as f64),
        "ingest_seconds": round2(ingest_seconds),
        "ingest_chunks_per_s": round2(chunks as f64 / ingest_seconds),
        "ingest_sample_chunks_per_s": round2(sample_rate),
        "embedder_alone_chunks_per_s": round2(embedder_rate),
        "ingest_vs_embedder": round2(sample_rate / embedder_rate),
        "search_p50_ms": round2(percentile(&latencies, 0.5)),
        "search_p99_ms": round2(percentile(&latencies, 0.99)),
        "searches": latencies.len(),
        "grounded_chat_ttft_ms": ttft,
        "chat_model": args.chat_model,
    }))
}
