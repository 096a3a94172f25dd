//! Client text as a log field: spans name the customer or journey a call
//! asked for before the request is validated, and a raw value could carry
//! newlines (a forged log line in the text format) or tens of KiB.

use std::fmt;

/// Most characters of a client's text a log field shows.
const MAX_CHARS: usize = 128;

/// Displays client text with control characters escaped (`\n`,
/// `\u{1b}`), and the separators and direction marks that some viewers
/// act on, with at most `MAX_CHARS` characters, then `…`.
pub struct LogText<'a>(pub &'a str);

/// Whether a character is shown escaped: a control character, a line or
/// paragraph separator, or a bidirectional override or isolate.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for LogText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        // The usual case, a short plain id, written as it is.
        if text.len() <= MAX_CHARS && !text.chars().any(escaped) {
            return f.write_str(text);
        }
        for (i, c) in text.chars().enumerate() {
            if i == MAX_CHARS {
                return f.write_str("…");
            }
            if escaped(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_shows_as_it_is() {
        assert_eq!(LogText("c1").to_string(), "c1");
        assert_eq!(LogText("ünïcode").to_string(), "ünïcode");
    }

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert_eq!(
            LogText("c1\nINFO forged line").to_string(),
            "c1\\nINFO forged line"
        );
        assert_eq!(LogText("a\u{1b}[31m").to_string(), "a\\u{1b}[31m");
        assert_eq!(
            LogText("a\u{2028}b\u{202e}").to_string(),
            "a\\u{2028}b\\u{202e}"
        );
        let long = LogText(&"x".repeat(10_000)).to_string();
        assert_eq!(long.chars().count(), MAX_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
