//! portsentinel: watches which sockets listen on a Linux machine and tells a person when
//! something listens where nothing should.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod model;
pub mod registry;
pub mod source;
pub mod text;
