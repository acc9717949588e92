//! Entry points for the fuzz targets in `fuzz/`, which need a little of the
//! crate-private plumbing. Only in builds with `--cfg fuzzing` (cargo-fuzz sets
//! it); not part of the API.

use crate::queue::OutQueue;
use crate::switch::Relay;

/// Drives a [`crate::switch::Transport`] as the context does, without
/// sockets: what it sends to the service and to the network is kept here.
#[derive(Debug, Default)]
pub struct Harness {
    to_service: OutQueue,
    to_network: OutQueue,
}

impl Harness {
    /// Calls `f` with a relay onto this harness's queues (a transport method:
    /// `|relay| t.on_network_data(data, relay)`); returns what `f` returned
    /// and the service the transport asked for during the call, if any.
    pub fn relay<R>(&mut self, f: impl FnOnce(&mut Relay<'_>) -> R) -> (R, Option<Vec<u8>>) {
        let mut relay = Relay::new(&mut self.to_service, &mut self.to_network);
        let out = f(&mut relay);
        (out, relay.request.take())
    }

    /// Takes the bytes sent to the service so far.
    pub fn take_to_service(&mut self) -> Vec<u8> {
        self.to_service.take_bytes()
    }

    /// Takes the bytes sent to the network peer so far.
    pub fn take_to_network(&mut self) -> Vec<u8> {
        self.to_network.take_bytes()
    }
}
