//! `cardguard ci`'s exposition parser on arbitrary text, in both formats: it returns samples
//! or an error naming a line of the input, never panics; what it accepts renders and parses
//! back to the same samples.
#![no_main]

use cardguard::ci::exposition::{parse_as, render, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    for format in [Format::Prometheus, Format::OpenMetrics] {
        match parse_as(text, format) {
            Err(e) => assert!(e.line >= 1 && e.line <= lines, "{e} ({lines} lines)"),
            Ok(e) => {
                let again = render(&e.samples, &[], format);
                let back = parse_as(&again, format).expect("rendered text parses");
                assert_eq!(back.samples.len(), e.samples.len());
                for (a, b) in e.samples.iter().zip(&back.samples) {
                    assert_eq!((&a.name, &a.labels), (&b.name, &b.labels));
                    assert!(a.value == b.value || (a.value.is_nan() && b.value.is_nan()));
                    assert_eq!(a.timestamp_ms, b.timestamp_ms);
                }
            }
        }
    }
});
