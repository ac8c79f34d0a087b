//! Snappy block format (remote write never uses the framed format, docs/protocol.md §5).
//!
//! Only `snap::raw` is used: `snap::read`/`snap::write` speak the framed format. The decoded
//! length in the block preamble is checked against the caller's limit before any memory is
//! committed, like client_golang's `SnappyDecodeMiddleware` (the "bomb guard").

use std::cell::RefCell;

use super::WireError;

/// The start of a framed-format stream: chunk type 0xff, length 6, "sNaPpY".
pub const FRAMED_STREAM_IDENTIFIER: [u8; 10] =
    [0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59];

/// Decompress `input` into `out` (replacing its contents, capacity kept). Rejects the framed
/// format, an unreadable preamble and a declared length over `limit` *before* allocating.
///
/// An empty body is a `SnappyPreamble` error: it has no preamble, and Go's snappy (hence
/// Prometheus's receiver) rejects it as corrupt too.
pub fn decompress(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let declared = match preamble(input, limit) {
        Ok(n) => n,
        Err(e) => {
            out.clear();
            return Err(e);
        }
    };
    // Only now is memory committed, and at most `limit` bytes of it. The previous request's
    // bytes are not cleared first: the decoder overwrites all `declared` bytes on success, so
    // only the part beyond the old length is zero-filled (in steady state, none).
    out.resize(declared, 0);
    match snap::raw::Decoder::new().decompress(input, out) {
        Ok(n) => {
            out.truncate(n);
            Ok(())
        }
        Err(e) => {
            out.clear();
            Err(WireError::SnappyCorrupt(e.to_string()))
        }
    }
}

/// The checks made before any allocation; returns the declared decoded length.
fn preamble(input: &[u8], limit: usize) -> Result<usize, WireError> {
    if input.starts_with(&FRAMED_STREAM_IDENTIFIER) {
        return Err(WireError::SnappyFramed);
    }
    if input.is_empty() {
        return Err(WireError::SnappyPreamble);
    }
    let declared = snap::raw::decompress_len(input).map_err(|_| WireError::SnappyPreamble)?;
    if declared > limit {
        return Err(WireError::SnappyTooLarge {
            declared: declared as u64,
            limit,
        });
    }
    Ok(declared)
}

/// A snappy encoder and its output buffer, kept from one body to the next: the encoder's hash
/// table is sized for large inputs, and the buffer stays at the largest worst-case size seen,
/// never truncated (sizing a caller's buffer to the worst case after it was cut to the previous
/// output zeroed that difference, ~7/8 of the input, on every call). The request path keeps one
/// in each thread's route scratch, which lets go of it when the thread is idle; other callers
/// share a thread's own (`compress`).
#[derive(Default)]
pub struct Compressor {
    /// Made on first use: the encoder carries a 2 KiB table inline, and a route scratch that
    /// never compresses (every body forwarded as it came) need not.
    enc: Option<snap::raw::Encoder>,
    buf: Vec<u8>,
}

impl Compressor {
    /// Compress `input` into a body of its own, copied once out of the buffer (compressing
    /// into a caller's buffer and making a `Bytes` of that was two copies).
    ///
    /// # Panics
    ///
    /// If `input` is larger than the snappy block limit of 2³² − 1 bytes (about 3.4 GiB once
    /// the worst-case expansion is counted). Outgoing requests are built from bodies capped by
    /// [`super::Limits::max_decoded_bytes`] and split into batches far below that.
    pub fn compress_bytes(&mut self, input: &[u8]) -> bytes::Bytes {
        self.with_compressed(input, bytes::Bytes::copy_from_slice)
    }

