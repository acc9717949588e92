//! The TLS side of the daemons: certificates and keys, client identities, and the
//! inbound TLS flags and configuration that tlsd and websocketd (for wss) share,
//! reloaded on SIGHUP.

pub mod certs;
pub mod client;
pub mod identity;
pub mod server;
