//! websocketd's library: the WebSocket transport and the HTTP side of the
//! upgrade, so that the binary stays its flags, and the fuzz targets and tests
//! use the code as it is.
//!
//! - [`ws`]: the transport (the upgrade, then one WebSocket message per LibIPC
//!   message each way);
//! - [`frame`]: the server's reading of client frames (and, for tests and
//!   fuzzing, `frame_reference`: it and tungstenite's side by side);
//! - [`client`]: the outbound side's transport (`ws://`, `wss://`);
//! - [`http`]: the request head, the upgrade decision and the answers;
//! - [`site`]: the daemon's own hosts and origins (the Host and Origin checks);
//! - [`files`]: static files for plain GET requests (`--static-dir`);
//! - [`flags`]: its own flags, and the settings they make.

pub mod client;
pub mod files;
pub mod flags;
pub mod frame;
#[cfg(any(test, feature = "test-util"))]
pub mod frame_reference;
pub mod http;
pub mod site;
pub mod ws;
