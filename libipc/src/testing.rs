//! A harness for unit-testing a [`Transport`] without sockets or an event
//! loop (feature `test-util`; for tests and fuzz targets, not for daemons).
//!
//! The test plays the event loop: it hands the transport bytes from the
//! network peer ([`Transport::on_network_data`]) and from the service
//! ([`Transport::on_service_data`]), and calls what the context would
//! ([`Transport::accepted`], [`Transport::refused`], ...), each through
//! [`Harness::call`]. Afterwards it takes what the transport sent each way,
//! and looks at what the call asked for: a service, the end of the pair.
//!
//! ```
//! use libipc::switch::{Frames, Transport};
//! use libipc::testing::Harness;
//!
//! let mut t = Frames::new(1024);
//! let mut h = Harness::new();
//! let call = h.call(|relay| t.on_network_data(b"\0\0\0\x02hi", relay));
//! assert!(call.value.is_ok() && call.finished.is_none());
//! assert_eq!(h.take_to_service(), b"\0\0\0\x02hi");
//! assert!(h.take_to_network().is_empty());
//! ```
//!
//! What it does not simulate, so a test must not expect it:
//! - the sockets: every byte stays here until taken, and counts meanwhile in
//!   [`Relay::network_backlog`] and [`Relay::service_backlog`] (a peer that
//!   has not read); take both after each call to play peers that keep up;
//! - the context's rules about calls: that [`Transport::accepted`] comes only
//!   after a service request, that nothing is read from a finished pair or
//!   while the daemon decides, that [`Transport::network_drained`] comes
//!   only once the network side is empty. The harness calls what it is told;
//! - backpressure, timeouts, traffic counting, and closing the sockets after
//!   a [`Relay::finish`] (the call reports it; nothing more happens).

use crate::error::Error;
use crate::queue::OutQueue;
use crate::switch::Relay;
// Named in the docs only.
#[cfg(doc)]
use crate::switch::Transport;

/// The two sides a [`Transport`] writes to, kept in memory (see the
/// [module](self) for what it does not simulate).
#[derive(Debug, Default)]
pub struct Harness {
    to_service: OutQueue,
    to_network: OutQueue,
}

/// What one [`Harness::call`] of a transport asked for, besides its bytes.
#[derive(Debug)]
#[non_exhaustive]
pub struct Call<R> {
    /// What the transport's method returned.
    pub value: R,
    /// The service it asked for ([`Relay::request_service`]).
    pub requested: Option<Vec<u8>>,
    /// It ended the pair ([`Relay::finish`]): `Some(None)` cleanly,
    /// `Some(Some(error))` for the peer's fault.
    pub finished: Option<Option<Error>>,
    /// The network peer ended its side inside the transport's protocol
    /// ([`Relay::network_ended`]).
    pub network_ended: bool,
    /// It has more for the network peer ([`Relay::more_to_send`]), to give
    /// from [`Transport::network_drained`].
    pub more_to_send: bool,
}

impl Harness {
    /// A harness with nothing sent either way yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` with a relay onto this harness (one transport method:
    /// `|relay| t.on_network_data(data, relay)`); returns what `f` returned
    /// and what the transport asked for during the call.
    pub fn call<R>(&mut self, f: impl FnOnce(&mut Relay<'_>) -> R) -> Call<R> {
        let mut relay = Relay::new(&mut self.to_service, &mut self.to_network);
        let value = f(&mut relay);
        Call {
            value,
            requested: relay.request.take(),
            finished: relay.finished.take(),
            network_ended: relay.ended,
            more_to_send: relay.more,
        }
    }

    /// Takes the bytes sent to the service so far (LibIPC frames).
    pub fn take_to_service(&mut self) -> Vec<u8> {
        self.to_service.take_bytes()
    }

    /// Takes the bytes sent to the network peer so far (in the transport's
    /// own framing).
    pub fn take_to_network(&mut self) -> Vec<u8> {
        self.to_network.take_bytes()
    }
}
