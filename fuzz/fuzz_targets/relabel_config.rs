//! A relabel_configs list: parsed, compiled, applied.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::relabel_config(data));
