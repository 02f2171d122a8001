//! `portsentinel::model::instant::parse`: one record of the eBPF program's ring buffer,
//! over arbitrary bytes (the layout is ours, but the names in it are any process's), then
//! `Sightings` fed with it.
//!
//! Invariants: no panic; a record of any other length than `EVENT_BYTES` is refused; a
//! name holds no NUL and at most 16 bytes; an exe path is absolute, with no empty or `/`
//! component; the sightings never hold more than `MAX_SIGHTINGS`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::model::instant::{EVENT_BYTES, MAX_SIGHTINGS, Sightings, parse};

fuzz_target!(|data: &[u8]| {
    let mut sightings = Sightings::default();
    for chunk in data.chunks(EVENT_BYTES) {
        let Some(e) = parse(chunk) else {
            assert!(chunk.len() != EVENT_BYTES || ![1, 2, 3, 4, 5].contains(&chunk[52]));
            continue;
        };
        assert_eq!(chunk.len(), EVENT_BYTES);
        assert!(e.comm.len() <= 16 && !e.comm.contains(&0), "{:?}", e.comm);
        if let Some(path) = e.exe.as_ref().and_then(|x| x.path.as_deref()) {
            assert!(path.starts_with('/'), "{path}");
            assert!(!path[1..].split('/').any(str::is_empty), "{path}");
        }
        sightings.note(e);
        assert!(sightings.len() <= MAX_SIGHTINGS);
    }
    let gone = sightings.resolve(u64::MAX, &|e| e.port % 2 == 0);
    assert!(gone.iter().all(|s| s.closed_ns.is_some()));
});
