//! Shared body of the wire fuzz targets: everything the proxy does with an untrusted body,
//! which must never panic whatever the bytes.

use cardguard::wire::{snappy, Limits, OwnedSeries, Parsed, Version, Writer};

pub fn run(data: &[u8], version: Version) {
    // Small caps so the fuzzer reaches the limit paths too.
    let limits = Limits {
        max_decoded_bytes: 1 << 20,
        max_series: 1000,
        max_labels_per_series: 32,
        max_label_name_bytes: 64,
        max_label_value_bytes: 256,
        max_symbols: 4096,
    };
    let mut body = Vec::new();
    // Snappy body as it arrives; fall back to reading the bytes as the decoded body so the
    // fuzzer also explores the protobuf reader directly.
    let buf: &[u8] = match snappy::decompress(data, limits.max_decoded_bytes, &mut body) {
        Ok(()) => &body,
        Err(_) => data,
    };
    let mut parsed = Parsed::new();
    if parsed.parse(buf, version, &limits).is_err() {
        return;
    }
    let counts = parsed.counts();
    assert_eq!(counts.series as usize, parsed.len());
    let mut samples = 0u64;
    for (i, s) in parsed.iter(buf).enumerate() {
        let _ = s.validate(i);
        let _ = s.metric_name();
        assert_eq!(s.labels().count(), s.label_count());
        for sample in s.samples() {
            samples += 1;
            std::hint::black_box(sample);
        }
        std::hint::black_box((
            s.histograms_raw().count(),
            s.exemplars_raw().count(),
            s.raw().len(),
        ));
    }
    assert_eq!(samples, counts.samples);

    let extra = OwnedSeries {
        labels: vec![("__name__".into(), "cardguard_fuzz".into())],
        samples: vec![(1.0, 0)],
    };
    for out in [Version::V1, Version::V2] {
        let mut w = Writer::new(out);
        w.begin(&parsed, buf);
        for i in 0..parsed.len() {
            match i % 3 {
                0 => w.copy_series(&parsed, buf, i),
                1 => w.relabeled_series(
                    &parsed,
                    buf,
                    i,
                    &[(b"__name__", b"relabeled"), (b"job", b"fuzz")],
                ),
                _ => {}
            }
        }
        w.push_series(&extra);
        w.copy_metadata(&parsed, buf);
        let written = w.finish().to_vec();
        // What we write must read back (framing-wise) with generous caps.
        let mut again = Parsed::new();
        again
            .parse(&written, out, &Limits::default())
            .expect("writer output must parse");
        let mut compressed = Vec::new();
        snappy::compress(&written, &mut compressed);
    }
}
