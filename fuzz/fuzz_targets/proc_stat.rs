//! `portsentinel::source::procfs::parse_stat`: `/proc/PID/stat` (start time, for the
//! pid-reuse guard), over arbitrary bytes: a process names itself with any bytes but NUL.
//!
//! Invariants: no panic; on Some, `comm` is exactly what lies between the first '(' and
//! the last ')', and the state is the first byte after it that is not whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::source::procfs::parse_stat;

fuzz_target!(|data: &[u8]| {
    let Some(stat) = parse_stat(data) else {
        return;
    };
    let open = data.iter().position(|&b| b == b'(').expect("Some without '('");
    let close = data.iter().rposition(|&b| b == b')').expect("Some without ')'");
    assert_eq!(stat.comm, data[open + 1..close], "{data:?}");
    let after = data[close + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied();
    assert_eq!(after, Some(stat.state), "{data:?}");
});
