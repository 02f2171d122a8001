//! Small `/proc/PID` parsers the attribution needs beyond what `sysinfo` gives.
//!
//! `/proc/PID/stat` tells a process's start time (in clock ticks since boot). Read before
//! and after the owner's details, it tells whether the pid still names the same process:
//! a pid the kernel reused for another program in between must not be reported as the
//! socket's owner.

use std::path::Path;

/// The leading fields of `/proc/PID/stat`, up to the start time. The daemon uses only
/// `start_time`; the name and state are what must be read past to reach it safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The name as the kernel keeps it: any bytes but NUL, not necessarily UTF-8.
    pub comm: Vec<u8>,
    pub state: u8,
    pub ppid: u32,
    /// Field 22: when the process started, in clock ticks after boot.
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`, as bytes: a process may name itself with any bytes (they need
/// not be UTF-8), and must not hide that way. The name sits in parentheses and may itself
/// hold spaces and parentheses, so the fields after it are found from the *last* `)`.
pub fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_vec();
    let mut rest = text[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = *rest.next()?.first()?;
    let ppid = number(rest.next()?)?;
    // After state and ppid, start_time is the 20th field (field 22 overall).
    let start_time = number(rest.nth(17)?)?;
    Some(Stat {
        comm,
        state,
        ppid,
        start_time,
    })
}

fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// `/proc/PID/stat` of `pid` under `proc_root`, if it is readable.
pub fn stat(proc_root: &Path, pid: u32) -> Option<Stat> {
    let mut path = proc_root.to_path_buf();
    path.push(pid.to_string());
    path.push("stat");
    parse_stat(&std::fs::read(path).ok()?)
}

/// The start time of `pid` under `proc_root`, if it is readable.
pub fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let mut path = proc_root.to_path_buf();
    path.push(pid.to_string());
    path.push("stat");
    parse_stat(&std::fs::read(path).ok()?).map(|s| s.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_line() {
        let line = "1234 (nginx: worker) S 1 1234 1234 0 -1 4194624 187 0 0 0 0 0 0 0 20 0 1 0 5501 12345678 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line.as_bytes()).unwrap();
        assert_eq!(
            (s.comm.as_slice(), s.state, s.ppid, s.start_time),
            (&b"nginx: worker"[..], b'S', 1, 5501)
        );
    }

    #[test]
    fn a_name_with_parentheses_and_newlines() {
        let line = "7 (a) b\n) (c) R 2 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0";
        let s = parse_stat(line.as_bytes()).unwrap();
        assert_eq!(s.comm, b"a) b\n) (c");
        assert_eq!(s.start_time, 99);
    }

    /// A name that is not UTF-8 hides nothing: the start time is still read.
    #[test]
    fn a_name_that_is_not_utf8() {
        let line = b"42 (\xff\xfe\xfdbad) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, b"\xff\xfe\xfdbad");
        assert_eq!(s.start_time, 777);
    }

    #[test]
    fn garbage_is_none() {
        for t in ["", "1 (x", "1 x) R", "1 (x) R notanumber", "1 (x) R 1 2 3"] {
            assert_eq!(parse_stat(t.as_bytes()), None, "{t:?}");
        }
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(Path::new("/proc"), std::process::id()).is_some());
    }
}
