//! Plain-text tables and time formatting for human output.

use std::fmt;

use crate::safe::display_safe;

/// A left-aligned text table with a header row.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            rows: vec![
                header
                    .iter()
                    .map(|s| display_safe(s).into_owned())
                    .collect(),
            ],
        }
    }

    /// Adds a row; every cell is made terminal-safe ([`display_safe`]): a value with ESC or
    /// a newline cannot restyle the screen or fake a row.
    pub(crate) fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| match display_safe(&c) {
                    std::borrow::Cow::Borrowed(_) => c,
                    std::borrow::Cow::Owned(s) => s,
                })
                .collect(),
        );
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC (`-` for none).
pub(crate) fn ms_to_rfc3339(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// "in 5m" / "3s ago" relative to now.
pub(crate) fn age_ms(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "never".into() };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let delta = (now - ms) / 1000;
    let (abs, future) = if delta < 0 {
        (-delta, true)
    } else {
        (delta, false)
    };
    let text = if abs < 120 {
        format!("{abs}s")
    } else if abs < 7200 {
        format!("{}m", abs / 60)
    } else if abs < 172_800 {
        format!("{}h", abs / 3600)
    } else {
        format!("{}d", abs / 86_400)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(ms_to_rfc3339(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            ms_to_rfc3339(Some(1_760_000_000_000)),
            "2025-10-09T08:53:20Z"
        );
        assert_eq!(ms_to_rfc3339(Some(951_782_400_000)), "2000-02-29T00:00:00Z");
        assert_eq!(ms_to_rfc3339(None), "-");
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(["A", "LONGER"]);
        t.row(["xxxx".into(), "y".into()]);
        assert_eq!(t.to_string(), "A     LONGER\nxxxx  y\n");
        let mut t = Table::new(["A", "B"]);
        t.row(["x\ny".into(), "\x1b[2J".into()]);
        assert_eq!(t.to_string(), "A     B\nx\\ny  \\u{1b}[2J\n");
    }
}
