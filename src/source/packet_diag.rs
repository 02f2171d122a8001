//! Packet sockets (`AF_PACKET`) from the kernel over `NETLINK_SOCK_DIAG` (`packet_diag`).
//!
//! A packet socket has no port: it receives frames off the link, every frame of an
//! ethertype or all of them, and a classic BPF filter may pick the ones it wants (a
//! backdoor's "magic packet"). The dump says the socket type (raw or dgram), the ethertype,
//! the interface it is bound to, its fanout group, its uid and inode, and the filter: its
//! instructions to a reader with `CAP_NET_ADMIN`, an empty attribute to any other (then
//! it is unknown here, never taken for none).
//!
//! The crate has no types for `packet_diag`, so the request and the replies are laid out
//! here, from `linux/packet_diag.h`.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NlasIterator};
use netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY;

use super::sock_diag::{DiagError, ParseFailure, Progress, SockDiag, parse_messages};
use crate::model::{Filter, Inode, PortLess, Protocol, Socket};

const AF_PACKET: u8 = 17;
const PACKET_SHOW_INFO: u32 = 0x01;
const PACKET_SHOW_FANOUT: u32 = 0x08;
const PACKET_SHOW_FILTER: u32 = 0x20;
// The attributes are numbered from 0 (the header has no PACKET_DIAG_NONE).
const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_FANOUT: u16 = 4;
const PACKET_DIAG_UID: u16 = 5;
const PACKET_DIAG_FILTER: u16 = 7;
/// `struct packet_diag_msg`: family, type, num (the ethertype, host order), inode, cookie.
const PACKET_DIAG_MSG_LEN: usize = 16;
/// One classic BPF instruction (`struct sock_filter`).
const SOCK_FILTER_LEN: usize = 8;
const SOCK_RAW: u8 = 3;
const SOCK_DGRAM: u8 = 2;

/// A dump request for every packet socket, with the attributes read here.
pub fn request(sequence: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(36);
    m.extend_from_slice(&36u32.to_ne_bytes()); // nlmsg_len: 16 + sizeof(packet_diag_req)
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&sequence.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    // struct packet_diag_req
    m.extend_from_slice(&[AF_PACKET, 0, 0, 0]); // family, protocol, pad
    m.extend_from_slice(&0u32.to_ne_bytes()); // pdiag_ino: every socket
    let show = PACKET_SHOW_INFO | PACKET_SHOW_FANOUT | PACKET_SHOW_FILTER;
    m.extend_from_slice(&show.to_ne_bytes());
    m.extend_from_slice(&[0; 8]); // cookie
    m
}

/// Parses one `recv` worth of a `packet_diag` dump, appending its sockets to `out`.
pub fn parse_dump(bytes: &[u8], out: &mut Vec<Socket>) -> Result<Progress, ParseFailure> {
    parse_messages(bytes, |payload| {
        out.push(parse_socket(payload)?);
        Ok(())
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse_socket(payload: &[u8]) -> Result<Socket, ParseFailure> {
    let malformed = |what: &str| ParseFailure::Malformed(format!("packet_diag_msg: {what}"));
    let (header, attributes) = payload
        .split_at_checked(PACKET_DIAG_MSG_LEN)
        .ok_or_else(|| malformed("shorter than its header"))?;
    if header[0] != AF_PACKET {
        return Err(malformed("not AF_PACKET"));
    }
    let socket_type = match header[1] {
        SOCK_RAW => "raw",
        SOCK_DGRAM => "dgram",
        _ => "other",
    };
    let ethertype = u16::from_ne_bytes([header[2], header[3]]);
    let inode = u32_at(header, 4).ok_or_else(|| malformed("no inode"))?;
    let (mut ifindex, mut uid, mut fanout, mut filter) = (0, 0, None, Filter::None);
    for attribute in NlasIterator::new(attributes) {
        let a = attribute.map_err(|e| malformed(&format!("attribute: {e}")))?;
        let value = a.value();
        match a.kind() {
            PACKET_DIAG_INFO => ifindex = u32_at(value, 0).ok_or_else(|| malformed("info"))?,
            PACKET_DIAG_UID => uid = u32_at(value, 0).ok_or_else(|| malformed("uid"))?,
            PACKET_DIAG_FANOUT => {
                fanout = Some(u32_at(value, 0).ok_or_else(|| malformed("fanout"))?)
            }
            // Empty: the kernel will not tell this reader (no CAP_NET_ADMIN).
            PACKET_DIAG_FILTER if value.is_empty() => filter = Filter::Unknown,
            PACKET_DIAG_FILTER => {
                let n = value.len() / SOCK_FILTER_LEN;
                filter = Filter::Attached(u32::try_from(n).unwrap_or(u32::MAX));
            }
            _ => {}
        }
    }
    Ok(Socket {
        protocol: Protocol::Packet,
        address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: ethertype,
        v6only: None,
        uid,
        inode: Inode(u64::from(inode)),
        cookie: 0,
        netns: 0,
        zone: None,
        portless: Some(Box::new(PortLess {
            socket_type: socket_type.to_owned(),
            ifindex,
            interface: None,
            filter,
            fanout,
        })),
    })
}

/// Appends every packet socket of the namespace `diag` was opened in to `out`.
pub fn dump(diag: &mut SockDiag, out: &mut Vec<Socket>) -> Result<(), DiagError> {
    let start = out.len();
    let request = request(diag.next_sequence());
    let result = diag.dump_with(&request, ("packet", Protocol::Packet), |bytes| {
        parse_dump(bytes, out)
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + payload.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(payload);
        m
    }

    fn packet(filter: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![AF_PACKET, SOCK_RAW];
        p.extend_from_slice(&3u16.to_ne_bytes()); // ETH_P_ALL
        p.extend_from_slice(&4242u32.to_ne_bytes());
        p.extend_from_slice(&[0; 8]);
        let mut info = 2u32.to_ne_bytes().to_vec(); // ifindex 2
        info.extend_from_slice(&[0; 20]);
        p.extend(attribute(PACKET_DIAG_INFO, &info));
        p.extend(attribute(PACKET_DIAG_UID, &1000u32.to_ne_bytes()));
        if let Some(f) = filter {
            p.extend(attribute(PACKET_DIAG_FILTER, f));
        }
        message(&p)
    }

    #[test]
    fn reads_type_ethertype_interface_uid_and_filter() {
        let mut out = Vec::new();
        let mut bytes = packet(Some(&[0; 6 * SOCK_FILTER_LEN]));
        bytes.extend(packet(Some(&[])));
        bytes.extend(packet(None));
        assert_eq!(parse_dump(&bytes, &mut out), Ok(Progress::More));
        assert_eq!(out.len(), 3);
        let s = &out[0];
        assert_eq!(
            (s.protocol, s.port, s.uid, s.inode),
            (Protocol::Packet, 3, 1000, Inode(4242))
        );
        let p = s.portless.as_deref().unwrap();
        assert_eq!((p.socket_type.as_str(), p.ifindex), ("raw", 2));
        assert_eq!(p.filter, Filter::Attached(6));
        assert_eq!(out[1].portless.as_deref().unwrap().filter, Filter::Unknown);
        assert_eq!(out[2].portless.as_deref().unwrap().filter, Filter::None);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut out = Vec::new();
        for bytes in [message(&[AF_PACKET, 3]), message(&[2; 16]), vec![1, 2, 3]] {
            assert!(matches!(
                parse_dump(&bytes, &mut out),
                Err(ParseFailure::Malformed(_))
            ));
        }
    }
}
