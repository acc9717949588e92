//! websocketd's WebSocket transport, driven through libipc's transport harness
//! (feature `test-util`): bytes in from the client and from the service, and
//! the exact bytes it sends each way. The test plays the event loop, calling
//! the transport as the context does (see `libipc::testing`).

use libipc::switch::{Refusal, Transport};
use libipc::testing::Harness;
use websocketd::ws::{MessageType, WebSocket};

mod common;

/// RFC 6455's example handshake (section 1.3): its key and accept value.
const UPGRADE: &[u8] = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// A transport as `websocketd --listen 127.0.0.1:8080` makes for a client.
fn websocket(message_type: MessageType) -> WebSocket {
    WebSocket::new(common::settings(message_type, 3))
}

/// A WebSocket past its upgrade (service `echo` attached, 101 taken).
fn open(message_type: MessageType) -> (WebSocket, Harness) {
    let mut t = websocket(message_type);
    let mut h = Harness::new();
    let call = h.call(|r| t.on_network_data(UPGRADE, r));
    assert_eq!(call.requested.as_deref(), Some(&b"echo"[..]));
    h.call(|r| t.accepted(r));
    assert_eq!(h.take_to_network(), SWITCHING);
    (t, h)
}

/// A masked client frame (RFC 6455, 5.3) with a payload of at most 125 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    f
}

#[test]
fn an_upgrade_asks_for_the_service_its_path_names_and_the_101_waits_for_it() {
    let mut t = websocket(MessageType::Auto);
    let mut h = Harness::new();
    // The head in two reads: nothing is decided on half of it.
    let (first, rest) = UPGRADE.split_at(40);
    let call = h.call(|r| t.on_network_data(first, r));
    assert!(call.requested.is_none() && call.finished.is_none());
    assert_eq!(t.handshake_phase(), Some("HTTP request"));
    // A frame the client sent right behind its request, before any answer.
    let early = client_frame(0x1, b"early");
    let call = h.call(|r| t.on_network_data(&[rest, &early].concat(), r));
    assert_eq!(call.requested.as_deref(), Some(&b"echo"[..]));
    assert!(call.finished.is_none());
    assert!(h.take_to_network().is_empty(), "101 before the service");
    assert!(h.take_to_service().is_empty());
    assert_eq!(t.handshake_phase(), None);

    h.call(|r| t.accepted(r));
    assert_eq!(h.take_to_network(), SWITCHING);
    // The context then hands in what it has read since (here nothing): the
    // early frame reaches the service after the 101.
    h.call(|r| t.on_network_data(b"", r)).value.unwrap();
    assert_eq!(h.take_to_service(), b"\0\0\0\x05early");
    assert!(h.take_to_network().is_empty());
}

#[test]
fn each_masked_client_message_becomes_one_libipc_frame() {
    let (mut t, mut h) = open(MessageType::Auto);
    let call = h.call(|r| t.on_network_data(&client_frame(0x1, b"hello"), r));
    assert!(call.value.is_ok() && call.finished.is_none());
    assert_eq!(h.take_to_service(), b"\0\0\0\x05hello");
    assert!(h.take_to_network().is_empty());

    // Two messages in one read, the second cut across two reads; binary too.
    let both = [client_frame(0x2, &[0, 1, 2]), client_frame(0x1, b"abcd")].concat();
    let (a, b) = both.split_at(both.len() - 2);
    h.call(|r| t.on_network_data(a, r)).value.unwrap();
    assert_eq!(h.take_to_service(), b"\0\0\0\x03\0\x01\x02");
    h.call(|r| t.on_network_data(b, r)).value.unwrap();
    assert_eq!(h.take_to_service(), b"\0\0\0\x04abcd");
    // A message in two fragments (text, continuation) is one message.
    let mut first = client_frame(0x1, b"frag");
    first[0] &= 0x7f; // not FIN
    let fragments = [first, client_frame(0x0, b"ment")].concat();
    h.call(|r| t.on_network_data(&fragments, r)).value.unwrap();
    assert_eq!(h.take_to_service(), b"\0\0\0\x08fragment");
    assert!(h.take_to_network().is_empty());
}

