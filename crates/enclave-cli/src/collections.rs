//! `enclave collections`, `enclave ingest` and `enclave search`: clients of a running server's
//! `/v1/collections` API (the server reads the files, so every format is read in one place).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use enclave_rag::extract::Format;
use serde_json::{json, Value};

/// Where the server is and which key to use.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "ENCLAVE_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API key.
    #[arg(long, env = "ENCLAVE_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

#[derive(Subcommand, Debug)]
pub enum CollectionsCommand {
    /// List the tenant's collections.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create a collection.
    Create {
        name: String,
        /// Embedding model (default: the server's default).
        #[arg(long)]
        embed_model: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a collection with all its documents.
    Delete {
        /// Collection name or id.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Files or folders (read recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Collection name or id (created if it does not exist).
    #[arg(long)]
    pub collection: String,
    /// Groups that may see the documents (comma-separated); none: everyone in the tenant.
    #[arg(long, default_value = "")]
    pub acl: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    pub query: String,
    #[arg(long)]
    pub collection: String,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(server: &ServerArgs) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            base: server.server.trim_end_matches('/').to_string(),
            key: server.api_key.clone(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .context("reaching the server")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no details");
            bail!("the server answered {status}: {message}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// The collection's id, creating the collection when `create` and it does not exist.
    async fn collection_id(&self, name: &str, create: bool) -> Result<String> {
        let list = self.get("/v1/collections").await?;
        let found = list["collections"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name || c["id"] == name);
        match found {
            Some(c) => Ok(c["id"].as_str().unwrap_or_default().to_string()),
            None if create => {
                let made = self
                    .post("/v1/collections", json!({ "name": name }))
                    .await?;
                Ok(made["id"].as_str().unwrap_or_default().to_string())
            }
            None => bail!("no collection named '{name}'"),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn collections(command: CollectionsCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            CollectionsCommand::List { server } => {
                let list = Client::new(&server)?.get("/v1/collections").await?;
                for c in list["collections"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  {}",
                        c["id"].as_str().unwrap_or(""),
                        c["name"].as_str().unwrap_or(""),
                        c["embed_model"].as_str().unwrap_or("")
                    );
                }
            }
            CollectionsCommand::Create {
                name,
                embed_model,
                server,
            } => {
                let mut body = json!({ "name": name });
                if let Some(model) = embed_model {
                    body["embed_model"] = json!(model);
                }
                let made = Client::new(&server)?.post("/v1/collections", body).await?;
                println!(
                    "created {} ({})",
                    made["name"].as_str().unwrap_or(""),
                    made["id"].as_str().unwrap_or("")
                );
            }
            CollectionsCommand::Delete { name, server } => {
                let client = Client::new(&server)?;
                let id = client.collection_id(&name, false).await?;
                let out = client
                    .send(
                        client
                            .http
                            .delete(format!("{}/v1/collections/{id}", client.base)),
                    )
                    .await?;
                println!(
                    "deleted {name}: {} documents removed",
                    out["documents_removed"]
                );
            }
        }
        Ok(())
    })
}

/// Every file under `paths` (folders recursively, hidden entries skipped), sorted.
fn walk(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let meta =
            std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?;
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    stack.push(entry.path());
                }
            }
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The name a file is sent under: its path below the folder given (so ids stay unique).
fn upload_name(path: &Path, roots: &[PathBuf]) -> String {
    roots
        .iter()
        .filter_map(|root| path.strip_prefix(root).ok())
        .find(|rel| !rel.as_os_str().is_empty())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

pub fn ingest(args: IngestArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let client = Client::new(&args.server)?;
        let id = client.collection_id(&args.collection, true).await?;
        let files = walk(&args.paths)?;
        let bar = crate::show_progress().then(|| {
            let bar = indicatif::ProgressBar::new(files.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let (mut stored, mut failed, mut chunks) = (0, 0, 0u64);
        for path in &files {
            let name = upload_name(path, &args.paths);
            let row = if Format::of_name(&name).is_none() {
                json!({ "id": name, "status": "skipped", "error": "unsupported file type" })
            } else {
                let bytes =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let form = reqwest::multipart::Form::new()
                    .text("acl", args.acl.clone())
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(bytes).file_name(name.clone()),
                    );
                let url = format!("{}/v1/collections/{id}/documents", client.base);
                let out = client.send(client.http.post(url).multipart(form)).await?;
                out["documents"][0].clone()
            };
            match row["status"].as_str() {
                Some("ok") => {
                    stored += 1;
                    chunks += row["chunks"].as_u64().unwrap_or(0);
                }
                _ => failed += 1,
            }
            let line = format!(
                "{name}: {} {}",
                row["status"].as_str().unwrap_or("?"),
                row["error"]
                    .as_str()
                    .map_or_else(|| format!("({} chunks)", row["chunks"]), str::to_string)
            );
            match &bar {
                Some(bar) => {
                    bar.println(line);
                    bar.inc(1);
                }
                None => println!("{line}"),
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        println!(
            "{stored} stored ({chunks} chunks), {failed} not stored, into {}",
            args.collection
        );
        Ok(())
    })
}

pub fn search(args: SearchArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let client = Client::new(&args.server)?;
        let id = client.collection_id(&args.collection, false).await?;
        let out = client
            .post(
                &format!("/v1/collections/{id}/search"),
                json!({ "query": args.query, "top_k": args.top_k }),
            )
            .await?;
        for r in out["results"].as_array().into_iter().flatten() {
            println!(
                "{:.4}  {} [{}..{}]\n    {}",
                r["score"].as_f64().unwrap_or(0.0),
                r["document_id"].as_str().unwrap_or(""),
                r["start"],
                r["end"],
                r["text"].as_str().unwrap_or("").replace('\n', " ")
            );
        }
        Ok(())
    })
}
