//! `portsentinel::text::escape_control` (and `clip`) and
//! `portsentinel::model::desktop::escape_markup`.
//!
//! Invariants: no panic; escape_control's output has no control character (so no ESC)
//! and no bidi override, and is the input itself when nothing needs escaping;
//! clip keeps at most `max` characters; escape_markup's output has no '<' or '>'.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portsentinel::model::desktop::escape_markup;
use portsentinel::text::{clip, escape_control};

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text: &str = &text;

    let escaped = escape_control(text);
    assert!(
        !escaped
            .chars()
            .any(|c| c.is_control() || c == '\u{1b}' || is_bidi(c)),
        "{text:?} -> {escaped:?}"
    );
    let plain = !text
        .chars()
        .any(|c| c.is_control() || c == '\\' || is_bidi(c));
    if plain {
        assert!(matches!(escaped, Cow::Borrowed(_)), "{text:?}");
        assert_eq!(&*escaped, text);
    }

    let max = usize::from(max % 64) + 1;
    let clipped = clip(text, max);
    assert!(
        clipped.chars().count() <= max,
        "clip({text:?}, {max}) = {clipped:?}"
    );
    assert!(
        !clipped.chars().any(|c| c.is_control() || is_bidi(c)),
        "{clipped:?}"
    );

    let markup = escape_markup(text);
    assert!(!markup.contains(['<', '>']), "{text:?} -> {markup:?}");
    if !text.contains(['&', '<', '>']) {
        assert_eq!(markup, text);
    }
});