    /// `input` compressed, handed to `f` from the buffer.
    fn with_compressed<R>(&mut self, input: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        let max = snap::raw::max_compress_len(input.len());
        assert!(
            max > 0 || input.is_empty(),
            "snappy: {} bytes exceed the block format's limit",
            input.len()
        );
        let max = max.max(1);
        // Bytes of an earlier output are left in place, not zeroed: the encoder writes every
        // byte it reports, and only those are handed out.
        if self.buf.len() < max {
            self.buf.resize(max, 0);
        }
        let enc = self.enc.get_or_insert_with(snap::raw::Encoder::new);
        let out = match enc.compress(input, &mut self.buf) {
            Ok(n) => f(&self.buf[..n]),
            // The buffer was sized with max_compress_len and the input checked above.
            Err(e) => panic!("snappy: compress failed: {e}"),
        };
        // An outsized request's buffer is not kept.
        if self.buf.len() > KEEP_BYTES {
            self.buf = Vec::new();
        }
        out
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Compressor> = RefCell::new(Compressor::default());
}

/// Compress `input` into `out` (replacing its contents, capacity kept), with the thread's
/// compressor.
///
/// # Panics
///
/// As [`Compressor::compress_bytes`].
pub fn compress(input: &[u8], out: &mut Vec<u8>) {
    let copy = |c: &[u8]| {
        out.clear();
        out.extend_from_slice(c);
    };
    COMPRESSOR.with(|cell| match cell.try_borrow_mut() {
        Ok(mut c) => c.with_compressed(input, copy),
        // Only reachable by re-entrancy, which compress() never does; use a fresh one.
        Err(_) => Compressor::default().with_compressed(input, copy),
    })
}

/// Largest output buffer kept between calls.
const KEEP_BYTES: usize = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_reuses_capacity() {
        let input: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut c = Vec::new();
        compress(&input, &mut c);
        let mut d = Vec::with_capacity(1 << 20);
        let cap = d.capacity();
        decompress(&c, 1 << 20, &mut d).unwrap();
        assert_eq!(d, input);
        assert_eq!(d.capacity(), cap);
        assert_eq!(Compressor::default().compress_bytes(&input), c);
        compress(&[], &mut c);
        assert_eq!(c, [0]);
        decompress(&c, 10, &mut d).unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn framed_stream_is_rejected() {
        let mut body = FRAMED_STREAM_IDENTIFIER.to_vec();
        body.extend_from_slice(&[0x01, 0x05, 0, 0, 1, 2, 3, 4, b'x']);
        assert_eq!(
            decompress(&body, 1 << 20, &mut Vec::new()),
            Err(WireError::SnappyFramed)
        );
    }

    #[test]
    fn unreadable_preamble_is_rejected() {
        let mut out = Vec::new();
        assert_eq!(
            decompress(&[], 100, &mut out),
            Err(WireError::SnappyPreamble)
        );
        // A varint that never ends.
        assert_eq!(
            decompress(&[0xff, 0xff], 100, &mut out),
            Err(WireError::SnappyPreamble)
        );
        // A declared length over 2^32 − 1.
        let over = [0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            decompress(&over, usize::MAX, &mut out),
            Err(WireError::SnappyPreamble)
        );
    }

    #[test]
    fn declared_length_over_limit_is_rejected_before_allocating() {
        // Preamble declares 2^31 bytes; nothing else follows.
        let bomb = [0x80, 0x80, 0x80, 0x80, 0x08];
        let mut out = Vec::new();
        assert_eq!(
            decompress(&bomb, 32 << 20, &mut out),
            Err(WireError::SnappyTooLarge {
                declared: 1 << 31,
                limit: 32 << 20
            })
        );
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn corrupt_block_is_rejected() {
        let mut c = Vec::new();
        compress(&[b'a'; 1000], &mut c);
        // Declares 1000 bytes but the elements are cut short.
        c.truncate(c.len() / 2);
        assert!(matches!(
            decompress(&c, 1 << 20, &mut Vec::new()),
            Err(WireError::SnappyCorrupt(_))
        ));
        // Declared length smaller than what the elements produce.
        let mut c2 = Vec::new();
        compress(b"hello hello hello", &mut c2);
        c2[0] = 3;
        assert!(matches!(
            decompress(&c2, 1 << 20, &mut Vec::new()),
            Err(WireError::SnappyCorrupt(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decompress_never_panics(input in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut out = Vec::new();
            if decompress(&input, 4096, &mut out).is_ok() {
                proptest::prop_assert!(out.len() <= 4096);
            }
        }

        #[test]
        fn compress_round_trips(input in proptest::collection::vec(0u8..8, 0..4096)) {
            let mut c = Vec::new();
            compress(&input, &mut c);
            let mut d = Vec::new();
            decompress(&c, input.len(), &mut d).unwrap();
            proptest::prop_assert_eq!(d, input);
        }
    }
}
