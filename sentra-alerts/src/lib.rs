#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod error;
pub mod eval;
pub mod rule;
pub mod template;

pub use error::{Error, Problem, Result};
pub use eval::{Config, Evaluator, Fingerprint, Phase, State, Status, Transition};
pub use rule::{
    CmpOp, Domain, MatchOp, Matcher, Rule, RuleKind, Severity, Warning, builtin_wireguard_rules,
    parse_rules,
};
