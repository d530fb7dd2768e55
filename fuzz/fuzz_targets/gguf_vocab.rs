//! Fuzz target `gguf_vocab`: see `antigravity_core::fuzzing::gguf_vocab` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| antigravity_core::fuzzing::gguf_vocab(data));
