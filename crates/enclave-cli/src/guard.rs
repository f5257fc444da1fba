//! `enclave guard …` and `enclave audit`: check text from stdin with the same detectors and
//! monitor the server runs, train the injection monitor's head, print the guardrail
//! evaluation's figures, attach policies and kill switches, and read the audit trail.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use enclave_engine::catalog::DEFAULT_EMBED_MODEL;
use enclave_engine::encoder::{TextEncoder, Truncate};
use enclave_guard::policy::{strictest, Direction};
use enclave_guard::{InjectionHead, Policies, Windows};
use enclave_store::{Attachment, AuditQuery};
use serde_json::{json, Value};

use crate::accounts::DatabaseArgs;
use crate::EngineArgs;

#[derive(Subcommand, Debug)]
pub enum GuardCommand {
    /// Check text read from stdin; prints the findings as JSON (offsets in code points).
    Check(CheckArgs),
    /// Train the injection monitor's head on a labelled JSONL set and write it as JSON.
    Train(TrainArgs),
    /// Print the guardrail evaluation's figures (PII detectors, injection monitor) as JSON.
    Eval(EvalArgs),
    /// Attach a policy (and the tool kill switch) to a tenant or a key.
    Attach(AttachArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Policy to check with (built-in: off, contextual, strict; or one from --policies).
    #[arg(long, default_value = "strict")]
    pub policy: String,
    #[arg(long, default_value = "input", value_parser = ["input", "output"])]
    pub direction: String,
    /// A TOML file of more policies.
    #[arg(long, env = "ENCLAVE_GUARD_POLICIES")]
    pub policies: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Labelled JSONL files (`text`, `label`: injection or benign); repeat or comma-separate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eval/guard/injection_train.jsonl,eval/guard/injection_train_more_a.jsonl,eval/guard/injection_train_more_b.jsonl,eval/guard/injection_train_more_c.jsonl"
    )]
    pub data: Vec<PathBuf>,
    #[arg(long, default_value = "crates/enclave-guard/data/injection_head.json")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub l2: f32,
    /// Highest cross-validated false-positive rate on benign look-alikes the threshold allows.
    #[arg(long, default_value_t = 0.04)]
    pub max_lookalike_fp: f32,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long, default_value = "eval/guard")]
    pub dir: PathBuf,
    /// Also list every miss and false positive.
    #[arg(long)]
    pub verbose: bool,
    /// A head to evaluate instead of the shipped one.
    #[arg(long)]
    pub head: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Tenant id or name.
    #[arg(long, conflicts_with = "key", required_unless_present = "key")]
    pub tenant: Option<String>,
    /// Key id.
    #[arg(long)]
    pub key: Option<String>,
    /// Policy name; omit to detach.
    #[arg(long)]
    pub policy: Option<String>,
    /// Stop every tool call of the tenant or key.
    #[arg(long)]
    pub tools_off: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub request_id: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// The serve-time policies: the built-ins plus a TOML file's.
pub fn load_policies(file: Option<&PathBuf>) -> Result<Policies> {
    let Some(path) = file else {
        return Ok(Policies::builtin());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Policies::builtin().with_toml(&text)?)
}

pub(crate) fn load_embedder(engine: &EngineArgs) -> Result<Arc<dyn TextEncoder>> {
    let loaded = crate::serve::load_models(
        &[DEFAULT_EMBED_MODEL.to_string()],
        &engine.config(),
        &engine.encoder_config(),
    )?;
    loaded
        .encoders
        .into_iter()
        .next()
        .context("the embedding model did not load")
}

/// Embeddings of `texts` (truncated to the model's length), in order.
pub(crate) fn embed(encoder: &dyn TextEncoder, texts: &[String]) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(64) {
        let tokens = batch
            .iter()
            .enumerate()
            .map(|(i, t)| encoder.tokenize(i, t, Truncate::End))
            .collect::<Result<Vec<_>, _>>()?;
        let vectors = encoder
            .encode(tokens)?
            .blocking_recv()
            .context("the encoder stopped")??;
        out.extend(vectors);
    }
    Ok(out)
}

/// The monitor's best window score of each text.
pub(crate) fn injection_scores(
    encoder: &dyn TextEncoder,
    head: &InjectionHead,
    texts: &[&str],
) -> Result<Vec<f32>> {
    let windows = Windows::new(texts);
    let vectors = embed(encoder, &windows.inputs())?;
    Ok(windows
        .score(head, &vectors)
        .into_iter()
        .map(|s| s.score)
        .collect())
}

pub fn run(command: GuardCommand) -> Result<()> {
    match command {
        GuardCommand::Check(args) => check(args),
        GuardCommand::Train(args) => train(args),
        GuardCommand::Eval(args) => {
            let report = crate::guard_eval::evaluate(&args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        GuardCommand::Attach(args) => attach(args),
    }
}

fn check(args: CheckArgs) -> Result<()> {
    let policies = load_policies(args.policies.as_ref())?;
    let Some(policy) = policies.get(&args.policy) else {
        bail!("unknown policy '{}'", args.policy);
    };
    let direction = Direction::parse(&args.direction).context("direction")?;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let mut decided = policy.scan(&text, direction);
    if policy.wants_monitor(direction) {
        let head = InjectionHead::shipped()?;
        let encoder = load_embedder(&args.engine)?;
        let windows = Windows::new(&[text.as_str()]);
        let vectors = embed(encoder.as_ref(), &windows.inputs())?;
        if let Some(best) = windows.score(&head, &vectors).first() {
            decided.extend(policy.judge_injection(best.score, best.start, best.end));
        }
    }
    let findings = enclave_guard::policy::findings_json(&text, &decided);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "policy": policy.name, "direction": args.direction,
            "action": strictest(&decided).as_str(), "findings": findings,
        }))?
    );
    Ok(())
}

