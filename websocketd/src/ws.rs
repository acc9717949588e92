//! The WebSocket transport: reads the HTTP upgrade request, asks the daemon for
//! the service its path names, answers 101 once that service is attached, then
//! turns each WebSocket message into one LibIPC message and back.
//!
//! Sans-I/O like every transport: the client's frames are read by
//! [`frame::Reader`] from the bytes the event loop hands in, straight into
//! LibIPC frames for the service; frames to the client are written here
//! directly, in one buffer per batch of service messages. tungstenite is the
//! outbound client's codec ([`crate::client`], through [`Pipe`]).

use std::io::{self, Read, Write};
use std::sync::Arc;

use libipc::frame::Decoder;
use libipc::switch::{PeerInfo, Refusal, Relay, Transport, WebSocketInfo};
use libipc::{Error, Result};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketContext};

use crate::files;
use crate::frame::{self, Event, Reader, opcode};
use crate::http::{self, Decision, Policy};

/// How the type of a message to the client is chosen (a LibIPC message has no
/// type of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MessageType {
    /// The type of the client's last message on this connection (so an echo or
    /// request/response service answers in kind); before the client has sent
    /// one, as `auto`.
    Mirror,
    /// Text when the payload is valid UTF-8, binary otherwise.
    Auto,
    /// Always text; a payload that is not valid UTF-8 goes as binary (a text
    /// message must be UTF-8).
    Text,
    /// Always binary.
    Binary,
}

/// What every connection of a listener shares.
#[derive(Debug)]
pub struct Settings {
    pub policy: Policy,
    pub message_type: MessageType,
    pub max_message_size: usize,
    /// Unanswered pings after which the client is considered gone.
    pub max_unanswered_pings: u32,
}

#[derive(Debug)]
enum State {
    /// Reading the request head.
    Request { head: Vec<u8> },
    /// The daemon is connecting the service; `response` (101) waits for it.
    Upgrading { response: Vec<u8>, early: Vec<u8> },
    /// WebSocket messages flow.
    Open(Open),
    /// Sending a file after its response head, a chunk each time the client
    /// has taken the one before.
    Sending(files::Body),
    /// Answered without a WebSocket (an HTTP response), or closed.
    Done,
}

/// An open WebSocket, as the server reads it.
#[derive(Debug)]
struct Open {
    reader: Reader,
    /// Our close is sent: nothing more goes to the client, and its messages
    /// are not taken (the service's answers could not be sent back).
    closing: bool,
}

/// What a read of client frames gave.
struct Answer {
    /// Whole messages, as LibIPC frames.
    to_service: Vec<u8>,
    /// Pongs, and the reply to a close or the close for bad input.
    to_client: Vec<u8>,
    /// The client closed (`None`) or broke the protocol: the end.
    end: Option<Option<Error>>,
}

impl Open {
    /// Reads frames from `data` (`behind`: the client has not read all we
    /// sent); `last_text` is set to the type of each message taken.
    fn read(&mut self, data: &[u8], behind: bool, last_text: &mut Option<bool>) -> Answer {
        let closing = self.closing;
        // LibIPC frames take no more room than the masked frames they come
        // from (but for a message begun in an earlier read).
        let (mut to_client, mut to_service) = (Vec::new(), Vec::with_capacity(data.len()));
        let (mut latest_ping, mut close, mut after_our_close) = (None, None, 0);
        let read = self
            .reader
            .read(data, &mut to_service, !closing, &mut |event| match event {
                // We sent our close (going away): the service's answer could
                // not be sent back, so the message is not taken.
                Event::Message { .. } if closing => after_our_close += 1,
                Event::Message { text } => *last_text = Some(text),
                // No pongs after our close (as tungstenite).
                Event::Ping(_) if closing => {}
                // A client behind gets a pong for its latest ping only
                // (RFC 6455, 5.5.3), not one for each of a flood.
                Event::Ping(p) if behind => latest_ping = Some(p),
                Event::Ping(p) => frame::push_frame(&mut to_client, opcode::PONG, p.as_bytes()),
                Event::Pong => {} // counts as life
                Event::Close(c) => close = Some(c),
            });
        if after_our_close > 0 {
            tracing::debug!(
                messages = after_our_close,
                "messages after our close not taken"
            );
        }
        // The pong held back goes before a close, never after.
        if let Some(p) = latest_ping {
            frame::push_frame(&mut to_client, opcode::PONG, p.as_bytes());
        }
        let end = match (read, close) {
            (Err(fault), _) => {
                tracing::warn!(error = %fault, code = fault.code, "bad WebSocket input: closing");
                if !closing {
                    frame::push_close(&mut to_client, fault.code, fault.reason);
                }
                Some(Some(Error::Transport(format!("WebSocket: {fault}"))))
            }
            (Ok(()), Some(c)) => {
                // Their close, echoed; one we sent is answered already.
                if !closing {
                    match frame::close_code(c.as_bytes()) {
                        Some(code) if !frame::allowed_close_code(code) => {
                            tracing::debug!(code, "the client closed with a reserved code");
                            frame::push_close(
                                &mut to_client,
                                frame::PROTOCOL_ERROR,
                                "Protocol violation",
                            );
                        }
                        _ => frame::push_frame(&mut to_client, opcode::CLOSE, c.as_bytes()),
                    }
                }
                Some(None)
            }
            (Ok(()), None) => None,
        };
        Answer {
            to_service,
            to_client,
            end,
        }
    }