#[test]
fn each_service_message_becomes_one_unmasked_frame_of_the_configured_type() {
    let hello = b"\0\0\0\x05hello";
    for (kind, opcode) in [
        (MessageType::Auto, 0x81),
        (MessageType::Text, 0x81),
        (MessageType::Binary, 0x82),
        (MessageType::Mirror, 0x81),
    ] {
        let (mut t, mut h) = open(kind);
        h.call(|r| t.on_service_data(hello, r)).value.unwrap();
        assert_eq!(
            h.take_to_network(),
            [&[opcode, 5][..], b"hello"].concat(),
            "{kind:?}"
        );
        assert!(h.take_to_service().is_empty());
    }

    // Auto and Text: a payload that is not UTF-8 can only go as binary.
    for kind in [MessageType::Auto, MessageType::Text] {
        let (mut t, mut h) = open(kind);
        h.call(|r| t.on_service_data(b"\0\0\0\x02\xff\xfe", r))
            .value
            .unwrap();
        assert_eq!(h.take_to_network(), b"\x82\x02\xff\xfe", "{kind:?}");
    }

    // Mirror: in the type of the client's last message; a frame from the
    // service cut across two reads goes out once whole.
    let (mut t, mut h) = open(MessageType::Mirror);
    h.call(|r| t.on_network_data(&client_frame(0x2, b"x"), r))
        .value
        .unwrap();
    assert_eq!(h.take_to_service(), b"\0\0\0\x01x");
    h.call(|r| t.on_service_data(&hello[..6], r)).value.unwrap();
    assert!(h.take_to_network().is_empty());
    h.call(|r| t.on_service_data(&hello[6..], r)).value.unwrap();
    assert_eq!(h.take_to_network(), b"\x82\x05hello");
}

#[test]
fn a_client_close_is_answered_and_ends_the_pair_cleanly() {
    let (mut t, mut h) = open(MessageType::Auto);
    let close = client_frame(0x8, &1000u16.to_be_bytes());
    let call = h.call(|r| t.on_network_data(&close, r));
    assert!(call.value.is_ok());
    assert!(matches!(call.finished, Some(None)), "{:?}", call.finished);
    // The close echoed with its code (RFC 6455, 5.5.1), nothing for the service.
    assert_eq!(h.take_to_network(), b"\x88\x02\x03\xe8");
    assert!(h.take_to_service().is_empty());
    assert!(t.network_closed().is_ok());
    // Nothing more goes to the client after the close.
    h.call(|r| t.on_service_data(b"\0\0\0\x01z", r))
        .value
        .unwrap();
    assert!(h.take_to_network().is_empty());
}

#[test]
fn after_our_close_client_messages_are_not_taken_and_its_close_ends_the_pair() {
    let (mut t, mut h) = open(MessageType::Auto);
    assert!(t.can_go_away());
    assert!(h.call(|r| t.going_away(r)).value);
    assert_eq!(h.take_to_network(), b"\x88\x16\x03\xe9server shutting down");
    assert!(
        !t.can_go_away() && !h.call(|r| t.going_away(r)).value,
        "one close only"
    );
    // A message and a ping on their way: no answer could be sent back.
    let late = [client_frame(0x1, b"late"), client_frame(0x9, b"p")].concat();
    let call = h.call(|r| t.on_network_data(&late, r));
    assert!(call.value.is_ok() && call.finished.is_none());
    assert!(h.take_to_service().is_empty() && h.take_to_network().is_empty());
    // Their close answers ours: not answered again.
    let call = h.call(|r| t.on_network_data(&client_frame(0x8, &1001u16.to_be_bytes()), r));
    assert!(matches!(call.finished, Some(None)), "{:?}", call.finished);
    assert!(h.take_to_network().is_empty());
}

