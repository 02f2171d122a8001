//! `portsentinel::source::cgroup::unit_from_cgroup`: the systemd unit in
//! `/proc/PID/cgroup`.
//!
//! Invariants: no panic; a unit ends with ".service" or ".scope"; it is one path
//! component of the input, or a user's service manager (`user@UID.service`) and one
//! component below it, each in the input.
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
        let (manager, own) = match unit.split_once('/') {
            Some((m, u)) => (Some(m), u),
            None => (None, unit.as_str()),
        };
        assert!(!own.contains('/'), "unit {unit:?} from {content:?}");
        assert!(content.contains(own), "unit {unit:?} not in {content:?}");
        if let Some(m) = manager {
            let uid = m.strip_prefix("user@").and_then(|m| m.strip_suffix(".service"));
            assert!(
                uid.is_some_and(|u| u.parse::<u32>().is_ok()),
                "manager {m:?} of {unit:?}"
            );
            assert!(content.contains(m), "manager {m:?} not in {content:?}");
        }
    }
});
