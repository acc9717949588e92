//! The network handshake of routed mode: the client names the service first.
//!
//! Two forms, told apart by the first byte (a frame's length prefix starts with
//! 0x00 for any name, a name never does):
//!
//! - the original's: the raw name bytes, optionally ended by `\n` or `\r\n` (for
//!   people typing into `nc`), answered with the raw bytes `ok`, or with
//!   `no: REASON\n` before the connection is closed;
//! - framed: one LibIPC frame holding the name, answered with a framed `ok`, or a
//!   framed `no: REASON`.
//!
//! Whatever follows the name in the same read is the first message(s): it is kept
//! and delivered once the service is attached (the original lost it). A raw name
//! with no terminator ends with the read that carried it, as in the original.

use crate::error::{Error, Result};
use crate::frame::{self, HEADER_LEN};
use crate::service::MAX_NAME_LEN;
use crate::switch::{PeerInfo, Refusal, Relay, Transport};

/// The handshake's two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Raw,
    Framed,
}

#[derive(Debug)]
enum Phase {
    /// Reading the name; `buf` holds what came so far (bounded).
    Name(Vec<u8>),
    /// Name asked for; waiting for the daemon's decision.
    Waiting,
    /// Service attached: everything goes through the inner transport.
    Relaying,
    /// Refused or broken: nothing more is accepted.
    Done,
}

/// A transport that first reads the service name (routed mode), then hands the
/// connection to `inner` (for tcpd, [`crate::switch::Frames`]).
#[derive(Debug)]
pub struct Routed<T> {
    phase: Phase,
    form: Option<Form>,
    inner: T,
}

impl<T: Transport> Routed<T> {
    /// Routed mode in front of `inner`.
    pub fn new(inner: T) -> Self {
        Routed {
            phase: Phase::Name(Vec::new()),
            form: None,
            inner,
        }
    }

    /// Answers in the client's form.
    fn answer(&self, text: &str, relay: &mut Relay<'_>) {
        match self.form {
            Some(Form::Framed) => {
                let mut out = Vec::with_capacity(text.len() + HEADER_LEN);
                // Short, fixed texts: cannot exceed a frame.
                let _ = frame::encode(text.as_bytes(), &mut out);
                relay.to_network(&out);
            }
            _ => {
                relay.to_network(text.as_bytes());
                if text != "ok" {
                    relay.to_network(b"\n");
                }
            }
        }
    }

    /// The form of a handshake that starts with `buf`: its first byte tells
    /// (a frame's length prefix starts with 0x00, a name never does).
    fn form_of(buf: &[u8]) -> Form {
        if buf.first() == Some(&0) {
            Form::Framed
        } else {
            Form::Raw
        }
    }

    /// Parses what came so far. Returns the name and the offset of what follows it,
    /// `Ok(None)` if more bytes are needed.
    fn parse(buf: &[u8], end_of_read: bool) -> Result<Option<(Form, Vec<u8>, usize)>> {
        let bad = |why: &str| Error::Handshake(why.to_owned());
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first == 0 {
            let Some(payload) = frame::decode(buf, MAX_NAME_LEN)
                .map_err(|_| bad("framed service name longer than 64 bytes"))?
            else {
                return Ok(None);
            };
            return Ok(Some((
                Form::Framed,
                buf[payload.clone()].to_vec(),
                payload.end,
            )));
        }
        let is_name = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        let len = buf.iter().take_while(|b| is_name(b)).count();
        if len > MAX_NAME_LEN {
            return Err(bad("service name longer than 64 bytes"));
        }
        if len == buf.len() {
            // No terminator yet: as in the original, the read ends the name.
            return Ok(end_of_read.then(|| (Form::Raw, buf.to_vec(), buf.len())));
        }
        if len == 0 {
            return Err(bad(
                "a service name starts with a letter or digit, or a frame",
            ));
        }
        let rest = &buf[len..];
        if &buf[..len] == b"PROXY" && rest.starts_with(b" ") {
            return Err(bad(
                "a PROXY protocol header from a client not trusted to send one \
                 (see --proxy-protocol and --proxy-from)",
            ));
        }
        let skip = if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"\n") {
            1
        } else {
            // The name is followed by something else (a '/', a frame): the daemon
            // judges the name; what follows is data.
            0
        };
        Ok(Some((Form::Raw, buf[..len].to_vec(), len + skip)))
    }
}

