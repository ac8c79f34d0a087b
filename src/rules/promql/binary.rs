//! Binary operators: scalar/scalar, vector/scalar and vector/vector with `on`/`ignoring`,
//! `group_left`/`group_right`, `bool`, and the set operators. Vectors are matched through a
//! hash of their matching labels, so matching is linear in the input.

use std::hash::{BuildHasher, Hasher};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::compile::{BinOp, Card, Matching};
use super::eval::{err, get, set, Elem, Val};
use super::{EvalError, Labels};

pub(crate) fn eval(
    op: BinOp,
    lhs: Val,
    rhs: Val,
    matching: &Matching,
    return_bool: bool,
) -> Result<Val, EvalError> {
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(scalar_op(op, l, r))),
        (Val::Vector(l), Val::Scalar(r)) => {
            Ok(Val::Vector(vector_scalar(op, l, r, false, return_bool)))
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            Ok(Val::Vector(vector_scalar(op, r, l, true, return_bool)))
        }
        (Val::Vector(l), Val::Vector(r)) => match op {
            BinOp::And => Ok(Val::Vector(and(l, r, matching))),
            BinOp::Or => Ok(Val::Vector(or(l, r, matching))),
            BinOp::Unless => Ok(Val::Vector(unless(l, r, matching))),
            _ => vector_vector(op, l, r, matching, return_bool).map(Val::Vector),
        },
        (l, r) => Err(err(format!(
            "binary operator between {} and {}",
            l.kind(),
            r.kind()
        ))),
    }
}

pub(crate) fn drops_name(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Pow | BinOp::Atan2
    )
}

/// Two series of the "one" side of a match with the same matching labels (Prometheus's error).
pub(crate) fn duplicate_on_one_side(
    a: &Labels,
    b: &Labels,
    m: &Matching,
    swapped: bool,
) -> EvalError {
    let side = if swapped { "left" } else { "right" };
    err(format!(
        "found duplicate series for the match group {} on the {side} hand-side of the \
         operation: [{}, {}];many-to-many matching not allowed: matching labels must be \
         unique on one side",
        fmt_labels(&match_labels(a, m)),
        fmt_labels(a),
        fmt_labels(b),
    ))
}

fn b2f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Go's `math.Mod`: the sign follows the dividend, like Rust's `%` on floats.
fn arith(op: BinOp, l: f64, r: f64) -> f64 {
    match op {
        BinOp::Add => l + r,
        BinOp::Sub => l - r,
        BinOp::Mul => l * r,
        BinOp::Div => l / r,
        BinOp::Mod => l % r,
        BinOp::Pow => l.powf(r),
        BinOp::Atan2 => l.atan2(r),
        _ => f64::NAN,
    }
}

fn compare(op: BinOp, l: f64, r: f64) -> bool {
    match op {
        BinOp::Eq => l == r,
        BinOp::Ne => l != r,
        BinOp::Gt => l > r,
        BinOp::Lt => l < r,
        BinOp::Ge => l >= r,
        BinOp::Le => l <= r,
        _ => false,
    }
}

fn scalar_op(op: BinOp, l: f64, r: f64) -> f64 {
    if op.is_comparison() {
        b2f(compare(op, l, r))
    } else {
        arith(op, l, r)
    }
}

/// Returns the value and whether the element is kept (`vectorElemBinop` for floats).
pub(crate) fn elem_op(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    if op.is_trim() {
        // Trimming is defined on histograms only: two floats are dropped (with an info).
        return (l, false);
    }
    if op.is_comparison() {
        (l, compare(op, l, r))
    } else {
        (arith(op, l, r), true)
    }
}

fn vector_scalar(op: BinOp, vec: Vec<Elem>, s: f64, swap: bool, return_bool: bool) -> Vec<Elem> {
    let mut out = Vec::with_capacity(vec.len());
    for mut e in vec {
        let (l, r) = if swap { (s, e.v) } else { (e.v, s) };
        let (mut v, mut keep) = elem_op(op, l, r);
        // A comparison keeps the vector's value even when the scalar is on the left.
        if op.is_comparison() && swap {
            v = r;
        }
        if return_bool {
            v = b2f(keep);
            keep = true;
        }
        if keep {
            e.v = v;
            if drops_name(op) || return_bool {
                e.drop_name = true;
            }
            out.push(e);
        }
    }
    out
}

