//! `enclave chat`: talk to a model in the terminal, streaming its answer as it is generated.

use std::io::{BufRead, Write};

use anyhow::{anyhow, Result};
use clap::Args;
use enclave_engine::catalog::DEFAULT_CHAT_MODEL;
use enclave_engine::{ChatMessage, GenEvent, SamplingParams, TextGenerator};

use crate::EngineArgs;

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Catalog name or GGUF path.
    #[arg(long, default_value = DEFAULT_CHAT_MODEL)]
    pub model: String,
    /// Answer this one prompt and exit; without it, chat interactively.
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 0.3)]
    pub temperature: f32,
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Streams one answer to stdout and returns its full text.
fn answer(model: &dyn TextGenerator, history: &[ChatMessage], args: &ChatArgs) -> Result<String> {
    let prompt = model.render_chat(history)?;
    let tokens = model.tokenize(&prompt, true);
    let room = model
        .info()
        .context_per_sequence
        .saturating_sub(tokens.len() as u32);
    if room == 0 {
        return Err(anyhow!(
            "the conversation no longer fits the model's context; start a new chat"
        ));
    }
    let params = SamplingParams {
        temperature: args.temperature,
        max_tokens: args.max_tokens.min(room),
        ..SamplingParams::default()
    };
    let mut stream = model.submit(tokens, params)?;
    let mut stdout = std::io::stdout();
    let mut text = String::new();
    while let Some(event) = stream.blocking_recv() {
        match event {
            GenEvent::Text { text: piece, .. } => {
                print!("{piece}");
                stdout.flush()?;
                text.push_str(&piece);
            }
            GenEvent::Done { .. } => break,
            GenEvent::Error(message) => return Err(anyhow!("generation failed: {message}")),
        }
    }
    println!();
    Ok(text)
}

pub fn run(args: ChatArgs) -> Result<()> {
    let mut config = args.engine.config();
    config.parallel = 1;
    let loaded = crate::serve::load_models(
        std::slice::from_ref(&args.model),
        &config,
        &args.engine.encoder_config(),
    )?;
    let model = loaded
        .generators
        .first()
        .ok_or_else(|| anyhow!("{} is not a chat model", args.model))?;
    if let Some(prompt) = &args.prompt {
        answer(
            model.as_ref(),
            &[ChatMessage::new("user", prompt.clone())],
            &args,
        )?;
        return Ok(());
    }
    eprintln!(
        "Chatting with {} (empty line or Ctrl-D to quit)",
        model.info().name
    );
    let mut history = Vec::new();
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        history.push(ChatMessage::new("user", line.trim().to_string()));
        let reply = answer(model.as_ref(), &history, &args)?;
        history.push(ChatMessage::new("assistant", reply));
    }
}
