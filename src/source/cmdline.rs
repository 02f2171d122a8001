//! Command lines, read where a read that never ends costs the loop nothing.
//!
//! `/proc/PID/cmdline` is copied out of the process's memory under the lock of its memory
//! map, and a process can hold that lock for as long as it likes: one thread reads a
//! page of a file on a FUSE mount of its own (`direct_io`) whose server it has stopped,
//! another maps that file again, and the kernel waits for the page, lock held, before it
//! maps. (A file mapped over the arguments themselves does not work: the kernel copies
//! command lines out of anonymous memory only.) So command lines are read as
//! [`Bounded`] reads: a process that does this is shown without its command line, and
//! everything else goes on.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bounded::Bounded;
use crate::model::Pid;

/// Longest command line kept, in bytes, and most arguments: a process chooses its own
/// command line, and one of a megabyte must not be copied into every record and event.
pub const CMDLINE_MAX_BYTES: usize = 4096;
pub const CMDLINE_MAX_ARGS: usize = 256;

/// How long the caller waits for one command line.
const CMDLINE_WAIT: Duration = Duration::from_millis(100);

/// Enough of `/proc/PID/cmdline` to decide every cut: a longer file holds more than
/// [`CMDLINE_MAX_ARGS`] arguments or more than [`CMDLINE_MAX_BYTES`] bytes of them
/// before its end (unless it pads them with empty ones, which are not shown anyway).
const READ_MAX: usize = CMDLINE_MAX_BYTES + CMDLINE_MAX_ARGS + 1;

/// A reader of command lines under `proc_root`.
#[derive(Debug)]
pub struct Cmdlines {
    proc_root: PathBuf,
    reads: Bounded<Pid, Vec<String>>,
}

impl Cmdlines {
    pub fn new(proc_root: &Path) -> Cmdlines {
        Cmdlines {
            proc_root: proc_root.to_owned(),
            reads: Bounded::new("cmdline", CMDLINE_WAIT),
        }
    }

    /// The command lines of `pids`, each cut as [`capped`] cuts it. A pid is missing when
    /// its command line could not be read or was not read in time (see [`Bounded`]).
    pub fn read(&mut self, pids: &[Pid]) -> HashMap<Pid, Vec<String>> {
        let root = self.proc_root.clone();
        self.reads
            .read(pids, move |pid| read_one(&root, *pid))
            .into_iter()
            .collect()
    }
}

/// The command line of `pid`, read no further than needed; `None` if it cannot be read.
fn read_one(proc_root: &Path, pid: Pid) -> Option<Vec<String>> {
    let file = std::fs::File::open(proc_root.join(pid.0.to_string()).join("cmdline")).ok()?;
    let mut data = Vec::with_capacity(256);
    file.take(READ_MAX as u64).read_to_end(&mut data).ok()?;
    Some(capped(&data))
}

/// The arguments of a `/proc/PID/cmdline` (empty ones dropped), cut at
/// [`CMDLINE_MAX_BYTES`] / [`CMDLINE_MAX_ARGS`]; a cut ends with a last argument `…`.
/// Shown lossily: names may hold any byte, and the command line is only ever shown.
pub fn capped(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for arg in data.split(|&b| b == 0).filter(|a| !a.is_empty()) {
        if out.len() == CMDLINE_MAX_ARGS || bytes + arg.len() > CMDLINE_MAX_BYTES {
            out.push("…".to_owned());
            break;
        }
        bytes += arg.len();
        out.push(String::from_utf8_lossy(arg).into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(args: &[String]) -> Vec<u8> {
        args.iter().flat_map(|a| a.bytes().chain([0])).collect()
    }

    #[test]
    fn long_command_lines_are_cut() {
        let many: Vec<String> = (0..10_000).map(|i| format!("arg{i}")).collect();
        let c = capped(&joined(&many));
        assert_eq!(c.len(), CMDLINE_MAX_ARGS + 1);
        assert_eq!(c.last().unwrap(), "…");
        assert_eq!(capped(&joined(&["x".repeat(100_000)])), ["…"]);
        assert_eq!(capped(b"/bin/nc\0-l\0"), ["/bin/nc", "-l"]);
        // Rewritten in place, as some daemons do: one argument, spaces and no NUL.
        assert_eq!(capped(b"nginx: worker process"), ["nginx: worker process"]);
        assert_eq!(capped(b"a\0\0b\0"), ["a", "b"]);
        assert_eq!(capped(b"\xffx\0"), ["\u{fffd}x"]);
    }

    /// What is read is enough: every command line, cut where the whole one would be.
    #[test]
    fn the_part_read_is_cut_as_the_whole_would_be() {
        let cases: Vec<Vec<String>> = vec![
            (0..300).map(|i| format!("{i}")).collect(),
            vec!["y".repeat(4000), "z".repeat(200)],
            vec!["y".repeat(4096)],
            (0..255)
                .map(|_| "ab".into())
                .chain(["c".repeat(4000)])
                .collect(),
            vec!["w".repeat(READ_MAX * 2)],
        ];
        for args in cases {
            let whole = joined(&args);
            let part = &whole[..whole.len().min(READ_MAX)];
            assert_eq!(capped(part), capped(&whole), "{:?}", &args[..1]);
        }
    }

    #[test]
    fn this_process_is_read() {
        let mut reader = Cmdlines::new(Path::new("/proc"));
        let me = Pid(std::process::id());
        let got = reader.read(&[me, Pid(u32::MAX)]);
        let args: Vec<String> = std::env::args().collect();
        assert_eq!(got.get(&me), Some(&capped(&joined(&args))));
        assert!(!got.contains_key(&Pid(u32::MAX)));
        assert!(reader.read(&[]).is_empty());
    }
}
