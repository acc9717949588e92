//! Switching: a network connection joined to a service connection, with a
//! [`Transport`] that unwraps payloads from the network framing and wraps them back.
//!
//! The service side always speaks LibIPC frames. The network side speaks whatever
//! the transport does: LibIPC frames on plain TCP ([`Frames`]), the same inside TLS,
//! or one WebSocket message per payload. Transports are sans-I/O state machines:
//! the context reads and writes the sockets, and hands the transport the bytes that
//! arrived; the transport says, through [`Relay`], what goes where. That is what
//! lets them stack: a TLS transport decrypts, then hands plaintext to the transport
//! it wraps (frames, or WebSocket), and encrypts what that one produces.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use crate::error::{Error, Result};
use crate::frame::{self, Scanner};
use crate::queue::OutQueue;

mod dial;
mod http_proxy;
mod proxied;
mod refusal;
mod routed;
#[cfg(feature = "tls")]
mod tls;
pub use crate::context::DaemonExt;
pub use dial::Dial;
pub use http_proxy::{ProxyConfig, Tunnel};
pub use proxied::Proxied;
pub use refusal::Refusal;
pub use routed::Routed;
#[cfg(feature = "tls")]
pub use tls::{PeerCheck, ReportSni, Tls};

/// Where a transport puts its output: bytes for the service (LibIPC frames) and
/// bytes for the network (in the transport's own framing). Both leave in order;
/// nothing here blocks. While a side's queue is empty, bytes for it are written
/// straight to its socket, as far as the socket takes them (no copy); only the
/// rest is queued, for the context to write when the socket is ready again.
#[derive(Debug)]
pub struct Relay<'a> {
    pub(crate) to_service: &'a mut OutQueue,
    pub(crate) to_network: &'a mut OutQueue,
    pub(crate) request: Option<Vec<u8>>,
    /// The sockets to write straight to, when known.
    pub(crate) service_fd: Option<BorrowedFd<'a>>,
    pub(crate) network_fd: Option<BorrowedFd<'a>>,
    /// A direct write failed (the peer is gone): the pair must end.
    pub(crate) failed: Option<std::io::Error>,
    /// Counts what goes to the service (network side of a counted pair).
    pub(crate) traffic: Option<&'a mut crate::traffic::Counter>,
    /// The transport ended the conversation ([`Relay::finish`]), with the reason
    /// when it was the peer's fault.
    pub(crate) finished: Option<Option<Error>>,
    /// The network peer ended its side within the transport's protocol
    /// ([`Relay::network_ended`]).
    pub(crate) ended: bool,
    /// Bytes given for the network peer in this call: while reading that
    /// peer, what it made us answer (pongs, TLS alerts), which the context
    /// holds to the same backpressure as data.
    pub(crate) answered: usize,
    /// Bytes for the network peer waiting in the layers below this one (the
    /// records of a TLS transport around this one).
    pub(crate) backlog_below: usize,
    /// The transport has more for the network peer than it gave in this call
    /// ([`Relay::more_to_send`]).
    pub(crate) more: bool,
}

impl<'a> Relay<'a> {
    pub(crate) fn new(to_service: &'a mut OutQueue, to_network: &'a mut OutQueue) -> Self {
        Relay {
            to_service,
            to_network,
            request: None,
            service_fd: None,
            network_fd: None,
            failed: None,
            traffic: None,
            finished: None,
            ended: false,
            answered: 0,
            backlog_below: 0,
            more: false,
        }
    }

    /// Writes `bytes` to `fd` if its queue is empty, queues the rest.
    fn send(
        queue: &mut OutQueue,
        fd: Option<BorrowedFd<'_>>,
        failed: &mut Option<std::io::Error>,
        bytes: &[u8],
    ) {
        match fd {
            Some(fd) if failed.is_none() => {
                if let Err(e) = queue.push_raw_through(bytes, fd) {
                    *failed = Some(e);
                }
            }
            _ => queue.push_raw(bytes),
        }
    }

    /// Asks for the service this network connection wants (the network handshake
    /// named it). The context reports [`crate::Event::ServiceRequest`]; the daemon
    /// answers with `attach_service` or `refuse`. Data queued for the service
    /// meanwhile is kept and delivered first. Only meaningful before a service is
    /// attached.
    pub fn request_service(&mut self, name: &[u8]) {
        self.request = Some(name.to_vec());
    }

    /// Sends bytes that are already LibIPC frames to the service.
    pub fn frames_to_service(&mut self, frames: &[u8]) {
        if let Some(t) = self.traffic.as_deref_mut() {
            t.count_in(frames);
        }
        Self::send(self.to_service, self.service_fd, &mut self.failed, frames);
    }

