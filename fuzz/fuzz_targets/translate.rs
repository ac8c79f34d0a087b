//! A body read in one version and written in the other, output limited (see common::translate).
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::translate(data));
