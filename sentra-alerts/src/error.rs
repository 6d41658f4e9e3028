//! The crate's error type.

use std::fmt;

/// One problem found while loading a rule file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// 1-based line of the rule (or of the offending text), when known.
    pub line: Option<usize>,
    /// Name of the rule, when known.
    pub rule: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The rule file is not valid TOML or does not have the expected shape.
    #[error("rule file is not valid: {0}")]
    Syntax(Problem),
    /// The rule file parsed, but one or more rules are invalid (all problems are listed).
    #[error("{} invalid rule(s): {}", .0.len(), join(.0))]
    Invalid(Vec<Problem>),
    /// A summary or description template is malformed.
    #[error("template error at byte {offset}: {message}")]
    Template {
        /// Byte offset in the template where the problem was found.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A label matcher is malformed.
    #[error("matcher {matcher:?}: {message}")]
    Matcher {
        /// The matcher text.
        matcher: String,
        /// What is wrong.
        message: String,
    },
    /// A saved evaluator state cannot be restored.
    #[error("cannot restore alert state: {0}")]
    State(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
