#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "notify")]
#[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
pub mod dispatch;
#[cfg(feature = "notify")]
#[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
pub mod engine;
mod error;
pub mod eval;
#[cfg(feature = "notify")]
#[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
pub mod notify;
pub mod route;
pub mod rule;
pub mod template;

pub use error::{Error, Problem, Result};
pub use eval::{Config, Evaluator, Fingerprint, Phase, State, Status, Transition};
pub use route::{
    InhibitRule, Notification, NotifiedAlert, Route, Router, RouterConfig, Silence, SilenceId,
};
pub use rule::{
    CmpOp, Domain, MatchOp, Matcher, Rule, RuleKind, Severity, Warning, builtin_wireguard_rules,
    parse_rules,
};
