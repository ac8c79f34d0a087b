//! A web config file (`--web.config.file`) and an `Authorization: Basic` header from bytes.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::web_config(data));