/// A JSONL file's records.
pub fn read_jsonl(path: &std::path::Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

fn train(args: TrainArgs) -> Result<()> {
    let mut records = Vec::new();
    for path in &args.data {
        records.extend(read_jsonl(path)?);
    }
    let encoder = load_embedder(&args.engine)?;
    let texts: Vec<&str> = records.iter().filter_map(|r| r["text"].as_str()).collect();
    let labels: Vec<bool> = records.iter().map(|r| r["label"] == "injection").collect();
    let windows = Windows::new(&texts);
    let vectors = embed(encoder.as_ref(), &windows.inputs())?;
    let (xs, ys) = windows.training_rows(&vectors, &labels);
    // Five-fold cross-validation on the training split picks the settings; the held-out test
    // split is read only by `enclave guard eval`.
    let mut cv_scores = vec![0f32; xs.len()];
    for fold in 0..5 {
        let (train_rows, train_labels): (Vec<Vec<f32>>, Vec<bool>) = xs
            .iter()
            .zip(&ys)
            .enumerate()
            .filter(|(i, _)| i % 5 != fold)
            .map(|(_, (x, y))| (x.clone(), *y))
            .unzip();
        let head = InjectionHead::train("cv", &train_rows, &train_labels, args.epochs, args.l2);
        for (i, x) in xs.iter().enumerate().filter(|(i, _)| i % 5 == fold) {
            cv_scores[i] = head.score(x);
        }
    }
    // The operating threshold: the lowest whose cross-validated false-positive rate on benign
    // look-alikes stays within the target, so the monitor is precise on the texts that matter.
    let lookalike: Vec<bool> = records
        .iter()
        .map(|r| r["kind"] == "benign_lookalike")
        .collect();
    let fp_rate = |t: f32| {
        let flagged = cv_scores
            .iter()
            .zip(&lookalike)
            .filter(|(s, l)| **l && **s >= t)
            .count();
        flagged as f32 / lookalike.iter().filter(|l| **l).count().max(1) as f32
    };
    let threshold = (30..=95)
        .map(|step| step as f32 / 100.0)
        .find(|t| fp_rate(*t) <= args.max_lookalike_fp)
        .unwrap_or(0.95);
    let cv_f1 = enclave_guard::injection::f1_at(&cv_scores, &ys, threshold);
    let mut head = InjectionHead::train(&encoder.info().name, &xs, &ys, args.epochs, args.l2);
    head.threshold = threshold;
    std::fs::write(&args.out, serde_json::to_string(&head)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    let train_scores = injection_scores(encoder.as_ref(), &head, &texts)?;
    let f1 = enclave_guard::injection::f1_at(&train_scores, &labels, head.threshold);
    println!(
        "{}",
        json!({
            "examples": texts.len(), "windows": xs.len(), "threshold": head.threshold, "train_f1": f1,
            "cv_f1": cv_f1, "cv_lookalike_fp_rate": fp_rate(threshold), "out": args.out,
        })
    );
    Ok(())
}

fn attach(args: AttachArgs) -> Result<()> {
    crate::accounts::runtime()?.block_on(async move {
        let store = args.db.open().await?;
        let (owner, tenant) = match (&args.tenant, &args.key) {
            (Some(t), _) => {
                let tenant = store.find_tenant(t).await?;
                (tenant.id.clone(), tenant.id)
            }
            (None, Some(k)) => (k.clone(), store.key_tenant(k).await?),
            (None, None) => bail!("name --tenant or --key"),
        };
        if let Some(p) = &args.policy {
            // Policies from a file are only known to the server that loads it: say so, do not refuse.
            if Policies::builtin().get(p).is_none() {
                eprintln!(
                    "note: '{p}' is not built in; the server must load it with --guard-policies"
                );
            }
        }
        let attachment = Attachment {
            policy: args.policy.clone(),
            tools_off: args.tools_off,
        };
        store
            .set_guard_attachment(&owner, &tenant, &attachment)
            .await?;
        println!(
            "{}",
            json!({ "owner": owner, "policy": args.policy, "tools_off": args.tools_off })
        );
        Ok(())
    })
}

pub fn audit(args: AuditArgs) -> Result<()> {
    crate::accounts::runtime()?.block_on(async move {
        let store = args.db.open().await?;
        let tenant_id = match &args.tenant {
            Some(t) => Some(store.find_tenant(t).await?.id),
            None => None,
        };
        let events = store
            .audit_events(&AuditQuery {
                tenant_id,
                key_id: args.key,
                request_id: args.request_id,
                since_ms: None,
                limit: args.limit,
            })
            .await?;
        for e in events {
            println!(
                "{}",
                json!({
                    "created": enclave_store::reports::rfc3339(e.created_ms), "tenant_id": e.tenant_id,
                    "key_id": e.key_id, "request_id": e.request_id, "route": e.route, "policy": e.policy,
                    "direction": e.direction, "source": e.source, "detector": e.detector, "type": e.kind,
                    "action": e.action, "start": e.start, "end": e.end,
                })
            );
        }
        Ok(())
    })
}