impl<T: Transport> Transport for Routed<T> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        match &mut self.phase {
            Phase::Relaying | Phase::Waiting => self.inner.on_network_data(data, relay),
            Phase::Done => Ok(()),
            Phase::Name(buf) => {
                // Bounded: a name and its frame header, plus one read of data.
                buf.extend_from_slice(data);
                let parsed = Self::parse(buf, true);
                let buf = std::mem::take(buf);
                match parsed {
                    Ok(Some((form, name, used))) => {
                        self.form = Some(form);
                        self.phase = Phase::Waiting;
                        relay.request_service(&name);
                        self.inner.on_network_data(&buf[used..], relay)
                    }
                    Ok(None) => {
                        self.phase = Phase::Name(buf);
                        Ok(())
                    }
                    Err(e) => {
                        self.form = Some(Self::form_of(&buf));
                        self.answer(&format!("no: {e}"), relay);
                        self.phase = Phase::Done;
                        Err(e)
                    }
                }
            }
        }
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        self.inner.on_service_data(data, relay)
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        self.answer("ok", relay);
        self.phase = Phase::Relaying;
        self.inner.accepted(relay);
    }

    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        if let Phase::Name(buf) = &self.phase {
            // Refused before the name is whole (a handshake timeout): a client
            // halfway through a framed name still gets a framed answer.
            self.form = Some(Self::form_of(buf));
        }
        if !matches!(self.phase, Phase::Done) {
            self.answer(&format!("no: {refusal}"), relay);
        }
        self.phase = Phase::Done;
    }

    fn network_closed(&mut self) -> Result<()> {
        match &self.phase {
            Phase::Name(_) => Err(Error::Handshake(
                "connection closed before naming a service".into(),
            )),
            _ => self.inner.network_closed(),
        }
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        self.inner.service_closed(relay, clean);
    }

    fn describe(&self, info: &mut PeerInfo) {
        self.inner.describe(info);
    }

    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        self.inner.keepalive(relay)
    }

    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        self.inner.going_away(relay)
    }

    fn can_go_away(&self) -> bool {
        self.inner.can_go_away()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::OutQueue;
    use crate::switch::Frames;

    fn drain(q: &mut OutQueue) -> Vec<u8> {
        q.take_bytes()
    }

    /// Feeds `chunks` to a fresh routed transport; returns what was requested,
    /// what went to the service, what went to the network, and the last result.
    fn run(chunks: &[&[u8]]) -> (Option<Vec<u8>>, Vec<u8>, Vec<u8>, Result<()>) {
        let mut t = Routed::new(Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut request = None;
        let mut result = Ok(());
        for c in chunks {
            let mut relay = Relay::new(&mut svc, &mut net);
            result = t.on_network_data(c, &mut relay);
            if relay.request.is_some() {
                request = relay.request.take();
                t.accepted(&mut relay);
            }
        }
        (request, drain(&mut svc), drain(&mut net), result)
    }

    fn framed(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        frame::encode(p, &mut v).unwrap();
        v
    }

    #[test]
    fn raw_names_with_and_without_newline() {
        for input in [&b"pong"[..], b"pong\n", b"pong\r\n"] {
            let (req, svc, net, res) = run(&[input]);
            assert_eq!(req.as_deref(), Some(&b"pong"[..]));
            assert!(svc.is_empty());
            assert_eq!(net, b"ok");
            res.unwrap();
        }
    }

    #[test]
    fn name_and_first_message_together_both_arrive() {
        let msg = framed(b"first");
        let raw = [&b"pong\n"[..], &msg].concat();
        let (req, svc, net, _) = run(&[&raw]);
        assert_eq!(req.as_deref(), Some(&b"pong"[..]));
        assert_eq!(svc, msg);
        assert_eq!(net, b"ok");

        let both = [framed(b"pong"), msg.clone()].concat();
        let (req, svc, net, _) = run(&[&both]);
        assert_eq!(req.as_deref(), Some(&b"pong"[..]));
        assert_eq!(svc, msg);
        assert_eq!(net, framed(b"ok"));
        // Raw name directly followed by a frame (no newline).
        let glued = [&b"pong"[..], &msg].concat();
        let (req, svc, _, _) = run(&[&glued]);
        assert_eq!(req.as_deref(), Some(&b"pong"[..]));
        assert_eq!(svc, msg);
    }

    #[test]
    fn framed_name_split_over_reads() {
        let f = framed(b"echo");
        let (req, _, net, _) = run(&[&f[..2], &f[2..5], &f[5..]]);
        assert_eq!(req.as_deref(), Some(&b"echo"[..]));
        assert_eq!(net, framed(b"ok"));
    }

    #[test]
    fn bad_handshakes_are_answered_and_refused() {
        let (req, _, net, res) = run(&[b"/etc/passwd\n"]);
        assert!(req.is_none());
        assert!(res.is_err());
        assert!(String::from_utf8_lossy(&net).starts_with("no: "), "{net:?}");

        let (req, _, net, res) = run(&[&[0, 0, 1, 0]]);
        assert!(req.is_none() && res.is_err());
        assert_eq!(&net[..4], &[0, 0, 0, (net.len() - 4) as u8]);

        let (req, _, _, res) = run(&[&[b'a'; 65]]);
        assert!(req.is_none() && res.is_err());
        // `../x`: the name is "..", judged (and refused) by the daemon, not here.
        let (req, _, _, _) = run(&[b"../x"]);
        assert_eq!(req.as_deref(), Some(&b".."[..]));
    }

    #[test]
    fn refusal_in_each_form() {
        let mut t = Routed::new(Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut relay = Relay::new(&mut svc, &mut net);
        t.on_network_data(&framed(b"nope"), &mut relay).unwrap();
        t.refused(Refusal::UnknownService, &mut relay);
        assert_eq!(drain(&mut net), framed(b"no: unknown service"));

        let mut t = Routed::new(Frames::new(1000));
        let mut relay = Relay::new(&mut svc, &mut net);
        t.on_network_data(b"nope\n", &mut relay).unwrap();
        t.refused(Refusal::NotAllowed, &mut relay);
        assert_eq!(drain(&mut net), b"no: service not allowed\n");
    }

    #[test]
    fn refusal_before_the_name_is_whole_comes_in_the_form_begun() {
        for (begun, answer) in [
            (&[0, 0][..], framed(b"no: handshake timeout")),
            (&[0, 0, 0, 4, b'p'][..], framed(b"no: handshake timeout")),
            (&[][..], b"no: handshake timeout\n".to_vec()),
        ] {
            let mut t = Routed::new(Frames::new(1000));
            let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
            let mut relay = Relay::new(&mut svc, &mut net);
            t.on_network_data(begun, &mut relay).unwrap();
            t.refused(Refusal::Timeout(None), &mut relay);
            assert_eq!(drain(&mut net), answer, "after {begun:?}");
        }
    }

    /// `data` cut at the given points (taken modulo its length).
    fn cut<'a>(data: &'a [u8], cuts: &[usize], from: usize) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|c| from + c % (data.len() - from + 1))
            .collect();
        at.extend([0, data.len()]);
        at.sort_unstable();
        at.windows(2).map(|w| &data[w[0]..w[1]]).collect()
    }

    mod props {
        use super::*;
        use crate::service::validate_name;
        use proptest::prelude::*;

        fn frames() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4).prop_map(|ps| {
                let mut v = Vec::new();
                for p in ps {
                    frame::encode(&p, &mut v).unwrap();
                }
                v
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 2048, ..ProptestConfig::default() })]

            /// Any bytes, cut anywhere: no panic, and a request, if any, is exactly the
            /// framed name or the leading run of name bytes (never a repaired name).
            #[test]
            fn any_input_is_handled(
                data in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..120),
                    (prop::collection::vec(any::<u8>(), 0..70), frames()).prop_map(|(n, f)| {
                        [framed(&n), f].concat()
                    }),
                    ("[a-z./\r\n-]{0,70}", frames()).prop_map(|(n, f)| [n.into_bytes(), f].concat()),
                ],
                cuts in prop::collection::vec(any::<usize>(), 0..6),
            ) {
                let chunks = cut(&data, &cuts, 0);
                let (req, _, net, _) = run(&chunks);
                let Some(req) = req else {
                    // Refused (answered "no: ...") or still waiting for more bytes.
                    prop_assert!(net.is_empty() || !net.ends_with(b"ok"));
                    return Ok(());
                };
                if data[0] == 0 {
                    let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                    prop_assert_eq!(&req[..], &data[4..4 + len]);
                } else {
                    let is_name = |b: &u8| b.is_ascii_alphanumeric() || b"._-".contains(b);
                    let run_len = data.iter().take_while(|b| is_name(b)).count();
                    prop_assert!(!req.is_empty() && req.len() <= run_len && req.len() <= 64);
                    prop_assert_eq!(&req[..], &data[..req.len()]);
                    // Shorter than the run only when a read ended inside it.
                    if req.len() < run_len {
                        prop_assert_eq!(chunks.iter().find(|c| !c.is_empty()).map(|c| c.len()), Some(req.len()));
                    }
                }
            }

            /// A valid name in either form, then frames: cut anywhere after the raw
            /// name's terminator (anywhere at all for a framed name), the name is
            /// requested and the frames reach the service intact.
            #[test]
            fn valid_name_then_frames(
                name in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}",
                form in 0..4u8,
                rest in frames(),
                cuts in prop::collection::vec(any::<usize>(), 0..6),
            ) {
                prop_assert!(validate_name(name.as_bytes()).is_ok());
                let (head, free_cuts_from) = match form {
                    0 => (framed(name.as_bytes()), 0),
                    1 => ([name.as_bytes(), b"\n"].concat(), name.len() + 1),
                    2 => ([name.as_bytes(), b"\r\n"].concat(), name.len() + 2),
                    // Glued to the first frame (or alone, ended by its read).
                    _ => (name.as_bytes().to_vec(), name.len()),
                };
                let data = [head, rest.clone()].concat();
                let chunks = cut(&data, &cuts, free_cuts_from);
                let (req, svc, net, res) = run(&chunks);
                prop_assert_eq!(req.as_deref(), Some(name.as_bytes()));
                prop_assert_eq!(svc, rest);
                prop_assert_eq!(net, if form == 0 { framed(b"ok") } else { b"ok".to_vec() });
                prop_assert!(res.is_ok());
            }

            /// A framed name is requested exactly as sent, so a name that fails
            /// validation is still one that fails it when the daemon judges it.
            #[test]
            fn invalid_framed_names_stay_invalid(
                name in prop::collection::vec(any::<u8>(), 0..64),
                rest in frames(),
            ) {
                prop_assume!(validate_name(&name).is_err());
                let (req, _, _, _) = run(&[&[framed(&name), rest].concat()]);
                let req = req.expect("a framed name of at most 64 bytes is requested");
                prop_assert!(validate_name(&req).is_err());
                prop_assert_eq!(req, name);
            }
        }
    }
}
