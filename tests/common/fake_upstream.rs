//! The fake remote-write upstream of the tests is the library's in-process receiver,
//! [`cardguard::sink::Sink`] (the demo's upstream and the load harness's null upstream too), on a
//! runtime of its own so the blocking tests can use it: it keeps every request and answers what
//! the test sets with [`Sink::answer`] (204 by default).

#[allow(unused_imports)]
pub use cardguard::sink::{Answer, Received, Sink, SinkOptions};

/// A recording upstream on a free loopback port; stops when dropped.
pub fn fake_upstream() -> Sink {
    Sink::start_blocking(SinkOptions::recording()).expect("start the fake upstream")
}
