//! Builds per-protocol run tables from IANA's CSV export, and renders them as Rust source.
//!
//! How a row counts, chosen so the counts match IANA's own for 0-1023: a row with a service
//! name assigns the port; an unnamed row whose description is exactly "Unassigned" or
//! "Reserved" (any case) marks it so; other unnamed rows ("any private mail system",
//! "De-registered", ...) say nothing, and a port no row covers counts as unassigned.
//! When rows disagree, assigned beats reserved beats unassigned. An empty protocol column
//! covers every protocol.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Run, Services, Status};

/// The tables for the two protocols the daemon watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub tcp: Vec<Run>,
    pub udp: Vec<Run>,
    /// Data rows read (including those with no port).
    pub rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot open IANA registry {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    #[error("{}IANA registry CSV, line {line}: {message}", file_prefix(.path))]
    Bad {
        path: Option<PathBuf>,
        line: u64,
        message: String,
    },
}

fn file_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl CsvError {
    pub(crate) fn in_file(self, file: &Path) -> CsvError {
        match self {
            CsvError::Bad { line, message, .. } => CsvError::Bad {
                path: Some(file.to_owned()),
                line,
                message,
            },
            other => other,
        }
    }
}

const COLUMNS: [&str; 4] = [
    "Service Name",
    "Port Number",
    "Transport Protocol",
    "Description",
];

#[derive(Clone, Default)]
struct PortAcc {
    status: Option<Status>,
    names: Vec<Box<str>>,
}

fn rank(status: Option<Status>) -> u8 {
    match status {
        None => 0,
        Some(Status::Unassigned) => 1,
        Some(Status::Reserved) => 2,
        Some(Status::Assigned) => 3,
    }
}

/// Reads IANA's `service-names-port-numbers.csv` and builds the TCP and UDP tables.
pub fn build_tables(reader: impl Read) -> Result<Tables, CsvError> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(reader);
    let bad = |line: u64, message: String| CsvError::Bad {
        path: None,
        line,
        message,
    };
    let headers = rdr.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    let [name_i, port_i, proto_i, desc_i] = column_indexes(&headers)?;

    let mut tcp = vec![PortAcc::default(); 65536];
    let mut udp = vec![PortAcc::default(); 65536];
    let mut rows = 0;
    let mut record = ::csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(bad(line, e.to_string()));
            }
        }
        rows += 1;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let port = field(port_i);
        if port.is_empty() {
            continue;
        }
        let (first, last) = parse_port_range(port).ok_or_else(|| {
            bad(
                line,
                format!("bad port number `{port}` (expected N or N-M, 0-65535)"),
            )
        })?;
        let name = field(name_i);
        let desc = field(desc_i);
        let status = if !name.is_empty() {
            Status::Assigned
        } else if desc.eq_ignore_ascii_case("unassigned") {
            Status::Unassigned
        } else if desc.eq_ignore_ascii_case("reserved") {
            Status::Reserved
        } else {
            continue;
        };
        let (to_tcp, to_udp) = match field(proto_i).to_ascii_lowercase().as_str() {
            "" => (true, true),
            "tcp" => (true, false),
            "udp" => (false, true),
            _ => continue, // sctp, dccp: not watched
        };
        for (wanted, table) in [(to_tcp, &mut tcp), (to_udp, &mut udp)] {
            if wanted {
                add_row(
                    &mut table[usize::from(first)..=usize::from(last)],
                    status,
                    name,
                );
            }
        }
    }
    Ok(Tables {
        tcp: into_runs(tcp),
        udp: into_runs(udp),
        rows,
    })
}

/// Where IANA's columns are in this file's header.
fn column_indexes(headers: &::csv::StringRecord) -> Result<[usize; 4], CsvError> {
    let mut idx = [0usize; 4];
    for (slot, want) in idx.iter_mut().zip(COLUMNS) {
        *slot = headers
            .iter()
            .position(|h| h.trim() == want)
            .ok_or_else(|| CsvError::Bad {
                path: None,
                line: 1,
                message: format!(
                    "no `{want}` column: is this IANA's service-names-port-numbers.csv?"
                ),
            })?;
    }
    Ok(idx)
}

/// Folds one row into the ports it covers: the strongest status wins, names add up.
fn add_row(ports: &mut [PortAcc], status: Status, name: &str) {
    for acc in ports {
        if rank(Some(status)) > rank(acc.status) {
            acc.status = Some(status);
        }
        if status == Status::Assigned && !acc.names.iter().any(|n| &**n == name) {
            acc.names.push(name.into());
        }
    }
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s, s),
    };
    let (a, b) = (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?);
    (a <= b).then_some((a, b))
}

fn into_runs(ports: Vec<PortAcc>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (port, acc) in ports.into_iter().enumerate() {
        let port = port as u16;
        let Some(status) = acc.status else { continue };
        if let Some(prev) = runs.last_mut()
            && prev.last.checked_add(1) == Some(port)
            && prev.status == status
            && prev.services.iter().eq(acc.names.iter().map(|n| &**n))
        {
            prev.last = port;
            continue;
        }
        runs.push(Run {
            first: port,
            last: port,
            status,
            services: Services::Owned(acc.names.into_boxed_slice()),
        });
    }
    runs
}

