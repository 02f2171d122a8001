//! `portsentinel::source::cgroup::unit_from_cgroup`: the systemd unit in
//! `/proc/PID/cgroup`.
//!
//! Invariants: no panic; a unit ends with ".service" or ".scope", contains no '/', and
//! appears in the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::source::cgroup::unit_from_cgroup;

fuzz_target!(|data: &[u8]| {
    let Ok(content) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(unit) = unit_from_cgroup(content) {
        assert!(
            unit.ends_with(".service") || unit.ends_with(".scope"),
            "unit {unit:?} from {content:?}"
        );
        assert!(!unit.contains('/'), "unit {unit:?} from {content:?}");
        assert!(
            content.contains(unit.as_str()),
            "unit {unit:?} not in {content:?}"
        );
    }
});
