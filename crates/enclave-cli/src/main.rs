//! The `enclave` binary: serve the API, pull models, chat in the terminal, manage tenants, keys
//! and usage, run benchmarks.

mod accounts;
mod bench;
mod bench_constrained;
mod bench_guard;
mod bench_overhead;
mod bench_rag;
mod bench_stats;
mod bench_usage;
mod bench_workload;
mod chat;
mod collections;
mod guard;
mod guard_eval;
mod serve;

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use enclave_engine::catalog::{self, CATALOG};
use enclave_engine::encoder::convert::Precision;
use enclave_engine::encoder::{fastest_precision, EncoderConfig, EncoderEngine};
use enclave_engine::pull;
use enclave_engine::GeneratorConfig;

#[derive(Parser)]
#[command(
    name = "enclave",
    version,
    about = "Enclave: a private AI platform (Cohere- and OpenAI-compatible API)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (pulls missing models first).
    Serve(serve::ServeArgs),
    /// Fetch a catalog model into ENCLAVE_HOME and verify it.
    Pull {
        /// Catalog name (see `enclave models`).
        name: String,
    },
    /// List the catalog and which models are already pulled.
    Models,
    /// Chat with a model in the terminal (interactive when no prompt is given).
    Chat(chat::ChatArgs),
    /// Manage tenants (organizations).
    #[command(subcommand)]
    Tenants(accounts::TenantsCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(accounts::KeysCommand),
    /// Usage report (`enclave usage verify` checks the ledger's hash chains).
    Usage(accounts::UsageArgs),
    /// Manage document collections on a running server.
    #[command(subcommand)]
    Collections(collections::CollectionsCommand),
    /// Add files and folders to a collection on a running server.
    Ingest(collections::IngestArgs),
    /// Search a collection on a running server.
    Search(collections::SearchArgs),
    /// Benchmarks that print JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Guardrails: check text, train and evaluate the injection monitor, attach policies.
    #[command(subcommand)]
    Guard(guard::GuardCommand),
    /// The audit trail of guardrail interventions (never the values found).
    Audit(guard::AuditArgs),
}

/// Engine settings shared by every command that loads a model.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Sequences generated together per model (continuous-batching slots).
    #[arg(long, env = "ENCLAVE_PARALLEL", default_value_t = 8)]
    pub parallel: u32,
    /// Tokens per sequence (prompt + answer); 0 = the model's own, at most 4096.
    #[arg(long, env = "ENCLAVE_CTX_SIZE", default_value_t = 0)]
    pub ctx_size: u32,
    /// CPU threads for inference; 0 = all cores.
    #[arg(long, env = "ENCLAVE_THREADS", default_value_t = 0)]
    pub threads: u32,
    /// Most tokens per scheduler step (run by llama.cpp in passes of at most 512).
    #[arg(long, env = "ENCLAVE_BATCH_TOKENS", default_value_t = 2048)]
    pub batch_tokens: u32,
    /// Requests that may wait for a free slot before the server answers 429.
    #[arg(long, env = "ENCLAVE_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// KV cache layout: `per-sequence` (one buffer each: a token's attention reads only its own
    /// sequence's cells) or `unified` (one buffer for all sequences: prefixes are shared without
    /// copying, but every token's attention walks every sequence's cells).
    #[arg(long, env = "ENCLAVE_KV_LAYOUT", default_value = "per-sequence", value_parser = ["unified", "per-sequence"])]
    pub kv_layout: String,
    /// Most tokens a sequence guesses from its prompt per step and verifies in the same pass
    /// (speculative decoding from the prompt); 0 turns it off.
    #[arg(long, env = "ENCLAVE_DRAFT_MAX", default_value_t = enclave_engine::llama::DEFAULT_DRAFT_MAX)]
    pub draft_max: u32,
    /// Compute every prompt from scratch instead of starting from KV cells that hold its
    /// beginning (a finished request's, or a copy of a busy sequence's).
    #[arg(long, env = "ENCLAVE_NO_PREFIX_REUSE")]
    pub no_prefix_reuse: bool,
    /// Generative models: llama.cpp's flash attention (`on`) or attention as matrix products
    /// (`off`, faster decoding on CPUs: a sequence's cells are read once for all its rows).
    #[arg(long, env = "ENCLAVE_FLASH_ATTN", default_value = "off", value_parser = ["on", "off"])]
    pub flash_attn: String,
    /// Encoder models: tokens packed into one forward pass (0 = the engine's best: native 256
    /// per thread, llama.cpp 256).
    #[arg(long, env = "ENCLAVE_MAX_BATCH_TOKENS", default_value_t = 0)]
    pub max_batch_tokens: usize,
    /// Encoder models: weight precision (auto = bf16 where the CPU has AVX-512 BF16, else f32
    /// where it has AVX2, else q8; q8 = 8-bit blocks, llama.cpp only).
    #[arg(long, env = "ENCLAVE_ENCODER_PRECISION", default_value = "auto", value_parser = ["auto", "bf16", "q8", "f32"])]
    pub encoder_precision: String,
    /// Encoder models: what runs the forward pass (native = Enclave's own; llama = llama.cpp's
    /// BERT path; auto = the faster for the precision on this CPU).
    #[arg(long, env = "ENCLAVE_ENCODER_ENGINE", default_value = "auto", value_parser = ["auto", "native", "llama"])]
    pub encoder_engine: String,
    /// Embedding models: requests in flight before the server answers 429.
    #[arg(long, env = "ENCLAVE_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
}

