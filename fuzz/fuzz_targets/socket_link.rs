//! `portsentinel::source::fds::parse_socket_link`: a `/proc/PID/fd/N` link target.
//!
//! Invariants: no panic; Some exactly when the link is `socket:[DIGITS]` and DIGITS fits
//! a u64; the canonical form of a parsed inode parses back to the same inode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::model::Inode;
use portsentinel::source::fds::parse_socket_link;

fn expected(link: &[u8]) -> Option<Inode> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(Inode(n))
}

fuzz_target!(|data: &[u8]| {
    let got = parse_socket_link(data);
    assert_eq!(
        got,
        expected(data),
        "link {:?}",
        String::from_utf8_lossy(data)
    );
    if let Some(Inode(n)) = got {
        let canonical = format!("socket:[{n}]");
        assert_eq!(parse_socket_link(canonical.as_bytes()), Some(Inode(n)));
    }
});
