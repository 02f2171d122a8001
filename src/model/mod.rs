//! The pure core: values in, values out. Nothing here reads the clock, files or sockets.

pub mod builtin;
pub mod classify;
pub mod desktop;
pub mod events;
pub mod expect;
pub mod history;
pub mod instant;
pub mod listener;
pub mod policy;
pub mod report;
pub mod rules;
pub mod snapshot;
pub mod wire;

pub use classify::{Classification, Classifier, Iana, PortRange, Status, alert_id};
pub use events::{Event, EventKind, Now, Timing, Tracker};
pub use listener::{
    Container, Filter, Inode, Kind, Listener, NetnsView, Owner, Pid, PortLess, Process, Protocol,
    Reach, Socket, UnknownOwner, Zone, address_words, display_address,
};
pub use policy::{Condition, Policy, Severity, Verdict};
pub use report::Report;
pub use rules::{
    AddressMatch, AllowRule, ExpectRule, Holder, Host, Place, PortMatch, RuleMatch, UserMatch,
};
pub use snapshot::{ListenerKey, OwnerKey, group_listeners};
