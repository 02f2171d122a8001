//! Attribution against the real `/proc`: owners are found whatever the search order.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::Path;

use portsentinel::model::{Owner, Pid, Protocol, Socket};
use portsentinel::source::{Attributor, SysinfoDetails};

fn socket_of(l: &TcpListener) -> Socket {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
    let inode =
        portsentinel::source::fds::parse_socket_link(link.to_str().unwrap().as_bytes()).unwrap();
    Socket {
        protocol: Protocol::Tcp,
        address: "127.0.0.1".parse().unwrap(),
        port: l.local_addr().unwrap().port(),
        v6only: None,
        uid: 0,
        inode,
        cookie: 0,
        netns: 0,
        portless: None,
        zone: None,
    }
}

/// Regression guard for the search order (new processes first, then the socket's uid,
/// then the rest): a socket opened by a process that is *not* new must still be found
/// when new processes exist, and be given to the right pid.
#[test]
fn a_socket_of_an_old_process_is_found_among_new_processes() {
    let root = Path::new("/proc");
    let mut attributor = Attributor::new(root, SysinfoDetails::new(root).unwrap());
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    attributor.attribute(&[socket_of(&first)], true);
    // New processes appear after that first look...
    let mut children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        })
        .collect();
    // ...and this old process opens a new socket.
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let sockets = [socket_of(&first), socket_of(&second)];
    let stats = attributor.attribute(&sockets, true);
    assert_eq!(stats.new_inodes, 1, "the first socket's owner is cached");
    assert!(
        stats.pids_read >= 9,
        "the new processes were read first ({} read)",
        stats.pids_read
    );
    let me = Pid(std::process::id());
    for s in &sockets {
        match attributor.owner_of(s) {
            Owner::Process(p) => assert_eq!(p.pid, me),
            other => panic!("{other:?}"),
        }
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
