//! websocketd's reading of client frames ([`websocketd::frame::Reader`]) on
//! any bytes cut into any reads, against tungstenite's server (the codec it
//! replaced) on the same reads: the same messages, pings, pongs, close and
//! close code. The one difference allowed is websocketd's failing fast: on a
//! frame that the input leaves unfinished (tungstenite waits for its end),
//! websocketd may already have found the fault (an unmasked frame, invalid
//! UTF-8). Also checks that the output is exactly the messages, each as one
//! LibIPC frame. First byte: the reads' seed; second: the maximum size.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use libipc_fuzz::reads;
use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use websocketd::frame::{Event, Reader, allowed_close_code, close_code};

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The close as answered (a reserved code: 1002).
    Close(Option<u16>),
    Fault(u16),
}

fn ours(chunks: &[&[u8]], max: usize) -> Vec<Seen> {
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
                    assert!(len <= max);
                    assert!(!text || std::str::from_utf8(&payload).is_ok());
                    at += 4 + len;
                    Seen::Message(text, payload)
                }
                Event::Ping(p) => Seen::Ping(p.as_bytes().to_vec()),
                Event::Pong => Seen::Pong,
                Event::Close(c) => {
                    let code = close_code(c.as_bytes());
                    Seen::Close(code.map(|c| if allowed_close_code(c) { c } else { 1002 }))
                }
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

/// The bytes of one read, then "would block".
struct Pipe<'a>(&'a [u8]);

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.0.read(buf)
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn reference(chunks: &[&[u8]], max: usize) -> Vec<Seen> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut ws = WebSocketContext::new(Role::Server, Some(config));
    let mut seen = Vec::new();
    for chunk in chunks {
        let mut pipe = Pipe(chunk);
        loop {
            seen.push(match ws.read(&mut pipe) {
                Ok(Message::Text(t)) => Seen::Message(true, t.as_bytes().to_vec()),
                Ok(Message::Binary(b)) => Seen::Message(false, b.to_vec()),
                Ok(Message::Ping(p)) => Seen::Ping(p.to_vec()),
                Ok(Message::Pong(_)) => Seen::Pong,
                Ok(Message::Close(c)) => {
                    seen.push(Seen::Close(c.map(|c| u16::from(c.code))));
                    return seen;
                }
                Ok(Message::Frame(_)) => unreachable!(),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    seen.push(Seen::Fault(match e {
                        WsError::Capacity(_) => 1009,
                        WsError::Utf8(_) => 1007,
                        WsError::Protocol(_) => 1002,
                        e => panic!("unexpected error {e}"),
                    }));
                    return seen;
                }
            });
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let [seed, max, rest @ ..] = data else {
        return;
    };
    let max = [16, 125, 200, 1 << 16][*max as usize % 4];
    let chunks = reads(rest, *seed, false);
    let ours = ours(&chunks, max);
    let theirs = reference(&chunks, max);
    if ours != theirs {
        // Failing fast: tungstenite waits for the rest of a frame.
        let waiting = !matches!(theirs.last(), Some(Seen::Close(_) | Seen::Fault(_)));
        let early = matches!(ours.last(), Some(Seen::Fault(_))) && ours[..ours.len() - 1] == theirs[..];
        assert!(waiting && early, "ours {ours:?}\ntungstenite {theirs:?}");
    }
});
