//! PromQL series selectors for `routes[].match`: `metric{label="v", other=~"re", x!="", y!~"…"}`.
//!
//! Only the selector part of PromQL (no range, offset or functions). Strings are PromQL's: double
//! or single quoted with Go escapes, or backquoted raw. Regexes are anchored at both ends, and a
//! missing label matches as the empty string, as in Prometheus.

use regex::bytes::Regex;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Matcher) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    pub fn new(name: &str, op: Op, value: &str) -> Result<Matcher, String> {
        let regex = match op {
            Op::RegexMatch | Op::RegexNoMatch => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    format!(
                        "invalid regex {value:?} for {name}: {}",
                        flat(&e.to_string())
                    )
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Does `value` (empty when the label is missing) satisfy the matcher?
    pub fn matches(&self, value: &[u8]) -> bool {
        match (self.op, &self.regex) {
            (Op::Equal, _) => value == self.value.as_bytes(),
            (Op::NotEqual, _) => value != self.value.as_bytes(),
            (Op::RegexMatch, Some(re)) => re.is_match(value),
            (Op::RegexNoMatch, Some(re)) => !re.is_match(value),
            _ => false,
        }
    }
}

/// A parsed selector: every matcher must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub source: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub fn matches<'a>(&self, labels: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> bool {
        self.matchers.iter().all(|m| {
            let v = labels
                .clone()
                .find(|(n, _)| *n == m.name.as_bytes())
                .map_or(&[][..], |(_, v)| v);
            m.matches(v)
        })
    }

    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
        };
        let mut matchers = Vec::new();
        p.ws();
        if p.peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        {
            let name = p.ident(true);
            matchers.push(Matcher::new("__name__", Op::Equal, &name)?);
            p.ws();
        }
        if p.peek() == Some(b'{') {
            p.i += 1;
            loop {
                p.ws();
                if p.peek() == Some(b'}') {
                    p.i += 1;
                    break;
                }
                let name = match p.peek() {
                    Some(b'"') | Some(b'\'') | Some(b'`') => p.string()?,
                    Some(c) if c.is_ascii_alphabetic() || c == b'_' => p.ident(false),
                    _ => return Err(p.err("expected a label name")),
                };
                p.ws();
                let op = p.op()?;
                p.ws();
                let value = p.string()?;
                matchers.push(Matcher::new(&name, op, &value)?);
                p.ws();
                match p.peek() {
                    Some(b',') => p.i += 1,
                    Some(b'}') => {}
                    _ => return Err(p.err("expected ',' or '}'")),
                }
            }
        }
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("unexpected text after the selector"));
        }
        if matchers.is_empty() {
            return Err(format!(
                "{s:?} selects nothing; write a selector like {{slo=\"true\"}} (leave `match` out for a catch-all route)"
            ));
        }
        Ok(Selector {
            source: s.to_string(),
            matchers,
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn err(&self, what: &str) -> String {
        format!(
            "{what} at position {} in {:?}",
            self.i,
            String::from_utf8_lossy(self.s)
        )
    }
    fn ident(&mut self, colons: bool) -> String {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || (colons && c == b':'))
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    fn op(&mut self) -> Result<Op, String> {
        let rest = &self.s[self.i..];
        let (op, n) = if rest.starts_with(b"=~") {
            (Op::RegexMatch, 2)
        } else if rest.starts_with(b"!~") {
            (Op::RegexNoMatch, 2)
        } else if rest.starts_with(b"!=") {
            (Op::NotEqual, 2)
        } else if rest.starts_with(b"=") {
            (Op::Equal, 1)
        } else {
            return Err(self.err("expected one of = != =~ !~"));
        };
        self.i += n;
        Ok(op)
    }
    /// A PromQL string literal.
    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'' | b'`')) => q,
            _ => return Err(self.err("expected a quoted string")),
        };
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            if c == quote {
                break;
            }
            if c == b'\\' && quote != b'`' {
                let Some(e) = self.peek() else {
                    return Err(self.err("unterminated string"));
                };
                self.i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'v' => out.push(11),
                    b'\\' | b'"' | b'\'' => out.push(e),
                    b'u' | b'U' | b'x' => {
                        let n = match e {
                            b'x' => 2,
                            b'u' => 4,
                            _ => 8,
                        };
                        let hex = self
                            .s
                            .get(self.i..self.i + n)
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .ok_or_else(|| self.err("invalid escape"))?;
                        self.i += n;
                        if e == b'x' {
                            out.push(hex as u8);
                        } else {
                            let ch =
                                char::from_u32(hex).ok_or_else(|| self.err("invalid escape"))?;
                            let mut b = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                    }
                    _ => return Err(self.err("unknown escape sequence")),
                }
                continue;
            }
            out.push(c);
        }
        String::from_utf8(out).map_err(|_| self.err("string is not valid UTF-8"))
    }
}

fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn on(s: &Selector, labels: &[(&str, &str)]) -> bool {
        s.matches(labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn parses_and_matches_selectors() {
        let s = sel(r#"http_requests_total{slo="true", code=~"5..", path!~'/debug.*', env!=``}"#);
        assert_eq!(s.matchers.len(), 5);
        let base = [
            ("__name__", "http_requests_total"),
            ("slo", "true"),
            ("code", "503"),
            ("path", "/api"),
            ("env", "prod"),
        ];
        assert!(on(&s, &base));
        let mut l = base;
        l[2].1 = "5000"; // anchored
        assert!(!on(&s, &l));
        let mut l = base;
        l[4].1 = "";
        assert!(!on(&s, &l));
        assert!(on(&sel("{missing=\"\"}"), &base));
        assert!(!on(&sel("{missing=~\".+\"}"), &base));
        assert!(on(&sel(r#"{slo="true",}"#), &base));
        assert!(on(&sel(r#"{"slo"="true"}"#), &base));
        assert!(on(&sel("  up  "), &[("__name__", "up")]));
        assert!(on(&sel(r#"{a="x\"y\n\u00e9"}"#), &[("a", "x\"y\né")]));
        assert!(on(&sel(r#"{a=`x\d`}"#), &[("a", "x\\d")]));
    }

    #[test]
    fn refuses_bad_selectors() {
        for bad in [
            "",
            "{}",
            "{a=\"b\"",
            "{a=b}",
            "{a~\"b\"}",
            "up[5m]",
            "{a=~\"(\"}",
            "{a=\"\\q\"}",
            "sum(up)",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
