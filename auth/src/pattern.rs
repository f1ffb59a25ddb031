//! Channel and name patterns: `*` matches any run of characters (also none,
//! also `/`); every other character is literal. `game/*` covers `game/7/chat`,
//! `*/admin` covers `eu/admin`, `ops` covers only `ops`.
//!
//! A pattern is compiled once into its literal pieces; matching is a prefix
//! check, a suffix check and a left-to-right search for the pieces between,
//! which is exact for `*`-only patterns (the leftmost match of each piece
//! leaves the most room for the rest).

use std::fmt;

/// Longest pattern accepted, in bytes (policy files and token claims alike).
pub const MAX_PATTERN_BYTES: usize = 1024;

/// A compiled channel or name pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    /// The text split at `*`: first piece is the required prefix, last the
    /// required suffix; a pattern without `*` has exactly one piece.
    pieces: Box<[Box<str>]>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Longer than [`MAX_PATTERN_BYTES`].
    #[error("pattern too long ({0} bytes, at most {MAX_PATTERN_BYTES})")]
    TooLong(usize),
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &str) -> Result<Pattern, PatternError> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong(text.len()));
        }
        Ok(Pattern {
            text: text.into(),
            pieces: text.split('*').map(Box::from).collect(),
        })
    }

    /// A pattern matching exactly `text` (a `*` in it is literal).
    pub fn exact(text: &str) -> Pattern {
        Pattern {
            text: text.into(),
            pieces: Box::new([Box::from(text)]),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `subject` matches.
    pub fn matches(&self, subject: &str) -> bool {
        let (first, rest) = self.pieces.split_first().expect("split yields a piece");
        let Some((last, middle)) = rest.split_last() else {
            return subject == &**first;
        };
        if subject.len() < first.len() + last.len()
            || !subject.starts_with(&**first)
            || !subject.ends_with(&**last)
        {
            return false;
        }
        let mut inner = &subject[first.len()..subject.len() - last.len()];
        for piece in middle {
            match inner.find(&**piece) {
                Some(at) => inner = &inner[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Several patterns; matches when any of them does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet(Vec<Pattern>);

impl PatternSet {
    /// Compiles each text; the first bad one is the error.
    pub fn new<S: AsRef<str>>(texts: &[S]) -> Result<PatternSet, PatternError> {
        texts
            .iter()
            .map(|t| Pattern::new(t.as_ref()))
            .collect::<Result<_, _>>()
            .map(PatternSet)
    }

    /// A set matching exactly `text` (a `*` in it is literal).
    pub fn exact(text: &str) -> PatternSet {
        PatternSet(vec![Pattern::exact(text)])
    }

    /// Whether any pattern matches `subject`.
    pub fn matches(&self, subject: &str) -> bool {
        self.0.iter().any(|p| p.matches(subject))
    }

    /// True when there is no pattern (matches nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns as written.
    pub fn texts(&self) -> Vec<String> {
        self.0.iter().map(|p| p.to_string()).collect()
    }
}

impl From<Pattern> for PatternSet {
    fn from(pattern: Pattern) -> PatternSet {
        PatternSet(vec![pattern])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, subject: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(subject)
    }

    #[test]
    fn examples_from_the_docs() {
        assert!(m("game/*", "game/7/chat"));
        assert!(m("game/*", "game/"));
        assert!(!m("game/*", "game"));
        assert!(m("*/admin", "eu/admin"));
        assert!(!m("*/admin", "eu/admin/x"));
        assert!(m("ops", "ops"));
        assert!(!m("ops", "ops2"));
        assert!(m("*", ""));
        assert!(m("*", "anything at all"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "a-b-b-c"));
        assert!(!m("a*b*c", "acb"));
        assert!(!m("ab*ba", "aba"), "prefix and suffix must not overlap");
        assert!(m("gs-*", "gs-7"));
        assert!(!m("gs-*", "gs"));
        assert!(m("?[x]", "?[x]"), "only * is special");
        assert!(Pattern::exact("a*").matches("a*"));
        assert!(!Pattern::exact("a*").matches("ab"));
    }

    #[test]
    fn overlong_patterns_are_refused() {
        let long = "x".repeat(MAX_PATTERN_BYTES + 1);
        assert_eq!(
            Pattern::new(&long),
            Err(PatternError::TooLong(MAX_PATTERN_BYTES + 1))
        );
    }

    /// The obvious recursive definition, as the reference.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab*/]{0,8}", s in "[ab/]{0,10}") {
            prop_assert_eq!(m(&p, &s), reference(p.as_bytes(), s.as_bytes()));
        }

        #[test]
        fn a_pattern_without_star_is_equality(p in "[a-z/]{0,8}", s in "[a-z/]{0,8}") {
            prop_assert_eq!(m(&p, &s), p == s);
        }
    }
}
