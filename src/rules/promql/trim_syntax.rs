//! The trim operators `</` and `>/` (Prometheus 3), parsed around `promql-parser`, which does
//! not know them. Prometheus gives them the precedence and associativity of the comparison
//! operators (`generated_parser.y`: `%left EQLC GTE GTR LSS LTE NEQ TRIM_UPPER TRIM_LOWER`),
//! so `</` is handed to the parser as `<` and `>/` as `>` (the same length, so positions in
//! its error messages still hold), and the operators are set right in the plan afterwards:
//! operators appear in the plan in the order they appear in the text (in-order for binary
//! expressions, arguments left to right), so the n-th `<` of the plan is the n-th `<` or `</`
//! of the text.

use super::compile::{BinOp, Node};
use super::lex;
use super::CompileError;

/// Which `<`/`>` tokens of an expression were trim operators, in text order.
#[derive(Debug, Default)]
pub(crate) struct Trims {
    lt: Vec<bool>,
    gt: Vec<bool>,
}

impl Trims {
    pub fn any(&self) -> bool {
        self.lt.iter().chain(&self.gt).any(|t| *t)
    }
}

/// `expr` with `</` and `>/` written as `<` and `>`, and where they were. Strings, label
/// matchers (inside braces) and `#` comments are skipped.
pub(crate) fn rewrite(expr: &str) -> (String, Trims) {
    let mut trims = Trims::default();
    let b = expr.as_bytes();
    if !b.contains(&b'<') && !b.contains(&b'>') {
        return (expr.to_string(), trims);
    }
    let mut out = b.to_vec();
    let mut braces = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i = lex::skip_string(b, i);
                continue;
            }
            b'#' => {
                i = lex::skip_comment(b, i);
                continue;
            }
            b'{' => braces += 1,
            b'}' => braces = braces.saturating_sub(1),
            b'<' | b'>' if braces == 0 => {
                let next = b.get(i + 1).copied();
                if next == Some(b'=') {
                    i += 2;
                    continue;
                }
                let trim = next == Some(b'/');
                if trim {
                    out[i + 1] = b' ';
                    i += 1;
                }
                if c == b'<' {
                    trims.lt.push(trim);
                } else {
                    trims.gt.push(trim);
                }
            }
            _ => {}
        }
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII bytes.
    (
        String::from_utf8(out).unwrap_or_else(|_| expr.to_string()),
        trims,
    )
}

/// Turn the `<`/`>` of the plan that were written `</`/`>/` into trim operators.
pub(crate) fn apply(node: &mut Node, trims: &Trims) -> Result<(), CompileError> {
    let mut next = (0usize, 0usize);
    walk(node, trims, &mut next)
}

fn walk(n: &mut Node, trims: &Trims, next: &mut (usize, usize)) -> Result<(), CompileError> {
    match n {
        Node::Num(_)
        | Node::Str(_)
        | Node::Regex { .. }
        | Node::Vector(_)
        | Node::Matrix { .. } => Ok(()),
        Node::Subquery { inner, .. } | Node::Neg(inner) | Node::StepInvariant(inner) => {
            walk(inner, trims, next)
        }
        Node::Binary {
            op,
            lhs,
            rhs,
            return_bool,
            ..
        } => {
            walk(lhs, trims, next)?;
            let trim = match op {
                BinOp::Lt => {
                    next.0 += 1;
                    trims.lt.get(next.0 - 1).copied().unwrap_or(false)
                }
                BinOp::Gt => {
                    next.1 += 1;
                    trims.gt.get(next.1 - 1).copied().unwrap_or(false)
                }
                _ => false,
            };
            if trim {
                if *return_bool {
                    return Err(CompileError::Parse(
                        "bool modifier can only be used on comparison operators".into(),
                    ));
                }
                *op = if *op == BinOp::Lt {
                    BinOp::TrimUpper
                } else {
                    BinOp::TrimLower
                };
            }
            walk(rhs, trims, next)
        }
        Node::Agg { expr, param, .. } => {
            if let Some(p) = param {
                walk(p, trims, next)?;
            }
            walk(expr, trims, next)
        }
        Node::Call { args, .. } => {
            for a in args {
                walk(a, trims, next)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn rewrites_only_trim_operators_outside_strings_and_matchers() {
        let (s, t) = rewrite(r#"a{l=">/"} >/ 1 < 2 </ b >= 3 # c >/ d"#);
        assert_eq!(s, r#"a{l=">/"} >  1 < 2 <  b >= 3 # c >/ d"#);
        assert_eq!(t.gt, vec![true]);
        assert_eq!(t.lt, vec![false, true]);
        assert!(t.any());
        assert!(!rewrite("a > 1").1.any());
    }
}
