//! A recording-rule file through its parser and checks.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::rule_file(data));
