//! Running a rule list over one series, modelled on Prometheus's `labels.Builder`: the
//! original labels stay borrowed (`base`), rules record what they set (`add`, in the order
//! set) and delete (`del`); the result is materialised, sorted by name, only if something
//! changed. A series no rule touches costs the lookups and regex matches, and no allocation.

use md5::{Digest, Md5};

use super::prefilter::bytes_eq;
use super::rule::{is_valid_label_name, Action, Rule, RuleSet};
use crate::series::OwnedLabels;

/// What relabeling did to one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Relabeled {
    /// The labels are as they came (the series keeps its raw bytes).
    Unchanged,
    /// New labels, sorted by name, no empty values.
    Changed(OwnedLabels),
    /// A `keep`/`drop`/`keepequal`/`dropequal` rule dropped it, or no label is left.
    Dropped,
}

/// Buffers reused from series to series on one thread.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The joined source label values.
    val: Vec<u8>,
    /// Expanded target and replacement.
    target: Vec<u8>,
    res: Vec<u8>,
    add: Vec<(Vec<u8>, Vec<u8>)>,
    del: Vec<Vec<u8>>,
    /// `labelmap`/`labeldrop`/`labelkeep`: what to set or delete once the snapshot is walked.
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    /// The encoded labels the memo hashes (`stage`).
    pub(super) key: Vec<u8>,
    /// The memo's answer for each series of the current request (`stage::lookup`).
    pub(super) looked: Vec<super::stage::Looked>,
    /// The memo's table for the current request.
    pub(super) table: Option<std::sync::Arc<super::memo::Table>>,
}

impl Scratch {
    /// Let go of the per-series table when an outsized request grew it past `bytes`.
    pub fn release_above(&mut self, bytes: usize) {
        if self.looked.capacity() * std::mem::size_of::<super::stage::Looked>() > bytes {
            self.looked = Vec::new();
        }
    }
}

/// Apply `rules` in order to the labels yielded by `base`.
pub fn process<'a, I>(rules: &RuleSet, base: I, s: &mut Scratch) -> Relabeled
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    s.add.clear();
    s.del.clear();
    let mut vals: [&'a [u8]; FAST_NAMES] = [&[]; FAST_NAMES];
    let mut present = 0u64;
    let fast = rules.names.len() <= FAST_NAMES
        && resolve(&rules.names, base.clone(), &mut vals, &mut present);
    let vals = fast.then_some(&vals[..]);
    for rule in rules.iter() {
        if let (Some(v), true) = (vals, s.add.is_empty() && s.del.is_empty()) {
            match quick(rule, v, present) {
                Quick::Unchanged => continue,
                Quick::Drop => return Relabeled::Dropped,
                Quick::Apply => {}
            }
        }
        if !apply(rule, base.clone(), s, vals) {
            return Relabeled::Dropped;
        }
    }
    if s.add.is_empty() && s.del.is_empty() {
        return Relabeled::Unchanged;
    }
    let mut out: OwnedLabels = base
        .clone()
        .filter(|(n, _)| !s.del.iter().any(|d| d == n) && !s.add.iter().any(|(a, _)| a == n))
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    out.append(&mut s.add);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.is_empty() {
        // Prometheus's sender drops a series relabeled to no labels at all.
        return Relabeled::Dropped;
    }
    let same = out.len() == base.clone().count()
        && out
            .iter()
            .zip(base)
            .all(|((n, v), (bn, bv))| n == bn && v == bv);
    if same {
        Relabeled::Unchanged
    } else {
        Relabeled::Changed(out)
    }
}

/// What a rule does to a series nothing has changed yet, when that is decided by its
/// single source value alone (the common case on traffic the rules leave alone).
enum Quick {
    Unchanged,
    Drop,
    /// Needs the full rule (it may change the labels).
    Apply,
}

#[inline]
fn quick(rule: &Rule, vals: &[&[u8]], present: u64) -> Quick {
    let [i] = rule.source_idx.as_slice() else {
        return Quick::Apply;
    };
    let val = vals[*i];
    let keep = |k: bool| if k { Quick::Unchanged } else { Quick::Drop };
    match rule.action {
        Action::Drop => keep(!rule.regex.is_match(val)),
        Action::Keep => keep(rule.regex.is_match(val)),
        Action::KeepEqual => keep(bytes_eq(vals[rule.target_idx], val)),
        Action::DropEqual => keep(!bytes_eq(vals[rule.target_idx], val)),
        // No match, no replacement.
        Action::Replace if !rule.regex_default && !rule.regex.is_match(val) => Quick::Unchanged,
        // Copying an absent label onto an absent target: nothing to delete.
        Action::Replace
            if val.is_empty() && rule.copies_value() && present & (1 << rule.target_idx) == 0 =>
        {
            Quick::Unchanged
        }
        _ => Quick::Apply,
    }
}

