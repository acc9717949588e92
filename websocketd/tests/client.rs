//! websocketd's outbound WebSocket transport against its inbound one, both
//! driven through libipc's transport harness: the upgrade each way, messages
//! each way, and the refusals and closes of the remote as the local client
//! and the log see them.

use std::sync::Arc;

use libipc::Error;
use libipc::switch::{Refusal, Transport};
use libipc::testing::Harness;
use websocketd::client::WsClient;
use websocketd::ws::{MessageType, Settings, WebSocket};

mod common;

fn settings() -> Arc<Settings> {
    common::settings(MessageType::Mirror, 2)
}

fn framed(p: &[u8]) -> Vec<u8> {
    [&(p.len() as u32).to_be_bytes()[..], p].concat()
}

/// A client for `ws://127.0.0.1:8080/pong` and the server it reaches, each
/// with its harness; the server's answer to the upgrade is `answer` (None:
/// it attaches the service and sends its 101).
struct Pair {
    client: WsClient,
    ch: Harness,
    server: WebSocket,
    sh: Harness,
}

impl Pair {
    fn new() -> Pair {
        let mut client = WsClient::new(settings(), "pong", "127.0.0.1", 8080, 80);
        let mut ch = Harness::new();
        let mut server = WebSocket::new(settings());
        let mut sh = Harness::new();
        ch.call(|r| client.start(r));
        let request = ch.take_to_network();
        let call = sh.call(|r| server.on_network_data(&request, r));
        assert_eq!(call.requested.as_deref(), Some(&b"pong"[..]));
        assert!(String::from_utf8_lossy(&request).contains("Host: 127.0.0.1:8080\r\n"));
        Pair {
            client,
            ch,
            server,
            sh,
        }
    }

    /// Server bytes to the client; returns the client's call.
    fn server_to_client(&mut self) -> libipc::testing::Call<libipc::Result<()>> {
        let bytes = self.sh.take_to_network();
        self.ch.call(|r| self.client.on_network_data(&bytes, r))
    }

    fn client_to_server(&mut self) {
        let bytes = self.ch.take_to_network();
        let call = self.sh.call(|r| self.server.on_network_data(&bytes, r));
        assert!(call.finished.is_none(), "{:?}", call.finished);
    }
}

#[test]
fn messages_flow_each_way_as_binary_after_a_checked_upgrade() {
    let mut p = Pair::new();
    assert_eq!(p.client.handshake_phase(), Some("WebSocket upgrade"));
    p.sh.call(|r| p.server.accepted(r));
    // The service's greeting comes in the same read as the 101.
    p.sh.call(|r| p.server.on_service_data(&framed(b"hello"), r));
    let call = p.server_to_client();
    assert!(call.value.is_ok());
    assert_eq!(call.requested.as_deref(), Some(&b"pong"[..]));
    p.ch.call(|r| p.client.accepted(r));
    // `ok` for the local client, then the greeting (the context sends the
    // accepted answer first; here both are in the harness in call order).
    assert_eq!(
        p.ch.take_to_service(),
        [framed(b"hello"), framed(b"ok")].concat()
    );

    // The local client's messages, one binary message each, masked.
    let msgs = [framed(b"one"), framed(b""), framed(&[0xff; 300])].concat();
    p.ch.call(|r| p.client.on_service_data(&msgs[..5], r));
    p.ch.call(|r| p.client.on_service_data(&msgs[5..], r));
    let wire = p.ch.take_to_network();
    assert_eq!(wire[0], 0x82, "binary, final");
    assert_eq!(wire[1] & 0x80, 0x80, "masked");
    let call = p.sh.call(|r| p.server.on_network_data(&wire, r));
    assert!(call.finished.is_none());
    assert_eq!(p.sh.take_to_service(), msgs);

    // Mirror mode answers binary with binary; the bytes arrive as they were.
    p.sh.call(|r| p.server.on_service_data(&framed(&[0xfe; 200]), r));
    p.server_to_client();
    assert_eq!(p.ch.take_to_service(), framed(&[0xfe; 200]));
}

#[test]
fn a_close_from_the_remote_ends_the_local_connection() {
    let mut p = Pair::new();
    p.sh.call(|r| p.server.accepted(r));
    p.server_to_client();
    // The remote service died: 1011, an error with its reason.
    p.sh.call(|r| p.server.service_closed(r, false));
    let call = p.server_to_client();
    match call.finished {
        Some(Some(Error::Transport(why))) => assert!(why.contains("1011"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The close was answered: the server's close handshake is complete.
    let reply = p.ch.take_to_network();
    assert_eq!(reply[0], 0x88, "a close frame");
    let call = p.sh.call(|r| p.server.on_network_data(&reply, r));
    assert!(matches!(call.finished, Some(None)));

    // A normal close is a clean end.
    let mut p = Pair::new();
    p.sh.call(|r| p.server.accepted(r));
    p.server_to_client();
    p.sh.call(|r| p.server.service_closed(r, true));
    assert!(matches!(p.server_to_client().finished, Some(None)));
}

#[test]
fn refusals_of_the_remote_reach_the_local_client_as_what_they_are() {
    for (refusal, text) in [
        (Refusal::UnknownService, "no: unknown service"),
        (Refusal::NotAllowed, "no: service not allowed"),
        (Refusal::ServiceDown, "no: service down"),
    ] {
        let mut p = Pair::new();
        p.sh.call(|r| p.server.refused(refusal, r));
        let call = p.server_to_client();
        assert!(call.requested.is_none());
        match call.value {
            Err(Error::Denied(t)) => assert_eq!(t, text),
            other => panic!("{refusal:?}: {other:?}"),
        }
    }
}

#[test]
fn a_server_that_is_not_websocket_is_refused() {
    for answer in [
        &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: wrong\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        let mut client = WsClient::new(settings(), "pong", "h.example", 443, 443);
        let mut h = Harness::new();
        h.call(|r| client.start(r));
        assert!(String::from_utf8_lossy(&h.take_to_network()).contains("Host: h.example\r\n"));
        let call = h.call(|r| client.on_network_data(answer, r));
        assert!(call.value.is_err() && call.requested.is_none(), "{answer:?}");
    }
    // Closed before answering: a refusal for the local client.
    let mut client = WsClient::new(settings(), "pong", "h", 80, 80);
    assert!(matches!(client.network_closed(), Err(Error::Denied(_))));
}

#[test]
fn pings_when_quiet_and_gives_up_after_unanswered_ones() {
    let mut p = Pair::new();
    p.sh.call(|r| p.server.accepted(r));
    p.server_to_client();
    for _ in 0..2 {
        assert!(matches!(
            p.ch.call(|r| p.client.keepalive(r)).value,
            Ok(true)
        ));
        assert_eq!(p.ch.take_to_network()[0], 0x89, "a ping");
    }
    // Two unanswered (max_unanswered_pings): the third turn closes.
    assert!(p.ch.call(|r| p.client.keepalive(r)).value.is_err());
    // A pong is life: the count starts again.
    let mut p = Pair::new();
    p.sh.call(|r| p.server.accepted(r));
    p.server_to_client();
    for _ in 0..5 {
        assert!(matches!(
            p.ch.call(|r| p.client.keepalive(r)).value,
            Ok(true)
        ));
        p.client_to_server();
        p.server_to_client();
    }
}
