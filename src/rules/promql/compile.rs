//! From `promql-parser`'s AST to the engine's own plan: durations resolved to milliseconds,
//! functions and operators resolved to enums, the metric name folded into the matchers, and
//! step-invariant subtrees marked as Prometheus's `preprocessExpr` does. Everything the engine
//! does not evaluate is refused here, by name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher, Matchers, METRIC_NAME};
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality};

use super::durations::{self, QueryShape};
use super::functions::Func;
use super::trim_syntax;
use super::{CompileError, SelectorNeed};

/// Prometheus's default `--query.lookback-delta`.
pub(crate) const LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// The step of a subquery written without one (`x[5m:]`): promqltest's and the rule
/// manager's `NoStepSubqueryIntervalFn` use the evaluation interval, 1m by default.
pub(crate) const DEFAULT_SUBQUERY_STEP_MS: i64 = 60 * 1000;

/// Where a selector or subquery is anchored in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum At {
    /// The evaluation time.
    Eval,
    /// `@ <timestamp>`, in milliseconds.
    Fixed(i64),
    /// `@ start()`.
    Start,
    /// `@ end()`.
    End,
}

#[derive(Debug, Clone)]
pub(crate) struct Selector {
    /// All matchers, the metric name included as a `__name__` matcher.
    pub matchers: Matchers,
    pub offset_ms: i64,
    pub at: At,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
    Limitk,
    LimitRatio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    /// `</`: keep a histogram's observations below the float.
    TrimUpper,
    /// `>/`: keep a histogram's observations above the float.
    TrimLower,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }
    pub fn is_trim(self) -> bool {
        matches!(self, BinOp::TrimUpper | BinOp::TrimLower)
    }
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// How two vectors are matched (`on`/`ignoring`, `group_left`/`group_right`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matching {
    pub card: Card,
    /// `on(...)` when true, `ignoring(...)` (or nothing) when false.
    pub on: bool,
    /// Sorted.
    pub labels: Vec<String>,
    /// The `group_x(...)` labels copied from the "one" side.
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Num(f64),
    Str(String),
    /// The regex argument of `label_replace`, compiled (anchored) once at load.
    Regex {
        source: String,
        re: regex::Regex,
    },
    Vector(Selector),
    Matrix {
        sel: Selector,
        range_ms: i64,
    },
    Subquery {
        inner: Box<Node>,
        range_ms: i64,
        step_ms: i64,
        offset_ms: i64,
        at: At,
    },
    Neg(Box<Node>),
    Binary {
        op: BinOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
        matching: Matching,
        return_bool: bool,
    },
    Agg {
        op: AggOp,
        expr: Box<Node>,
        param: Option<Box<Node>>,
        /// `by(...)` when false, `without(...)` when true.
        without: bool,
        /// Sorted.
        grouping: Vec<String>,
    },
    Call {
        func: Func,
        args: Vec<Node>,
    },
    /// A subtree whose value does not depend on the evaluation time (every selector in it
    /// has an `@`): evaluated once at the start of the enclosing range, as Prometheus does.
    StepInvariant(Box<Node>),
}

/// Parse, refuse what is unsupported, and plan; duration expressions are resolved for
/// `shape` (an instant query's, for a rule).
pub(crate) fn compile(
    expr: &str,
    shape: QueryShape,
) -> Result<(Node, Vec<SelectorNeed>), CompileError> {
    if has_high_byte_escape(expr) {
        // Prometheus reads `\xNN` as a raw byte (possibly invalid UTF-8, which it then
        // rejects as a label name); promql-parser reads it as the code point U+00NN.
        return Err(unsupported("byte escapes \\x80-\\xff in string literals"));
    }
    // Parsing, planning and evaluation recurse over the expression tree: bound its depth
    // before building it so that no input can overflow the stack.
    let nesting = nesting_bound(expr);
    if nesting > MAX_NESTING {
        return Err(unsupported(format!(
            "expressions with more than {MAX_NESTING} operators and brackets ({nesting})"
        )));
    }
    let (rewritten, trims) = trim_syntax::rewrite(expr);
    let resolved = durations::resolve(&rewritten, shape).map_err(CompileError::Parse)?;
    let ast = promql_parser::parser::parse(&resolved).map_err(|e| parse_error(expr, e))?;
    let mut node = lower(&ast)?;
    if trims.any() {
        trim_syntax::apply(&mut node, &trims)?;
    }
    if mark_step_invariant(&mut node) {
        node = wrap_invariant(node);
    }
    let mut needs = Vec::new();
    collect_needs(
        &node,
        Reach {
            extra: 0,
            anchor: None,
        },
        &mut needs,
    );
    Ok((node, needs))
}