    /// Sends a close with `code` and `reason`; false if closing already.
    fn close(&mut self, relay: &mut Relay<'_>, code: CloseCode, reason: &'static str) -> bool {
        if self.closing {
            return false;
        }
        self.closing = true;
        let mut out = Vec::new();
        frame::push_close(&mut out, code.into(), reason);
        relay.to_network(&out);
        true
    }
}

impl Peer for Open {
    fn send_close(&mut self, relay: &mut Relay<'_>, code: CloseCode, reason: &'static str) -> bool {
        self.close(relay, code, reason)
    }

    fn send_ping(&mut self, relay: &mut Relay<'_>) -> bool {
        if !self.closing {
            relay.to_network(&[0x80 | opcode::PING, 0]);
        }
        !self.closing
    }
}

/// One client of websocketd.
#[derive(Debug)]
pub struct WebSocket {
    settings: Arc<Settings>,
    state: State,
    /// LibIPC frames from the service, cut into payloads.
    from_service: Decoder,
    /// The type of the client's last data message (true: text).
    last_text: Option<bool>,
    unanswered_pings: u32,
    /// The upgrade request (for `--peer-info`).
    request: Option<WebSocketInfo>,
}

impl WebSocket {
    pub fn new(settings: Arc<Settings>) -> Self {
        WebSocket {
            settings,
            state: State::Request { head: Vec::new() },
            from_service: Decoder::new(u32::MAX as usize),
            last_text: None,
            unanswered_pings: 0,
            request: None,
        }
    }

    fn read_request(&mut self, data: &[u8], relay: &mut Relay<'_>) {
        let State::Request { head } = &mut self.state else {
            return;
        };
        let searched = head.len();
        head.extend_from_slice(data);
        let end = http::head_end(head, searched);
        // Too long whether or not its end has arrived.
        if end.unwrap_or(head.len()) > http::MAX_HEAD {
            let why = format!("request head larger than {} bytes", http::MAX_HEAD);
            relay.to_network(&http::error(431, &why, &[]));
            self.state = State::Done;
            return relay.finish(Some(Error::Handshake(why)));
        }
        let Some(end) = end else {
            return;
        };
        let early = head.split_off(end);
        match http::decide(head, &self.settings.policy) {
            Decision::Upgrade {
                service,
                response,
                client,
            } => {
                relay.request_service(service.as_bytes());
                self.request = Some(client);
                self.state = State::Upgrading { response, early };
            }
            Decision::Respond {
                response,
                body,
                refused,
                line,
            } => {
                let status = String::from_utf8_lossy(&response[9..12]).into_owned();
                relay.to_network(&response);
                self.state = State::Done;
                match (refused, body) {
                    (Some(why), _) => {
                        tracing::warn!(request = %line, %status, reason = %why, "HTTP request refused");
                        relay.finish(Some(Error::Handshake(format!("HTTP {status}: {why}"))));
                    }
                    (None, body) => {
                        tracing::info!(request = %line, %status, "HTTP");
                        match body {
                            // The head is queued: the first chunk once it is written.
                            Some(body) => {
                                self.state = State::Sending(body);
                                relay.more_to_send();
                            }
                            None => relay.finish(None),
                        }
                    }
                }
            }
        }
    }

    /// Reads WebSocket frames from `data`: whole messages go to the service, in
    /// one write; pongs and close replies to the client.
    fn read_frames(&mut self, data: &[u8], relay: &mut Relay<'_>) {
        let State::Open(open) = &mut self.state else {
            return;
        };
        if data.is_empty() {
            return;
        }
        self.unanswered_pings = 0;
        let behind = relay.network_backlog() > 0;
        let read = open.read(data, behind, &mut self.last_text);
        relay.frames_to_service(&read.to_service);
        relay.to_network(&read.to_client);
        if let Some(reason) = read.end {
            self.state = State::Done;
            relay.finish(reason);
        }
    }

    fn close_with(&mut self, relay: &mut Relay<'_>, code: CloseCode, reason: &'static str) -> bool {
        match &mut self.state {
            State::Open(open) => open.close(relay, code, reason),
            _ => false,
        }
    }
}

