//! The client side of the network handshake: a daemon connecting a local client to
//! a remote daemon's service (outbound, `tcp://HOST:PORT/SERVICE`).
//!
//! The transport opens with the service name as one frame, reads the remote
//! daemon's framed answer, and then relays through `inner`. An `ok` is passed on to
//! the local client as a framed `ok` (what `connect_service` waits for through
//! `IPC_NETWORK`); any other answer fails the connection with
//! [`Error::Denied`] carrying it, for the daemon to report to the local client.

use crate::error::{Error, Result};
use crate::frame;
use crate::switch::{Relay, Transport};

/// Longest answer accepted from the remote daemon.
const MAX_ANSWER: usize = 4096;

/// Outbound handshake in front of `inner` (for tcpd, [`crate::switch::Frames`]).
#[derive(Debug)]
pub struct Dial<T> {
    service: Vec<u8>,
    /// The answer so far; `None` once it came.
    answer: Option<Vec<u8>>,
    inner: T,
}

impl<T: Transport> Dial<T> {
    /// Asks the remote daemon for `service`, then relays through `inner`.
    pub fn new(service: &str, inner: T) -> Self {
        Dial {
            service: service.as_bytes().to_vec(),
            answer: Some(Vec::new()),
            inner,
        }
    }
}

impl<T: Transport> Transport for Dial<T> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn start(&mut self, relay: &mut Relay<'_>) {
        let mut hello = Vec::with_capacity(self.service.len() + frame::HEADER_LEN);
        // Names are at most 64 bytes: always a valid frame.
        let _ = frame::encode(&self.service, &mut hello);
        relay.to_network(&hello);
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let Some(buf) = self.answer.as_mut() else {
            return self.inner.on_network_data(data, relay);
        };
        buf.extend_from_slice(data);
        let range = frame::decode(buf, MAX_ANSWER)
            .map_err(|_| Error::Handshake("the remote answer is not a daemon's".into()))?;
        let Some(range) = range else {
            return Ok(());
        };
        let buf = std::mem::take(buf);
        let (answer, rest) = (&buf[range.clone()], &buf[range.end..]);
        self.answer = None;
        if answer != b"ok" {
            return Err(Error::Denied(
                String::from_utf8_lossy(answer).chars().take(200).collect(),
            ));
        }
        relay.request_service(&self.service);
        self.inner.on_network_data(rest, relay)
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        let _ = relay.message_to_service(b"ok");
        self.inner.accepted(relay);
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        self.inner.on_service_data(data, relay)
    }

    fn network_closed(&mut self) -> Result<()> {
        if self.answer.is_some() {
            return Err(Error::Denied(
                "the remote daemon closed without answering".into(),
            ));
        }
        self.inner.network_closed()
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        self.inner.service_closed(relay, clean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::OutQueue;
    use crate::switch::Frames;

    fn framed(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        frame::encode(p, &mut v).unwrap();
        v
    }

    #[test]
    fn asks_then_relays_after_ok() {
        let mut t = Dial::new("pong", Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut relay = Relay::new(&mut svc, &mut net);
        t.start(&mut relay);
        assert_eq!(relay.to_network.take_bytes(), framed(b"pong"));
        let greeting = framed(b"hello");
        let answer = [framed(b"ok"), greeting.clone()].concat();
        t.on_network_data(&answer[..3], &mut relay).unwrap();
        assert!(relay.request.is_none());
        t.on_network_data(&answer[3..], &mut relay).unwrap();
        assert_eq!(relay.request.as_deref(), Some(&b"pong"[..]));
        assert_eq!(relay.to_service.take_bytes(), greeting);
        t.accepted(&mut relay);
        assert_eq!(relay.to_service.take_bytes(), framed(b"ok"));
    }

    #[test]
    fn refusal_is_an_error_with_the_answer() {
        let mut t = Dial::new("nope", Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut relay = Relay::new(&mut svc, &mut net);
        let err = t
            .on_network_data(&framed(b"no: unknown service"), &mut relay)
            .unwrap_err();
        assert_eq!(err.to_string(), "denied: no: unknown service");
        let mut t = Dial::new("x", Frames::new(1000));
        assert!(t.on_network_data(&[0xff; 4], &mut relay).is_err());
        assert!(Dial::new("x", Frames::new(1)).network_closed().is_err());
    }
}
