use super::*;

fn exp(schema: i32, pos: &[(i32, f64)]) -> Histogram {
    let mut h = Histogram {
        schema,
        ..Histogram::default()
    };
    h.set_positive(pos);
    h.count = pos.iter().map(|p| p.1).sum();
    h
}

#[test]
fn spans_round_trip_through_pairs() {
    let ps = vec![(-2, 1.0), (-1, 0.0), (3, 2.0), (4, 5.0), (9, 1.0)];
    let (spans, counts) = from_pairs(&ps);
    assert_eq!(
        spans,
        vec![
            Span {
                offset: -2,
                length: 2
            },
            Span {
                offset: 3,
                length: 2
            },
            Span {
                offset: 4,
                length: 1
            }
        ]
    );
    assert_eq!(pairs(&spans, &counts), ps);
}

#[test]
fn adding_reduces_to_the_coarser_schema() {
    // Schema 1 buckets 1..=4 are (1,√2], (√2,2], (2,2√2], (2√2,4]: schema 0 buckets 1 and 2.
    let mut a = exp(1, &[(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]);
    let b = exp(0, &[(1, 10.0)]);
    a.add(&b, false).unwrap();
    assert_eq!(a.schema, 0);
    assert_eq!(a.positive_pairs(), vec![(1, 13.0), (2, 7.0)]);
    assert_eq!(a.count, 20.0);
}

#[test]
fn a_bucket_going_down_is_a_counter_reset_even_across_schemas() {
    let prev = exp(1, &[(1, 1.0), (2, 2.0)]);
    let grew = exp(0, &[(1, 4.0)]);
    assert!(!grew.detect_reset(&prev));
    let shrank = exp(0, &[(1, 2.0), (2, 5.0)]);
    assert!(shrank.detect_reset(&prev));
    // A finer schema than before is always a new counter.
    assert!(exp(2, &[(1, 10.0)]).detect_reset(&exp(1, &[(1, 1.0)])));
}

#[test]
fn quantile_interpolates_exponentially_within_a_bucket() {
    // All 4 observations in (1, 2]: the median is √2, halfway on the log scale.
    let mut h = exp(0, &[(1, 4.0)]);
    h.sum = 6.0;
    assert!((h.quantile(0.5) - 2f64.sqrt()).abs() < 1e-12);
    assert_eq!(h.quantile(1.5), f64::INFINITY);
    assert!((h.fraction(0.0, 2.0) - 1.0).abs() < 1e-12);
    assert!((h.fraction(1.0, 2f64.sqrt()) - 0.5).abs() < 1e-12);
}

#[test]
fn compact_drops_empty_buckets() {
    let mut h = exp(0, &[(0, 1.0), (1, 0.0), (2, 3.0)]);
    h.compact();
    assert_eq!(
        h.positive_spans,
        vec![
            Span {
                offset: 0,
                length: 1
            },
            Span {
                offset: 1,
                length: 1
            }
        ]
    );
    assert_eq!(h.positive, vec![1.0, 3.0]);
}

#[test]
fn custom_buckets_of_different_layouts_add_on_their_common_bounds() {
    let mut a = Histogram {
        schema: CUSTOM_BUCKETS_SCHEMA,
        custom_values: vec![1.0, 5.0, 10.0].into(),
        ..Histogram::default()
    };
    a.set_positive(&[(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]);
    let mut b = Histogram {
        schema: CUSTOM_BUCKETS_SCHEMA,
        custom_values: vec![5.0].into(),
        ..Histogram::default()
    };
    b.set_positive(&[(0, 10.0), (1, 20.0)]);
    a.add(&b, false).unwrap();
    assert_eq!(&a.custom_values[..], &[5.0]);
    assert_eq!(a.positive_pairs(), vec![(0, 13.0), (1, 27.0)]);
}