    /// Queues one payload for the service, framing it.
    pub fn message_to_service(&mut self, payload: &[u8]) -> Result<()> {
        let header = frame::header(payload.len())?;
        if let Some(t) = self.traffic.as_deref_mut() {
            t.count_in(&header);
            t.count_in(payload);
        }
        self.to_service.push_message(payload);
        Ok(())
    }

    /// Sends bytes to the network peer.
    pub fn to_network(&mut self, bytes: &[u8]) {
        self.answered += bytes.len();
        Self::send(self.to_network, self.network_fd, &mut self.failed, bytes);
    }

    /// Ends the conversation from the network side (a WebSocket close handshake,
    /// an HTTP answer that closes): what is already accepted for each side is
    /// still delivered, then both connections close. Nothing more is read from
    /// either. `error` says why, when the peer broke the protocol (logged, and
    /// reported in the DISCONNECTION); `None` is a clean end.
    pub fn finish(&mut self, error: Option<Error>) {
        self.finished.get_or_insert(error);
    }

    /// The transport has more for the network peer than it gave in this call,
    /// to give from [`Transport::network_drained`] as the peer reads (an HTTP
    /// answer whose body is read from a file in chunks). For a connection
    /// answered without a service (no [`Relay::request_service`]): nothing
    /// more is read from it meanwhile, and it closes after a call that
    /// [`finish`](Relay::finish)es, or gives nothing.
    pub fn more_to_send(&mut self) {
        self.more = true;
    }

    /// The network peer ended its side inside the transport's protocol (a TLS
    /// close_notify) while the connection stays open: as on EOF, the service
    /// gets everything already accepted, then EOF, and its replies still flow
    /// back until it closes.
    pub fn network_ended(&mut self) {
        self.ended = true;
    }

    /// Bytes already waiting for the service.
    pub fn service_backlog(&self) -> usize {
        self.to_service.len()
    }

    /// Bytes already waiting for the network peer (not yet taken by its
    /// socket), in this layer and those below it.
    pub fn network_backlog(&self) -> usize {
        self.to_network.len() + self.backlog_below
    }
}

/// The network side of a switched pair.
///
/// Every method is called from the event loop and must not block. An error closes
/// both connections (after the goodbye from [`Transport::service_closed`]) and is
/// reported in their DISCONNECTION events.
pub trait Transport: Send + fmt::Debug {
    /// A short name for logs ("frames", "tls", "ws").
    fn name(&self) -> &'static str;

    /// Bytes arrived from the network. What this sends back to the network
    /// peer (an answer: a pong, a TLS alert) is held to backpressure: once
    /// half the high-water mark waits for that peer, it is not read until
    /// it has read down to the low-water mark.
    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()>;

    /// Bytes (LibIPC frames, possibly cut anywhere) arrived from the service.
    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()>;

    /// Called once when the network connection is added, before any data: a
    /// transport that speaks first (a client handshake) queues its opening here.
    fn start(&mut self, relay: &mut Relay<'_>) {
        let _ = relay;
    }

    /// Everything queued for the network peer has been written, and the
    /// transport said it had more to send ([`Relay::more_to_send`]): give the
    /// next part, and say so again if more is left. Called only once the
    /// queue is empty, so that a peer that reads slowly makes the daemon hold
    /// no more than one call gives (the socket buffer keeps a fast one busy
    /// meanwhile). Only for connections answered without a service.
    fn network_drained(&mut self, relay: &mut Relay<'_>) {
        let _ = relay;
    }

    /// The service was attached after a [`Relay::request_service`]: answer the
    /// network peer (the original's `ok`) before anything from the service.
    fn accepted(&mut self, relay: &mut Relay<'_>) {
        let _ = relay;
    }

