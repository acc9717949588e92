//! The client side of the network handshake: a daemon connecting a local client to
//! a remote daemon's service (outbound, `tcp://HOST:PORT/SERVICE`).
//!
//! The transport opens the way every tcpd understands, the original's included:
//! the bare service name, in a write of its own (the original takes its first
//! read as the name, so nothing else is sent until the answer). The answer is
//! accepted in either form: the original's raw `ok` (which the remote service's
//! first frames may follow in the same read), or a framed `ok`; a refusal
//! (`no: REASON`, raw up to its newline or the close, or framed) fails the
//! connection with [`Error::Denied`] carrying it, for the daemon to report to
//! the local client. After `ok` it relays through `inner`, and the local client
//! is told a framed `ok` (what `connect_service` waits for through
//! `IPC_NETWORK`).

use crate::error::{Error, Result};
use crate::frame;
use crate::switch::{Relay, Transport};

/// Longest answer accepted from the remote daemon.
const MAX_ANSWER: usize = 4096;

/// The remote daemon's answer to the name.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    /// Its text, to pass on to the local client.
    Refused(String),
}

/// Parses the answer at the start of `buf`: the answer and the bytes it took
/// (what follows is the service's), `Ok(None)` while more bytes are needed.
/// `closed`: the remote daemon closed after `buf`, which ends a raw refusal.
fn parse_answer(buf: &[u8], closed: bool) -> Result<Option<(Answer, usize)>> {
    let foreign = || Error::Handshake("the remote answer is not a daemon's".into());
    let text = |b: &[u8]| -> String { String::from_utf8_lossy(b).chars().take(200).collect() };
    match buf.first() {
        None => Ok(None),
        // A frame: its length prefix starts with 0 (answers are short).
        Some(0) => {
            let Some(range) = frame::decode(buf, MAX_ANSWER).map_err(|_| foreign())? else {
                return Ok(None);
            };
            let answer = match &buf[range.clone()] {
                b"ok" => Answer::Ok,
                other => Answer::Refused(text(other)),
            };
            Ok(Some((answer, range.end)))
        }
        // Raw `ok`: exactly two bytes, the service's frames may follow.
        Some(b'o') if buf.len() < 2 => Ok(None),
        Some(b'o') if buf.starts_with(b"ok") => Ok(Some((Answer::Ok, 2))),
        // Raw refusal: up to its newline, or to the close.
        Some(b'n') if b"no:".starts_with(&buf[..buf.len().min(3)]) => {
            let end = buf.iter().position(|&b| b == b'\n');
            match end {
                Some(end) => {
                    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
                    Ok(Some((Answer::Refused(text(line)), end + 1)))
                }
                None if closed => Ok(Some((Answer::Refused(text(buf)), buf.len()))),
                None if buf.len() > MAX_ANSWER => Err(foreign()),
                None => Ok(None),
            }
        }
        Some(_) => Err(foreign()),
    }
}

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
    fn can_hand_off(&self) -> bool {
        self.inner.can_hand_off()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn start(&mut self, relay: &mut Relay<'_>) {
        // Raw, not framed: the original reads `\0\0\0\4pong` as the name
        // itself. Ours tells the two forms apart, so this suits both.
        relay.to_network(&self.service);
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let Some(buf) = self.answer.as_mut() else {
            return self.inner.on_network_data(data, relay);
        };
        buf.extend_from_slice(data);
        let Some((answer, used)) = parse_answer(buf, false)? else {
            return Ok(());
        };
        let buf = self.answer.take().unwrap_or_default();
        match answer {
            Answer::Ok => {
                relay.request_service(&self.service);
                self.inner.on_network_data(&buf[used..], relay)
            }
            Answer::Refused(text) => Err(Error::Denied(text)),
        }
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        let _ = relay.message_to_service(b"ok");
        self.inner.accepted(relay);
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        self.inner.on_service_data(data, relay)
    }

    fn network_closed(&mut self) -> Result<()> {
        let Some(buf) = self.answer.take() else {
            return self.inner.network_closed();
        };
        match parse_answer(&buf, true)? {
            Some((Answer::Refused(text), _)) => Err(Error::Denied(text)),
            _ => Err(Error::Denied(
                "the remote daemon closed without answering".into(),
            )),
        }
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

    /// Feeds `answer` cut at `cut`. Returns the service asked for, what was
    /// held for the local client meanwhile, and what the transport tells it
    /// once joined (the context sends that first, then what was held).
    fn answered(answer: &[u8], cut: usize) -> (Option<Vec<u8>>, Vec<u8>, Vec<u8>) {
        let mut t = Dial::new("pong", Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut relay = Relay::new(&mut svc, &mut net);
        t.on_network_data(&answer[..cut], &mut relay).unwrap();
        t.on_network_data(&answer[cut..], &mut relay).unwrap();
        let request = relay.request.take();
        let held = relay.to_service.take_bytes();
        t.accepted(&mut relay);
        (request, held, relay.to_service.take_bytes())
    }

    #[test]
    fn sends_the_bare_name_alone() {
        let mut t = Dial::new("pong", Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut relay = Relay::new(&mut svc, &mut net);
        t.start(&mut relay);
        assert_eq!(relay.to_network.take_bytes(), b"pong");
        // Half an answer: nothing more is sent, nothing is asked yet.
        t.on_network_data(b"o", &mut relay).unwrap();
        assert!(relay.to_network.take_bytes().is_empty());
        assert!(relay.request.is_none());
    }

    #[test]
    fn ok_raw_or_framed_cut_anywhere_with_frames_after_it() {
        let greeting = framed(b"hello");
        for ok in [&b"ok"[..], &framed(b"ok")] {
            let answer = [ok, &greeting].concat();
            for cut in 0..answer.len() {
                let (request, held, first) = answered(&answer, cut);
                assert_eq!(
                    request.as_deref(),
                    Some(&b"pong"[..]),
                    "{answer:?} at {cut}"
                );
                assert_eq!(first, framed(b"ok"));
                assert_eq!(held, greeting);
            }
        }
    }

    #[test]
    fn refusals_raw_or_framed_are_errors_with_the_answer() {
        let denied = |answer: &[u8], close: bool| {
            let mut t = Dial::new("nope", Frames::new(1000));
            let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
            let mut relay = Relay::new(&mut svc, &mut net);
            let mut err = t.on_network_data(answer, &mut relay).err();
            if close {
                assert!(err.is_none(), "{err:?}");
                err = t.network_closed().err();
            }
            assert!(relay.request.is_none());
            err.map(|e| e.to_string()).unwrap_or_default()
        };
        let want = "denied: no: unknown service";
        assert_eq!(denied(&framed(b"no: unknown service"), false), want);
        assert_eq!(denied(b"no: unknown service\n", false), want);
        assert_eq!(denied(b"no: unknown service\r\n", false), want);
        // The original's way: no newline, then the close.
        assert_eq!(denied(b"no: unknown service", true), want);
        assert_eq!(
            denied(b"", true),
            "denied: the remote daemon closed without answering"
        );
        assert_eq!(
            denied(b"o", true),
            "denied: the remote daemon closed without answering"
        );
    }

    #[test]
    fn anything_else_is_not_a_daemon() {
        for answer in [
            &b"HTTP/1.1 400"[..],
            b"OK",
            b"nope",
            &[0xff; 4],
            &[0, 1, 0, 0],
        ] {
            let mut t = Dial::new("x", Frames::new(1000));
            let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
            let mut relay = Relay::new(&mut svc, &mut net);
            let err = t.on_network_data(answer, &mut relay).unwrap_err();
            assert!(matches!(err, Error::Handshake(_)), "{answer:?}: {err}");
        }
        // A raw refusal that never ends is bounded.
        let mut t = Dial::new("x", Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut relay = Relay::new(&mut svc, &mut net);
        t.on_network_data(b"no: ", &mut relay).unwrap();
        let long = vec![b'x'; MAX_ANSWER];
        assert!(t.on_network_data(&long, &mut relay).is_err());
    }
}
