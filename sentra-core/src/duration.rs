//! The duration syntax every Sentra command line and configuration file accepts.

use std::time::Duration;

use crate::Error;

/// Parses a duration with [`humantime`]: `"500ms"`, `"10s"`, `"5m"`, `"1h 30m"`, `"2d"`,
/// `"1w"`; a bare number means seconds (`"10"` is ten seconds), as the first
/// configuration files wrote them.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sentra_core::parse_duration("1h 30m")?, Duration::from_secs(5400));
/// assert_eq!(sentra_core::parse_duration("10")?, Duration::from_secs(10));
/// assert!(sentra_core::parse_duration("10 parsecs").is_err());
/// # Ok::<(), sentra_core::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidDuration`], naming the input and what is wrong with it.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let s = s.trim();
    let invalid = |reason: String| Error::InvalidDuration {
        input: s.to_owned(),
        reason,
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| invalid("too many seconds".to_owned()));
    }
    humantime::parse_duration(s).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_combinations_and_bare_seconds() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration(" 10 ").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(604_800));
    }

    #[test]
    fn errors_name_the_input_and_show_the_syntax() {
        for bad in [
            "",
            "s",
            "h",
            "10 parsecs",
            "1 fortnight",
            "-1s",
            "99999999999999999999",
            "99999999999999999999d",
        ] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("use e.g."), "{e}");
        }
    }
}
