//! A remote write 1.0 body (snappy block, or the decoded protobuf) through the wire module.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::run(data, cardguard::wire::Version::V1));