/// A hash of the labels that take part in matching: the `on` labels, or all but `__name__`
/// and the `ignoring` labels. A 64-bit collision between two distinct label sets of one
/// query is negligible (about 1e-10 for 100k series).
pub(crate) fn signature(labels: &Labels, m: &Matching) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    for (n, v) in labels {
        let used = if m.on {
            m.labels.binary_search(n).is_ok()
        } else {
            n != "__name__" && m.labels.binary_search(n).is_err()
        };
        if used {
            h.write(n.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
    }
    h.finish()
}

fn and(l: Vec<Elem>, r: Vec<Elem>, m: &Matching) -> Vec<Elem> {
    if l.is_empty() || r.is_empty() {
        return Vec::new();
    }
    let right: HashSet<u64> = r.iter().map(|e| signature(&e.labels, m)).collect();
    l.into_iter()
        .filter(|e| right.contains(&signature(&e.labels, m)))
        .collect()
}

fn or(mut l: Vec<Elem>, r: Vec<Elem>, m: &Matching) -> Vec<Elem> {
    if l.is_empty() {
        return r;
    }
    if r.is_empty() {
        return l;
    }
    let left: HashSet<u64> = l.iter().map(|e| signature(&e.labels, m)).collect();
    l.extend(
        r.into_iter()
            .filter(|e| !left.contains(&signature(&e.labels, m))),
    );
    l
}

fn unless(l: Vec<Elem>, r: Vec<Elem>, m: &Matching) -> Vec<Elem> {
    if l.is_empty() || r.is_empty() {
        return l;
    }
    let right: HashSet<u64> = r.iter().map(|e| signature(&e.labels, m)).collect();
    l.into_iter()
        .filter(|e| !right.contains(&signature(&e.labels, m)))
        .collect()
}

fn fmt_labels(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn match_labels(l: &Labels, m: &Matching) -> Labels {
    l.iter()
        .filter(|(n, _)| {
            if m.on {
                m.labels.binary_search(n).is_ok()
            } else {
                n != "__name__" && m.labels.binary_search(n).is_err()
            }
        })
        .cloned()
        .collect()
}

/// `VectorBinop`: one-to-one and many-to-one matching (one-to-many by swapping sides).
fn vector_vector(
    op: BinOp,
    lhs: Vec<Elem>,
    rhs: Vec<Elem>,
    m: &Matching,
    return_bool: bool,
) -> Result<Vec<Elem>, EvalError> {
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    let swapped = m.card == Card::OneToMany;
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };

    let mut one_by_sig: HashMap<u64, usize> = HashMap::with_capacity(one.len());
    for (i, e) in one.iter().enumerate() {
        let sig = signature(&e.labels, m);
        if let Some(&j) = one_by_sig.get(&sig) {
            return Err(duplicate_on_one_side(&e.labels, &one[j].labels, m, swapped));
        }
        one_by_sig.insert(sig, i);
    }

    // Per matched signature: for one-to-one, existence; for many-to-one, the hashes of the
    // output label sets already produced.
    let mut matched: HashMap<u64, HashSet<u64>> = HashMap::new();
    let mut out = Vec::new();
    for ls in many {
        let sig = signature(&ls.labels, m);
        let Some(&ri) = one_by_sig.get(&sig) else {
            continue;
        };
        let rs = &one[ri];
        // Two series of one side matching one of the other is an error even when the
        // comparison would filter them out.
        if m.card == Card::OneToOne && matched.insert(sig, HashSet::new()).is_some() {
            return Err(err(
                "multiple matches for labels: many-to-one matching must be explicit \
                 (group_left/group_right)",
            ));
        }
        let (fl, fr) = if swapped { (rs.v, ls.v) } else { (ls.v, rs.v) };
        let (mut v, keep) = elem_op(op, fl, fr);
        if return_bool {
            v = b2f(keep);
        } else if !keep {
            continue;
        }
        let labels = result_labels(ls.labels, &rs.labels, op, m);
        if m.card != Card::OneToOne {
            let h = foldhash::fast::FixedState::with_seed(1).hash_one(&labels);
            if !matched.entry(sig).or_default().insert(h) {
                return Err(err(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
        }
        out.push(Elem {
            h: None,
            labels,
            v,
            drop_name: return_bool,
        });
    }
    Ok(out)
}

/// `resultMetric`: the "many" side's labels, without the name for arithmetic, reduced to
/// the matching labels for one-to-one matching, plus the `group_x` labels of the "one" side.
pub(crate) fn result_labels(mut labels: Labels, one: &Labels, op: BinOp, m: &Matching) -> Labels {
    labels.retain(|(n, _)| {
        if drops_name(op) && n == "__name__" {
            return false;
        }
        if m.card == Card::OneToOne {
            let listed = m.labels.binary_search(n).is_ok();
            return if m.on { listed } else { !listed };
        }
        true
    });
    for name in &m.include {
        let v = get(one, name).to_string();
        set(&mut labels, name, &v);
    }
    labels
}
