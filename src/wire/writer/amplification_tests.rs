//! Issue 11 point 1: a small request must not make the writer build a huge one. A v2 symbol
//! referenced many times is written out in full at every reference in v1 (series labels,
//! exemplar labels, metadata help), so the reader caps symbols and exemplar labels, and the
//! writer refuses to pass its limit.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::wire::types::v2;
use crate::wire::{strategies, Limits, OutputTooLarge, Version, WireError};

fn symbols(long: &str, extra: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut s = vec![String::new(), "__name__".into(), "m".into(), long.into()];
    s.extend(extra);
    s
}

/// Parse `buf` with the default limits and copy every series into a writer for `out`
/// limited to `limit` bytes; the writer is returned for its heap size.
fn translate(
    buf: &[u8],
    version: Version,
    out: Version,
    limit: usize,
) -> (Result<Vec<u8>, OutputTooLarge>, Writer) {
    let mut parsed = Parsed::new();
    parsed.parse(buf, version, &Limits::default()).unwrap();
    let mut w = Writer::new(out);
    w.set_limit(limit);
    w.begin(&parsed, buf);
    for i in 0..parsed.len() {
        w.copy_series(&parsed, buf, i);
    }
    w.copy_metadata(&parsed, buf);
    let written = w.finish().map(<[u8]>::to_vec);
    (written, w)
}

/// What a writer limited to `limit` may hold at most for a `decoded`-byte input (see the
/// property test below for why).
fn heap_bound(limit: usize, decoded: usize) -> usize {
    8 * limit.max(decoded) + (64 << 10)
}

/// The request of the issue: a 1,000,000-byte symbol, one series `{__name__="m"}`, 20
/// exemplars whose labels_refs point at it 64 times. v2 → v1 tried to allocate 2.9 GB.
fn issue_request() -> Vec<u8> {
    let long = "x".repeat(1_000_000);
    v2::Request {
        symbols: symbols(&long, []),
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2],
            samples: vec![v2::Sample {
                value: 1.0,
                timestamp: 1,
                start_timestamp: 0,
            }],
            exemplars: (0..20)
                .map(|i| v2::Exemplar {
                    labels_refs: vec![3; 64],
                    value: 1.0,
                    timestamp: i,
                })
                .collect(),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn the_issues_request_is_refused_when_read_naming_the_cap() {
    let buf = issue_request();
    assert!(buf.len() > 1_000_000 && buf.len() < 1_010_000);
    let err = Parsed::new()
        .parse(&buf, Version::V2, &Limits::default())
        .unwrap_err();
    assert_eq!(
        err,
        WireError::SymbolTooLong {
            index: 3,
            len: 1_000_000,
            limit: 16 * 1024,
            key: "max_label_value_length",
        }
    );
    assert!(
        err.to_string().contains("limits.max_label_value_length"),
        "{err}"
    );
}

/// Exemplars within the symbol cap: each exemplar label refers to the longest allowed value.
fn exemplar_request(exemplars: usize) -> Vec<u8> {
    let long = "v".repeat(16 * 1024);
    let names = (0..32).map(|i| format!("e{i}"));
    let refs: Vec<u32> = (0..32).flat_map(|i| [4 + i, 3]).collect();
    v2::Request {
        symbols: symbols(&long, names),
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2],
            exemplars: (0..exemplars as i64)
                .map(|i| v2::Exemplar {
                    labels_refs: refs.clone(),
                    value: 1.0,
                    timestamp: i,
                })
                .collect(),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Series labels within the caps: 127 labels per series, every value the same long symbol
/// (the issue's second shape: 100k series × 128 references to a 16 KiB symbol).
fn series_label_request(series: usize) -> Vec<u8> {
    let long = "v".repeat(16 * 1024);
    let names = (0..127).map(|i| format!("l{i}"));
    let mut refs = vec![1, 2];
    refs.extend((0..127).flat_map(|i| [4 + i, 3]));
    v2::Request {
        symbols: symbols(&long, names),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: refs,
                ..Default::default()
            };
            series
        ],
    }
    .encode_to_vec()
}

