//! Making text that comes from other processes safe to show.
//!
//! Process names, exe paths and command lines are chosen by whoever starts the process,
//! including an attacker. Before they reach a terminal, a log line or a notification, every
//! control character (newlines, ANSI escapes, C1 controls) and every bidirectional-override
//! character is written as a visible escape, and backslashes are doubled so the escaped form
//! cannot be confused with a literal one. The result is one line that means what it shows.

use std::borrow::Cow;
use std::fmt::Write as _;

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes control and bidi characters: `evil\nPRIORITY=0` → `evil\\nPRIORITY=0`.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escapes, then cuts to at most `max` characters, marking the cut with `…`.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    let escaped = escape_control(s);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut out: String = escaped.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    Cow::Owned(out)
}

/// A command line as one escaped string, arguments separated by spaces.
pub fn join_cmdline(args: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&escape_control(a));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape_control("nginx: worker"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_are_visible() {
        assert_eq!(
            escape_control("evil\nPRIORITY=0\nMESSAGE=forged"),
            "evil\\nPRIORITY=0\\nMESSAGE=forged"
        );
        assert_eq!(escape_control("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escape_control("a\\nb"), "a\\\\nb");
        assert_eq!(escape_control("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(escape_control("\u{85}x\u{7f}"), "\\x85x\\x7f");
        assert_eq!(escape_control("<b>bold</b> & <i>"), "<b>bold</b> & <i>");
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ab", 4), "ab");
        assert_eq!(clip("ééééé", 3), "éé…");
    }
}
