//! Chat prompt templates: turn a conversation into the exact text the model was tuned on.
//!
//! A model file's own template (`tokenizer.chat_template` in a GGUF, `chat_template` in
//! `tokenizer_config.json`) is rendered with `minijinja` in Hugging Face's dialect
//! ([`JinjaTemplate`], module `jinja`), so `--chat` gives what `transformers`'
//! `apply_chat_template` gives ([`ChatTemplate::for_model`]). Only a file without a
//! template falls back on the two families written out by hand below, picked from the
//! special tokens the vocabulary has ([`ChatTemplate::detect_with_tokens`]):
//!
//! * **ChatML** (SmolLM2, Qwen): `<|im_start|>{role}\n{content}<|im_end|>\n` per message,
//!   generation prompt `<|im_start|>assistant\n`. When the conversation has no system
//!   message, the template's own default system prompt (if it has one) is inserted first.
//!   SmolLM2's, checked against `transformers`' `apply_chat_template(...,
//!   add_generation_prompt=True)` on the GGUF's template:
//!
//!   ```text
//!   <|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{msg}<|im_end|>\n<|im_start|>assistant\n
//!   ```
//!   Contents are not trimmed (the template does not trim).
//!
//! * **Llama 3** in two forms. Llama 3.1 / 3.2 (`date: Some(..)`; their template mentions
//!   "Cutting Knowledge Date") always open with a system block (Meta's
//!   `Llama-3.2-*-Instruct` template, no tools):
//!
//!   ```text
//!   <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: {date}\n\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{msg}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
//!   ```
//!   `{date}` is the template's fallback `26 Jul 2024` unless set (the file's template,
//!   rendered by [`JinjaTemplate`], fills in today's date through `strftime_now` as HF
//!   does). Llama 3.0 (`date: None`) has no system block unless a system message is given:
//!   `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{msg}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`.
//!   Contents are trimmed, as the template's `| trim` does.
//!
//! The rendered Llama 3 text already starts with `<|begin_of_text|>`; a file's template
//! writes BOS itself where the model wants it (`{{ bos_token }}`), so its text is encoded
//! without adding special tokens, as `apply_chat_template(tokenize=True)` does
//! ([`ChatTemplate::bos_in_text`]).

mod jinja;

pub use jinja::{strftime, JinjaTemplate};

use crate::error::Result;

/// One message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `"system"`, `"user"` or `"assistant"` (written into the prompt as is).
    pub role: &'a str,
    /// The message text.
    pub content: &'a str,
}

impl<'a> Message<'a> {
    /// A system message.
    pub fn system(content: &'a str) -> Self {
        Message {
            role: "system",
            content,
        }
    }
    /// A user message.
    pub fn user(content: &'a str) -> Self {
        Message { role: "user", content }
    }
    /// An assistant message.
    pub fn assistant(content: &'a str) -> Self {
        Message {
            role: "assistant",
            content,
        }
    }
}

/// SmolLM2's default system prompt, as its template writes it.
pub const SMOLLM2_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
/// The date Llama 3.1/3.2 templates use when `strftime_now` is unavailable.
pub const LLAMA3_DEFAULT_DATE: &str = "26 Jul 2024";

/// A chat template family (see the module doc for the exact strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// ChatML; `default_system` is inserted when the conversation has no system message.
    ChatMl { default_system: Option<String> },
    /// Llama 3; `date: Some(d)` is the 3.1/3.2 form with the "Cutting Knowledge Date"
    /// system block, `None` the 3.0 form.
    Llama3 { date: Option<String> },
    /// The model file's own template.
    Jinja(JinjaTemplate),
}

impl ChatTemplate {
    /// SmolLM2-Instruct's ChatML, with its default system prompt.
    pub fn smollm2() -> Self {
        ChatTemplate::ChatMl {
            default_system: Some(SMOLLM2_SYSTEM.into()),
        }
    }

    /// Llama 3.2-Instruct's template with the fallback date.
    pub fn llama32() -> Self {
        ChatTemplate::Llama3 {
            date: Some(LLAMA3_DEFAULT_DATE.into()),
        }
    }

    /// The template for a model: its file's own `template` when it has one (rendered by
    /// [`JinjaTemplate`], seeing `bos_token` / `eos_token`), else the built-in family the
    /// vocabulary's special tokens point to (`has_token("<|im_start|>")`, …), else `None`.
    /// Fails when the file's template does not compile.
    pub fn for_model(
        template: Option<&str>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
        has_token: impl Fn(&str) -> bool,
    ) -> Result<Option<ChatTemplate>> {
        match template {
            Some(src) => Ok(Some(ChatTemplate::Jinja(JinjaTemplate::new(
                src,
                bos_token.unwrap_or(""),
                eos_token.unwrap_or(""),
            )?))),
            None => Ok(Self::detect_with_tokens(None, has_token)),
        }
    }