/// Metadata: every series a metric of its own, every help text the same long symbol.
fn metadata_request(series: usize) -> Vec<u8> {
    let long = "h".repeat(16 * 1024);
    let names = (0..series).map(|i| format!("m{i}"));
    v2::Request {
        symbols: symbols(&long, names),
        timeseries: (0..series as u32)
            .map(|i| v2::TimeSeries {
                labels_refs: vec![1, 4 + i],
                metadata: Some(v2::Metadata {
                    r#type: 1,
                    help_ref: 3,
                    unit_ref: 0,
                }),
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

#[test]
fn v2_to_v1_amplification_is_refused_with_the_size_it_would_have() {
    let limit = Limits::default().max_output_bytes;
    for (shape, buf) in [
        ("exemplar labels", exemplar_request(100)),
        ("series labels", series_label_request(20)),
        ("metadata help", metadata_request(3000)),
    ] {
        // Without a limit the amplification is real: what the limit is for.
        let (free, _) = translate(&buf, Version::V2, Version::V1, usize::MAX);
        let free = free.unwrap().len();
        assert!(free > limit, "{shape}: {free} bytes from {}", buf.len());
        assert!(
            free > 300 * buf.len(),
            "{shape}: {free} bytes from {}",
            buf.len()
        );

        let (out, w) = translate(&buf, Version::V2, Version::V1, limit);
        let err = out.unwrap_err();
        assert_eq!(err.limit, limit, "{shape}");
        assert!(
            err.size > limit as u64 && err.size <= free as u64,
            "{shape}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("translated request would be at least"),
            "{err}"
        );
        let heap = w.heap_bytes();
        assert!(
            heap <= heap_bound(limit, buf.len()),
            "{shape}: {heap} bytes held"
        );
    }
}

#[test]
fn the_size_reported_counts_everything_after_the_limit() {
    // Each series alone fits; twenty do not. The size is what all twenty take, at least.
    let buf = series_label_request(20);
    let (free, _) = translate(&buf, Version::V2, Version::V1, usize::MAX);
    let free = free.unwrap().len() as u64;
    let (out, _) = translate(&buf, Version::V2, Version::V1, 4 << 20);
    let err = out.unwrap_err();
    // Lower bounds count the label strings exactly; only some framing bytes are left out.
    assert!(
        err.size <= free && err.size >= free - free / 100,
        "{err} vs {free}"
    );
}

#[test]
fn exemplar_labels_get_the_caps_of_series_labels() {
    let limits = Limits::default();
    let exemplar = |refs: Vec<u32>, extra: Vec<String>| {
        let mut syms = symbols("v", extra);
        syms.push("n".repeat(2000));
        v2::Request {
            symbols: syms.clone(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2],
                exemplars: vec![v2::Exemplar {
                    labels_refs: refs,
                    value: 1.0,
                    timestamp: 1,
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    let parse = |buf: Vec<u8>| Parsed::new().parse(&buf, Version::V2, &limits).map(drop);
    // Symbol 4 is 2000 bytes: a fine value, too long a name.
    assert_eq!(parse(exemplar(vec![1, 4], vec![])), Ok(()));
    assert_eq!(
        parse(exemplar(vec![4, 3], vec![])),
        Err(WireError::ExemplarLabelNameTooLong {
            series: 0,
            limit: 1024
        })
    );
    assert_eq!(
        parse(exemplar([1, 3].repeat(129), vec![])),
        Err(WireError::TooManyExemplarLabels {
            series: 0,
            limit: 128
        })
    );

    // Not UTF-8 (prost's String cannot hold it, so the body is patched).
    let mut buf = exemplar(vec![1, 4], vec!["\u{e9}".into()]);
    let at = buf
        .windows(2)
        .position(|w| w == "\u{e9}".as_bytes())
        .unwrap();
    buf[at + 1] = b'!';
    assert_eq!(
        parse(buf),
        Err(WireError::ExemplarInvalidUtf8 {
            series: 0,
            part: "value"
        })
    );

    // v1: the same caps.
    use crate::wire::types::v1;
    let v1_body = |name: &str, value: &str| {
        v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![v1::Label {
                    name: "__name__".into(),
                    value: "m".into(),
                }],
                exemplars: vec![v1::Exemplar {
                    labels: vec![v1::Label {
                        name: name.into(),
                        value: value.into(),
                    }],
                    value: 1.0,
                    timestamp: 1,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        }
        .encode_to_vec()
    };
    let parse_v1 = |buf: Vec<u8>| Parsed::new().parse(&buf, Version::V1, &limits).map(drop);
    assert_eq!(parse_v1(v1_body("trace_id", "abc")), Ok(()));
    assert_eq!(
        parse_v1(v1_body(&"n".repeat(1025), "abc")),
        Err(WireError::ExemplarLabelNameTooLong {
            series: 0,
            limit: 1024
        })
    );
    let mut buf = v1_body("trace_id", "\u{e9}");
    let at = buf
        .windows(2)
        .position(|w| w == "\u{e9}".as_bytes())
        .unwrap();
    buf[at + 1] = b'!';
    assert_eq!(
        parse_v1(buf),
        Err(WireError::ExemplarInvalidUtf8 {
            series: 0,
            part: "value"
        })
    );
}

/// v1 → v2 interns every string once, so it cannot amplify the way v2 → v1 does; what it adds
/// is one metadata message per series of a family and a few bytes of refs.
#[test]
fn v1_to_v2_stays_within_a_small_multiple() {
    use crate::wire::types::v1;
    let help = "h".repeat(16 * 1024);
    let req = v1::WriteRequest {
        timeseries: (0..2000)
            .map(|i| v1::TimeSeries {
                labels: vec![
                    v1::Label {
                        name: "__name__".into(),
                        value: "m_total".into(),
                    },
                    v1::Label {
                        name: String::new(),
                        value: format!("{i}"),
                    },
                ],
                ..Default::default()
            })
            .collect(),
        metadata: vec![v1::MetricMetadata {
            r#type: 1,
            metric_family_name: "m".into(),
            help,
            unit: "seconds".into(),
        }],
    };
    let buf = req.encode_to_vec();
    let (out, _) = translate(&buf, Version::V1, Version::V2, usize::MAX);
    let out = out.unwrap().len();
    assert!(out <= 2 * buf.len(), "{out} bytes from {}", buf.len());
}

/// v2 requests built to amplify: a few long symbols (up to the 16 KiB value cap) referenced
/// from series labels, exemplar labels and metadata, many times.
fn hostile_v2() -> impl Strategy<Value = v2::Request> {
    let refs = |n| vec(0u32..6, 0..n);
    (
        vec(0usize..16 * 1024, 1..4),
        vec(
            (
                refs(32),
                vec((refs(16), strategies::float(), any::<i64>()), 0..6),
                proptest::option::of((0i32..8, 0u32..6, 0u32..6)),
            ),
            0..24,
        ),
    )
        .prop_map(|(lengths, series)| {
            let mut symbols = vec![String::new(), "__name__".into()];
            symbols.extend(lengths.iter().map(|&n| "s".repeat(n)));
            symbols.truncate(6);
            let k = symbols.len() as u32;
            let fix = |r: &Vec<u32>| -> Vec<u32> {
                let mut r: Vec<u32> = r.iter().map(|x| x % k).collect();
                if r.len() % 2 == 1 {
                    r.pop();
                }
                r
            };
            let timeseries = series
                .into_iter()
                .map(|(labels, exemplars, metadata)| v2::TimeSeries {
                    labels_refs: fix(&labels),
                    exemplars: exemplars
                        .into_iter()
                        .map(|(r, value, timestamp)| v2::Exemplar {
                            labels_refs: fix(&r),
                            value,
                            timestamp,
                        })
                        .collect(),
                    metadata: metadata.map(|(t, h, u)| v2::Metadata {
                        r#type: t,
                        help_ref: h % k,
                        unit_ref: u % k,
                    }),
                    ..Default::default()
                })
                .collect();
            v2::Request {
                symbols,
                timeseries,
            }
        })
}

/// Any request, either version: the strategies of the writer's tests or a hostile v2 one.
fn any_request() -> impl Strategy<Value = (Vec<u8>, Version)> {
    prop_oneof![
        strategies::v1_request().prop_map(|r| (r.encode_to_vec(), Version::V1)),
        strategies::v2_request().prop_map(|r| (r.encode_to_vec(), Version::V2)),
        hostile_v2().prop_map(|r| (r.encode_to_vec(), Version::V2)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For every request the reader accepts, in every translation, with the writer limited to
    /// `L` bytes (the default: `L` = `max_decoded_size` ≥ the decoded size `D`): the output
    /// is at most `L` bytes or refused with a size over `L`, and the writer holds at most
    /// `8·max(L, D)` bytes (plus 64 KiB of fixed tables).
    ///
    /// Why 8: the amplifying part of a series (resolved labels, exemplar labels, metadata
    /// strings) is checked before it is written, so the body passes `L` by at most the rest
    /// of one series, which is never longer than its input in v2 → v1 and at most twice it in
    /// v1 → v2 (refs and attached metadata): the body stays under `L + 2D`. Vec doubling
    /// makes that `2(L + 2D)`; v2 output adds the symbols table (interned strings, at most
    /// `L`) and the assembled copy that `finish` returns (at most `L`, doubling again). Without
    /// the limit the same requests reach hundreds of times `D` (see the tests above).
    #[test]
    fn output_is_bounded_by_a_multiple_of_the_input_or_refused(
        (buf, version) in any_request(),
        tight in any::<bool>(),
    ) {
        let mut parsed = Parsed::new();
        prop_assume!(parsed.parse(&buf, version, &Limits::default()).is_ok());
        // Tight: the limit is the decoded size itself; loose: the default 32 MiB.
        let limit = if tight { buf.len().max(1) } else { Limits::default().max_output_bytes };
        for out in [Version::V1, Version::V2] {
            let (written, w) = translate(&buf, version, out, limit);
            match written {
                Ok(body) => prop_assert!(body.len() <= limit, "{} > {limit}", body.len()),
                Err(e) => {
                    prop_assert_eq!(e.limit, limit);
                    prop_assert!(e.size > limit as u64, "{e}");
                }
            }
            let heap = w.heap_bytes();
            prop_assert!(heap <= heap_bound(limit, buf.len()), "{heap} bytes for {} in", buf.len());
        }
    }
}
