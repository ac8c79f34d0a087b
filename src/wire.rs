//! Remote write on the wire: the 1.0 and 2.0 protobuf messages, snappy block framing, a
//! zero-copy reader for the hot path and a writer that copies unchanged series as raw bytes.
//!
//! `types` holds the prost reference messages (the source of truth for field numbers, used by
//! tests, translation of rare fields and the demo). The hot path never decodes into them: the
//! `reader` walks the decompressed buffer once and records byte offsets, and the `writer`
//! copies those byte ranges out again.

pub(crate) mod proto;
pub mod reader;
pub mod snappy;
#[cfg(test)]
mod strategies;
#[doc(hidden)]
pub mod testgen;
pub mod types;
pub mod writer;

pub use reader::{
    is_ascii, short_eq, ItemCounts, LabelsIter, Parsed, RawFields, SampleIter, SeriesView,
    V2Metadata, WireSample,
};
pub use writer::{OwnedSeries, TranslationDrops, Writer};

/// Which remote-write message a body carries (selected by Content-Type, docs/protocol.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `prometheus.WriteRequest` (remote write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

impl Version {
    /// The canonical Content-Type to send upstream, byte for byte (docs/protocol.md §2,
    /// "parse leniently, send canonically").
    pub fn content_type(self) -> &'static str {
        match self {
            Version::V1 => "application/x-protobuf",
            Version::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }

    /// The `X-Prometheus-Remote-Write-Version` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            Version::V1 => "0.1.0",
            Version::V2 => "2.0.0",
        }
    }
}

/// Caps on what one request may carry once decompressed. Everything that comes off the wire
/// is bounded by one of these before memory is committed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed body; the snappy preamble is checked against it before allocating.
    pub max_decoded_bytes: usize,
    /// Most TimeSeries entries in one request.
    pub max_series: usize,
    /// Most labels on one series (also bounds v2 `labels_refs` pairs and exemplar labels).
    pub max_labels_per_series: usize,
    /// Longest label name in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value in bytes.
    pub max_label_value_bytes: usize,
    /// Most entries in a v2 symbols table.
    pub max_symbols: usize,
    /// Largest request cardguard builds from one received request (translated, relabeled or
    /// filtered), per upstream. v2 → v1 resolves every symbol reference in full, so without
    /// this a small body can ask for gigabytes (issue 11).
    pub max_output_bytes: usize,
}

impl Limits {
    /// The longest symbol a v2 table may hold: nothing longer can be a valid label name or
    /// value, and each reference to it is copied in full when translating to v1.
    pub fn max_symbol_bytes(&self) -> usize {
        self.max_label_name_bytes.max(self.max_label_value_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decoded_bytes: 32 << 20,
            max_series: 100_000,
            max_labels_per_series: 128,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 16 * 1024,
            max_symbols: 1_000_000,
            max_output_bytes: 32 << 20,
        }
    }
}

/// Why a body could not be read. Each message is one line that tells the sender what is
/// wrong; ingest returns it as the body of a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("snappy: body is in the framed format (stream identifier); remote write uses the block format")]
    SnappyFramed,
    #[error("snappy: cannot read the decoded-length preamble")]
    SnappyPreamble,
    #[error("snappy: declared decoded length {declared} bytes exceeds the limit of {limit} bytes")]
    SnappyTooLarge { declared: u64, limit: usize },
    #[error("snappy: corrupt block: {0}")]
    SnappyCorrupt(String),
    #[error("protobuf: {what} at byte {offset}")]
    Protobuf { what: &'static str, offset: usize },
    #[error("request has more than {limit} series")]
    TooManySeries { limit: usize },
    #[error("series {series}: more than {limit} labels")]
    TooManyLabels { series: usize, limit: usize },
    #[error("series {series}: label name longer than {limit} bytes")]
    LabelNameTooLong { series: usize, limit: usize },
    #[error("series {series}: label value longer than {limit} bytes")]
    LabelValueTooLong { series: usize, limit: usize },
    #[error("request has more than {limit} symbols")]
    TooManySymbols { limit: usize },
    #[error("series {series}: labels_refs has an odd number of entries")]
    OddLabelRefs { series: usize },
    #[error("series {series}: symbol reference {reference} out of range ({symbols} symbols)")]
    SymbolOutOfRange {
        series: usize,
        reference: u64,
        symbols: usize,
    },
    #[error("v2 request: symbols[0] must be the empty string")]
    FirstSymbolNotEmpty,
    #[error("series {series}: invalid UTF-8 in a label {part}")]
    InvalidUtf8 { series: usize, part: &'static str },
    #[error("series {series}: no labels")]
    NoLabels { series: usize },
    #[error("series {series}: no __name__ label, or an empty one")]
    NoMetricName { series: usize },
    #[error("series {series}: empty label name")]
    EmptyLabelName { series: usize },
    #[error("series {series}: duplicate label name {name:?}")]
    DuplicateLabel { series: usize, name: String },
    #[error("series {series}: invalid native histogram: {reason}")]
    InvalidHistogram {
        series: usize,
        reason: reader::histogram::HistogramError,
    },
    #[error("symbol {index} is {len} bytes, longer than any allowed label name or value ({limit} bytes, limits.{key})")]
    SymbolTooLong {
        index: usize,
        len: usize,
        limit: usize,
        key: &'static str,
    },
    #[error(
        "series {series}: an exemplar has more than {limit} labels (limits.max_labels_per_series)"
    )]
    TooManyExemplarLabels { series: usize, limit: usize },
    #[error("series {series}: exemplar label name longer than {limit} bytes (limits.max_label_name_length)")]
    ExemplarLabelNameTooLong { series: usize, limit: usize },
    #[error("series {series}: exemplar label value longer than {limit} bytes (limits.max_label_value_length)")]
    ExemplarLabelValueTooLong { series: usize, limit: usize },
    #[error("series {series}: invalid UTF-8 in an exemplar label {part}")]
    ExemplarInvalidUtf8 { series: usize, part: &'static str },
    /// Not the sender's doing: a run guessed from the series' end (`Parsed::set_guessed_runs`)
    /// did not settle. Whoever guessed reads the request again without guesses, which finds
    /// the series as it is (and any error in it); this never reaches a sender.
    #[error("series {series}: its labels are not where they were guessed to be")]
    UnsettledGuess { series: usize },
}

/// A request cardguard would build from a received one (translated, relabeled, filtered)
/// would pass `Limits::max_output_bytes`. The sender's request is what makes it so (v2
/// symbols referenced many times), so ingest answers 400 with this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("translated request would be at least {size} bytes, over the limit of {limit} bytes (limits.max_output_size)")]
pub struct OutputTooLarge {
    /// What the request would take at least: the bytes written before the limit was reached
    /// plus a lower bound of everything after.
    pub size: u64,
    pub limit: usize,
}
