//! Label schema and redaction at admission.

pub mod metrics;
