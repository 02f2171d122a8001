//! portsentinel: watches which sockets listen on a Linux machine and tells a person when
//! something listens where nothing should.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod exposition;
pub mod files;
pub mod latch;
pub mod memory;
pub mod model;
pub mod registry;
pub mod sink;
pub mod source;
pub mod state;
pub mod text;