/// A parse failure, named: Prometheus 3 syntax that `promql-parser` does not know is refused
/// as unsupported by name, and its contextless "invalid promql query" says what it is.
fn parse_error(expr: &str, msg: String) -> CompileError {
    if let Some(what) = unparsed_construct(expr) {
        return unsupported(what);
    }
    if msg == "invalid promql query" {
        return CompileError::Parse(
            "syntax error in PromQL expression (the parser reports no position)".into(),
        );
    }
    CompileError::Parse(msg)
}

/// The Prometheus 3 construct `promql-parser` cannot parse in `expr`, if any: the
/// `smoothed`/`anchored` range modifiers (the trim operators are parsed around it, see
/// `trim_syntax.rs`). Called only once parsing failed, so that a metric or label of that name
/// never counts.
fn unparsed_construct(expr: &str) -> Option<String> {
    use super::lex;
    let b = expr.as_bytes();
    let mut braces = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
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
            _ if braces == 0 && lex::is_word_start(b, i) => {
                if let Some(w) = ["smoothed", "anchored"]
                    .into_iter()
                    .find(|w| lex::word_is(b, i, w))
                {
                    return Some(format!("range modifier `{w}`"));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Far above any hand-written rule, far below what overflows a 2 MiB thread stack.
const MAX_NESTING: usize = 256;

/// An upper bound of the syntax tree's depth: brackets and operator characters and words
/// outside string literals.
fn nesting_bound(expr: &str) -> usize {
    let mut n = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut word = String::new();
    let count_word = |w: &mut String, n: &mut usize| {
        if matches!(
            w.to_ascii_lowercase().as_str(),
            "and" | "or" | "unless" | "atan2" | "offset"
        ) {
            *n += 1;
        }
        w.clear();
    };
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        count_word(&mut word, &mut n);
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' | '+' | '-' | '*' | '/' | '%' | '^' | '<' | '>' | '=' | '!' | '@' => {
                n += 1
            }
            _ => {}
        }
    }
    count_word(&mut word, &mut n);
    n
}