    /// [`for_model`](Self::for_model) with the BOS/EOS texts and special tokens of `tok`.
    pub fn for_tokenizer(template: Option<&str>, tok: &crate::tokenizer::Tokenizer) -> Result<Option<ChatTemplate>> {
        let text = |id: Option<u32>| id.and_then(|i| tok.inner()?.id_to_token(i));
        Self::for_model(template, text(tok.bos()).as_deref(), text(tok.eos()).as_deref(), |t| {
            tok.token_id(t).is_some()
        })
    }

    /// Picks the family from the template source (the Jinja text, or even the whole
    /// `tokenizer_config.json` text: JSON-escaped newlines are understood). `None` when
    /// there is no template or it is neither family.
    pub fn detect(template: Option<&str>) -> Option<ChatTemplate> {
        Self::detect_with_tokens(template, |_| false)
    }

    /// Like [`detect`](Self::detect), falling back on the special tokens the vocabulary
    /// has (`has_token("<|im_start|>")`, …) when the template says nothing; the Llama 3
    /// fallback is the 3.2 form.
    pub fn detect_with_tokens(template: Option<&str>, has_token: impl Fn(&str) -> bool) -> Option<ChatTemplate> {
        if let Some(t) = template {
            if t.contains("<|im_start|>") {
                return Some(ChatTemplate::ChatMl {
                    default_system: chatml_default_system(t),
                });
            }
            if t.contains("<|start_header_id|>") {
                let date = t
                    .contains("Cutting Knowledge Date")
                    .then(|| llama3_default_date(t).unwrap_or_else(|| LLAMA3_DEFAULT_DATE.into()));
                return Some(ChatTemplate::Llama3 { date });
            }
        }
        if has_token("<|im_start|>") && has_token("<|im_end|>") {
            return Some(ChatTemplate::ChatMl { default_system: None });
        }
        if has_token("<|start_header_id|>") && has_token("<|eot_id|>") {
            return Some(ChatTemplate::llama32());
        }
        None
    }

    /// The prompt for a single user message, ready for generation.
    pub fn render_user(&self, msg: &str) -> Result<String> {
        self.render(&[Message::user(msg)], true)
    }

    /// The prompt for a conversation; `add_generation_prompt` appends the assistant header.
    /// Fails only for a file's template (it raised, or hit an error).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut s = String::new();
        match self {
            ChatTemplate::Jinja(t) => return t.render(messages, add_generation_prompt),
            ChatTemplate::ChatMl { default_system } => {
                let block = |s: &mut String, role: &str, content: &str| {
                    s.push_str("<|im_start|>");
                    s.push_str(role);
                    s.push('\n');
                    s.push_str(content);
                    s.push_str("<|im_end|>\n");
                };
                if let Some(sys) = default_system {
                    if messages.first().is_none_or(|m| m.role != "system") {
                        block(&mut s, "system", sys);
                    }
                }
                for m in messages {
                    block(&mut s, m.role, m.content);
                }
                if add_generation_prompt {
                    s.push_str("<|im_start|>assistant\n");
                }
            }
            ChatTemplate::Llama3 { date } => {
                let block = |s: &mut String, role: &str, content: &str| {
                    s.push_str("<|start_header_id|>");
                    s.push_str(role);
                    s.push_str("<|end_header_id|>\n\n");
                    s.push_str(content.trim());
                    s.push_str("<|eot_id|>");
                };
                s.push_str("<|begin_of_text|>");
                let mut rest = messages;
                if let Some(date) = date {
                    let system = match messages.first() {
                        Some(m) if m.role == "system" => {
                            rest = &messages[1..];
                            m.content.trim()
                        }
                        _ => "",
                    };
                    s.push_str("<|start_header_id|>system<|end_header_id|>\n\n");
                    s.push_str("Cutting Knowledge Date: December 2023\n");
                    s.push_str("Today Date: ");
                    s.push_str(date);
                    s.push_str("\n\n");
                    s.push_str(system);
                    s.push_str("<|eot_id|>");
                }
                for m in rest {
                    block(&mut s, m.role, m.content);
                }
                if add_generation_prompt {
                    s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }
            }
        }
        Ok(s)
    }

    /// Whether the rendered text holds the BOS it needs, so it is encoded without adding
    /// special tokens: the Llama 3 family, and a file's template (which writes
    /// `{{ bos_token }}` where the model wants it, as HF's `apply_chat_template` assumes).
    pub fn bos_in_text(&self) -> bool {
        matches!(self, ChatTemplate::Llama3 { .. } | ChatTemplate::Jinja(_))
    }

    /// The token text that ends an assistant turn (`<|im_end|>`, `<|eot_id|>`; for a
    /// file's template the first of `<|im_end|>`, `<|eot_id|>`, `<|end|>` it writes, else
    /// its EOS text).
    pub fn end_of_turn(&self) -> &str {
        match self {
            ChatTemplate::ChatMl { .. } => "<|im_end|>",
            ChatTemplate::Llama3 { .. } => "<|eot_id|>",
            ChatTemplate::Jinja(t) => ["<|im_end|>", "<|eot_id|>", "<|end|>"]
                .into_iter()
                .find(|e| t.source().contains(e))
                .unwrap_or(t.eos_token()),
        }
    }
}

