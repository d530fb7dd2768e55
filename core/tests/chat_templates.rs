//! A model file's chat template, rendered by our minijinja renderer, gives exactly what
//! Hugging Face `transformers`' `apply_chat_template(tokenize=False)` gives: reference
//! strings in `tests/data/chat_templates.json`, made by `oracle/chat/make_chat_refs.py`
//! (transformers 5.25 with jinja2; templates of SmolLM2-135M-Instruct's GGUF, Phi-3's
//! vocabulary GGUF, Meta's Llama 3.1 / 3.2 and Llama-2-chat), with the same BOS/EOS texts
//! and the same `strftime_now` time. A template that raises in transformers must fail here.
#![cfg(feature = "std")]

use antigravity_core::chat::{ChatTemplate, JinjaTemplate, Message};
use serde_json::Value;

#[test]
fn file_templates_match_transformers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/chat_templates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in cases.iter().enumerate() {
        let s = |k: &str| c[k].as_str().unwrap();
        let name = s("name");
        names.insert(name);
        let t = JinjaTemplate::new(s("template"), s("bos_token"), s("eos_token"))
            .unwrap()
            .with_now(c["now"].as_i64().unwrap());
        let t = ChatTemplate::Jinja(t);
        let msgs: Vec<Message> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message {
                role: m["role"].as_str().unwrap(),
                content: m["content"].as_str().unwrap(),
            })
            .collect();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let got = t.render(&msgs, gen);
        match (c.get("expected").and_then(Value::as_str), got) {
            (Some(want), Ok(got)) => assert_eq!(got, want, "case {i} ({name}, add_generation_prompt={gen})"),
            (None, Err(e)) => {
                let want = s("error");
                assert!(
                    e.to_string().contains(want),
                    "case {i} ({name}): error {e} should say {want:?}"
                );
            }
            (want, got) => panic!("case {i} ({name}): want {want:?}, got {got:?}"),
        }
    }
    for n in ["smollm2", "llama-2-chat", "phi-3", "llama-3.2", "llama-3.1"] {
        assert!(names.contains(n), "no {n} case in {path}");
    }
}

/// Without a template in the file, the built-in family the vocabulary's tokens point to.
#[test]
fn falls_back_only_without_a_template() {
    let has = |t: &str| ["<|im_start|>", "<|im_end|>"].contains(&t);
    assert_eq!(
        ChatTemplate::for_model(None, None, None, has).unwrap(),
        Some(ChatTemplate::ChatMl { default_system: None })
    );
    assert!(matches!(
        ChatTemplate::for_model(Some("{{ bos_token }}"), Some("<s>"), None, has).unwrap(),
        Some(ChatTemplate::Jinja(_))
    ));
    assert_eq!(ChatTemplate::for_model(None, None, None, |_| false).unwrap(), None);
    assert!(ChatTemplate::for_model(Some("{% for %}"), None, None, has).is_err());
}
