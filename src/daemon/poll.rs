//! One look at the socket table, and the owners of what is new.
//!
//! The steady path — nothing changed since the last look — is one kernel-filtered dump per
//! family and protocol, a comparison of inode lists in the kernel's dump order, and a
//! bounded check of known owners (one link read each, at most
//! [`VERIFY_PER_PASS`](crate::source::owners::VERIFY_PER_PASS)): no fd-table scan, no
//! grouping, no diff.

use crate::latch::Latch;
use std::sync::Arc;

use crate::model::{Inode, Listener, Pid, Process, Socket, group_listeners};
use crate::sink::RecordSink;
use crate::sink::record::{Record, priority};
use crate::source::{OwnerSource, SocketSource};

/// What one look found.
#[derive(Debug)]
pub enum Look {
    /// No socket source works; nothing can be said (the last known state stands).
    Failed,
    /// The same sockets as last time.
    Unchanged,
    /// The listeners now, with owners.
    Listeners(Vec<Listener>),
}

/// The socket source and the owner lookup, and what the last look saw.
pub struct Poller {
    source: Box<dyn SocketSource + Send>,
    owners: Box<dyn OwnerSource + Send>,
    sockets: Vec<Socket>,
    inodes: Vec<Inode>,
    previous_inodes: Vec<Inode>,
    looked: bool,
    /// The listeners are to be worked out at the next look even if nothing changed.
    regroup: bool,
    failing: Latch,
    /// Which source read the last look's table; `None` when none worked.
    backend: Option<crate::source::Backend>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

impl Poller {
    pub fn new(
        source: Box<dyn SocketSource + Send>,
        owners: Box<dyn OwnerSource + Send>,
    ) -> Poller {
        Poller {
            source,
            owners,
            sockets: Vec::new(),
            inodes: Vec::new(),
            previous_inodes: Vec::new(),
            looked: false,
            regroup: false,
            backend: None,
            failing: Latch::new(
                "cannot read listening sockets",
                "retrying every poll",
                "listening sockets readable again",
            ),
        }
    }

    /// The source that read the last look's table, if any did.
    pub fn backend(&self) -> Option<crate::source::Backend> {
        self.backend
    }

    /// The sockets of the last look.
    pub fn sockets(&self) -> &[Socket] {
        &self.sockets
    }

    /// The kernel named a network namespace: see [`SocketSource::heard_of_namespace`].
    pub fn heard_of_namespace(&mut self, inode: u64) {
        self.source.heard_of_namespace(inode);
    }

    /// The listeners are worked out at the next look even if the sockets and their owners
    /// stay the same: the policy changed, and which of a socket's holders it is judged
    /// as may change with it.
    pub fn regroup(&mut self) {
        self.regroup = true;
    }

    /// How often the owners' sweep reads every fd table (`[daemon] owner_sweep`).
    pub fn set_sweep(&mut self, every: std::time::Duration) {
        self.owners.set_sweep(every);
    }

    /// Processes that hold one of `l`'s sockets too while running another program than
    /// its owner's, one per program (found by the owners' periodic sweep).
    pub fn also_held_by(&self, l: &Listener) -> Vec<Arc<Process>> {
        self.owners.also_held_by_any(&l.inodes)
    }

    /// A running process's details, if `pid` still names the one started at `start_time`.
    pub fn process(&mut self, pid: Pid, start_time: u64) -> Option<Arc<Process>> {
        self.owners.process(pid, start_time)
    }

    /// Takes a snapshot. With `force`, the listeners are worked out even when the socket
    /// table did not change (a vanished listener is waiting out its grace window). The
    /// source failing, and its recovery, are recorded once each.
    pub fn look(&mut self, force: bool, records: &dyn RecordSink) -> Look {
        let read = self.source.listeners(&mut self.sockets);
        self.backend = read.as_ref().ok().copied();
        match read {
            Ok(backend) => {
                if let Some(back) = self.failing.recover() {
                    let back = format!("{back}; reading from {}", backend.as_str());
                    records.send(Record::plain(priority::NOTICE, None, back));
                }
            }
            Err(e) => {
                // Without a snapshot nothing can be said: keep the last known state rather
                // than report every listener closed.
                if let Some(problem) = self.failing.fail(e.to_string()) {
                    records.send(Record::plain(priority::ERR, None, problem));
                }
                return Look::Failed;
            }
        }
        // The kernel walks an unchanged socket table in the same order every time, so the
        // inodes in dump order, equal to the last poll's, mean nothing changed; no sort
        // needed. Should the order move with the set unchanged (a hash table resized), the
        // poll takes the full path below and finds no event.
        self.inodes.clear();
        self.inodes.extend(self.sockets.iter().map(|s| s.inode));
        let unchanged = self.looked && self.inodes == self.previous_inodes;
        self.looked = true;
        std::mem::swap(&mut self.inodes, &mut self.previous_inodes);
        // Owners are checked again even when the table is the same: one that let go of its
        // socket, or one that could not be named before, changes the listeners too.
        let owners = self.owners.attribute(&self.sockets, !unchanged);
        let regroup = std::mem::take(&mut self.regroup);
        if unchanged && !force && !regroup && !owners.owners_changed {
            return Look::Unchanged;
        }
        let owners = &self.owners;
        Look::Listeners(group_listeners(
            &self.sockets,
            |s| owners.owner_of(s),
            false,
        ))
    }
}
