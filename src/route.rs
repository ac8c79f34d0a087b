//! Routing: which upstreams each series goes to (`routes:`), per-route relabeling and
//! downsampling (`min_interval`), the split of one request into one body per upstream, and
//! sending the parts so the sender is acknowledged only when all of them were.

mod config;
pub mod downsample;
pub mod durable;
pub mod own;
pub mod selector;
pub mod send;
pub mod split;

pub use config::{Route, Routing};
pub use downsample::Downsampler;
pub use split::{split, Part, Plan, Routed, Scratch};
