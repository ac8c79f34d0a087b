//! The plan: every selector the loaded rules read, indexed so that a passing series costs one
//! hash lookup when no rule wants it.
//!
//! Selectors with a `__name__="..."` matcher (nearly all of them: `rate(foo[5m])`) are indexed
//! by that name. Selectors without one (`{job="api"}`, `{__name__=~"http_.*"}`) cannot be
//! indexed and are checked against every admitted series; README says so, since each of them
//! costs a matcher evaluation per series.

use std::collections::HashMap;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher, Matchers};

use super::file::RuleGroup;
use crate::wire::short_eq;

/// One selector of one group, with how long its series must be kept.
#[derive(Debug, Clone)]
struct Selector {
    matchers: Matchers,
    /// History the expression reads, plus the group's query offset and one interval of slack
    /// for an evaluation that runs late.
    retention_ms: i64,
    /// The group says `forward_inputs: false`.
    withhold: bool,
}

/// What the plan wants done with one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Keep samples newer than the series' newest minus this.
    pub retention_ms: i64,
    /// Do not forward the raw series once buffered.
    pub withhold: bool,
}

/// Selectors of every loaded group; rebuilt on each config load, immutable after.
#[derive(Debug, Default)]
pub struct Plan {
    selectors: Vec<Selector>,
    /// Selectors by the metric name they require, keyed by its bytes: the wire's name is
    /// looked up as it comes, without a UTF-8 check.
    by_name: HashMap<Box<[u8]>, Vec<u32>, foldhash::fast::RandomState>,
    /// A 256-bit filter over the indexed names ([`name_bit`]): most series are read by no
    /// rule, and this turns them away before the name is hashed.
    name_bits: [u64; 4],
    unnamed: Vec<u32>,
    max_retention_ms: i64,
}

impl Plan {
    /// Build from groups; `interval` and `offset` are the global defaults for groups that set
    /// none.
    pub fn new<'a>(
        groups: impl IntoIterator<Item = &'a RuleGroup>,
        interval: Duration,
        offset: Duration,
    ) -> Plan {
        let mut plan = Plan::default();
        for g in groups {
            let slack = g.interval.unwrap_or(interval).as_millis() as i64
                + g.query_offset.unwrap_or(offset).as_millis() as i64;
            for r in &g.rules {
                for need in r.compiled.needs() {
                    plan.push(Selector {
                        matchers: need.matchers.clone(),
                        retention_ms: need.history_ms.saturating_add(slack),
                        withhold: !g.forward_inputs,
                    });
                }
            }
        }
        plan
    }

    /// Index `s`. A selector naming its metric is checked without that matcher (the index
    /// lookup has settled it), and a selector equal to one already held (the same
    /// `rate(foo[5m])` in several rules) is merged into it: a series is matched once per
    /// distinct selector, with the longest retention and withheld if either withholds.
    fn push(&mut self, mut s: Selector) {
        self.max_retention_ms = self.max_retention_ms.max(s.retention_ms);
        let name = name_equality(&s.matchers).map(str::to_owned);
        let list = match &name {
            Some(name) => {
                let at = s.matchers.matchers.iter().position(|m| {
                    m.name == "__name__" && matches!(m.op, MatchOp::Equal) && m.value == *name
                });
                if let Some(at) = at {
                    s.matchers.matchers.remove(at);
                }
                let bit = name_bit(name.as_bytes());
                self.name_bits[bit / 64] |= 1 << (bit % 64);
                self.by_name.entry(name.as_bytes().into()).or_default()
            }
            None => &mut self.unnamed,
        };
        let selectors = &mut self.selectors;
        if let Some(&j) = list
            .iter()
            .find(|&&j| selectors[j as usize].matchers == s.matchers)
        {
            let held = &mut selectors[j as usize];
            held.retention_ms = held.retention_ms.max(s.retention_ms);
            held.withhold |= s.withhold;
            return;
        }
        list.push(selectors.len() as u32);
        selectors.push(s);
    }

    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    pub fn selector_count(&self) -> usize {
        self.selectors.len()
    }

    /// The longest retention of any selector: what a series idle for longer no longer needs.
    pub fn max_retention_ms(&self) -> i64 {
        self.max_retention_ms
    }

    /// Which selectors want this series (labels as byte pairs, any order), merged: the longest
    /// retention, and withheld if any matching group withholds its inputs. `None`: no rule
    /// reads it, and it is not buffered.
    pub fn match_series<'a, I>(&self, name: Option<&[u8]>, labels: I) -> Option<Match>
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let named = name
            .filter(|n| {
                let bit = name_bit(n);
                self.name_bits[bit / 64] & (1 << (bit % 64)) != 0
            })
            .and_then(|n| self.by_name.get(n))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if named.is_empty() && self.unnamed.is_empty() {
            return None;
        }
        let mut out: Option<Match> = None;
        for &i in named.iter().chain(&self.unnamed) {
            let s = &self.selectors[i as usize];
            if matches_bytes(&s.matchers, labels.clone()) {
                let m = out.get_or_insert(Match {
                    retention_ms: 0,
                    withhold: false,
                });
                m.retention_ms = m.retention_ms.max(s.retention_ms);
                m.withhold |= s.withhold;
            }
        }
        out
    }
}

