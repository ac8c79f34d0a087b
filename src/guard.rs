//! The cardinality guard: the gate between the wire reader and the forwarder that keeps each
//! owner's series inside its budget, estimates the real demand, and never drops a series that
//! was admitted before the limit was reached.

pub mod identity;
pub mod sketch;
