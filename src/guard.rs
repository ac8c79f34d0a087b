//! The cardinality guard (in progress; see /tmp/guard.rs.full).

pub mod identity;
pub mod sketch;
pub mod table;
pub mod window;
