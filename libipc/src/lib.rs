//! LibIPC: apps talking to apps.
//!
//! A service listens on a unix socket at `$RUNDIR/<name>` (default
//! `/tmp/.libipc-run/<name>`); clients connect to it by name and exchange messages
//! framed as a 4-byte big-endian length followed by the payload. This crate is the
//! library both sides use, and the event loop the protocol daemons (tcpd, tlsd,
//! websocketd) are built on. Its C library (`libipc.so`, `libipc.a`,
//! `include/libipc.h`), which programs written for the original LibIPC link
//! against unchanged, is the crate `libipc-c`.
//!
//! ```no_run
//! use libipc::{Context, Event};
//!
//! let mut ctx = Context::new()?;
//! ctx.service_init("pong")?;
//! loop {
//!     match ctx.wait_event()? {
//!         Event::Message { id, payload } => ctx.schedule(id, &payload)?,
//!         _ => {}
//!     }
//! }
//! # Ok::<(), libipc::Error>(())
//! ```
//!
//! Modules: [`frame`] is the wire codec (no I/O), [`service`] the run directory,
//! names and sockets, [`network`] the `IPC_NETWORK` routes, [`Context`] the event
//! loop, [`switch`] the transports that relay network clients to services (plain
//! frames, the routed handshake, outbound dialling, TLS with the `tls` feature)
//! and [`switch::DaemonExt`], the part of `Context` only protocol daemons use,
//! and [`proxy`] the PROXY protocol load balancers speak. With the `test-util`
//! feature, `testing` drives a transport in a test, without sockets. The engine the
//! protocol daemons run on is the `libipc-daemon` crate.

#![warn(missing_docs)]

mod context;
pub mod error;
mod event;
pub mod frame;
pub mod handoff;
pub mod network;
mod pool;
pub mod proxy;
mod queue;
pub mod service;
mod slab;
pub mod switch;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod traffic;

pub use context::{Config, Context, write_frame};
pub use error::{Error, Result};
pub use event::{ConnId, Event, EventKind};
