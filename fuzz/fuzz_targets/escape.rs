//! `portsentinel::text::escape_control` (and `clip`), `portsentinel::text::json` and
//! `portsentinel::model::desktop::escape_markup`.
//!
//! Invariants: no panic; escape_control's output has no hidden character (control, bidi,
//! invisible) and is the input itself when nothing needs escaping; clip keeps at most
//! `max` characters and nothing hidden; JSON holds nothing hidden raw and decodes to the
//! input; escape_markup's output has no '<' or '>'.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portsentinel::model::desktop::escape_markup;
use portsentinel::text::{clip, escape_control, is_hidden, json};

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text: &str = &text;

    let escaped = escape_control(text);
    assert!(!escaped.chars().any(is_hidden), "{text:?} -> {escaped:?}");
    let plain = !text.chars().any(|c| c == '\\' || is_hidden(c));
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
    assert!(!clipped.chars().any(is_hidden), "{clipped:?}");

    let encoded = json::to_string(text);
    assert!(!encoded.chars().any(is_hidden), "{text:?} -> {encoded}");
    let decoded: String = serde_json::from_str(&encoded).expect("valid JSON");
    assert_eq!(decoded, text);

    let markup = escape_markup(text);
    assert!(!markup.contains(['<', '>']), "{text:?} -> {markup:?}");
    if !text.contains(['&', '<', '>']) {
        assert_eq!(markup, text);
    }
});
