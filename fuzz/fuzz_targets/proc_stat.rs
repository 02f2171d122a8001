//! `portsentinel::source::procfs::parse_stat`: `/proc/PID/stat` (start time, for the
//! pid-reuse guard).
//!
//! Invariants: no panic; on Some, `comm` is exactly what lies between the first '(' and
//! the last ')', and the state is the first character after it that is not whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::source::procfs::parse_stat;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(stat) = parse_stat(&text) else {
        return;
    };
    let open = text.find('(').expect("Some without '('");
    let close = text.rfind(')').expect("Some without ')'");
    assert_eq!(stat.comm, text[open + 1..close], "{text:?}");
    let after = text[close + 1..].trim_start_matches(|c: char| c.is_ascii_whitespace());
    assert_eq!(after.chars().next(), Some(stat.state), "{text:?}");
});