/// The literal default system prompt of a ChatML template: the first
/// `<|im_start|>system\n…<|im_end|>` whose middle is plain text (no Jinja expression).
/// The newline may be a real one or a `\n` escape inside a Jinja string.
fn chatml_default_system(t: &str) -> Option<String> {
    const OPEN: &str = "<|im_start|>system";
    let mut from = 0;
    while let Some(i) = t[from..].find(OPEN) {
        let after = from + i + OPEN.len();
        from = after;
        let rest = &t[after..];
        let body = rest.strip_prefix('\n').or_else(|| rest.strip_prefix("\\n"));
        let Some(body) = body else { continue };
        let Some(end) = body.find("<|im_end|>") else { continue };
        let text = &body[..end];
        if text.is_empty() || text.contains(['{', '}', '\'', '"', '+']) {
            continue;
        }
        return Some(text.replace("\\n", "\n"));
    }
    None
}

/// The fallback `date_string = "…"` of a Llama 3.1/3.2 template.
fn llama3_default_date(t: &str) -> Option<String> {
    const KEY: &str = "set date_string = \"";
    let i = t.find(KEY)? + KEY.len();
    let end = t[i..].find('"')?;
    Some(t[i..i + end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's `tokenizer.chat_template`, copied from its GGUF.
    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_matches_hf_rendering() {
        let t = ChatTemplate::detect(Some(SMOLLM2_TEMPLATE)).unwrap();
        assert_eq!(t, ChatTemplate::smollm2());
        // transformers 5.24 apply_chat_template(add_generation_prompt=True) on the GGUF.
        assert_eq!(
            t.render_user("What is the capital of France?").unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        let own = t
            .render(&[Message::system("Be brief."), Message::user(" hi ")], false)
            .unwrap();
        assert_eq!(
            own,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n hi <|im_end|>\n"
        );
    }

    #[test]
    fn chatml_system_extraction_handles_escapes_and_expressions() {
        let qwen = r"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{%- endif %}";
        assert_eq!(
            chatml_default_system(qwen).as_deref(),
            Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        );
        assert_eq!(chatml_default_system("{{'<|im_start|>' + m + '<|im_end|>'}}"), None);
    }

    #[test]
    fn llama32_form() {
        let src = "{{- bos_token }}{%- set date_string = \"26 Jul 2024\" %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}";
        let t = ChatTemplate::detect(Some(src)).unwrap();
        assert_eq!(t, ChatTemplate::llama32());
        assert!(t.bos_in_text());
        assert_eq!(
            t.render_user("  Hi there \n").unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\
             Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let with_sys = t
            .render(&[Message::system("Be brief."), Message::user("Hi")], true)
            .unwrap();
        assert!(with_sys.contains("Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user"));
        assert_eq!(with_sys.matches("<|start_header_id|>system").count(), 1);
    }

    #[test]
    fn llama30_form() {
        let src = "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% endfor %}";
        let t = ChatTemplate::detect(Some(src)).unwrap();
        assert_eq!(t, ChatTemplate::Llama3 { date: None });
        assert_eq!(
            t.render_user("Hi").unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn detect_from_tokens() {
        let has = |set: &'static [&'static str]| move |t: &str| set.contains(&t);
        assert_eq!(
            ChatTemplate::detect_with_tokens(None, has(&["<|im_start|>", "<|im_end|>"])),
            Some(ChatTemplate::ChatMl { default_system: None })
        );
        assert_eq!(
            ChatTemplate::detect_with_tokens(Some("{{ unknown }}"), has(&["<|start_header_id|>", "<|eot_id|>"])),
            Some(ChatTemplate::llama32())
        );
        assert_eq!(ChatTemplate::detect_with_tokens(None, has(&[])), None);
    }
}
