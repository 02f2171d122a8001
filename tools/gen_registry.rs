//! Regenerates the built-in IANA table from IANA's CSV export.
//!
//! ```text
//! curl -o service-names-port-numbers.csv \
//!   https://www.iana.org/assignments/service-names-port-numbers/service-names-port-numbers.csv
//! cargo run --example gen-registry -- service-names-port-numbers.csv
//! ```
//!
//! Writes `src/registry/table.rs` (or the path given as a second argument).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(csv), out) = (args.next(), args.next()) else {
        eprintln!("usage: gen-registry SERVICE-NAMES-PORT-NUMBERS.CSV [OUT.rs]");
        return ExitCode::from(2);
    };
    let out =
        out.unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/src/registry/table.rs").into());
    let file = match std::fs::File::open(&csv) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gen-registry: cannot open {}: {e}", csv.to_string_lossy());
            return ExitCode::FAILURE;
        }
    };
    let tables = match portsentinel::registry::csv::build_tables(std::io::BufReader::new(file)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gen-registry: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(&out, portsentinel::registry::csv::render_rust(&tables)) {
        eprintln!("gen-registry: cannot write {}: {e}", out.to_string_lossy());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "gen-registry: {} rows -> {} tcp runs, {} udp runs in {}",
        tables.rows,
        tables.tcp.len(),
        tables.udp.len(),
        out.to_string_lossy()
    );
    ExitCode::SUCCESS
}