    /// The service could not be attached (`reason`: unknown service, not allowed,
    /// service down, handshake timeout): queue the answer for the network peer;
    /// the connection is closed once it is written.
    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        let _ = (refusal, relay);
    }

    /// While the transport's own handshake (TLS, an HTTP upgrade) is not finished,
    /// its name ("TLS handshake", "HTTP request"): a daemon gives that phase its
    /// own timeout, and names it when it expires.
    fn handshake_phase(&self) -> Option<&'static str> {
        None
    }

    /// The connection has been quiet for the daemon's keepalive interval: probe
    /// the peer (a WebSocket ping). `Ok(false)`: this transport has no probe (the
    /// daemon applies its idle timeout instead); an error closes the pair (the
    /// peer stopped answering probes).
    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        let _ = relay;
        Ok(false)
    }

    /// The daemon is shutting down: ask the peer to leave (a WebSocket close with
    /// 1001). Returns false if the transport has no way to say so; the daemon
    /// then lets the connection finish on its own until the drain timeout.
    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        let _ = relay;
        false
    }

    /// Whether [`Transport::going_away`] would ask the peer to leave now.
    fn can_go_away(&self) -> bool {
        false
    }

    /// The network peer closed its side. Fails if it did so in the middle of a
    /// message (the partial message is not forwarded).
    fn network_closed(&mut self) -> Result<()> {
        Ok(())
    }

    /// The service side ended: queue any goodbye for the network (a TLS
    /// close_notify, a WebSocket close frame). `clean` is false when the service
    /// vanished or broke the protocol.
    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        let _ = (relay, clean);
    }

    /// Adds what this layer knows about the client (the address a PROXY
    /// header gave, the TLS session, the WebSocket request) to `info`, then
    /// asks the layer it wraps. Called once the service is chosen.
    fn describe(&self, info: &mut PeerInfo) {
        let _ = info;
    }

    /// Whether, once its handshake is done, the client's stream is plain
    /// LibIPC frames the service could read itself: the daemon may then hand
    /// it the socket and step out (see [`crate::handoff`]). False for
    /// anything that keeps transforming bytes (TLS, WebSocket).
    fn can_hand_off(&self) -> bool {
        false
    }
}

/// What a daemon knows about a network client once its handshakes are done:
/// with `--peer-info`, the first message its service receives, as JSON (see
/// [`PeerInfo::to_json`]), so that a service can decide what the client may
/// do without speaking TLS or HTTP itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address: the TCP peer, or the one a trusted balancer's
    /// PROXY header gave.
    pub address: Option<SocketAddr>,
    /// The balancer the client came through (a trusted PROXY protocol peer).
    pub via: Option<SocketAddr>,
    /// The TLS session, for tlsd and wss clients.
    pub tls: Option<TlsInfo>,
    /// The upgrade request, for websocketd clients.
    pub websocket: Option<WebSocketInfo>,
}

/// The TLS part of [`PeerInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version (`TLSv1_3`).
    pub version: Option<String>,
    /// The server name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The application protocol agreed with ALPN.
    pub alpn: Option<String>,
    /// The client certificate's identity, when one was required and accepted
    /// (mutual TLS).
    pub identity: Option<String>,
}

/// The WebSocket part of [`PeerInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSocketInfo {
    /// The request target: the path and the query (`/chat?room=1`).
    pub path: String,
    /// The `Origin` header (browsers send it).
    pub origin: Option<String>,
    /// The subprotocol agreed on.
    pub subprotocol: Option<String>,
}

impl PeerInfo {
    /// One JSON object; absent facts are left out:
    /// `{"address":"192.0.2.7:51234","via":"10.0.0.2:41000","tls":{"version":"TLSv1_3","server_name":"example.org","alpn":"h2","identity":"CN=[\"alice\"] SAN=[\"dns:alice.example\"]"},"websocket":{"path":"/chat?room=1","origin":"https://example.org","subprotocol":"chat"}}`.
    pub fn to_json(&self) -> String {
        let mut top = JsonObject::default();
        top.field("address", self.address.map(|a| a.to_string()).as_deref());
        top.field("via", self.via.map(|a| a.to_string()).as_deref());
        if let Some(t) = &self.tls {
            let mut o = JsonObject::default();
            o.field("version", t.version.as_deref());
            o.field("server_name", t.server_name.as_deref());
            o.field("alpn", t.alpn.as_deref());
            o.field("identity", t.identity.as_deref());
            top.raw("tls", &o.finish());
        }
        if let Some(w) = &self.websocket {
            let mut o = JsonObject::default();
            o.field("path", Some(&w.path));
            o.field("origin", w.origin.as_deref());
            o.field("subprotocol", w.subprotocol.as_deref());
            top.raw("websocket", &o.finish());
        }
        top.finish()
    }
}

/// A JSON object written field by field.
#[derive(Default)]
struct JsonObject(String);

impl JsonObject {
    fn raw(&mut self, key: &str, value: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        json_string(&mut self.0, key);
        self.0.push(':');
        self.0.push_str(value);
    }

    fn field(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            let mut s = String::with_capacity(v.len() + 2);
            json_string(&mut s, v);
            self.raw(key, &s);
        }
    }

    fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// Appends `s` as a JSON string (RFC 8259: quotes, backslashes and control
