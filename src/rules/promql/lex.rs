//! The little of PromQL's lexical structure that the text rewrites around `promql-parser` need
//! (duration expressions, trim operators, naming constructs it cannot parse): where a string
//! literal or a `#` comment ends, and whether a word starts at a position. One copy, so that
//! the rewrites agree on what is code and what is text.

/// The index just past the string literal that opens at `start` (`"`, `'` or a backquote;
/// `\` escapes the next byte except in backquotes), or the end of `b` if it never closes.
pub(crate) fn skip_string(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The index of the newline that ends the `#` comment opening at `start` (or the end of `b`).
pub(crate) fn skip_comment(b: &[u8], start: usize) -> usize {
    b[start..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |k| start + k)
}

pub(crate) fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

pub(crate) fn is_word_start(b: &[u8], i: usize) -> bool {
    i == 0 || !is_ident(b[i - 1])
}

/// Whether the word `w` (any case) stands whole at `i`.
pub(crate) fn word_is(b: &[u8], i: usize, w: &str) -> bool {
    let end = i + w.len();
    end <= b.len()
        && b[i..end].eq_ignore_ascii_case(w.as_bytes())
        && (end == b.len() || !is_ident(b[end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_comments_and_words_end_where_promql_says() {
        let b = br#"a{x="q\"}"} # c "d
offset"#;
        assert_eq!(skip_string(b, 4), 10);
        assert_eq!(skip_string(b"`a\\`b", 0), 4);
        assert_eq!(skip_string(b"'open", 0), 5);
        assert_eq!(skip_comment(b, 12), 18);
        assert_eq!(skip_comment(b"# end", 0), 5);
        assert!(word_is(b, 19, "OFFSET") && is_word_start(b, 19));
        assert!(!word_is(b"offsets", 0, "offset"));
        assert!(!is_word_start(b"job:offset", 4));
    }
}
