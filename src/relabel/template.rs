//! Replacement templates expanded like Go's `regexp.Expand`: `$1`, `${1}`, `$name`, `${name}`,
//! `$$` for a literal `$`. A name is the longest run of letters, digits and `_` (so `$1x` is
//! the group named `1x`); a malformed reference keeps its `$` as text; a group that does not
//! exist or did not participate expands to nothing.

use regex::bytes::{Captures, Regex};

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(Vec<u8>),
    /// A capture group index; `None` when the name or number does not exist in the regex.
    Group(Option<usize>),
}

/// A template compiled against one regex.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn compile(template: &str, re: &Regex) -> Template {
        let groups = re.captures_len();
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = template;
        while let Some(pos) = rest.find('$') {
            lit.extend_from_slice(&rest.as_bytes()[..pos]);
            rest = &rest[pos + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                lit.push(b'$');
                rest = r;
                continue;
            }
            match extract(rest) {
                None => lit.push(b'$'),
                Some((name, num, after)) => {
                    rest = after;
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    let index = match num {
                        Some(n) => (n < groups).then_some(n),
                        None => re.capture_names().position(|g| g == Some(name)),
                    };
                    parts.push(Part::Group(index));
                }
            }
        }
        lit.extend_from_slice(rest.as_bytes());
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Template { parts }
    }

    pub fn expand(&self, caps: &Captures<'_>, out: &mut Vec<u8>) {
        self.expand_with(|i| caps.get(i).map(|m| m.as_bytes()), out)
    }

    /// The template has no literal text (only group references): it expands to nothing when
    /// every group is empty.
    pub fn has_no_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Group(_)))
    }

    /// Expand with capture group `i` given by `group` (for regexes whose groups are known
    /// without running them, like the default `(.*)`).
    pub fn expand_with<'v>(&self, group: impl Fn(usize) -> Option<&'v [u8]>, out: &mut Vec<u8>) {
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.extend_from_slice(l),
                Part::Group(Some(i)) => {
                    if let Some(m) = group(*i) {
                        out.extend_from_slice(m);
                    }
                }
                Part::Group(None) => {}
            }
        }
    }
}

/// Go's `extract`: `(name, number if the name is a number, rest)` after a `$`.
fn extract(s: &str) -> Option<(&str, Option<usize>, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !(c.is_alphabetic() || c.is_numeric() || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    let rest = if brace {
        body[end..].strip_prefix('}')?
    } else {
        &body[end..]
    };
    let mut num: Option<usize> = Some(0);
    for b in name.bytes() {
        num = match num {
            Some(n) if b.is_ascii_digit() && n < 100_000_000 => {
                Some(n * 10 + usize::from(b - b'0'))
            }
            _ => None,
        };
    }
    // Go disallows leading zeros: `$01` is the group named "01".
    if name.len() > 1 && name.starts_with('0') {
        num = None;
    }
    Some((name, num, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(template: &str, re: &str, input: &str) -> String {
        let re = Regex::new(&format!("^(?:{re})$")).unwrap();
        let caps = re.captures(input.as_bytes()).unwrap();
        let mut out = Vec::new();
        Template::compile(template, &re).expand(&caps, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn expands_like_go() {
        assert_eq!(expand("ch${1}-ch${1}", "f(.*)", "foo"), "choo-choo");
        assert_eq!(
            expand("$1$2$2$3", "(b).*b(.*)ba(.*)", "baz;boobam"),
            "boooom"
        );
        // `$1x` names the group "1x", which does not exist.
        assert_eq!(expand("$1x", "(a)", "a"), "");
        assert_eq!(expand("${1}x", "(a)", "a"), "ax");
        assert_eq!(expand("$$1", "(a)", "a"), "$1");
        assert_eq!(expand("a$", "(a)", "a"), "a$");
        assert_eq!(expand("${1", "(a)", "a"), "${1");
        assert_eq!(expand("$-", "(a)", "a"), "$-");
        assert_eq!(expand("${}", "(a)", "a"), "${}");
        assert_eq!(expand("$name-$2", "(?P<name>a)(b)?", "a"), "a-");
        assert_eq!(expand("$01", "(a)", "a"), "");
        assert_eq!(expand("$0", "(a)", "a"), "a");
        assert_eq!(expand("$9", "(a)", "a"), "");
    }
}
