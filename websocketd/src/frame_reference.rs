//! websocketd's reader of client frames ([`Reader`]) and tungstenite's server
//! (the codec it replaced, the reference) over the same reads, each turned
//! into what it made of them: the property tests in `frame.rs` and the fuzz
//! target `websocketd_frames` compare the two. Test code (feature
//! `test-util`), not part of the daemon.

use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::frame::{
    Event, INVALID_DATA, PROTOCOL_ERROR, Reader, TOO_BIG, allowed_close_code, close_code,
};
use crate::ws::Pipe;

/// What a reader made of a client's bytes, in order; a fault last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Message {
        text: bool,
        payload: Vec<u8>,
    },
    Ping(Vec<u8>),
    Pong,
    /// The close as answered: its code and reason (tungstenite's reply
    /// to a reserved code: 1002) or `None` for an empty one.
    Close(Option<(u16, String)>),
    Fault(u16),
}

/// Our reader over `chunks`, one read each.
pub fn ours(chunks: &[&[u8]], max: usize) -> Vec<Seen> {
    let mut reader = Reader::new(max);
    let mut seen = Vec::new();
    for chunk in chunks {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let read = reader.read(chunk, &mut out, true, &mut |e| events.push(e));
        let mut at = 0;
        for e in events {
            seen.push(match e {
                Event::Message { text } => {
                    let len = u32::from_be_bytes(out[at..at + 4].try_into().unwrap()) as usize;
                    let payload = out[at + 4..at + 4 + len].to_vec();
                    assert!(len <= max, "a message over the maximum");
                    assert!(
                        !text || std::str::from_utf8(&payload).is_ok(),
                        "text not UTF-8"
                    );
                    at += 4 + len;
                    Seen::Message { text, payload }
                }
                Event::Ping(p) => Seen::Ping(p.as_bytes().to_vec()),
                Event::Pong => Seen::Pong,
                Event::Close(c) => Seen::Close(close_as_answered(c.as_bytes())),
            });
        }
        assert_eq!(at, out.len(), "the output is the messages, framed");
        if let Err(f) = read {
            seen.push(Seen::Fault(f.code));
            return seen;
        }
        if matches!(seen.last(), Some(Seen::Close(_))) {
            return seen;
        }
    }
    seen
}

fn close_as_answered(payload: &[u8]) -> Option<(u16, String)> {
    let code = close_code(payload)?;
    Some(match allowed_close_code(code) {
        true => (code, String::from_utf8(payload[2..].to_vec()).unwrap()),
        false => (1002, "Protocol violation".into()),
    })
}

/// tungstenite's server over `chunks`.
pub fn reference(chunks: &[&[u8]], max: usize) -> Vec<Seen> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut ws = WebSocketContext::new(Role::Server, Some(config));
    let mut seen = Vec::new();
    for chunk in chunks {
        let mut sink = Vec::new();
        let mut pipe = Pipe::new(chunk, &mut sink);
        loop {
            seen.push(match ws.read(&mut pipe) {
                Ok(Message::Text(t)) => Seen::Message {
                    text: true,
                    payload: t.as_bytes().to_vec(),
                },
                Ok(Message::Binary(b)) => Seen::Message {
                    text: false,
                    payload: b.to_vec(),
                },
                Ok(Message::Ping(p)) => Seen::Ping(p.to_vec()),
                Ok(Message::Pong(_)) => Seen::Pong,
                Ok(Message::Close(c)) => {
                    seen.push(Seen::Close(
                        c.map(|c| (u16::from(c.code), c.reason.as_str().to_owned())),
                    ));
                    return seen;
                }
                Ok(Message::Frame(_)) => unreachable!("no raw frames are read"),
                Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    let code = match e {
                        WsError::Capacity(_) => TOO_BIG,
                        WsError::Utf8(_) => INVALID_DATA,
                        WsError::Protocol(_) => PROTOCOL_ERROR,
                        e => panic!("unexpected error {e}"),
                    };
                    seen.push(Seen::Fault(code));
                    return seen;
                }
            });
        }
    }
    seen
}