/// Renders the tables as the Rust source of `src/registry/table.rs`.
pub fn render_rust(tables: &Tables) -> String {
    let mut out = String::new();
    out.push_str(
        "// @generated by `cargo run --example gen-registry -- service-names-port-numbers.csv`\n\
         // from IANA's Service Name and Transport Protocol Port Number Registry. Do not edit.\n\
         // Each row: first port, last port, status, service names.\n\n\
         use super::Run;\n\
         use super::Status::{Assigned as A, Reserved as R, Unassigned as U};\n\n\
         const fn r(first: u16, last: u16, status: super::Status, names: &'static [&'static str]) -> Run {\n    \
         Run::builtin(first, last, status, names)\n}\n",
    );
    for (label, runs) in [("TCP", &tables.tcp), ("UDP", &tables.udp)] {
        let _ = write!(out, "\npub(super) static {label}: &[Run] = &[\n");
        for run in runs {
            let status = match run.status {
                Status::Assigned => 'A',
                Status::Unassigned => 'U',
                Status::Reserved => 'R',
            };
            let _ = write!(out, "    r({}, {}, {status}, &[", run.first, run.last);
            for (i, name) in run.services.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{name:?}");
            }
            out.push_str("]),\n");
        }
        out.push_str("];\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use crate::registry::{Origin, Registry};

    const SAMPLE: &str = "\
Service Name,Port Number,Transport Protocol,Description,Assignee,Contact,Registration Date,Modification Date,Reference,Service Code,Unauthorized Use Reported,Assignment Notes
,0,tcp,Reserved,,,,,,,,
ssh,22,tcp,\"The Secure Shell (SSH) Protocol, with a comma\",,,,,,,,
ssh,22,udp,The Secure Shell (SSH) Protocol,,,,,,,,
ipp,631,tcp,IPP,,,,,,,,\"multi
line note\"
ipps,631,tcp,IPP over HTTPS,,,,,,,,
,863-872,,Unassigned,,,,,,,,
,24,tcp,any private mail system,,,,,,,,
x-sctp,900,sctp,only sctp,,,,,,,,
,,tcp,a name with no port,,,,,,,,
";

    #[test]
    fn builds_runs_from_csv() {
        let t = build_tables(SAMPLE.as_bytes()).unwrap();
        let r = Registry::from_tables(t, Origin::BuiltIn);
        assert_eq!(r.lookup(Protocol::Tcp, 22).service_names(), ["ssh"]);
        assert_eq!(
            r.lookup(Protocol::Tcp, 631).service_names(),
            ["ipp", "ipps"]
        );
        for proto in Protocol::IANA {
            let f = r.lookup(proto, 867);
            assert_eq!((f.status, f.listed), (Status::Unassigned, true));
        }
        assert_eq!(
            r.runs(Protocol::Tcp)
                .iter()
                .filter(|r| r.first == 863)
                .count(),
            1
        );
        // An unnamed row that is neither Unassigned nor Reserved says nothing.
        assert!(!r.lookup(Protocol::Tcp, 24).listed);
        assert!(!r.lookup(Protocol::Udp, 900).listed);
        assert_eq!(r.lookup(Protocol::Tcp, 0).status, Status::Reserved);
    }

    #[test]
    fn rejects_a_bad_port_with_its_line() {
        let csv = "Service Name,Port Number,Transport Protocol,Description\nfoo,70000,tcp,x\n";
        let err = build_tables(csv.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("70000"), "{err}");
    }

    #[test]
    fn rejects_a_file_that_is_not_the_registry() {
        let err = build_tables("a,b,c\n1,2,3\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `Service Name` column"), "{err}");
    }

    #[test]
    fn assigned_beats_reserved_beats_unassigned() {
        let csv = "Service Name,Port Number,Transport Protocol,Description\n\
                   ,10-12,,Unassigned\n,11,udp,Reserved\nten,10,tcp,x\n";
        let r = Registry::from_tables(build_tables(csv.as_bytes()).unwrap(), Origin::BuiltIn);
        assert_eq!(r.lookup(Protocol::Tcp, 10).status, Status::Assigned);
        assert_eq!(r.lookup(Protocol::Udp, 10).status, Status::Unassigned);
        assert_eq!(r.lookup(Protocol::Udp, 11).status, Status::Reserved);
        assert_eq!(r.lookup(Protocol::Tcp, 11).status, Status::Unassigned);
    }

    #[test]
    fn rendered_source_lists_every_run() {
        let t = build_tables(SAMPLE.as_bytes()).unwrap();
        let src = render_rust(&t);
        assert!(src.contains("r(22, 22, A, &[\"ssh\"]),"), "{src}");
        assert!(src.contains("r(631, 631, A, &[\"ipp\", \"ipps\"]),"));
        assert!(src.contains("r(863, 872, U, &[]),"));
    }
}
