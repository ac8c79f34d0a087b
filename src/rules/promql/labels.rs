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
    v.sort_by(|a, b| {
        for n in names {
            let (x, y) = (get(&a.labels, n), get(&b.labels, n));
            if x == y {
                continue;
            }
            // Different strings can be naturally equal ("01" and "1"): a tie here, decided
            // by the next name or the full label sets, keeps the order total.
            let o = if natural_less(x, y) {
                Ordering::Less
            } else if natural_less(y, x) {
                Ordering::Greater
            } else {
                continue;
            };
            return if desc { o.reverse() } else { o };
        }
        let o = a.labels.cmp(&b.labels);
        if desc {
            o.reverse()
        } else {
            o
        }
    });
}

fn chunks(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut digit = None;
    for (i, c) in s.char_indices() {
        let d = c.is_ascii_digit();
        if digit.is_some_and(|p| p != d) {
            out.push(&s[start..i]);
            start = i;
        }
        digit = Some(d);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// The natural order of `facette.io/natsort` (which Prometheus uses): digit runs compare as
/// integers, other runs as strings.
fn natural_less(a: &str, b: &str) -> bool {
    let (ca, cb) = (chunks(a), chunks(b));
    for (i, x) in ca.iter().enumerate() {
        let Some(y) = cb.get(i) else {
            return false;
        };
        let (xi, yi) = (x.parse::<i64>(), y.parse::<i64>());
        if let (Ok(xi), Ok(yi)) = (xi, yi) {
            if xi == yi {
                if i == ca.len() - 1 {
                    return true;
                } else if i == cb.len() - 1 {
                    return false;
                }
                continue;
            }
            return xi < yi;
        }
        if x == y {
            if i == ca.len() - 1 {
                return true;
            } else if i == cb.len() - 1 {
                return false;
            }
            continue;
        }
        return x < y;
    }
    false
}
