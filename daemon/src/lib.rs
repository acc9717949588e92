//! The kit every protocol daemon (tcpd, tlsd, websocketd) runs on.
//!
//! - [`engine`]: worker event loops that accept network clients on already-open
//!   listeners, route each to its service, serve the outbound service, drain;
//! - [`cli`]: the flags every daemon shares, logging, listeners, signals, and
//!   [`cli::run`], which a daemon's `main` hands its transports to;
//! - [`metrics`] (Prometheus), [`systemd`] (notify, socket activation), [`docs`]
//!   (man pages and completions at install time);
//! - [`tls`] (feature `tls`): certificates, client identities and the TLS flags
//!   that tlsd and websocketd's wss share.
//!
//! A daemon binary is its flags and its transport; everything else is here, so
//! the daemons depend on this kit and on libipc, never on each other.

pub mod cli;
pub mod docs;
pub mod engine;
pub mod metrics;
pub mod systemd;
#[cfg(feature = "tls")]
pub mod tls;