/// characters escaped; everything else as is, in UTF-8).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A boxed transport is a transport (so layers can wrap a choice made at run time).
impl Transport for Box<dyn Transport> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn start(&mut self, relay: &mut Relay<'_>) {
        (**self).start(relay)
    }
    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        (**self).on_network_data(data, relay)
    }
    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        (**self).on_service_data(data, relay)
    }
    fn network_drained(&mut self, relay: &mut Relay<'_>) {
        (**self).network_drained(relay)
    }
    fn accepted(&mut self, relay: &mut Relay<'_>) {
        (**self).accepted(relay)
    }
    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        (**self).refused(refusal, relay)
    }
    fn handshake_phase(&self) -> Option<&'static str> {
        (**self).handshake_phase()
    }
    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        (**self).keepalive(relay)
    }
    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        (**self).going_away(relay)
    }
    fn can_go_away(&self) -> bool {
        (**self).can_go_away()
    }
    fn network_closed(&mut self) -> Result<()> {
        (**self).network_closed()
    }
    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        (**self).service_closed(relay, clean)
    }
    fn describe(&self, info: &mut PeerInfo) {
        (**self).describe(info)
    }
    fn can_hand_off(&self) -> bool {
        (**self).can_hand_off()
    }
}

/// Plain LibIPC frames on the network side (tcpd): bytes pass through unchanged,
/// and each header is checked in place against the maximum message size.
#[derive(Debug, Clone)]
pub struct Frames {
    from_net: Scanner,
    from_svc: Scanner,
}

impl Frames {
    /// Frames of at most `max_message_size` payload bytes from the network.
    pub fn new(max_message_size: usize) -> Self {
        Frames {
            from_net: Scanner::new(max_message_size),
            // The service is trusted; still follow its frames to know where they end.
            from_svc: Scanner::new(u32::MAX as usize),
        }
    }
}

impl Transport for Frames {
    fn can_hand_off(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "frames"
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        // Whole frames before a bad header still reach the service; nothing of
        // the oversized frame's payload does.
        let (valid, scanned) = self.from_net.scan_valid(data);
        relay.frames_to_service(&data[..valid]);
        scanned.map(drop)
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        self.from_svc.scan(data)?;
        relay.to_network(data);
        Ok(())
    }

    fn network_closed(&mut self) -> Result<()> {
        if self.from_net.at_boundary() {
            Ok(())
        } else {
            Err(Error::Truncated {
                missing: self.from_net.missing(),
            })
        }
    }
}

/// What a [`SwitchHooks`] call did (the original's callback codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStatus {
    /// Done: a frame was read, or written.
    Done,
    /// The descriptor is closing: end the pair as on EOF.
    Closing,
    /// Nothing to pass on this time.
    Ignore,
    /// Failure: both sides are closed.
    Error,
}

/// Application-driven I/O on one side of a switched pair, for callers that read
/// and write the descriptor themselves (the C API's `ipc_set_switch_callbacks`).
///
/// Hooks may block; the loop waits for them. Everything else about the pair
/// (ordering, backpressure, closing) stays the context's job.
pub trait SwitchHooks: Send + fmt::Debug {
    /// The descriptor is readable: read one complete LibIPC frame (header and
    /// payload) into the start of `buf`, as long as the largest frame allowed,
    /// and return its length with [`HookStatus::Done`] (the length is
    /// ignored otherwise). `buf` is the context's, reused from one read to
    /// the next: it holds earlier frames' bytes, not zeros.
    fn read(&mut self, fd: std::os::fd::RawFd, buf: &mut [u8]) -> (HookStatus, usize);

    /// Write one complete LibIPC frame (header and payload) to the descriptor.
    fn write(&mut self, fd: std::os::fd::RawFd, frame: &[u8]) -> HookStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_info_json_escapes_what_clients_control_and_leaves_out_the_unknown() {
        assert_eq!(PeerInfo::default().to_json(), "{}");
        let info = PeerInfo {
            address: Some("[2001:db8::7]:40002".parse().unwrap()),
            via: None,
            tls: Some(TlsInfo {
                version: Some("TLSv1_3".into()),
                identity: Some("CN=[\"a\\b\"] é\u{1}".into()),
                ..TlsInfo::default()
            }),
            websocket: Some(WebSocketInfo {
                path: "/chat?q=\"x\"\n".into(),
                origin: None,
                subprotocol: Some("chat".into()),
            }),
        };
        assert_eq!(
            info.to_json(),
            r#"{"address":"[2001:db8::7]:40002","tls":{"version":"TLSv1_3","identity":"CN=[\"a\\b\"] é\u0001"},"websocket":{"path":"/chat?q=\"x\"\n","subprotocol":"chat"}}"#
        );
    }
}
