//! The committed built-in table must be exactly what the generator makes of IANA's CSV.

use std::path::PathBuf;

use portsentinel::registry::csv::{build_tables, render_rust};

/// IANA's CSV, when a copy sits beside the repository (or `PORTSENTINEL_IANA_CSV` names one).
fn iana_csv() -> Option<PathBuf> {
    let path = std::env::var_os("PORTSENTINEL_IANA_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/iana/service-names-port-numbers.csv")
        });
    path.exists().then_some(path)
}

#[test]
fn committed_table_equals_generator_output() {
    let Some(csv) = iana_csv() else {
        eprintln!("no IANA CSV beside the repository: nothing to compare the table with");
        return;
    };
    let tables = build_tables(std::fs::File::open(&csv).unwrap()).unwrap();
    let generated = render_rust(&tables);
    let committed = include_str!("../src/registry/table.rs");
    assert!(
        generated == committed,
        "src/registry/table.rs is stale: run `cargo run --example gen-registry -- {}`",
        csv.display()
    );
}
