//! The snapshot reader: whole files and bare section payloads, then the state they restore.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::snapshot(data));
