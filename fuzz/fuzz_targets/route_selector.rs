//! A route's match selector: parsed and matched.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::route_selector(data));
