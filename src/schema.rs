//! The schema stage: redaction of sensitive label values (before any later stage sees the
//! series), then the label schema every series must meet. Runs after relabeling and before the
//! guard, on the labels as relabeled.
//!
//! `config` holds the validated `schema:` section (the raw YAML and its validation stay in
//! `crate::config::schema`); `redact` and `check` work on one series' labels; `stage` runs both
//! over a request and records the outcome in its `Decisions`.

mod check;
mod config;
pub mod metrics;
mod redact;
mod stage;
#[cfg(test)]
mod tests;

pub use crate::series::SchemaRule;
pub use check::check;
pub use config::{RedactAction, Redaction, SchemaAction, SchemaConfig};
pub use redact::redact;
pub use stage::{stage, Rejected, SchemaCounts};
