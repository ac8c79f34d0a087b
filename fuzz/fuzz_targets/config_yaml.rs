//! The whole config loader from bytes.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::config_yaml(data));
