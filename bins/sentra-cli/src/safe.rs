//! Terminal-safe text: every value that came from the server, the kernel or a file is passed
//! through [`display_safe`] before it reaches human-readable output (tables do it for every
//! cell), so a label value cannot clear the screen, move the cursor, fake a table row or
//! reorder text with bidi overrides. JSON output is not touched: serde escapes it already.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal raw: C0 and C1 controls (ESC, CR, LF, NUL, CSI …),
/// DEL, bidi embeddings/overrides/isolates and marks, and the Unicode line separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character replaced by a visible escape: `\n`, `\r`, `\t`, `\0`, and
/// `\u{1b}`-style for the rest (ESC, DEL, C1, bidi controls). Borrowed when nothing changes.
pub(crate) fn display_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Pretty JSON of `v` for a terminal: serde escapes C0 controls already; this also writes
/// the characters JSON allows raw inside strings but a terminal would act on (DEL, C1 such
/// as CSI, bidi controls, line separators) as `\uXXXX` escapes. Still the same JSON value.
pub(crate) fn json_pretty(v: &impl serde::Serialize) -> serde_json::Result<String> {
    let s = serde_json::to_string_pretty(v)?;
    // The newlines between values are what the loop below keeps as they are: only other
    // unsafe characters need the copy (a first pass over the bytes finds none in ASCII
    // without controls, the usual case: `sentra wg show --json` of 3 000 peers is ~1 MB).
    let suspect = |b: u8| b >= 0x7f || (b < 0x20 && b != b'\n');
    if !s.bytes().any(suspect) || !s.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Ok(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            // outside strings only \n and spaces occur, which are not escaped here
            if c == '\n' {
                out.push(c);
            } else {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Text for a terminal that keeps its line structure (`\n`, and `\t` between fields) but
/// escapes every other control character (for CSV exports printed to a terminal).
pub(crate) fn display_safe_lines(s: &str) -> String {
    s.split('\n')
        .map(|line| {
            line.split('\t')
                .map(|f| display_safe(f).into_owned())
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi() {
        assert!(matches!(display_safe("node_load1 ok é"), Cow::Borrowed(_)));
        assert_eq!(display_safe("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(display_safe("x\r\ny\0"), "x\\r\\ny\\0");
        assert_eq!(display_safe("\u{202e}abc\u{2066}"), "\\u{202e}abc\\u{2066}");
        assert_eq!(display_safe("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(
            display_safe_lines("a,b\x1b\nc\td\r\n"),
            "a,b\\u{1b}\nc\td\\r\n"
        );
        let v = serde_json::json!({"k": "a\u{202e}b\u{9b}c\x1b"});
        let j = json_pretty(&v).unwrap();
        assert_eq!(j, "{\n  \"k\": \"a\\u202eb\\u009bc\\u001b\"\n}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&j).unwrap(), v);
        // nothing to escape (newlines and indentation only, non-ASCII letters): unchanged
        let v = serde_json::json!({"k": ["é", 1, {"n": null}], "t": "tab\tnl\n"});
        assert_eq!(
            json_pretty(&v).unwrap(),
            serde_json::to_string_pretty(&v).unwrap()
        );
    }
}
