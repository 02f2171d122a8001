//! `portsentinel::model::wire::Message`: the event socket's JSON lines.
//!
//! Invariants: no panic; if `from_line(x)` is `Ok(m)`, then `m.to_line()` ends with the
//! only '\n' it contains, and `from_line(m.to_line().trim_end()) == Ok(m)`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::model::wire::Message;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let Ok(message) = Message::from_line(&line) else {
        return;
    };
    let out = message.to_line();
    assert!(out.ends_with('\n'), "{out:?}");
    assert_eq!(out.matches('\n').count(), 1, "{out:?}");
    match Message::from_line(out.trim_end()) {
        Ok(again) => assert_eq!(again, message, "round trip changed the message: {out:?}"),
        Err(e) => panic!("to_line() output does not parse back: {e}: {out:?}"),
    }
});