impl Transport for WebSocket {
    fn name(&self) -> &'static str {
        "ws"
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        match &self.state {
            State::Request { .. } => self.read_request(data, relay),
            State::Open(_) => self.read_frames(data, relay),
            // The loop reads nothing while the daemon decides; keep it if it does.
            State::Upgrading { .. } => {
                if let State::Upgrading { early, .. } = &mut self.state {
                    early.extend_from_slice(data);
                }
            }
            // Not read (the request was all there is to read).
            State::Sending(_) | State::Done => {}
        }
        Ok(())
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let (kind, last) = (self.settings.message_type, self.last_text);
        let mut out = Vec::with_capacity(data.len() + 16);
        self.from_service
            .feed(data, |p| {
                let op = match text_for(kind, last, p) {
                    true => opcode::TEXT,
                    false => opcode::BINARY,
                };
                frame::push_frame(&mut out, op, p)
            })
            .map(drop)?;
        match &self.state {
            State::Open(open) if !open.closing => relay.to_network(&out),
            // After a close: nothing more may be sent.
            _ => tracing::debug!(bytes = out.len(), "service messages after close dropped"),
        }
        Ok(())
    }

    /// The next chunks of a file, while the socket takes them whole (at most
    /// [`CHUNKS_PER_TURN`]); the connection closes after the last one.
    fn network_drained(&mut self, relay: &mut Relay<'_>) {
        for _ in 0..CHUNKS_PER_TURN {
            let State::Sending(body) = &mut self.state else {
                return;
            };
            match body.next_chunk() {
                Ok(chunk) => relay.to_network(&chunk),
                Err(why) => {
                    tracing::warn!(reason = %why, "static file cut short");
                    self.state = State::Done;
                    return relay.finish(Some(Error::Transport(why)));
                }
            }
            if body.is_done() {
                self.state = State::Done;
                return relay.finish(None);
            }
            if relay.network_backlog() > 0 {
                break;
            }
        }
        relay.more_to_send();
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        if let State::Upgrading { response, early } =
            std::mem::replace(&mut self.state, State::Done)
        {
            relay.to_network(&response);
            // Only `describe` (before now) needs the request.
            self.request = None;
            self.state = State::Open(Open {
                reader: Reader::new(self.settings.max_message_size),
                closing: false,
            });
            // The frames that came with the request.
            self.read_frames(&early, relay);
        }
    }

    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        relay.to_network(&http::refusal(refusal));
        self.state = State::Done;
    }

    fn handshake_phase(&self) -> Option<&'static str> {
        matches!(self.state, State::Request { .. }).then_some("HTTP request")
    }

    fn describe(&self, info: &mut PeerInfo) {
        info.websocket = self.request.clone();
    }

    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        let max = self.settings.max_unanswered_pings;
        let ws = match &mut self.state {
            State::Open(open) => Some(open),
            _ => None,
        };
        // Say why here: the close that ends the pair otherwise would be the
        // one for a service that went away.
        ping_ws(ws, relay, &mut self.unanswered_pings, max, |n| {
            format!("no answer to {n} pings")
        })
    }

    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        self.close_with(relay, CloseCode::Away, "server shutting down")
    }

    fn can_go_away(&self) -> bool {
        matches!(&self.state, State::Open(open) if !open.closing)
    }

    fn network_closed(&mut self) -> Result<()> {
        match &self.state {
            State::Request { head } if !head.is_empty() => Err(Error::Handshake(
                "closed before the HTTP request was complete".into(),
            )),
            State::Open(open) if !open.closing => {
                Err(Error::Transport("closed without a WebSocket close".into()))
            }
            _ => Ok(()),
        }
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        if clean {
            self.close_with(relay, CloseCode::Normal, "");
        } else {
            self.close_with(relay, CloseCode::Error, "service went away");
        }
    }
}

/// Most file chunks sent in one turn of the event loop, to a client whose
/// socket takes each whole: a fast download does not hold up other clients.
const CHUNKS_PER_TURN: usize = 4;

/// The frame type for a payload to the client (true: text), given the client's
/// last message type.
fn text_for(kind: MessageType, last_text: Option<bool>, payload: &[u8]) -> bool {
    let utf8 = || std::str::from_utf8(payload).is_ok();
    match (kind, last_text) {
        (MessageType::Binary, _) | (MessageType::Mirror, Some(false)) => false,
        _ => utf8(),
    }
}

