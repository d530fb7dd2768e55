//! Fuzz target `tokenizer_json`: see `antigravity_core::fuzzing::tokenizer_json` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| antigravity_core::fuzzing::tokenizer_json(data));
