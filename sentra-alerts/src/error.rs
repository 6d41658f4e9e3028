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
    /// A saved evaluator or router state cannot be restored.
    #[error("cannot restore alert state: {0}")]
    State(String),
    /// A routing, silence or notifier setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Nothing with this identity (a silence, a dead letter, a receiver).
    #[error("not found: {0}")]
    NotFound(String),
    /// A receiver did not answer within the timeout, on every attempt.
    #[error(
        "receiver {receiver:?} ({endpoint}): no answer within {timeout:?} after {attempts} attempt(s)"
    )]
    Timeout {
        /// Receiver name.
        receiver: String,
        /// Scheme, host and port of the receiver (no path or query: they may hold tokens).
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The per-attempt timeout.
        timeout: std::time::Duration,
    },
    /// A receiver could not be reached (connection refused, DNS, TLS), on every attempt.
    #[error(
        "receiver {receiver:?} ({endpoint}) unreachable after {attempts} attempt(s): {message}"
    )]
    Unreachable {
        /// Receiver name.
        receiver: String,
        /// Scheme, host and port of the receiver.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// A receiver answered with an error status: a 4xx other than 408/429 at once (not
    /// retried), a 5xx, 408 or 429 after the last attempt.
    #[error(
        "receiver {receiver:?} ({endpoint}) answered {status} after {attempts} attempt(s): {body:?}"
    )]
    Rejected {
        /// Receiver name.
        receiver: String,
        /// Scheme, host and port of the receiver.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// HTTP status code.
        status: u16,
        /// The start of the answer's body (at most 256 bytes, lossy UTF-8).
        body: String,
    },
    /// The dispatcher has shut down.
    #[error("the notification dispatcher has shut down")]
    Closed,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
