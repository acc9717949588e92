//! The WebSocket transport of websocketd's outbound service (`ws://`,
//! `wss://` inside TLS): the client side of the upgrade, then one binary
//! WebSocket message per LibIPC message each way.
//!
//! Sans-I/O like the server side ([`crate::ws`]): [`WsClient::start`] queues
//! the upgrade request; the answer head is read, checked (101, `Upgrade`,
//! `Sec-WebSocket-Accept`) and only then is the local client joined. A
//! refusal of the remote websocketd (404, 403, 503) becomes the local
//! client's `no: REASON`; a close frame ends the connection, its code and
//! reason logged.

use std::io;
use std::sync::Arc;

use libipc::frame::Decoder;
use libipc::switch::{Refusal, Relay, Transport};
use libipc::{Error, Result};
use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};

use crate::http::{self, MAX_HEAD};
use crate::ws::{Pipe, Settings, close_ws, ping_ws, push_frame};

/// Where a connection to a remote WebSocket server stands.
#[derive(Debug)]
enum State {
    /// The request is to be sent (by `start`), then its answer read.
    Upgrading {
        request: Vec<u8>,
        accept: String,
        head: Vec<u8>,
    },
    Open(Box<WebSocketContext>),
    /// Closed, or the upgrade failed.
    Done,
}

/// One outbound connection to a WebSocket server's `/SERVICE`.
#[derive(Debug)]
pub struct WsClient {
    settings: Arc<Settings>,
    service: String,
    state: State,
    from_service: Decoder,
    unanswered_pings: u32,
}

impl WsClient {
    /// A client for `ws[s]://HOST:PORT/SERVICE`; `default_port`: the
    /// scheme's, left out of the `Host` header as browsers do.
    pub fn new(
        settings: Arc<Settings>,
        service: &str,
        host: &str,
        port: u16,
        default_port: u16,
    ) -> Self {
        let key = generate_key();
        let accept = derive_accept_key(key.as_bytes());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let host = match port {
            p if p == default_port => host,
            p => format!("{host}:{p}"),
        };
        let request = format!(
            "GET /{service} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             User-Agent: websocketd/{}\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        WsClient {
            settings,
            service: service.to_owned(),
            state: State::Upgrading {
                request: request.into_bytes(),
                accept,
                head: Vec::new(),
            },
            from_service: Decoder::new(u32::MAX as usize),
            unanswered_pings: 0,
        }
    }

    /// Reads the answer to the upgrade; once it is a valid 101, the remote
    /// service is ours: the local client is joined, and frames that came
    /// with the answer are read.
    fn read_answer(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let State::Upgrading { accept, head, .. } = &mut self.state else {
            return Ok(());
        };
        let searched = head.len();
        head.extend_from_slice(data);
        let end = http::head_end(head, searched);
        if end.unwrap_or(head.len()) > MAX_HEAD {
            return Err(Error::Handshake(format!(
                "the remote's answer head is larger than {MAX_HEAD} bytes"
            )));
        }
        let Some(end) = end else {
            return Ok(());
        };
        check_upgrade(&head[..end], accept)?;
        let rest = head.split_off(end);
        let ws = WebSocketContext::new(Role::Client, Some(config(self.settings.max_message_size)));
        self.state = State::Open(Box::new(ws));
        relay.request_service(self.service.as_bytes());
        self.read_frames(&rest, relay);
        Ok(())
    }

    /// Reads WebSocket frames: messages (binary, or text as its bytes) go to
    /// the local client, pongs and the reply to a close to the remote.
    fn read_frames(&mut self, data: &[u8], relay: &mut Relay<'_>) {
        let State::Open(ws) = &mut self.state else {
            return;
        };
        if data.is_empty() {
            return;
        }
        self.unanswered_pings = 0;
        let (mut to_remote, mut to_service) = (Vec::new(), Vec::new());
        let mut pipe = Pipe::new(data, &mut to_remote);
        let mut end = None;
        loop {
            match ws.read(&mut pipe) {
                Ok(Message::Text(t)) => push_frame(&mut to_service, t.as_bytes()),
                Ok(Message::Binary(b)) => push_frame(&mut to_service, &b),
                Ok(Message::Close(frame)) => {
                    end = Some(remote_closed(frame));
                    break;
                }
                Ok(_) => {} // pings are answered by tungstenite; pongs count as life
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    end = Some(None);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bad WebSocket input from the remote: closing");
                    let _ = ws.close(
                        &mut pipe,
                        Some(CloseFrame {
                            code: CloseCode::Protocol,
                            reason: "protocol error".into(),
                        }),
                    );
                    end = Some(Some(Error::Transport(format!("WebSocket: {e}"))));
                    break;
                }
            }
        }
        let _ = ws.flush(&mut pipe);
        relay.frames_to_service(&to_service);
        relay.to_network(&to_remote);
        if let Some(reason) = end {
            self.state = State::Done;
            relay.finish(reason);
        }
    }

    fn close_with(&mut self, relay: &mut Relay<'_>, code: CloseCode, reason: &'static str) -> bool {
        match &mut self.state {
            State::Open(ws) => close_ws(ws, relay, code, reason),
            _ => false,
        }
    }
}

