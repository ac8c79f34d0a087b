//! Recording rules on the stream: rule files, the buffers that feed them, group evaluation,
//! and the recorded series sent upstream.

pub mod promql;
