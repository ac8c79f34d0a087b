//! A cheap test in front of an anchored regex: most relabel regexes are literals, alternations
//! of literals, or a literal prefix followed by anything (`debug_.*`, `__meta_(.*)`). Running
//! the regex engine costs tens of nanoseconds per call even when it fails at once; comparing a
//! few bytes costs almost nothing. On the hot path a rule usually does not match, so the
//! common answer comes from here.

use regex::bytes::Regex;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// An anchored (`^(?:…)$`) regex with what its literals tell about it.
#[derive(Debug, Clone)]
pub struct Anchored {
    pub regex: Regex,
    filter: Filter,
}

#[derive(Debug, Clone)]
enum Filter {
    /// The regex matches exactly these strings.
    Exact(Vec<Vec<u8>>),
    /// Every match starts with one of these.
    Prefixes(Vec<Vec<u8>>),
    /// `.*` or `.+` (and their parenthesised forms): anything without a newline, at least
    /// this long.
    AnyLine(usize),
    None,
}

/// Slice equality that settles most mismatches on the first byte, without a `memcmp` call
/// (label names and values are short, and `memcmp` dominated the relabel profile).
#[inline]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.first() == b.first() && a.last() == b.last() && a == b
}

#[inline]
fn starts_with(hay: &[u8], prefix: &[u8]) -> bool {
    hay.len() >= prefix.len() && bytes_eq(&hay[..prefix.len()], prefix)
}

impl Anchored {
    /// `pattern` as written (unanchored); `regex` is its compiled `^(?:pattern)$`.
    pub fn new(pattern: &str, regex: Regex) -> Anchored {
        Anchored {
            filter: filter(pattern),
            regex,
        }
    }

    #[inline]
    pub fn is_match(&self, hay: &[u8]) -> bool {
        match &self.filter {
            Filter::Exact(set) => set.iter().any(|l| bytes_eq(l, hay)),
            Filter::Prefixes(set) => {
                set.iter().any(|p| starts_with(hay, p)) && self.regex.is_match(hay)
            }
            Filter::AnyLine(min) => hay.len() >= *min && !hay.contains(&b'\n'),
            Filter::None => self.regex.is_match(hay),
        }
    }
}

fn filter(pattern: &str) -> Filter {
    match pattern {
        ".*" | "(.*)" => return Filter::AnyLine(0),
        ".+" | "(.+)" => return Filter::AnyLine(1),
        _ => {}
    }
    let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
        return Filter::None;
    };
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let Some(lits) = seq.literals() else {
        return Filter::None;
    };
    if lits.is_empty() {
        // Matches nothing: an empty exact set says so.
        return Filter::Exact(Vec::new());
    }
    if lits
        .iter()
        .any(|l| l.as_bytes().is_empty() && !l.is_exact())
    {
        return Filter::None;
    }
    let bytes = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
    // Look-arounds (`\b`, `^`, …) are extracted as empty strings: a literal is then only a
    // necessary prefix, never the whole answer.
    let looks = !hir.properties().look_set().is_empty();
    if !looks && lits.iter().all(|l| l.is_exact()) {
        Filter::Exact(bytes)
    } else {
        Filter::Prefixes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn anchored(p: &str) -> Anchored {
        Anchored::new(p, Regex::new(&format!("^(?:{p})$")).unwrap())
    }

    const PATTERNS: &[&str] = &[
        "foo",
        "foo|bar|ba",
        "debug_.*|go_gc_.*",
        "__meta_(.*)",
        "(?i)abc",
        "a.c",
        ".*",
        ".+",
        "(.*)",
        "(.+)",
        "",
        "x*",
        "10\\.0\\.0\\.0:9100;http_requests_total",
        "[ab]c|d(e|f)",
        "(b).*b(.*)ba(.*)",
        "some-([^-]+)-([^,]+)",
        "f|o",
        "\\d+",
        "é|É.*",
        "a\\bb",
        "foo\\b",
        "(?m)^foo$",
    ];

    #[test]
    fn filters_are_what_the_literals_say() {
        assert!(matches!(anchored("foo|bar").filter, Filter::Exact(_)));
        assert!(matches!(anchored("debug_.*").filter, Filter::Prefixes(_)));
        assert!(matches!(anchored(".*").filter, Filter::AnyLine(0)));
        assert!(matches!(anchored("a.*b").filter, Filter::Prefixes(_)));
        assert!(matches!(anchored("\\w+").filter, Filter::None));
    }

    proptest! {
        /// The filtered answer is always the regex's answer.
        #[test]
        fn agrees_with_the_regex(p in 0..PATTERNS.len(), hay in "(foo|bar|ba|debug_|go_gc_|__meta_|a|b|c|d|e|f|x|1|0|\\.|:|;|-|,|é|É|\n|ABC|abc){0,6}") {
            let a = anchored(PATTERNS[p]);
            prop_assert_eq!(a.is_match(hay.as_bytes()), a.regex.is_match(hay.as_bytes()), "{:?} on {:?}", PATTERNS[p], hay);
        }
    }
}
