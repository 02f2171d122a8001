//! `portsentinel::source::sock_diag::parse_dump`: one recv() buffer of a
//! NETLINK_SOCK_DIAG dump reply.
//!
//! Invariants: no panic; only appends to `out`; every socket carries the protocol
//! asked for; IPv4 sockets have `v6only: None`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsentinel::model::{Protocol, Socket};
use portsentinel::source::sock_diag::parse_dump;

fuzz_target!(|data: &[u8]| {
    for protocol in Protocol::ALL {
        let marker = Socket {
            protocol,
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 1,
            v6only: None,
            uid: 0,
            inode: portsentinel::model::Inode(1),
        };
        let mut out = vec![marker.clone()];
        let _ = parse_dump(data, protocol, &mut out);
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
});
