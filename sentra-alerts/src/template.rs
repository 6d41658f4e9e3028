//! A small, safe template syntax for alert summaries and descriptions.
//!
//! Text is copied as is, except for tags `{{ ... }}` holding exactly one variable:
//! `$value` (the value that triggered the alert), `$labels.<name>` (a label of the alert; an
//! absent label renders as an empty string), `$rule` (the rule name) or `$severity`.
//! Nothing else is accepted: there are no functions, pipes or code. Templates are parsed
//! when the rule file is loaded, so a malformed template is an error at load time, never at
//! notification time. A literal brace is written `{{ "{" }}` or `{{ "}" }}`.

use std::fmt::Write as _;

use crate::error::{Error, Result};

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Value,
    Label(String),
    Rule,
    Severity,
}

/// What a template can refer to when rendered.
///
/// `#[non_exhaustive]` (later versions may add fields a template can refer to): build one
/// with [`Context::new`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Context<'a> {
    /// The alert's labels, sorted by name.
    pub labels: &'a [(String, String)],
    /// The triggering value.
    pub value: f64,
    /// The rule name.
    pub rule: &'a str,
    /// The severity, as a word.
    pub severity: &'a str,
}

impl<'a> Context<'a> {
    /// A context of an alert with `labels` (sorted by name), triggering `value`, of `rule`
    /// at `severity`.
    #[must_use]
    pub const fn new(
        labels: &'a [(String, String)],
        value: f64,
        rule: &'a str,
        severity: &'a str,
    ) -> Self {
        Self {
            labels,
            value,
            rule,
            severity,
        }
    }
}

fn err(offset: usize, message: impl Into<String>) -> Error {
    Error::Template {
        offset,
        message: message.into(),
    }
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] with the byte offset for an unclosed `{{`, a stray `}}`, an empty
    /// tag, an unknown variable or an invalid label name.
    pub fn parse(src: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = src;
        let mut pos = 0;
        loop {
            let open = rest.find("{{");
            let close = rest.find("}}");
            match (open, close) {
                (None, None) => {
                    text.push_str(rest);
                    break;
                }
                (o, Some(c)) if o.is_none_or(|o| c < o) => {
                    return Err(err(pos + c, "`}}` without a matching `{{`"));
                }
                (Some(o), _) => {
                    text.push_str(&rest[..o]);
                    let after = &rest[o + 2..];
                    let Some(end) = after.find("}}") else {
                        return Err(err(pos + o, "`{{` is never closed with `}}`"));
                    };
                    let inner = &after[..end];
                    if let Some(nested) = inner.find("{{") {
                        return Err(err(pos + o + 2 + nested, "`{{` inside a tag"));
                    }
                    let part = parse_tag(inner.trim(), pos + o)?;
                    if let Part::Text(t) = part {
                        text.push_str(&t);
                    } else {
                        if !text.is_empty() {
                            parts.push(Part::Text(std::mem::take(&mut text)));
                        }
                        parts.push(part);
                    }
                    let consumed = o + 2 + end + 2;
                    pos += consumed;
                    rest = &rest[consumed..];
                }
                (None, Some(_)) => unreachable!("handled by the guard above"),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// Renders the template. Rendering cannot fail: the variables were checked when parsing.
    #[must_use]
    pub fn render(&self, cx: &Context<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Value => {
                    let _ = write!(out, "{}", cx.value);
                }
                Part::Label(name) => {
                    if let Ok(i) = cx.labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                        out.push_str(&cx.labels[i].1);
                    }
                }
                Part::Rule => out.push_str(cx.rule),
                Part::Severity => out.push_str(cx.severity),
            }
        }
        out
    }
}

fn parse_tag(tag: &str, offset: usize) -> Result<Part> {
    match tag {
        "" => Err(err(offset, "empty tag `{{ }}`")),
        "$value" => Ok(Part::Value),
        "$rule" => Ok(Part::Rule),
        "$severity" => Ok(Part::Severity),
        "\"{\"" => Ok(Part::Text("{".into())),
        "\"}\"" => Ok(Part::Text("}".into())),
        _ => {
            if let Some(name) = tag.strip_prefix("$labels.") {
                if sentra_core::LabelName::new(name).is_err() {
                    return Err(err(
                        offset,
                        format!("{name:?} is not a valid label name in `$labels.{name}`"),
                    ));
                }
                Ok(Part::Label(name.to_owned()))
            } else {
                Err(err(
                    offset,
                    format!(
                        "unknown variable {tag:?}: expected $value, $rule, $severity or \
                         $labels.<name>"
                    ),
                ))
            }
        }
    }
}
