//! `harness tokenize`: prints the prompt's token ids as a JSON array.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use antigravity_core::chat::ChatTemplate;
use antigravity_core::gguf::GgufFile;
use antigravity_core::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// A `.gguf` file or an HF directory with tokenizer.json (default: the default model).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    #[arg(long)]
    pub prompt: String,
    /// Apply the model's chat template (one user message + generation prompt).
    #[arg(long)]
    pub chat: bool,
}

pub fn run(a: &TokenizeArgs, _t0: Instant) -> Result<()> {
    let path = crate::fetch::resolve(a.model.as_deref())?;
    let (tok, chat) = if path.is_dir() {
        let tok = Tokenizer::from_file(&path.join("tokenizer.json"))?;
        let chat = ChatTemplate::for_tokenizer(tok.chat_template(), &tok)?;
        (tok, chat)
    } else {
        let f = GgufFile::open(&path)?;
        let tok = Tokenizer::from_gguf(&f)?.with_context(|| format!("{} has no tokenizer", path.display()))?;
        let chat = ChatTemplate::for_tokenizer(f.get_str("tokenizer.chat_template")?, &tok)?;
        (tok, chat)
    };
    let ids = if a.chat {
        let t = chat.with_context(|| format!("{} has no chat template", path.display()))?;
        tok.encode_with(&t.render_user(&a.prompt)?, !t.bos_in_text())?
    } else {
        tok.encode(&a.prompt)?
    };
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