impl EngineArgs {
    pub fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            parallel: self.parallel,
            context_per_sequence: self.ctx_size,
            threads: self.threads,
            batch_tokens: self.batch_tokens,
            queue_capacity: self.max_queue,
            unified_kv: self.kv_layout == "unified",
            draft_max: self.draft_max,
            prefix_reuse: !self.no_prefix_reuse,
            flash_attention: self.flash_attn == "on",
        }
    }

    pub fn encoder_config(&self) -> EncoderConfig {
        let precision = match self.encoder_precision.as_str() {
            "f32" => Precision::F32,
            "bf16" => Precision::Bf16,
            "q8" => Precision::Q8,
            _ => fastest_precision(),
        };
        EncoderConfig {
            max_batch_tokens: self.max_batch_tokens,
            max_concurrent_requests: self.max_concurrent_requests,
            threads: self.threads,
            precision,
            engine: match self.encoder_engine.as_str() {
                "native" => EncoderEngine::Native,
                "llama" => EncoderEngine::Llama,
                _ => EncoderEngine::fastest(precision),
            },
            ..EncoderConfig::default()
        }
    }
}

/// Progress bars only where a person is watching.
pub fn show_progress() -> bool {
    std::io::stderr().is_terminal()
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("ENCLAVE_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Pull { name } => {
            let home = pull::enclave_home();
            let model = pull::resolve(&home, &name, show_progress())?;
            println!("{} ready at {}", model.name, model.path.display());
            Ok(())
        }
        Command::Models => {
            let home = pull::enclave_home();
            for entry in CATALOG {
                let state = if pull::is_pulled(&home, entry) {
                    "pulled"
                } else {
                    "not pulled"
                };
                let default = if entry.name == catalog::DEFAULT_CHAT_MODEL {
                    " (default)"
                } else {
                    ""
                };
                println!(
                    "{:<30} {:>6} MB  {:<10} {:?}{}",
                    entry.name,
                    entry.size() / 1_000_000,
                    state,
                    entry.kind,
                    default
                );
            }
            Ok(())
        }
        Command::Chat(args) => chat::run(args),
        Command::Tenants(command) => accounts::tenants(command),
        Command::Keys(command) => accounts::keys(command),
        Command::Usage(args) => accounts::usage(args),
        Command::Collections(command) => collections::collections(command),
        Command::Ingest(args) => collections::ingest(args),
        Command::Guard(command) => guard::run(command),
        Command::Audit(args) => guard::audit(args),
        Command::Search(args) => collections::search(args),
        Command::Bench(command) => bench::run(command),
    }
}