/// Most distinct names a rule list may read and still take the one-pass lookup.
const FAST_NAMES: usize = 32; // also the width of the presence mask (u64 holds it)

/// Byte order, settling most comparisons on the first byte without a `memcmp` call.
#[inline]
fn cmp_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// The values of `names` (sorted) in `base`, by one merge pass; `false` when `base` is not
/// sorted by name (then the rules look each label up instead).
fn resolve<'a, I>(names: &[Vec<u8>], base: I, vals: &mut [&'a [u8]], present: &mut u64) -> bool
where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut j = 0;
    let mut prev: Option<&[u8]> = None;
    for (n, v) in base {
        if prev.is_some_and(|p| cmp_bytes(p, n) != std::cmp::Ordering::Less) {
            return false;
        }
        prev = Some(n);
        while j < names.len() && cmp_bytes(&names[j], n) == std::cmp::Ordering::Less {
            j += 1;
        }
        if j < names.len() && bytes_eq(&names[j], n) {
            vals[j] = v;
            *present |= 1 << j;
            j += 1;
        }
    }
    true
}

/// `lb.Get(name)` appended to `out`.
fn get_into<'a, I>(
    add: &[(Vec<u8>, Vec<u8>)],
    del: &[Vec<u8>],
    base: I,
    name: &[u8],
    out: &mut Vec<u8>,
) where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    // Del removes from add but Set does not remove from del: add first.
    if let Some((_, v)) = add.iter().find(|(n, _)| bytes_eq(n, name)) {
        out.extend_from_slice(v);
        return;
    }
    if del.iter().any(|d| bytes_eq(d, name)) {
        return;
    }
    let mut base = base;
    if let Some((_, v)) = base.find(|(n, _)| bytes_eq(n, name)) {
        out.extend_from_slice(v);
    }
}

fn del<'a, I>(
    s_add: &mut Vec<(Vec<u8>, Vec<u8>)>,
    s_del: &mut Vec<Vec<u8>>,
    mut base: I,
    name: &[u8],
) where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    s_add.retain(|(n, _)| n != name);
    // Deleting a label the series never had is invisible; not recording it keeps the
    // series "unchanged" (and its raw bytes).
    if !s_del.iter().any(|d| d == name) && base.any(|(n, _)| n == name) {
        s_del.push(name.to_vec());
    }
}

fn set<'a, I>(
    s_add: &mut Vec<(Vec<u8>, Vec<u8>)>,
    s_del: &mut Vec<Vec<u8>>,
    base: I,
    name: &[u8],
    value: &[u8],
) where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    if value.is_empty() {
        // Empty labels are the same as missing labels.
        return del(s_add, s_del, base, name);
    }
    if let Some(a) = s_add.iter_mut().find(|(n, _)| n == name) {
        if a.1 != value {
            a.1.clear();
            a.1.extend_from_slice(value);
        }
        return;
    }
    s_add.push((name.to_vec(), value.to_vec()));
}