/// Where a metric name falls in [`Plan`]'s name filter: its length and last byte, which
/// differ between most names and cost nothing to read.
#[inline]
fn name_bit(name: &[u8]) -> usize {
    (name.len().wrapping_mul(37) ^ usize::from(name.last().copied().unwrap_or(0))) & 255
}

/// `promql::matches` over wire bytes: equality matchers compare bytes, only regex matchers
/// need the value as `&str` (the pipeline validated it as UTF-8 already).
fn matches_bytes<'a, I>(m: &Matchers, labels: I) -> bool
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let one = |mt: &Matcher| {
        let v = labels
            .clone()
            .find(|(n, _)| short_eq(n, mt.name.as_bytes()))
            .map_or(&b""[..], |(_, v)| v);
        match &mt.op {
            MatchOp::Equal => short_eq(v, mt.value.as_bytes()),
            MatchOp::NotEqual => !short_eq(v, mt.value.as_bytes()),
            MatchOp::Re(_) | MatchOp::NotRe(_) => mt.is_match(std::str::from_utf8(v).unwrap_or("")),
        }
    };
    m.matchers.iter().all(one)
        && (m.or_matchers.is_empty() || m.or_matchers.iter().any(|g| g.iter().all(one)))
}

/// The metric name a selector requires exactly, if it does (and has no `or` alternatives,
/// which may name other metrics).
pub fn name_equality(m: &Matchers) -> Option<&str> {
    if !m.or_matchers.is_empty() {
        return None;
    }
    m.matchers
        .iter()
        .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
        .map(|m| m.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(
        name: Option<&str>,
        extra: &[(&str, &str)],
        retention_ms: i64,
        withhold: bool,
    ) -> Selector {
        let mut ms = Vec::new();
        if let Some(n) = name {
            ms.push(Matcher::new(MatchOp::Equal, "__name__", n));
        }
        for (k, v) in extra {
            ms.push(Matcher::new(MatchOp::Equal, k, v));
        }
        Selector {
            matchers: Matchers::new(ms),
            retention_ms,
            withhold,
        }
    }

    fn labels(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static [u8], &'static [u8])> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn indexed_by_name_and_merged() {
        let mut p = Plan::default();
        p.push(sel(Some("up"), &[], 60_000, false));
        p.push(sel(Some("up"), &[("job", "a")], 600_000, true));
        p.push(sel(Some("other"), &[], 1, false));
        assert_eq!(p.max_retention_ms(), 600_000);
        let a = labels(&[("__name__", "up"), ("job", "a")]);
        let b = labels(&[("__name__", "up"), ("job", "b")]);
        let c = labels(&[("__name__", "down"), ("job", "a")]);
        let m = |l: &Vec<(&'static [u8], &'static [u8])>| {
            let name = l.iter().find(|(n, _)| *n == b"__name__").map(|(_, v)| *v);
            p.match_series(name, l.iter().copied())
        };
        assert_eq!(
            m(&a),
            Some(Match {
                retention_ms: 600_000,
                withhold: true
            })
        );
        assert_eq!(
            m(&b),
            Some(Match {
                retention_ms: 60_000,
                withhold: false
            })
        );
        assert_eq!(m(&c), None);
    }

    #[test]
    fn byte_matching_agrees_with_the_engine() {
        use regex::Regex;
        let re = |s: &str| Regex::new(&format!("^(?:{s})$")).unwrap();
        let matchers = [
            Matcher::new(MatchOp::Equal, "code", "200"),
            Matcher::new(MatchOp::NotEqual, "code", "200"),
            Matcher::new(MatchOp::Re(re("5..")), "code", "5.."),
            Matcher::new(MatchOp::NotRe(re("5..")), "code", "5.."),
            Matcher::new(MatchOp::Equal, "missing", ""),
            Matcher::new(MatchOp::NotEqual, "missing", ""),
            Matcher::new(MatchOp::Re(re(".*")), "missing", ".*"),
        ];
        let sets = [
            labels(&[("__name__", "x"), ("code", "200")]),
            labels(&[("__name__", "x"), ("code", "503")]),
            labels(&[("__name__", "x")]),
        ];
        for m in &matchers {
            let ms = Matchers::one(m.clone());
            for l in &sets {
                let strs = l.iter().map(|(n, v)| {
                    (
                        std::str::from_utf8(n).unwrap(),
                        std::str::from_utf8(v).unwrap(),
                    )
                });
                assert_eq!(
                    matches_bytes(&ms, l.iter().copied()),
                    crate::rules::promql::matches(&ms, strs),
                    "{m:?} on {l:?}"
                );
            }
        }
    }

    #[test]
    fn unnamed_selectors_see_every_series() {
        let mut p = Plan::default();
        p.push(sel(None, &[("job", "a")], 5, false));
        let a = labels(&[("__name__", "anything"), ("job", "a")]);
        assert!(p
            .match_series(Some(b"anything"), a.iter().copied())
            .is_some());
        let b = labels(&[("job", "b")]);
        assert!(p.match_series(None, b.iter().copied()).is_none());
    }

    proptest::proptest! {
        /// The inline comparison (`wire::short_eq`) agrees with `==` at every length, on
        /// equal slices and on slices differing in one byte anywhere.
        #[test]
        fn short_eq_is_slice_equality(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            flip in proptest::prelude::any::<proptest::sample::Index>(),
            other in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            proptest::prop_assert!(short_eq(&a, &a.clone()));
            proptest::prop_assert_eq!(short_eq(&a, &other), a == other);
            if !a.is_empty() {
                let mut b = a.clone();
                let i = flip.index(b.len());
                b[i] ^= 1;
                proptest::prop_assert!(!short_eq(&a, &b));
            }
        }
    }

    #[test]
    fn names_no_rule_reads_pass_the_filter_or_the_map_but_never_match() {
        let mut plan = Plan::default();
        plan.push(sel(Some("http_requests_total"), &[], 1000, false));
        // Same length and last byte as the indexed name: through the filter, missed by the map.
        let twin = labels(&[("__name__", "http_requests_tota1"), ("job", "a")]);
        let twin_l = labels(&[("__name__", "http_requests_totall")]);
        assert_eq!(
            plan.match_series(Some(b"http_requests_tota1"), twin.into_iter()),
            None
        );
        assert_eq!(
            plan.match_series(Some(b"http_requests_totall"), twin_l.into_iter()),
            None
        );
        let hit = labels(&[("__name__", "http_requests_total")]);
        assert!(plan
            .match_series(Some(b"http_requests_total"), hit.into_iter())
            .is_some());
    }

    #[test]
    fn equal_selectors_are_held_once_with_the_longest_retention_and_any_withholding() {
        let mut plan = Plan::default();
        plan.push(sel(Some("req"), &[("job", "a")], 1000, false));
        plan.push(sel(Some("req"), &[("job", "a")], 5000, true));
        plan.push(sel(Some("req"), &[("job", "b")], 2000, false));
        assert_eq!(plan.selector_count(), 2);
        let a = labels(&[("__name__", "req"), ("job", "a")]);
        assert_eq!(
            plan.match_series(Some(b"req"), a.into_iter()),
            Some(Match {
                retention_ms: 5000,
                withhold: true
            })
        );
        // The name matcher is settled by the index; the others are still checked.
        let c = labels(&[("__name__", "req"), ("job", "c")]);
        assert_eq!(plan.match_series(Some(b"req"), c.into_iter()), None);
    }
}
