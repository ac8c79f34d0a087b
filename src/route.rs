//! Routing: which upstreams each series goes to (`routes:`), per-route relabeling and
//! downsampling, and the split of one request into one body per upstream.

pub mod selector;