/// One rule; `false` drops the series. `vals` holds the values of the set's names as the
/// series came, usable while no rule has set or deleted anything yet.
fn apply<'a, I>(rule: &Rule, base: I, s: &mut Scratch, vals: Option<&[&'a [u8]]>) -> bool
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let Scratch {
        val,
        target,
        res,
        add,
        del: dl,
        pending,
        key: _,
        looked: _,
        table: _,
    } = s;
    let vals = vals.filter(|_| add.is_empty() && dl.is_empty());
    let val: &[u8] = match (vals, rule.source_idx.as_slice()) {
        // One source label, nothing changed yet: its value as it is, no copy.
        (Some(v), [i]) => v[*i],
        _ => {
            val.clear();
            for (i, name) in rule.source_labels.iter().enumerate() {
                if i > 0 {
                    val.extend_from_slice(&rule.separator);
                }
                match vals {
                    Some(v) => val.extend_from_slice(v[rule.source_idx[i]]),
                    None => get_into(add, dl, base.clone(), name, val),
                }
            }
            val
        }
    };
    match rule.action {
        Action::Drop => return !rule.regex.is_match(val),
        Action::Keep => return rule.regex.is_match(val),
        Action::DropEqual | Action::KeepEqual => {
            target.clear();
            match vals {
                Some(v) => target.extend_from_slice(v[rule.target_idx]),
                None => get_into(add, dl, base, &rule.target_label, target),
            }
            let equal = target.as_slice() == val;
            return equal == (rule.action == Action::KeepEqual);
        }
        Action::Replace => {
            target.clear();
            res.clear();
            // `.` does not match a newline (in Go's regexp either): a multi-line value does
            // not match the default regex, and takes the regex path to find that out.
            if rule.regex_default && !val.contains(&b'\n') {
                let group = |i: usize| (i <= 1).then_some(val);
                rule.target.expand_with(group, target);
                rule.replacement.expand_with(group, res);
            } else {
                // `is_match` first: `captures` allocates even when nothing matches.
                if !rule.regex.is_match(val) {
                    return true; // no match, no replacement
                }
                let Some(caps) = rule.regex.regex.captures(val) else {
                    return true;
                };
                rule.target.expand(&caps, target);
                rule.replacement.expand(&caps, res);
            }
            if !is_valid_label_name(target) {
                return true;
            }
            if res.is_empty() {
                del(add, dl, base, target);
            } else {
                set(add, dl, base, target, res);
            }
        }
        Action::Lowercase | Action::Uppercase => {
            res.clear();
            change_case(val, rule.action == Action::Uppercase, res);
            set(add, dl, base, &rule.target_label, res);
        }
        Action::HashMod => {
            let sum = Md5::digest(val);
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&sum[8..16]);
            // The last 8 bytes, big-endian, as Prometheus has always done.
            let m = u64::from_be_bytes(tail) % rule.modulus;
            res.clear();
            res.extend_from_slice(m.to_string().as_bytes());
            set(add, dl, base, &rule.target_label, res);
        }
        Action::LabelMap | Action::LabelDrop | Action::LabelKeep => {
            // Walk a snapshot (labels untouched so far, then those set, in order), acting
            // afterwards: what a rule sets or deletes does not change its own walk.
            pending.clear();
            for (name, value) in base
                .clone()
                .filter(|(n, _)| !dl.iter().any(|d| d == n) && !add.iter().any(|(a, _)| a == n))
            {
                visit(rule, name, value, pending);
            }
            for (name, value) in add.iter() {
                visit(rule, name, value, pending);
            }
            for (name, value) in pending.drain(..) {
                if rule.action == Action::LabelMap {
                    set(add, dl, base.clone(), &name, &value);
                } else {
                    del(add, dl, base.clone(), &name);
                }
            }
        }
    }
    true
}

/// One label of a `labelmap`/`labeldrop`/`labelkeep` walk: queue what to set or delete.
fn visit(rule: &Rule, name: &[u8], value: &[u8], pending: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    match rule.action {
        Action::LabelMap => {
            if !rule.regex.is_match(name) {
                return;
            }
            if let Some(caps) = rule.regex.regex.captures(name) {
                let mut new_name = Vec::new();
                rule.replacement.expand(&caps, &mut new_name);
                pending.push((new_name, value.to_vec()));
            }
        }
        Action::LabelDrop => {
            if rule.regex.is_match(name) {
                pending.push((name.to_vec(), Vec::new()));
            }
        }
        _ => {
            if !rule.regex.is_match(name) {
                pending.push((name.to_vec(), Vec::new()));
            }
        }
    }
}

/// Go's `strings.ToLower`/`ToUpper`: one rune to one rune (the simple case mapping). Rust's
/// full mapping can expand a character ('ß' → "SS", 'İ' → "i̇"); where it does, Go keeps the
/// character (upper) or takes the plain letter (lower, 'İ' → 'i').
fn change_case(val: &[u8], upper: bool, out: &mut Vec<u8>) {
    if val.is_ascii() {
        out.extend(val.iter().map(|b| {
            if upper {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            }
        }));
        return;
    }
    let text = String::from_utf8_lossy(val);
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let mapped: char = if upper {
            let mut m = c.to_uppercase();
            match (m.next(), m.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        } else {
            c.to_lowercase().next().unwrap_or(c)
        };
        out.extend_from_slice(mapped.encode_utf8(&mut buf).as_bytes());
    }
}
