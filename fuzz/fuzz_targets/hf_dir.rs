//! Fuzz target `hf_dir`: see `antigravity_core::fuzzing::hf_dir` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| antigravity_core::fuzzing::hf_dir(data));
