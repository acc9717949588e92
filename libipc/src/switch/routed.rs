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
//! A raw name is every byte up to its line end, up to a frame glued to it (a
//! 0x00 byte), or, as in the original, up to the end of the read that carried
//! it: the daemon judges all of it, so `../x` is refused as `../x`, never
//! answered as `..`. What follows the name in the same read is the client's
//! first message(s): it is kept, and delivered once the service is attached
//! (the original lost it); until then nothing in it is looked at, so it cannot
//! change the answer to the handshake.

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
    /// Name asked for; waiting for the daemon's decision, with what came
    /// after the name (bounded: nothing is read from the client meanwhile).
    Waiting(Vec<u8>),
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

    /// Parses what came so far, up to the end of a read. Returns the name and
    /// the offset of what follows it, `Ok(None)` if more bytes are needed.
    fn parse(buf: &[u8]) -> Result<Option<(Form, Vec<u8>, usize)>> {
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
        if buf.starts_with(b"PROXY ") {
            return Err(bad(
                "a PROXY protocol header from a client not trusted to send one \
                 (see --proxy-protocol and --proxy-from)",
            ));
        }
        if !(first.is_ascii_alphanumeric() || matches!(first, b'.' | b'_' | b'-')) {
            return Err(bad(
                "a service name starts with a letter or digit, or a frame",
            ));
        }
        let (name, used) = match buf.iter().position(|&b| b == b'\n' || b == 0) {
            Some(end) if buf[end] == b'\n' => {
                let line = &buf[..end];
                (line.strip_suffix(b"\r").unwrap_or(line), end + 1)
            }
            // A frame glued to the name: it stays for the service.
            Some(end) => (&buf[..end], end),
            None => (buf, buf.len()),
        };
        // Half a line end: its `\n` decides whether the `\r` is the name's.
        let half_line_end = used == buf.len() && name.ends_with(b"\r");
        if name.len() - usize::from(half_line_end) > MAX_NAME_LEN {
            return Err(bad("service name longer than 64 bytes"));
        }
        Ok((!half_line_end).then(|| (Form::Raw, name.to_vec(), used)))
    }
}

impl<T: Transport> Transport for Routed<T> {
    fn can_hand_off(&self) -> bool {
        self.inner.can_hand_off()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        match &mut self.phase {
            Phase::Relaying => self.inner.on_network_data(data, relay),
            Phase::Waiting(held) => {
                // The client's data only once its service accepts it.
                held.extend_from_slice(data);
                Ok(())
            }
            Phase::Done => Ok(()),
            Phase::Name(buf) => {
                // Bounded: a name and its frame header, plus one read of data.
                buf.extend_from_slice(data);
                match Self::parse(buf) {
                    Ok(Some((form, name, used))) => {
                        self.form = Some(form);
                        buf.drain(..used);
                        self.phase = Phase::Waiting(std::mem::take(buf));
                        relay.request_service(&name);
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => {
                        self.form = Some(Self::form_of(buf));
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
        let held = match std::mem::replace(&mut self.phase, Phase::Relaying) {
            Phase::Waiting(held) => held,
            _ => Vec::new(),
        };
        self.inner.accepted(relay);
        if let Err(e) = self.inner.on_network_data(&held, relay) {
            // Bad data after a good name: answered `ok`, then the end, with
            // the whole frames before the bad one delivered.
            relay.finish(Some(e));
        }
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
    }

    /// Feeds `reads` to a fresh routed transport, which must take them
    /// without answering or passing anything on; returns it and the service
    /// it asked for.
    fn asked(reads: &[&[u8]]) -> (Routed<Frames>, Option<Vec<u8>>) {
        let mut t = Routed::new(Frames::new(1000));
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let mut request = None;
        for read in reads {
            let mut relay = Relay::new(&mut svc, &mut net);
            t.on_network_data(read, &mut relay).unwrap();
            request = request.or(relay.request.take());
        }
        assert!(svc.is_empty() && net.is_empty(), "{svc:?} {net:?}");
        (t, request)
    }

    /// The daemon judges the whole raw name (here `validate_name` refuses
    /// each): `../pong` is `../pong`, not `..` followed by a frame.
    #[test]
    fn a_raw_name_is_every_byte_before_its_end() {
        for (hello, name) in [
            (&b"../pong"[..], &b"../pong"[..]),
            (b"pong/x", b"pong/x"),
            (b"pong x", b"pong x"),
            (b"pong\tx", b"pong\tx"),
            (b"../x\r\n", b"../x"),
            (b"pong\rx\n", b"pong\rx"),
            (b"../x\0\0\0\0", b"../x"),
        ] {
            let (_, req) = asked(&[hello]);
            assert_eq!(req.as_deref(), Some(name), "{hello:?}");
            assert!(crate::service::validate_name(name).is_err(), "{name:?}");
        }
        // A `\r` ending a read waits for what follows it.
        assert_eq!(asked(&[b"pong\r"]).1, None);
        assert_eq!(asked(&[b"pong\r", b"\n"]).1.as_deref(), Some(&b"pong"[..]));
        let longest = [b'n'; MAX_NAME_LEN];
        let (_, req) = asked(&[&[&longest[..], b"\r"].concat(), b"\n"]);
        assert_eq!(req.as_deref(), Some(&longest[..]));
    }

    /// What follows the name is not looked at before the daemon's answer: a
    /// refusal is the name's, and bad data after a good name is found (and
    /// ends the pair) only once the client has its `ok`.
    #[test]
    fn what_follows_the_name_waits_for_the_answer() {
        let (mut svc, mut net) = (OutQueue::default(), OutQueue::default());
        let (mut t, req) = asked(&[b"nope\nnot a frame"]);
        assert_eq!(req.as_deref(), Some(&b"nope"[..]));
        t.refused(Refusal::UnknownService, &mut Relay::new(&mut svc, &mut net));
        assert_eq!(drain(&mut net), b"no: unknown service\n");
        assert!(drain(&mut svc).is_empty());

        let good = framed(b"good");
        let hello = [&b"pong\n"[..], &good, b"not a frame"].concat();
        let (mut t, req) = asked(&[&hello]);
        assert_eq!(req.as_deref(), Some(&b"pong"[..]));
        let mut relay = Relay::new(&mut svc, &mut net);
        t.accepted(&mut relay);
        assert!(matches!(
            relay.finished,
            Some(Some(Error::MessageTooLarge { .. }))
        ));
        assert_eq!(drain(&mut net), b"ok");
        assert_eq!(drain(&mut svc), good);
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
            /// framed name or the raw one up to its end (never a repaired name).
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
                    prop_assert!(!req.is_empty() && req.len() <= 64);
                    prop_assert_eq!(&req[..], &data[..req.len()]);
                    prop_assert!(!req.contains(&b'\n') && !req.contains(&0));
                    // It ends where the client ended it, or where a read did.
                    let rest = &data[req.len()..];
                    let read_ends: Vec<usize> = chunks
                        .iter()
                        .scan(0, |at, c| { *at += c.len(); Some(*at) })
                        .collect();
                    prop_assert!(
                        [&b"\n"[..], b"\r\n", b"\0"].iter().any(|end| rest.starts_with(end))
                            || read_ends.contains(&req.len()),
                        "{:?} in {:?}", req, chunks
                    );
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
