//! Writer: builds an outgoing request (uncompressed protobuf) by copying the raw bytes of
//! unchanged series and encoding only relabeled or new ones, translating v1↔v2 on the way.
//!
//! CONTRACT (filled in by the wire work): see the doc comment of each item.

use super::reader::Parsed;
use super::Version;

/// A series built in cardguard (a rule result, an overflow aggregate): labels and float samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnedSeries {
    pub labels: Vec<(String, String)>,
    /// `(value, timestamp_ms)`
    pub samples: Vec<(f64, i64)>,
}

/// Reusable output buffer for one outgoing request at a time.
#[derive(Debug)]
pub struct Writer {
    out: Version,
}

impl Writer {
    pub fn new(out: Version) -> Self {
        Writer { out }
    }

    /// The version this writer produces.
    pub fn version(&self) -> Version {
        self.out
    }

    /// Start a new request from source `req` (parsed from `buf`), clearing the previous one but
    /// keeping capacity. Copies/relabels below refer to series of this source.
    pub fn begin(&mut self, _req: &Parsed, _buf: &[u8]) {
        todo!()
    }

    /// Copy series `i` unchanged: its raw bytes when versions match, translated otherwise.
    pub fn copy_series(&mut self, _req: &Parsed, _buf: &[u8], _i: usize) {
        todo!()
    }

    /// Series `i` with new labels; samples, histograms and exemplars copied from the source.
    pub fn relabeled_series(
        &mut self,
        _req: &Parsed,
        _buf: &[u8],
        _i: usize,
        _labels: &[(&[u8], &[u8])],
    ) {
        todo!()
    }

    /// A series built in cardguard.
    pub fn push_series(&mut self, _s: &OwnedSeries) {
        todo!()
    }

    /// Copy the request-level metadata of the source (v1 field 3) when the output can carry it.
    pub fn copy_metadata(&mut self, _req: &Parsed, _buf: &[u8]) {
        todo!()
    }

    /// The encoded request so far.
    pub fn finish(&mut self) -> &[u8] {
        todo!()
    }
}
