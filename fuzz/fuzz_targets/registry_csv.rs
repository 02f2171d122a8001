//! `portsentinel::registry::csv::build_tables`: IANA's CSV export into per-protocol runs.
//!
//! Invariants: no panic; on Ok each table's runs are sorted and disjoint
//! (first <= last, previous.last < next.first); a Registry built from them answers
//! lookups without panicking and agrees with the runs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::model::Protocol;
use portsentinel::registry::csv::build_tables;
use portsentinel::registry::{Origin, Registry, Run, Status};

fn check_runs(label: &str, runs: &[Run]) {
    for run in runs {
        assert!(run.first <= run.last, "{label}: {run:?}");
        assert_eq!(
            run.status == Status::Assigned,
            !run.services.is_empty(),
            "{label}: assigned iff named: {run:?}"
        );
    }
    for pair in runs.windows(2) {
        assert!(
            pair[0].last < pair[1].first,
            "{label}: {:?} overlaps or precedes {:?}",
            pair[0],
            pair[1]
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(tables) = build_tables(data) else {
        return;
    };
    check_runs("tcp", &tables.tcp);
    check_runs("udp", &tables.udp);
    let registry = Registry::from_tables(tables, Origin::BuiltIn);
    for protocol in Protocol::ALL {
        for port in [
            0, 1, 22, 53, 80, 443, 867, 1023, 1024, 49151, 49152, 65534, 65535,
        ] {
            let facts = registry.lookup(protocol, port);
            assert_eq!(facts.listed, facts.run.is_some());
            if let Some(run) = facts.run {
                assert!(run.first <= port && port <= run.last, "{port}: {run:?}");
            }
            let _ = facts.service_names();
        }
        for run in registry.runs(protocol) {
            for port in [run.first, run.last] {
                let facts = registry.lookup(protocol, port);
                assert!(facts.listed, "{protocol} {port} not found in {run:?}");
                assert_eq!(facts.status, run.status);
            }
        }
    }
});