/// Runs `f` with open WebSocket `ws` and sends what it wrote to the peer;
/// false if `ws` can write no more (closing) or `f` failed. Both ends use it.
pub(crate) fn send_ws(
    ws: &mut WebSocketContext,
    relay: &mut Relay<'_>,
    f: impl FnOnce(&mut WebSocketContext, &mut Pipe<'_>) -> tungstenite::Result<()>,
) -> bool {
    if !ws.can_write() {
        return false;
    }
    let mut out = Vec::new();
    let mut pipe = Pipe::new(&[], &mut out);
    let ok = f(ws, &mut pipe).is_ok();
    relay.to_network(&out);
    ok
}

/// Sends a close frame with `code` and `reason` on `ws`.
pub(crate) fn close_ws(
    ws: &mut WebSocketContext,
    relay: &mut Relay<'_>,
    code: CloseCode,
    reason: &'static str,
) -> bool {
    send_ws(ws, relay, |ws, pipe| {
        ws.close(
            pipe,
            Some(CloseFrame {
                code,
                reason: reason.into(),
            }),
        )
    })
}

/// What the keepalive sends on an open WebSocket, either end.
pub(crate) trait Peer {
    /// A close with `code` and `reason`; false if one was sent already.
    fn send_close(&mut self, relay: &mut Relay<'_>, code: CloseCode, reason: &'static str) -> bool;
    /// A ping; false after a close.
    fn send_ping(&mut self, relay: &mut Relay<'_>) -> bool;
}

impl Peer for WebSocketContext {
    fn send_close(&mut self, relay: &mut Relay<'_>, code: CloseCode, reason: &'static str) -> bool {
        close_ws(self, relay, code, reason)
    }

    fn send_ping(&mut self, relay: &mut Relay<'_>) -> bool {
        send_ws(self, relay, |ws, pipe| {
            ws.write(pipe, Message::Ping(Default::default()))?;
            ws.flush(pipe)
        })
    }
}

/// The keepalive of both ends: a ping on `ws` (if it is open), counted in
/// `unanswered` (reset by whatever the peer sends); once `max` have gone
/// unanswered, a close 1011 and an error saying so (`no_answer`).
pub(crate) fn ping_ws<P: Peer + ?Sized>(
    mut ws: Option<&mut P>,
    relay: &mut Relay<'_>,
    unanswered: &mut u32,
    max: u32,
    no_answer: impl FnOnce(u32) -> String,
) -> Result<bool> {
    if *unanswered >= max {
        if let Some(ws) = ws.as_deref_mut() {
            ws.send_close(relay, CloseCode::Error, "no answer to pings");
        }
        return Err(Error::Transport(no_answer(*unanswered)));
    }
    let sent = ws.is_some_and(|ws| ws.send_ping(relay));
    if sent {
        *unanswered += 1;
    }
    Ok(sent)
}

/// A LibIPC frame: length (32-bit big-endian), payload.
pub(crate) fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The stream tungstenite (the outbound client's codec) reads and writes: the
/// bytes the loop handed in, and a buffer for what goes back. Reading past the
/// input would block.
pub(crate) struct Pipe<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl<'a> Pipe<'a> {
    pub(crate) fn new(input: &'a [u8], output: &'a mut Vec<u8>) -> Self {
        Pipe { input, output }
    }
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.read(buf)?;
        Ok(n)
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        for (len, header) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xFF, 0xFF]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            frame::push_frame(&mut out, opcode::BINARY, &vec![7; len]);
            assert_eq!(&out[..header.len()], &header[..], "length {len}");
            assert_eq!(out.len(), header.len() + len);
        }
        let mut out = Vec::new();
        frame::push_frame(&mut out, opcode::TEXT, b"hi");
        assert_eq!(out, b"\x81\x02hi");
    }

    /// A masked client frame with a payload of at most 125 bytes.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        f
    }

    /// What websocketd's reading of `input` sends back, for a client that
    /// has read everything sent to it so far or not (`behind`).
    fn answers(input: &[u8], behind: bool) -> Vec<u8> {
        let mut open = Open {
            reader: Reader::new(1 << 20),
            closing: false,
        };
        open.read(input, behind, &mut None).to_client
    }

    #[test]
    fn a_client_behind_gets_a_pong_for_its_latest_ping_only() {
        let pong = |i: u8| [&[0x8A, 125][..], &[i; 125]].concat();
        let pings: Vec<u8> = (0..100)
            .flat_map(|i| client_frame(0x9, &[i; 125]))
            .collect();
        assert_eq!(answers(&pings, true), pong(99));
        // A client that keeps up gets a pong for each (Autobahn 2.10).
        let each: Vec<u8> = (0..100).flat_map(pong).collect();
        assert_eq!(answers(&pings, false), each);
        // The pong goes before the close reply, never after.
        let close = client_frame(0x8, &1000u16.to_be_bytes());
        let out = answers(&[pings, close].concat(), true);
        assert_eq!(out, [pong(99), vec![0x88, 2, 0x03, 0xE8]].concat());
    }
}
