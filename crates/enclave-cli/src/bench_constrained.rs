//! `enclave bench constrained`: what constrained decoding costs, on the engine directly. One run
//! reports, side by side: the time to build the grammar of a 20-field schema (llguidance and
//! llama.cpp's GBNF), and generated tokens per second at 1 and 8 streams unconstrained, under
//! each grammar engine, and for unconstrained streams sharing their batch with one constrained
//! stream (a slot with a grammar must not slow the others).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Args;
use enclave_engine::tools::grammar::json_grammar;
use enclave_engine::{
    gbnf_for_schema, ChatMessage, Constraint, GenEvent, SamplingParams, TextGenerator,
};
use serde_json::{json, Value};

use crate::bench_stats::round2;
use crate::EngineArgs;

#[derive(Args, Debug)]
pub struct ConstrainedArgs {
    #[arg(long, default_value = enclave_engine::catalog::TEST_MODEL)]
    pub model: String,
    /// Tokens each unconstrained stream generates (constrained ones stop when their JSON closes,
    /// about 250 tokens for the 20-field schema).
    #[arg(long, default_value_t = 320)]
    pub gen_tokens: u32,
    /// Comma-separated stream counts.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// A schema of 20 fields of mixed kinds (strings, numbers, enums, booleans, arrays).
pub fn twenty_field_schema() -> Value {
    let mut properties = serde_json::Map::new();
    for i in 0..20 {
        let field = match i % 5 {
            0 => json!({ "type": "string", "maxLength": 12 }),
            1 => json!({ "type": "integer", "minimum": 0, "maximum": 10000 }),
            2 => json!({ "enum": ["low", "medium", "high"] }),
            3 => json!({ "type": "boolean" }),
            _ => json!({ "type": "array", "items": { "type": "number" }, "maxItems": 3 }),
        };
        properties.insert(format!("field_{i:02}"), field);
    }
    let required: Vec<String> = properties.keys().cloned().collect();
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

pub async fn constrained(args: ConstrainedArgs) -> Result<Value> {
    let config = args.engine.config();
    let encoder_config = args.engine.encoder_config();
    let spec = args.model.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        crate::serve::load_models(&[spec], &config, &encoder_config)
    })
    .await??;
    let generator = loaded
        .generators
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{} is not a chat model", args.model))?;
    let schema = twenty_field_schema();

    // Grammar builds. The first llguidance build also walks the vocabulary once per model.
    let g = Arc::clone(&generator);
    let builds = tokio::task::spawn_blocking(move || -> Result<Value> {
        let started = Instant::now();
        g.prepare(&Constraint::Lark(json_grammar(None, false).into()))?;
        let tokenizer_ms = started.elapsed().as_secs_f64() * 1000.0;
        let lark = Constraint::Lark(json_grammar(Some(&twenty_field_schema()), true).into());
        let started = Instant::now();
        g.prepare(&lark)?;
        let llguidance_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        g.prepare(&lark)?;
        let cached_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let gbnf = gbnf_for_schema(&twenty_field_schema()).map_err(|e| anyhow!(e))?;
        g.prepare(&gbnf)?;
        let gbnf_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(json!({
            "llguidance_first_use_ms": round2(tokenizer_ms),
            "llguidance_20_field_ms": round2(llguidance_ms),
            "llguidance_20_field_cached_ms": round2(cached_ms),
            "gbnf_20_field_ms": round2(gbnf_ms),
        }))
    })
    .await??;

    let lark = Constraint::Lark(json_grammar(Some(&schema), true).into());
    let gbnf = gbnf_for_schema(&schema).map_err(|e| anyhow!(e))?;
    let mut levels = Vec::new();
    for &streams in &args.concurrency {
        let free = run(&generator, streams, 0, None, args.gen_tokens).await?;
        let llg = run(&generator, streams, streams, Some(&lark), args.gen_tokens).await?;
        let gb = run(&generator, streams, streams, Some(&gbnf), args.gen_tokens).await?;
        let mut level = json!({
            "streams": streams,
            "unconstrained_tok_s": free.aggregate,
            "llguidance_tok_s": llg.aggregate,
            "gbnf_tok_s": gb.aggregate,
            "llguidance_vs_unconstrained": round2(llg.aggregate / free.aggregate.max(1e-9)),
            "gbnf_vs_unconstrained": round2(gb.aggregate / free.aggregate.max(1e-9)),
            "llguidance_valid": llg.valid,
            "gbnf_valid": gb.valid,
        });
        if streams > 1 {
            // One constrained stream among free ones: the free ones' own rate, against all-free.
            let mixed = run(&generator, streams, 1, Some(&lark), args.gen_tokens).await?;
            level["free_streams_beside_one_constrained_tok_s"] = json!(mixed.free_per_stream);
            level["free_streams_all_free_tok_s"] = json!(free.free_per_stream);
        }
        if !args.json {
            eprintln!("{level}");
        }
        levels.push(level);
    }
    Ok(json!({
        "benchmark": "constrained",
        "model": args.model,
        "schema_fields": 20,
        "grammar_build": builds,
        "levels": levels,
    }))
}

struct Run {
    aggregate: f64,
    /// Mean tokens per second of the unconstrained streams.
    free_per_stream: f64,
    /// Constrained answers that parsed as JSON, of those that finished.
    valid: String,
}

async fn run(
    generator: &Arc<dyn TextGenerator>,
    streams: usize,
    constrained: usize,
    constraint: Option<&Constraint>,
    gen_tokens: u32,
) -> Result<Run> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..streams {
        let limited = i < constrained;
        let messages = [ChatMessage::new(
            "user",
            format!("Stream {i}. Describe a fictional product as JSON with twenty fields."),
        )];
        let prompt = generator.chat_tokens(&messages, &[])?.tokens;
        let params = SamplingParams {
            temperature: 0.0,
            max_tokens: gen_tokens,
            ignore_eos: !limited,
            constraint: if limited { constraint.cloned() } else { None },
            ..SamplingParams::default()
        };
        let mut stream = generator.submit(prompt, params)?;
        tasks.push(tokio::spawn(async move {
            let task_start = Instant::now();
            let mut text = String::new();
            let mut tokens = 0;
            while let Some(event) = stream.recv().await {
                match event {
                    GenEvent::Text { text: t, .. } => text.push_str(&t),
                    GenEvent::Done {
                        completion_tokens, ..
                    } => tokens = completion_tokens,
                    GenEvent::Error(e) => return Err(anyhow!(e)),
                }
            }
            let rate = f64::from(tokens) / task_start.elapsed().as_secs_f64().max(1e-9);
            let valid = serde_json::from_str::<Value>(&text).is_ok();
            Ok::<_, anyhow::Error>((limited, tokens, rate, valid))
        }));
    }
    let mut total = 0u64;
    let mut free_rates = Vec::new();
    let (mut valid, mut finished) = (0, 0);
    for task in tasks {
        let (limited, tokens, rate, ok) = task.await??;
        total += u64::from(tokens);
        if limited {
            finished += 1;
            valid += usize::from(ok);
        } else {
            free_rates.push(rate);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(Run {
        aggregate: round2(total as f64 / wall.max(1e-9)),
        free_per_stream: round2(free_rates.iter().sum::<f64>() / free_rates.len().max(1) as f64),
        valid: format!("{valid}/{finished}"),
    })
}
