//! `enclave serve`: pull and load the models, then serve the API until Ctrl-C / SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use enclave_engine::catalog::{ModelKind, DEFAULT_CHAT_MODEL, DEFAULT_EMBED_MODEL};
use enclave_engine::encoder::{BertEncoder, EncoderConfig, TextEncoder};
use enclave_engine::pull::{self, LocalModel};
use enclave_engine::{GeneratorConfig, LlamaGenerator, TextGenerator};
use enclave_server::access::Access;
use enclave_server::collections::Library;
use enclave_server::guard::Guardrails;
use enclave_server::{AppState, HttpLimits, ServerConfig};

use crate::EngineArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, env = "ENCLAVE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "ENCLAVE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Catalog name, path to a GGUF file, or a BERT / XLM-RoBERTa safetensors folder (a sentence
    /// encoder or a cross-encoder reranker); repeat to serve several. The first of each kind
    /// (chat, embedding, reranker) is that kind's default.
    #[arg(long = "model", env = "ENCLAVE_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,
    /// The bootstrap admin key (also a key for every API route). Without it, one is generated
    /// on first start and printed once; only its hash is stored.
    #[arg(long, env = "ENCLAVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub db: crate::accounts::DatabaseArgs,
    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "ENCLAVE_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest file upload into a collection (multipart), in bytes.
    #[arg(long, env = "ENCLAVE_MAX_UPLOAD_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Most inputs one embed call may carry (more: 413).
    #[arg(long, env = "ENCLAVE_MAX_CLIENT_BATCH_SIZE", default_value_t = 96)]
    pub max_client_batch_size: usize,
    /// Seconds a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle.
    #[arg(long, env = "ENCLAVE_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a whole request body (then 408).
    #[arg(long, env = "ENCLAVE_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "ENCLAVE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Longest a streamed answer may run, in seconds (at most 3000: a budget hold lasts an
    /// hour); it then ends as if it reached its token limit.
    #[arg(long, env = "ENCLAVE_LONGEST_STREAM_SECS", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(1..=3000))]
    pub longest_stream_secs: u64,
    /// A model name clients may use for a served model, as ALIAS=MODEL (repeatable), on top
    /// of the built-in Cohere names (command-r, embed-english-v3.0, rerank-v3.5, ...).
    #[arg(long = "alias", env = "ENCLAVE_ALIASES", value_delimiter = ',', value_parser = parse_alias)]
    pub aliases: Vec<(String, String)>,
    /// A TOML file of guardrail policies (`[[policy]]` tables) on top of the built-in ones
    /// (off, contextual, strict); see docs/guardrails.md.
    #[arg(long, env = "ENCLAVE_GUARD_POLICIES")]
    pub guard_policies: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Loaded models, by engine.
pub struct Loaded {
    pub generators: Vec<Arc<dyn TextGenerator>>,
    pub encoders: Vec<Arc<dyn TextEncoder>>,
}

/// Loads each model (pulling it first when needed) into the engine for its kind.
pub fn load_models(
    specs: &[String],
    config: &GeneratorConfig,
    encoder_config: &EncoderConfig,
) -> Result<Loaded> {
    let home = pull::enclave_home();
    let mut loaded = Loaded {
        generators: Vec::new(),
        encoders: Vec::new(),
    };
    for spec in specs {
        let LocalModel { name, path, kind } = pull::resolve(&home, spec, crate::show_progress())
            .with_context(|| format!("getting model {spec}"))?;
        tracing::info!(model = %name, path = %path.display(), "loading model");
        match kind {
            ModelKind::Embedding | ModelKind::Reranker => {
                let encoder = BertEncoder::load(&name, &path, encoder_config)
                    .with_context(|| format!("loading model {name}"))?;
                loaded.encoders.push(Arc::new(encoder));
            }
            ModelKind::Chat | ModelKind::Completion => {
                let generator = LlamaGenerator::load(&name, kind, &path, config)
                    .with_context(|| format!("loading model {name}"))?;
                loaded.generators.push(Arc::new(generator));
            }
        }
    }
    Ok(loaded)
}

pub fn run(args: ServeArgs) -> Result<()> {
    let specs = if args.models.is_empty() {
        vec![
            DEFAULT_CHAT_MODEL.to_string(),
            DEFAULT_EMBED_MODEL.to_string(),
        ]
    } else {
        args.models.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Policies and accounts first: a bad file or database URL should fail before minutes of
    // model loading.
    let policies = crate::guard::load_policies(args.guard_policies.as_ref())?;
    let access = runtime.block_on(open_accounts(&args))?;
    let library = runtime
        .block_on(Library::open(access.store().clone()))
        .context("loading the document collections")?;
    let loaded = load_models(&specs, &args.engine.config(), &args.engine.encoder_config())?;
    let state = AppState::new(
        ServerConfig {
            max_body_bytes: args.max_body_bytes,
            max_upload_bytes: args.max_upload_bytes,
            max_client_batch_size: args.max_client_batch_size,
            longest_stream: Duration::from_secs(args.longest_stream_secs),
            aliases: args.aliases.clone(),
            http: HttpLimits {
                header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
                body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
                max_connections: args.max_connections.max(1),
            },
        },
        loaded.generators,
        loaded.encoders,
        Some(access),
    )
    .with_library(Arc::clone(&library))
    .with_guardrails(Guardrails {
        policies,
        ..Guardrails::default()
    });
    let limits = state.config().http;
    runtime.block_on(async move {
        library.follow();
        let addr: SocketAddr = format!("{}:{}", args.host, args.port)
            .parse()
            .with_context(|| format!("invalid address {}:{}", args.host, args.port))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr()?;
        println!("Enclave listening on http://{bound}");
        std::io::stdout().flush()?;
        let router = enclave_server::router(state);
        enclave_server::serve(listener, router, limits, shutdown_signal()).await?;
        Ok(())
    })
}

/// `ALIAS=MODEL`.
fn parse_alias(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((alias, model)) if !alias.trim().is_empty() && !model.trim().is_empty() => {
            Ok((alias.trim().to_string(), model.trim().to_string()))
        }
        _ => Err(format!("expected ALIAS=MODEL, got '{value}'")),
    }
}

/// Opens the accounts database and makes sure an admin key exists (printing a new one once).
async fn open_accounts(args: &ServeArgs) -> Result<Arc<Access>> {
    let store = args.db.open().await?;
    let given = args.api_key.as_deref().filter(|k| !k.is_empty());
    if let Some(secret) = store.ensure_admin_key(given).await? {
        if given.is_none() {
            // stdout, not stderr or tracing: stderr carries the (JSON) logs, which are shipped
            // and kept, and a secret must not land there.
            println!("Generated the admin API key (shown only now; only its hash is stored):\n  {secret}");
        }
    }
    Access::start(store).await.context("loading the price book")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
