//! Fuzz target `sampling`: see `antigravity_core::fuzzing::sampling` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| antigravity_core::fuzzing::sampling(data));
