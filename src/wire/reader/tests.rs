//! Property tests of the reader against the prost reference types.