fn has_high_byte_escape(expr: &str) -> bool {
    let b = expr.as_bytes();
    b.windows(3).enumerate().any(|(i, w)| {
        w[0] == b'\\'
            && w[1] == b'x'
            && matches!(w[2], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            && (i == 0 || b[i - 1] != b'\\')
    })
}

fn unsupported(what: impl Into<String>) -> CompileError {
    CompileError::Unsupported(what.into())
}

fn duration_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn at(a: &Option<AtModifier>) -> At {
    match a {
        None => At::Eval,
        Some(AtModifier::Start) => At::Start,
        Some(AtModifier::End) => At::End,
        Some(AtModifier::At(t)) => At::Fixed(system_time_ms(*t)),
    }
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

fn selector(vs: &promql_parser::parser::VectorSelector) -> Result<Selector, CompileError> {
    let mut matchers = vs.matchers.clone();
    if let Some(name) = &vs.name {
        let has = matchers
            .matchers
            .iter()
            .any(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal && &m.value == name);
        if !has {
            matchers
                .matchers
                .push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
        }
    }
    Ok(Selector {
        matchers,
        offset_ms: offset_ms(&vs.offset),
        at: at(&vs.at),
    })
}

fn sorted(ls: &[String]) -> Vec<String> {
    let mut v = ls.to_vec();
    v.sort();
    v.dedup();
    v
}

fn lower(e: &Expr) -> Result<Node, CompileError> {
    Ok(match e {
        Expr::NumberLiteral(n) => Node::Num(n.val),
        Expr::StringLiteral(s) => Node::Str(s.val.clone()),
        Expr::Paren(p) => lower(&p.expr)?,
        Expr::VectorSelector(vs) => Node::Vector(selector(vs)?),
        Expr::MatrixSelector(ms) => Node::Matrix {
            sel: selector(&ms.vs)?,
            range_ms: duration_ms(&ms.range),
        },
        Expr::Subquery(sq) => {
            let step_ms = sq
                .step
                .as_ref()
                .map(duration_ms)
                .unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
            if step_ms <= 0 {
                return Err(CompileError::Parse("zero subquery step".into()));
            }
            Node::Subquery {
                inner: Box::new(lower(&sq.expr)?),
                range_ms: duration_ms(&sq.range),
                step_ms,
                offset_ms: offset_ms(&sq.offset),
                at: at(&sq.at),
            }
        }
        Expr::Unary(u) => Node::Neg(Box::new(lower(&u.expr)?)),
        Expr::Binary(b) => {
            let op = bin_op(b.op)?;
            let (matching, return_bool) = match &b.modifier {
                None => (
                    Matching {
                        card: if op.is_set() {
                            Card::ManyToMany
                        } else {
                            Card::OneToOne
                        },
                        on: false,
                        labels: vec![],
                        include: vec![],
                    },
                    false,
                ),
                Some(m) => {
                    if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                        return Err(unsupported("fill modifiers on binary operators"));
                    }
                    let (card, include) = match &m.card {
                        VectorMatchCardinality::OneToOne => (Card::OneToOne, vec![]),
                        VectorMatchCardinality::ManyToOne(l) => (Card::ManyToOne, l.labels.clone()),
                        VectorMatchCardinality::OneToMany(l) => (Card::OneToMany, l.labels.clone()),
                        VectorMatchCardinality::ManyToMany => (Card::ManyToMany, vec![]),
                    };
                    let card = if op.is_set() { Card::ManyToMany } else { card };
                    let (on, labels) = match &m.matching {
                        Some(LabelModifier::Include(l)) => (true, sorted(&l.labels)),
                        Some(LabelModifier::Exclude(l)) => (false, sorted(&l.labels)),
                        None => (false, vec![]),
                    };
                    (
                        Matching {
                            card,
                            on,
                            labels,
                            include,
                        },
                        m.return_bool,
                    )
                }
            };
            Node::Binary {
                op,
                lhs: Box::new(lower(&b.lhs)?),
                rhs: Box::new(lower(&b.rhs)?),
                matching,
                return_bool,
            }
        }
        Expr::Aggregate(a) => {
            let op = agg_op(a.op)?;
            let (without, grouping) = match &a.modifier {
                None => (false, vec![]),
                Some(LabelModifier::Include(l)) => (false, sorted(&l.labels)),
                Some(LabelModifier::Exclude(l)) => (true, sorted(&l.labels)),
            };
            let param = match &a.param {
                Some(p) => Some(Box::new(lower(p)?)),
                None => None,
            };
            Node::Agg {
                op,
                expr: Box::new(lower(&a.expr)?),
                param,
                without,
                grouping,
            }
        }
        Expr::Call(c) => {
            let func = Func::from_name(c.func.name)
                .ok_or_else(|| unsupported(format!("function `{}`", c.func.name)))?;
            let mut args = c
                .args
                .args
                .iter()
                .map(|a| lower(a))
                .collect::<Result<Vec<_>, _>>()?;
            if func == Func::LabelReplace {
                if let Some(Node::Str(source)) = args.get(4) {
                    let re = regex::Regex::new(&format!("^(?s:{source})$")).map_err(|_| {
                        CompileError::Parse(format!(
                            "invalid regular expression in label_replace(): {source}"
                        ))
                    })?;
                    args[4] = Node::Regex {
                        source: source.clone(),
                        re,
                    };
                }
            }
            Node::Call { func, args }
        }
        Expr::Extension(_) => return Err(unsupported("extension expressions")),
    })
}

fn bin_op(t: TokenType) -> Result<BinOp, CompileError> {
    Ok(match t.id() {
        token::T_ADD => BinOp::Add,
        token::T_SUB => BinOp::Sub,
        token::T_MUL => BinOp::Mul,
        token::T_DIV => BinOp::Div,
        token::T_MOD => BinOp::Mod,
        token::T_POW => BinOp::Pow,
        token::T_ATAN2 => BinOp::Atan2,
        token::T_EQLC => BinOp::Eq,
        token::T_NEQ => BinOp::Ne,
        token::T_GTR => BinOp::Gt,
        token::T_LSS => BinOp::Lt,
        token::T_GTE => BinOp::Ge,
        token::T_LTE => BinOp::Le,
        token::T_LAND => BinOp::And,
        token::T_LOR => BinOp::Or,
        token::T_LUNLESS => BinOp::Unless,
        _ => return Err(unsupported(format!("binary operator `{t}`"))),
    })
}

fn agg_op(t: TokenType) -> Result<AggOp, CompileError> {
    Ok(match t.id() {
        token::T_SUM => AggOp::Sum,
        token::T_AVG => AggOp::Avg,
        token::T_MIN => AggOp::Min,
        token::T_MAX => AggOp::Max,
        token::T_COUNT => AggOp::Count,
        token::T_GROUP => AggOp::Group,
        token::T_STDDEV => AggOp::Stddev,
        token::T_STDVAR => AggOp::Stdvar,
        token::T_TOPK => AggOp::Topk,
        token::T_BOTTOMK => AggOp::Bottomk,
        token::T_QUANTILE => AggOp::Quantile,
        token::T_COUNT_VALUES => AggOp::CountValues,
        token::T_LIMITK => AggOp::Limitk,
        token::T_LIMIT_RATIO => AggOp::LimitRatio,
        _ => return Err(unsupported(format!("aggregation `{t}`"))),
    })
}

fn wrap_invariant(n: Node) -> Node {
    match n {
        // Literals gain nothing from being wrapped.
        Node::Num(_) | Node::Str(_) | Node::Regex { .. } => n,
        n => Node::StepInvariant(Box::new(n)),
    }
}

/// Prometheus's `preprocessExprHelper`: returns whether `n` is step invariant, and wraps the
/// invariant children of a variant node.
fn mark_step_invariant(n: &mut Node) -> bool {
    fn wrap_if(n: &mut Node, inv: bool) {
        if inv {
            let taken = std::mem::replace(n, Node::Num(0.0));
            *n = wrap_invariant(taken);
        }
    }
    match n {
        Node::Num(_) | Node::Str(_) | Node::Regex { .. } => true,
        Node::Vector(sel) | Node::Matrix { sel, .. } => sel.at != At::Eval,
        Node::Subquery { inner, at, .. } => {
            let inv = mark_step_invariant(inner);
            wrap_if(inner, inv);
            *at != At::Eval
        }
        Node::Neg(e) => mark_step_invariant(e),
        Node::Agg { expr, .. } => mark_step_invariant(expr),
        Node::Binary { lhs, rhs, .. } => {
            let l = mark_step_invariant(lhs);
            let r = mark_step_invariant(rhs);
            if l && r {
                return true;
            }
            wrap_if(lhs, l);
            wrap_if(rhs, r);
            false
        }
        Node::Call { func, args } => {
            let invs: Vec<bool> = args.iter_mut().map(mark_step_invariant).collect();
            if !func.at_modifier_unsafe() && invs.iter().all(|b| *b) {
                return true;
            }
            for (a, inv) in args.iter_mut().zip(invs) {
                wrap_if(a, inv);
            }
            false
        }
        Node::StepInvariant(_) => true,
    }
}

/// How far the enclosing subqueries reach back: `extra` ms before `anchor` (a fixed `@`
/// time of an enclosing subquery) or, with no anchor, before the evaluation time.
#[derive(Clone, Copy)]
struct Reach {
    extra: i64,
    anchor: Option<i64>,
}

fn collect_needs(n: &Node, r: Reach, out: &mut Vec<SelectorNeed>) {
    let mut push = |sel: &Selector, window: i64| {
        let own = window.saturating_add(sel.offset_ms.max(0));
        let (history_ms, at_ms) = match sel.at {
            // A selector's own `@` makes the enclosing subqueries irrelevant to it.
            At::Fixed(t) => (own, Some(t)),
            // `start()`/`end()` are the evaluation time of an instant query.
            At::Start | At::End => (own, None),
            At::Eval => (own.saturating_add(r.extra), r.anchor),
        };
        out.push(SelectorNeed {
            matchers: sel.matchers.clone(),
            history_ms,
            at_ms,
        });
    };
    match n {
        Node::Num(_) | Node::Str(_) | Node::Regex { .. } => {}
        Node::Vector(sel) => push(sel, LOOKBACK_MS),
        Node::Matrix { sel, range_ms } => push(sel, *range_ms),
        Node::Subquery {
            inner,
            range_ms,
            step_ms,
            offset_ms,
            at,
        } => {
            // One extra step: the first subquery step is aligned down to a multiple of it.
            let reach = range_ms
                .saturating_add(*step_ms)
                .saturating_add((*offset_ms).max(0));
            let inner_reach = match at {
                At::Fixed(t) => Reach {
                    extra: reach,
                    anchor: Some(*t),
                },
                At::Start | At::End => Reach {
                    extra: reach,
                    anchor: None,
                },
                At::Eval => Reach {
                    extra: r.extra.saturating_add(reach),
                    anchor: r.anchor,
                },
            };
            collect_needs(inner, inner_reach, out);
        }
        Node::Neg(e) | Node::StepInvariant(e) => collect_needs(e, r, out),
        Node::Agg { expr, param, .. } => {
            collect_needs(expr, r, out);
            if let Some(p) = param {
                collect_needs(p, r, out);
            }
        }
        Node::Binary { lhs, rhs, .. } => {
            collect_needs(lhs, r, out);
            collect_needs(rhs, r, out);
        }
        Node::Call { args, .. } => {
            for a in args {
                collect_needs(a, r, out);
            }
        }
    }
}
