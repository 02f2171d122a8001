//! `portsentinel::source::sock_diag::parse_dump`: one recv() buffer of a
//! NETLINK_SOCK_DIAG dump reply.
//!
//! Invariants: no panic; only appends to `out`; every socket carries the protocol
//! asked for; IPv4 sockets have `v6only: None`; and wherever the crate's full decoder
//! (`parse_dump_decoded`) accepts the input or reports a kernel error, the in-place reader
//! gives the same sockets and the same ending.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::model::{Protocol, Socket};
use portsentinel::source::sock_diag::{ParseFailure, parse_dump, parse_dump_decoded};

fuzz_target!(|data: &[u8]| {
    for protocol in Protocol::ALL {
        let marker = Socket {
            protocol,
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 1,
            v6only: None,
            uid: 0,
            inode: portsentinel::model::Inode(1),
            cookie: 0,
            netns: 0,
            portless: None,
            zone: None,
        };
        let mut out = vec![marker.clone()];
        let ours = parse_dump(data, protocol, &mut out);
        match parse_dump_decoded(data, protocol) {
            Ok((sockets, progress)) => {
                assert_eq!(ours, Ok(progress));
                assert_eq!(out[1..], sockets[..]);
            }
            // The full decoder also rejects attributes the reader skips.
            Err(ParseFailure::Malformed(_)) => {}
            Err(failure) => assert_eq!(ours, Err(failure)),
        }
        assert_eq!(
            out[0], marker,
            "parse_dump changed what was already in `out`"
        );
        // A message is at least a 16-byte header.
        assert!(
            out.len() - 1 <= data.len() / 16,
            "{} sockets from {} bytes",
            out.len() - 1,
            data.len()
        );
        for s in &out[1..] {
            assert_eq!(s.protocol, protocol);
            if s.address.is_ipv4() {
                assert_eq!(s.v6only, None, "{s:?}");
            }
        }
    }
    // The packet_diag reader, on the same bytes: no panic, a socket per message at most,
    // each a packet socket that says what it listens to.
    let mut out = Vec::new();
    let _ = portsentinel::source::packet_diag::parse_dump(data, &mut out);
    assert!(out.len() <= data.len() / 16);
    for s in &out {
        assert_eq!(s.protocol, Protocol::Packet);
        assert!(s.portless.is_some());
    }
});
