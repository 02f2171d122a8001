//! Making text that comes from other processes safe to show.
//!
//! Process names, exe paths and command lines are chosen by whoever starts the process,
//! including an attacker. Before they reach a terminal, a log line or a notification, every
//! control character (newlines, ANSI escapes, C1 controls), every bidirectional-override
//! character and every invisible one (zero-width spaces and joiners, line and paragraph
//! separators, the byte-order mark, ...) is written as a visible escape, and backslashes
//! are doubled so the escaped form cannot be confused with a literal one. The result is
//! one line that means what it shows: `ss\u{200b}hd` cannot pass for `sshd`.
//!
//! Each output escapes once: human text with [`escape_control`] (and [`clip`], which cuts
//! what is already escaped); JSON with [`json`], which writes the same characters as
//! `\u` escapes so the decoded string is unchanged.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that change how text reads without showing themselves: controls (C0, DEL,
/// C1), bidirectional overrides and marks, and invisible ones.
pub fn is_hidden(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control()
        || matches!(c,
            '\u{00ad}' // soft hyphen
            | '\u{034f}' // combining grapheme joiner
            | '\u{061c}' // Arabic letter mark
            | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers
            | '\u{17b4}' | '\u{17b5}'
            | '\u{180b}'..='\u{180f}' // Mongolian variation selectors, vowel separator
            | '\u{200b}'..='\u{200f}' // zero-width space, joiners, LRM, RLM
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{206f}' // word joiner, invisible operators, bidi isolates
            | '\u{fe00}'..='\u{fe0f}' // variation selectors
            | '\u{feff}' // byte-order mark, zero-width no-break space
            | '\u{fff9}'..='\u{fffb}' // interlinear annotations
            | '\u{e0000}'..='\u{e007f}' // tags
        )
}

fn needs_escape(c: char) -> bool {
    c == '\\' || is_hidden(c)
}

/// Printable ASCII only: nothing in it is hidden. Checked a byte at a time, which is
/// most text and much faster than a look at each character.
pub fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Escapes control and bidi characters: `evil\nPRIORITY=0` → `evil\\nPRIORITY=0`.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if (is_plain(s) && !s.contains('\\')) || !s.chars().any(needs_escape) {
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
    truncate(escape_control(s), max)
}

/// Cuts text that is already escaped to at most `max` characters, marking the cut with
/// `…`: never escapes twice.
pub fn truncate(s: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
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

/// JSON that shows what it holds: the characters [`is_hidden`] names are written as
/// `\u` escapes (serde_json escapes only C0 controls, `"` and `\`), so C1 controls, bidi
/// overrides and invisible characters cannot hide in `scan --json`, the event socket or
/// `--log json`. The decoded strings are unchanged.
pub mod json {
    use std::io;

    use serde::Serialize;
    use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

    /// A formatter that escapes hidden characters and otherwise does what `F` does.
    #[derive(Debug, Clone)]
    pub struct Visible<F>(pub F);

    impl<F: Formatter> Formatter for Visible<F> {
        fn write_string_fragment<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            fragment: &str,
        ) -> io::Result<()> {
            if super::is_plain(fragment) {
                return w.write_all(fragment.as_bytes());
            }
            let mut start = 0;
            for (i, c) in fragment.char_indices() {
                if !super::is_hidden(c) {
                    continue;
                }
                w.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
                start = i + c.len_utf8();
            }
            w.write_all(&fragment.as_bytes()[start..])
        }

        fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.begin_array(w)
        }
        fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_array(w)
        }
        fn begin_array_value<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            self.0.begin_array_value(w, first)
        }
        fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_array_value(w)
        }
        fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.begin_object(w)
        }
        fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_object(w)
        }
        fn begin_object_key<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            self.0.begin_object_key(w, first)
        }
        fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_object_key(w)
        }
        fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.begin_object_value(w)
        }
        fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_object_value(w)
        }
    }

    /// Writes `value` as pretty JSON.
    pub fn to_writer_pretty<W: io::Write, T: Serialize + ?Sized>(
        mut w: W,
        value: &T,
    ) -> io::Result<()> {
        // Into memory first, then one write: the formatter writes a few bytes at a time,
        // and `w` is most often a `dyn Write` (a call that cannot be inlined per write).
        let mut out = Vec::with_capacity(64 * 1024);
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, Visible(PrettyFormatter::new()));
        value.serialize(&mut ser).map_err(io::Error::from)?;
        w.write_all(&out)
    }

    /// `value` as one line of JSON.
    pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = Vec::with_capacity(256);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, Visible(CompactFormatter));
        value
            .serialize(&mut ser)
            .expect("serializing to memory with string keys cannot fail");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// `value` as pretty JSON.
    pub fn to_string_pretty<T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = Vec::with_capacity(256);
        to_writer_pretty(&mut out, value).expect("serializing to memory cannot fail");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
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
    fn invisible_characters_are_visible() {
        assert_eq!(escape_control("ss\u{200b}hd"), "ss\\u{200b}hd");
        assert_eq!(
            escape_control("a\u{2028}b\u{2029}c"),
            "a\\u{2028}b\\u{2029}c"
        );
        assert_eq!(escape_control("\u{feff}x"), "\\u{feff}x");
        assert_eq!(escape_control("\u{e0041}"), "\\u{e0041}");
        assert_eq!(escape_control("café ünïcode"), "café ünïcode");
    }

    #[test]
    fn json_writes_hidden_characters_as_u_escapes() {
        let v = serde_json::json!({"name": "ss\u{200b}hd\u{85}\u{202e}\u{e0041}", "plain": "é"});
        let s = json::to_string(&v);
        assert_eq!(
            s,
            r#"{"name":"ss\u200bhd\u0085\u202e\udb40\udc41","plain":"é"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v, "the decoded string is unchanged");
        let pretty = json::to_string_pretty(&v);
        assert!(pretty.contains("\n  \"name\": \"ss\\u200bhd"), "{pretty}");
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ab", 4), "ab");
        assert_eq!(clip("ééééé", 3), "éé…");
    }
}
