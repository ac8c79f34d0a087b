//! A durable-queue segment file, as a crash or a bad disk may leave it: read and decoded.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::queue_segment(data));
