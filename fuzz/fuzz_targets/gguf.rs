//! Fuzz target `gguf`: see `antigravity_core::fuzzing::gguf` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| antigravity_core::fuzzing::gguf(data));
