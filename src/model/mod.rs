//! The pure core: values in, values out. Nothing here reads the clock, files or sockets.

pub mod listener;

pub use listener::{
    Inode, Listener, Owner, Pid, Process, Protocol, Reach, Socket, UnknownOwner, display_address,
};
pub mod policy;

pub use policy::{AddressMatch, AllowRule, Condition, Policy, Severity, UserMatch, Verdict};
