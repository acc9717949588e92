//! What every protocol daemon's binary shares: the common flags, logging, binding,
//! signals. tcpd is the plain one; tlsd and websocketd build on this crate, so
//! their flags and behaviour stay the same where they can.

pub mod cli;
pub mod docs;
pub mod metrics;
pub mod systemd;