#[test]
fn bad_client_input_is_closed_with_the_code_for_it() {
    let unmasked = b"\x81\x02hi".to_vec();
    let long_ping = [&[0x89, 0xFE, 0, 126, 1, 2, 3, 4][..], &[0; 126]].concat();
    // A server's close frame.
    let close = |code: u16, reason: &str| {
        [
            &[0x88, 2 + reason.len() as u8][..],
            &code.to_be_bytes(),
            reason.as_bytes(),
        ]
        .concat()
    };
    let cases: [(&str, Vec<u8>, Vec<u8>); 4] = [
        (
            "unmasked",
            unmasked,
            close(1002, "unmasked frame from a client"),
        ),
        (
            "long ping",
            long_ping,
            close(1002, "control frame too long"),
        ),
        (
            "bad UTF-8",
            client_frame(0x1, b"\xC0\x80"),
            close(1007, "invalid UTF-8 in a text message"),
        ),
        (
            "reserved bits",
            client_frame(0x40 | 0x2, b"x"),
            close(1002, "reserved bits set"),
        ),
    ];
    for (what, input, answer) in cases {
        let (mut t, mut h) = open(MessageType::Auto);
        // A message before the fault still reaches the service.
        let input = [client_frame(0x2, b"ok"), input].concat();
        let call = h.call(|r| t.on_network_data(&input, r));
        assert!(
            matches!(call.finished, Some(Some(_))),
            "{what}: {:?}",
            call.finished
        );
        assert_eq!(h.take_to_service(), b"\0\0\0\x02ok", "{what}");
        assert_eq!(h.take_to_network(), answer, "{what}");
    }
    // A close with a code no peer may send: answered 1002, a clean end.
    let (mut t, mut h) = open(MessageType::Auto);
    let call = h.call(|r| t.on_network_data(&client_frame(0x8, &1005u16.to_be_bytes()), r));
    assert!(matches!(call.finished, Some(None)), "{:?}", call.finished);
    assert_eq!(h.take_to_network(), close(1002, "Protocol violation"));
}

#[test]
fn a_refused_service_gets_the_refusals_http_status_and_no_websocket() {
    let mut t = websocket(MessageType::Auto);
    let mut h = Harness::new();
    h.call(|r| t.on_network_data(UPGRADE, r));
    h.call(|r| t.refused(Refusal::UnknownService, r));
    assert_eq!(
        h.take_to_network(),
        &b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 31\r\nConnection: close\r\n\r\n404 Not Found: unknown service\n"[..]
    );
    // Whatever the client sends next is not WebSocket traffic.
    h.call(|r| t.on_network_data(&client_frame(0x1, b"hi"), r))
        .value
        .unwrap();
    assert!(h.take_to_service().is_empty() && h.take_to_network().is_empty());

    // A service down: 503, with a hint to try again soon.
    let mut t = websocket(MessageType::Auto);
    h.call(|r| t.on_network_data(UPGRADE, r));
    h.call(|r| t.refused(Refusal::ServiceDown, r));
    assert_eq!(
        h.take_to_network(),
        &b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nConnection: close\r\n\r\n\
503 Service Unavailable: service down\n"[..]
    );

    for (refusal, status) in [
        (Refusal::NotAllowed, "403 Forbidden"),
        (Refusal::InvalidName, "404 Not Found"),
        (Refusal::Timeout(None), "408 Request Timeout"),
        (Refusal::TooManyConnections, "503 Service Unavailable"),
    ] {
        let mut t = websocket(MessageType::Auto);
        h.call(|r| t.on_network_data(UPGRADE, r));
        h.call(|r| t.refused(refusal, r));
        let answer = String::from_utf8(h.take_to_network()).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{answer}"
        );
        assert!(
            answer.ends_with(&format!("{status}: {refusal}\n")),
            "{answer}"
        );
    }
}
