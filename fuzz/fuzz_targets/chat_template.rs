//! Fuzz target `chat_template`: see `antigravity_core::fuzzing::chat_template` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| antigravity_core::fuzzing::chat_template(data));
