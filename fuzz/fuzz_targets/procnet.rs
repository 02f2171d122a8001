//! `portsentinel::source::procnet::parse_reader`: `/proc/net/{tcp,tcp6,udp,udp6}` (and
//! `udplite`, `raw`), `parse_packet`: `/proc/net/packet`, and `parse_sctp_eps`:
//! `/proc/net/sctp/eps`.
//!
//! Invariants: no panic; only appends to `out`; at most one socket per line after the
//! header; every socket carries the protocol asked for and `v6only: None`; an error
//! names a line that exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::model::Protocol;
use portsentinel::source::procnet::{parse_packet, parse_reader, parse_sctp_eps};

fuzz_target!(|data: &[u8]| {
    // What BufRead::lines() counts: one per '\n', plus an unterminated last line.
    let lines =
        data.split(|&b| b == b'\n').count() - usize::from(data.ends_with(b"\n") || data.is_empty());
    for protocol in Protocol::ALL {
        let mut out = Vec::new();
        match parse_reader(data, protocol, &mut out) {
            Ok(()) => {}
            Err((line, message)) => {
                assert!(
                    line >= 1 && line <= lines,
                    "error on line {line} of {lines}: {message}"
                );
            }
        }
        assert!(
            out.len() <= lines.saturating_sub(1),
            "{} sockets from {lines} lines",
            out.len()
        );
        for s in &out {
            assert_eq!(s.protocol, protocol);
            assert_eq!(s.v6only, None, "{s:?}");
        }
    }
    // `/proc/net/packet`: at most one socket per line after the header, each a packet
    // socket whose filter is unknown (the file does not say).
    let mut out = Vec::new();
    if let Err((line, message)) = parse_packet(data, &mut out) {
        assert!(line >= 1 && line <= lines, "error on line {line} of {lines}: {message}");
    }
    assert!(out.len() <= lines.saturating_sub(1));
    for s in &out {
        assert_eq!(s.protocol, Protocol::Packet);
        let p = s.portless.as_deref().expect("a packet socket says what it listens to");
        assert_eq!(p.filter, portsentinel::model::Filter::Unknown);
    }
    // `/proc/net/sctp/eps`: at most one SCTP listener per line after the header, never
    // on port 0.
    let mut out = Vec::new();
    if let Err((line, message)) = parse_sctp_eps(data, &mut out) {
        assert!(line >= 1 && line <= lines, "error on line {line} of {lines}: {message}");
    }
    assert!(out.len() <= lines.saturating_sub(1));
    for s in &out {
        assert_eq!(s.protocol, Protocol::Sctp);
        assert_ne!(s.port, 0, "{s:?}");
    }
});
