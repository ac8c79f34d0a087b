//! Functions that rewrite or order by labels: `label_replace`, `label_join`, `sort*`.

use std::cmp::Ordering;

use regex::Regex;

use super::eval::{err, get, set, Elem};
use super::EvalError;

/// Prometheus 3 accepts any non-empty UTF-8 label name.
fn valid_label_name(n: &str) -> bool {
    !n.is_empty()
}

pub(crate) fn label_replace(
    mut v: Vec<Elem>,
    dst: &str,
    repl: &str,
    src: &str,
    regex: &Regex,
) -> Result<Vec<Elem>, EvalError> {
    if !valid_label_name(dst) {
        return Err(err(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut buf = String::new();
    for e in &mut v {
        let caps = regex.captures(get(&e.labels, src));
        if let Some(caps) = caps {
            buf.clear();
            caps.expand(repl, &mut buf);
            set(&mut e.labels, dst, &buf);
            if dst == "__name__" {
                e.drop_name = false;
            }
        }
    }
    check_unique(&v)?;
    Ok(v)
}

/// Prometheus checks the output of `label_replace`/`label_join` at once (not only when the
/// result leaves the engine), so that an aggregation above cannot merge the collision away.
fn check_unique(v: &[Elem]) -> Result<(), EvalError> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen: foldhash::HashSet<&super::Labels> = foldhash::HashSet::default();
    for e in v {
        if !seen.insert(&e.labels) {
            return Err(err("vector cannot contain metrics with the same labelset"));
        }
    }
    Ok(())
}

pub(crate) fn label_join(
    mut v: Vec<Elem>,
    dst: &str,
    sep: &str,
    srcs: &[String],
) -> Result<Vec<Elem>, EvalError> {
    for s in srcs {
        if !valid_label_name(s) {
            return Err(err(format!(
                "invalid source label name in label_join(): {s}"
            )));
        }
    }
    if !valid_label_name(dst) {
        return Err(err(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let mut buf = String::new();
    for e in &mut v {
        buf.clear();
        for (i, s) in srcs.iter().enumerate() {
            if i > 0 {
                buf.push_str(sep);
            }
            buf.push_str(get(&e.labels, s));
        }
        set(&mut e.labels, dst, &buf);
        if dst == "__name__" {
            e.drop_name = false;
        }
    }
    check_unique(&v)?;
    Ok(v)
}

/// `sort` (ascending) and `sort_desc`; NaNs last either way.
pub(crate) fn sort_by_value(v: &mut [Elem], desc: bool) {
    v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => {
            let o = a.v.partial_cmp(&b.v).unwrap_or(Ordering::Equal);
            if desc {
                o.reverse()
            } else {
                o
            }
        }
    });
}

/// `sort_by_label`: natural order of the named labels' values, then the full label sets.
pub(crate) fn sort_by_label(v: &mut [Elem], names: &[String], desc: bool) {
    v.sort_by(|a, b| by_labels(a, b, names, desc));
}

/// The order `sort_by_label` sorts by: a total one, which the sort requires (it panics on
/// an order it finds inconsistent).
fn by_labels(a: &Elem, b: &Elem, names: &[String], desc: bool) -> Ordering {
    // Different strings can be naturally equal ("01" and "1"): a tie here, decided by the
    // next name or the full label sets.
    let o = names
        .iter()
        .map(|n| natural_cmp(get(&a.labels, n), get(&b.labels, n)))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.labels.cmp(&b.labels));
    if desc {
        o.reverse()
    } else {
        o
    }
}

/// The next run of `s` of digits or of other characters, and the rest.
fn chunk(s: &str) -> (&str, &str) {
    let digit = s.as_bytes().first().is_some_and(u8::is_ascii_digit);
    let end = s
        .bytes()
        .position(|c| c.is_ascii_digit() != digit)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The natural order of `facette.io/natsort` (which Prometheus uses): digit runs compare as
/// integers, other runs as strings, chunk by chunk, a string that runs out first before the
/// other. natsort's own comparison is not an order everywhere: it calls both of two
/// naturally equal strings ("01", "1") less than the other, the empty string neither less
/// nor greater than any, and a digit run past 64 bits a string ("2" followed by 21 zeros
/// below "3" but above "10"). Here those are equal, first, and compared as integers (of any
/// length); every other pair compares as natsort has it.
fn natural_cmp(mut a: &str, mut b: &str) -> Ordering {
    while !a.is_empty() && !b.is_empty() {
        let ((x, ra), (y, rb)) = (chunk(a), chunk(b));
        let digits = |c: &str| c.as_bytes()[0].is_ascii_digit();
        let o = if digits(x) && digits(y) {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if o != Ordering::Equal {
            return o;
        }
        (a, b) = (ra, rb);
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `facette.io/natsort`'s `Compare`, as Prometheus runs it: the reference, which
    /// `natural_cmp` agrees with wherever it is an order.
    fn natsort_less(a: &str, b: &str) -> bool {
        fn chunks(mut s: &str) -> Vec<&str> {
            let mut out = Vec::new();
            while !s.is_empty() {
                let (c, rest) = chunk(s);
                out.push(c);
                s = rest;
            }
            out
        }
        let (ca, cb) = (chunks(a), chunks(b));
        for (i, x) in ca.iter().enumerate() {
            let Some(y) = cb.get(i) else {
                return false;
            };
            if let (Ok(xi), Ok(yi)) = (x.parse::<i64>(), y.parse::<i64>()) {
                if xi != yi {
                    return xi < yi;
                }
            } else if x != y {
                return x < y;
            }
            if i == ca.len() - 1 {
                return true;
            } else if i == cb.len() - 1 {
                return false;
            }
        }
        false
    }

    /// Values where natsort is not an order, and ordinary ones.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "",
                    "0",
                    "00",
                    "1",
                    "01",
                    "1e3",
                    "10",
                    "9",
                    "a",
                    "a1",
                    "a01",
                    "a10",
                    "-",
                    "ü",
                    "a\"b",
                    "2000000000000000000000",
                    "3",
                    "x9y",
                    "x09y"
                ][..]
            )
            .prop_map(str::to_string),
            "[0-9a-c.-]{0,6}",
        ]
    }

    fn elem(job: &str, zone: &str) -> Elem {
        Elem {
            labels: vec![
                ("job".to_string(), job.to_string()),
                ("zone".to_string(), zone.to_string()),
            ],
            v: 0.0,
            drop_name: false,
            h: None,
        }
    }

    proptest! {
        /// `sort_by_label`'s order is total whatever the values (the sort panics otherwise),
        /// and it is natsort's wherever natsort's is an order.
        #[test]
        fn sort_by_label_orders_totally(
            jobs in proptest::collection::vec((value(), value()), 3..40),
            desc in any::<bool>(),
        ) {
            let names = ["job".to_string()];
            let v: Vec<Elem> = jobs.iter().map(|(j, z)| elem(j, z)).collect();
            for a in &v {
                for b in &v {
                    let ab = by_labels(a, b, &names, desc);
                    prop_assert_eq!(ab, by_labels(b, a, &names, desc).reverse());
                    for c in &v {
                        if ab != Ordering::Greater && by_labels(b, c, &names, desc) != Ordering::Greater {
                            prop_assert_ne!(by_labels(a, c, &names, desc), Ordering::Greater);
                        }
                    }
                }
            }
            for (x, _) in &jobs {
                for (y, _) in &jobs {
                    let (lt, gt) = (natsort_less(x, y), natsort_less(y, x));
                    let fits_i64 = |s: &str| !s.bytes().collect::<Vec<_>>()
                        .split(|c| !c.is_ascii_digit()).any(|d| d.len() > 18);
                    if lt != gt && x != y && fits_i64(x) && fits_i64(y) {
                        prop_assert_eq!(natural_cmp(x, y), if lt { Ordering::Less } else { Ordering::Greater });
                    }
                }
            }
            let mut sorted = v;
            sort_by_label(&mut sorted, &names, desc);
        }
    }

    #[test]
    fn naturally_equal_values_and_the_empty_one_sort_without_panicking() {
        let jobs = [
            "1", "", "01", "0", "1e3", "001", "", "10", "9", "a", "1", "01",
        ];
        let mut v: Vec<Elem> = jobs
            .iter()
            .cycle()
            .take(60)
            .enumerate()
            .map(|(i, j)| elem(j, &format!("z{}", 59 - i)))
            .collect();
        sort_by_label(&mut v, &["job".to_string()], false);
        let order: Vec<&str> = v.iter().map(|e| e.labels[0].1.as_str()).collect();
        let first_nine = order.iter().position(|j| *j == "9").unwrap();
        assert!(order[..first_nine]
            .iter()
            .all(|j| ["", "0", "1", "01", "001", "1e3"].contains(j)));
        assert!(
            order.iter().rposition(|j| j.is_empty()).unwrap()
                < order.iter().position(|j| *j == "0").unwrap()
        );
    }
}