/// tungstenite's settings for a connection to a remote server.
fn config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// The remote's close frame, logged; an error unless it was a normal end.
fn remote_closed(frame: Option<CloseFrame>) -> Option<Error> {
    let (code, reason) = match &frame {
        Some(f) => (u16::from(f.code), f.reason.as_str()),
        None => (1005, ""),
    };
    let reason: String = reason.chars().take(123).collect();
    tracing::info!(code, %reason, "the remote closed the WebSocket");
    match code {
        1000 | 1005 => None,
        _ => Some(Error::Transport(format!(
            "the remote closed the WebSocket: {code} {reason}"
        ))),
    }
}

/// Checks the answer head to the upgrade: a 101 with the `Upgrade` and
/// `Sec-WebSocket-Accept` RFC 6455 requires, or the refusal it says.
fn check_upgrade(head: &[u8], accept: &str) -> Result<()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut answer = httparse::Response::new(&mut headers);
    let not_http =
        |why: &str| Error::Handshake(format!("the remote is not a WebSocket server: {why}"));
    match answer.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(not_http("its answer is not HTTP")),
    }
    let code = answer.code.unwrap_or(0);
    if code != 101 {
        let reason: String = answer.reason.unwrap_or("").chars().take(80).collect();
        return Err(Error::Denied(format!(
            "no: {}",
            refusal_text(code, &reason)
        )));
    }
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(not_http("101 without Upgrade: websocket"));
    }
    if header("sec-websocket-accept").as_deref() != Some(accept) {
        return Err(not_http("a wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// What the local client is told for an HTTP refusal of the upgrade: a
/// remote websocketd's statuses as the refusals they stand for.
fn refusal_text(code: u16, reason: &str) -> String {
    match code {
        404 => Refusal::UnknownService.text().into_owned(),
        403 => Refusal::NotAllowed.text().into_owned(),
        503 => Refusal::ServiceDown.text().into_owned(),
        _ => format!("the remote answered the WebSocket upgrade with {code} {reason}"),
    }
}

impl Transport for WsClient {
    fn name(&self) -> &'static str {
        "ws"
    }

    fn start(&mut self, relay: &mut Relay<'_>) {
        if let State::Upgrading { request, .. } = &mut self.state {
            relay.to_network(&std::mem::take(request));
        }
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        match self.state {
            State::Upgrading { .. } => self.read_answer(data, relay),
            State::Open(_) => {
                self.read_frames(data, relay);
                Ok(())
            }
            State::Done => Ok(()),
        }
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let State::Open(ws) = &mut self.state else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(data.len() + 16);
        let mut pipe = Pipe::new(&[], &mut out);
        let mut sent = Ok(());
        self.from_service.feed(data, |p| {
            if sent.is_ok() {
                sent = ws.write(&mut pipe, Message::Binary(p.to_vec().into()));
            }
        })?;
        if let Err(e) = sent.and_then(|()| ws.flush(&mut pipe)) {
            // After a close nothing more may be sent.
            tracing::debug!(error = %e, "messages for the remote dropped");
        }
        relay.to_network(&out);
        Ok(())
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        // What `connect_service` waits for through IPC_NETWORK.
        let _ = relay.message_to_service(b"ok");
    }

    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        let _ = (refusal, relay);
        self.state = State::Done;
    }

    fn handshake_phase(&self) -> Option<&'static str> {
        matches!(self.state, State::Upgrading { .. }).then_some("WebSocket upgrade")
    }

    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        let max = self.settings.max_unanswered_pings;
        let ws = match &mut self.state {
            State::Open(ws) => Some(&mut **ws),
            _ => None,
        };
        ping_ws(ws, relay, &mut self.unanswered_pings, max, |n| {
            format!("the remote answered none of {n} pings")
        })
    }

    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        self.close_with(relay, CloseCode::Away, "shutting down")
    }

    fn can_go_away(&self) -> bool {
        matches!(&self.state, State::Open(ws) if ws.can_write())
    }

    fn network_closed(&mut self) -> Result<()> {
        match &self.state {
            State::Upgrading { .. } => Err(Error::Denied(
                "no: the remote closed before answering the WebSocket upgrade".into(),
            )),
            State::Open(ws) if ws.can_write() => Err(Error::Transport(
                "the remote closed without a WebSocket close".into(),
            )),
            _ => Ok(()),
        }
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        if clean {
            self.close_with(relay, CloseCode::Normal, "");
        } else {
            self.close_with(relay, CloseCode::Error, "local client went away");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_a_remote_websocketd_are_the_refusals_they_stand_for() {
        assert_eq!(refusal_text(404, "Not Found"), "unknown service");
        assert_eq!(refusal_text(403, "Forbidden"), "service not allowed");
        assert_eq!(refusal_text(503, "Service Unavailable"), "service down");
        assert!(refusal_text(421, "Misdirected Request").contains("421 Misdirected"));
    }
}
