//! The benchmark's WebSocket client (RFC 6455): a blocking HTTP upgrade, then a
//! non-blocking stream for the mio load generator, written here rather than
//! through tungstenite's `WebSocket` so that the client copies each byte once
//! and allocates nothing per message (see `ws` in BENCHMARKS.md for how its
//! CPU compares with the relays').
//!
//! The load generator writes and reads LibIPC frames (4-byte big-endian length,
//! payload) whatever the transport. [`WsStream`] turns each frame it is given
//! into one masked, binary WebSocket message, and the server's messages back
//! into a byte stream, in one of two ways ([`WsMode`]):
//!
//! - `Messages`: the message carries the frame's payload; each message
//!   received becomes a frame again (websocketd, websocat `lengthprefixed:`:
//!   one WebSocket message = one LibIPC message).
//! - `Bytes`: the message carries the whole frame, length included, and the
//!   payloads received are concatenated (websockify, websocat without the
//!   overlay: relays of bytes, the echo service's framing inside them).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;

use crate::tls;

/// What a WebSocket message carries; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMode {
    Messages,
    Bytes,
}

/// Bytes read from the socket at once (and the most one read hands out).
const RAW_READ: usize = 256 << 10;
/// Payload bytes still due that are read from the socket straight into the
/// caller's buffer (no copy through `raw`) when nothing else is buffered.
const DIRECT_READ: usize = 4096;
/// Bytes of the caller's buffer encoded per `write` call.
const ENCODE_MAX: usize = 256 << 10;
/// The longest HTTP response head accepted.
const MAX_HEAD: usize = 8192;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Connects to `addr` and upgrades to WebSocket (blocking, with timeouts).
/// Returns the socket and the bytes that came after the 101 response.
pub fn handshake(addr: SocketAddr) -> Result<(TcpStream, Vec<u8>)> {
    handshake_path(addr, "/")
}

/// [`handshake`] with the request path `path` (websocketd's routed mode:
/// `/NAME` reaches the service NAME).
pub fn handshake_path(addr: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = tls::tcp(addr)?;
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            bail!("HTTP response head longer than {MAX_HEAD} bytes");
        }
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).context("WebSocket handshake")?;
        if n == 0 {
            bail!("closed during the WebSocket handshake");
        }
        head.extend_from_slice(&buf[..n]);
    };
    let rest = head.split_off(end);
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {status}");
    }
    let accept = derive_accept_key(key.as_bytes());
    let accepted = text.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
        })
    });
    if !accepted {
        bail!("no valid Sec-WebSocket-Accept in the 101 response");
    }
    Ok((s, rest))
}

/// Connects, sends one LibIPC frame carrying `payload` and reads its echo
/// (blocking), then closes: the relays' readiness probe.
pub fn echo_once(addr: SocketAddr, mode: WsMode, payload: &[u8]) -> Result<()> {
    let (sock, rest) = handshake(addr)?;
    let mut s = WsStream::new(sock, mode, rest);
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    s.write_all(&frame)?;
    s.flush()?;
    let mut back = vec![0u8; frame.len()];
    s.read_exact(&mut back).context("no echo")?;
    if back != frame {
        bail!("wrong echo");
    }
    Ok(())
}

/// Where the frame being received stands.
#[derive(Debug, Clone, Copy)]
enum Rx {
    /// At a frame header.
    Header,
    /// Inside a data frame's payload: `left` bytes to go, to the caller or
    /// (a fragmented message, `Messages` mode) into `frag`; `fin`: the
    /// message's last frame.
    Payload {
        left: usize,
        to_frag: bool,
        fin: bool,
    },
}

/// A WebSocket client connection over a socket, blocking or not, that reads
/// and writes LibIPC frames (see the module documentation). `read` and `write`
/// pass the socket's `WouldBlock` on; `flush` sends what is still encoded and
/// unsent (and says `WouldBlock` while the socket will not take it).
#[derive(Debug)]
pub struct WsStream<S> {
    pub sock: S,
    mode: WsMode,
    /// Encoded frames not yet written to the socket.
    tx: Vec<u8>,
    tx_pos: usize,
    /// The LibIPC length being gathered (a frame's first bytes), and how many.
    tx_len: [u8; 4],
    tx_len_have: usize,
    /// Payload bytes of the current message still to encode; its mask and how
    /// far into the message the mask has run.
    tx_left: usize,
    tx_mask: [u8; 4],
    tx_masked: usize,
    /// Pongs waiting for the message being encoded to end.
    control: Vec<u8>,
    rng: u64,
    /// Socket bytes not decoded yet: `raw[raw_start..raw_end]`.
    raw: Box<[u8]>,
    raw_start: usize,
    raw_end: usize,
    rx: Rx,
    /// Decoded bytes the caller's buffer had no room for.
    carry: Vec<u8>,
    carry_pos: usize,
    /// A fragmented message so far (`Messages` mode).
    frag: Vec<u8>,
    /// The server sent a close frame.
    closed: bool,
}

impl<S: Read + Write> WsStream<S> {
    /// A stream over `sock` once the handshake is done; `early` came with the
    /// server's 101 response.
    pub fn new(sock: S, mode: WsMode, early: Vec<u8>) -> Self {
        let mut raw = vec![0u8; RAW_READ.max(early.len())].into_boxed_slice();
        raw[..early.len()].copy_from_slice(&early);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        WsStream {
            sock,
            mode,
            tx: Vec::new(),
            tx_pos: 0,
            tx_len: [0; 4],
            tx_len_have: 0,
            tx_left: 0,
            tx_mask: [0; 4],
            tx_masked: 0,
            control: Vec::new(),
            rng: seed | 1,
            raw,
            raw_start: 0,
            raw_end: early.len(),
            rx: Rx::Header,
            carry: Vec::new(),
            carry_pos: 0,
            frag: Vec::new(),
            closed: false,
        }
    }

    /// A fresh masking key (xorshift64*: the mask must not be predictable to
    /// the web, which does not apply here, but it must vary and be non-zero
    /// like a browser's, so that the server's unmasking does real work).
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let m = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32;
        (m | 1).to_le_bytes()
    }

    /// Starts a masked binary message of `len` payload bytes.
    fn start_message(&mut self, len: usize) {
        let mask = self.next_mask();
        push_header(&mut self.tx, 0x80 | OP_BINARY, len, Some(mask));
        self.tx_mask = mask;
        self.tx_masked = 0;
        self.tx_left = len;
    }

    fn push_masked(&mut self, data: &[u8]) {
        mask_into(&mut self.tx, data, self.tx_mask, self.tx_masked);
        self.tx_masked += data.len();
        self.tx_left -= data.len();
    }

    /// Moves the queued pongs to `tx` unless they would split a message.
    fn queue_control(&mut self) {
        if self.tx_left == 0 && !self.control.is_empty() {
            self.tx.append(&mut self.control);
        }
    }

    /// Encodes the LibIPC frames in `data` (a frame may span calls).
    fn encode(&mut self, mut data: &[u8]) {
        self.queue_control();
        while !data.is_empty() {
            if self.tx_left > 0 {
                let n = self.tx_left.min(data.len());
                self.push_masked(&data[..n]);
                data = &data[n..];
                continue;
            }
            let n = (4 - self.tx_len_have).min(data.len());
            self.tx_len[self.tx_len_have..self.tx_len_have + n].copy_from_slice(&data[..n]);
            self.tx_len_have += n;
            data = &data[n..];
            if self.tx_len_have < 4 {
                break;
            }
            self.tx_len_have = 0;
            let len = u32::from_be_bytes(self.tx_len) as usize;
            match self.mode {
                WsMode::Messages => self.start_message(len),
                WsMode::Bytes => {
                    self.start_message(4 + len);
                    let prefix = self.tx_len;
                    self.push_masked(&prefix);
                }
            }
        }
        self.queue_control();
    }

    /// Hands out what was decoded and had no room before.
    fn take_carry(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.carry.len() - self.carry_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.carry[self.carry_pos..self.carry_pos + n]);
        self.carry_pos += n;
        if self.carry_pos == self.carry.len() {
            self.carry.clear();
            self.carry_pos = 0;
        }
        n
    }

    /// Puts `data` into `buf` after its first `*n` bytes, the rest into `carry`.
    fn emit(&mut self, buf: &mut [u8], n: &mut usize, data: &[u8]) {
        let k = (buf.len() - *n).min(data.len());
        buf[*n..*n + k].copy_from_slice(&data[..k]);
        *n += k;
        self.carry.extend_from_slice(&data[k..]);
    }

    /// Decodes one frame header (with a control frame's whole payload) from
    /// `raw`; false when more bytes are needed.
    fn header(&mut self, buf: &mut [u8], n: &mut usize) -> io::Result<bool> {
        let have = &self.raw[self.raw_start..self.raw_end];
        let Some((fin, opcode, len, hlen)) = parse_header(have)? else {
            return Ok(false);
        };
        let control = opcode & 0x8 != 0;
        if control {
            if !fin || len > 125 {
                return Err(invalid("bad control frame"));
            }
            if have.len() < hlen + len {
                return Ok(false);
            }
            let payload = have[hlen..hlen + len].to_vec();
            self.raw_start += hlen + len;
            match opcode {
                OP_PING => {
                    // Answered after what is already queued.
                    let mask = self.next_mask();
                    push_header(&mut self.control, 0x80 | OP_PONG, len, Some(mask));
                    mask_into(&mut self.control, &payload, mask, 0);
                    self.queue_control();
                }
                OP_PONG => {}
                OP_CLOSE => self.closed = true,
                _ => return Err(invalid("unknown control opcode")),
            }
            return Ok(true);
        }
        self.raw_start += hlen;
        let to_frag = match (self.mode, opcode) {
            (WsMode::Bytes, OP_TEXT | OP_BINARY | OP_CONT) => false,
            (WsMode::Messages, OP_TEXT | OP_BINARY) if self.frag.is_empty() && fin => {
                self.emit(buf, n, &(len as u32).to_be_bytes());
                false
            }
            (WsMode::Messages, OP_TEXT | OP_BINARY) if self.frag.is_empty() => {
                // A fragmented message: its length is known at its end.
                self.frag.extend_from_slice(&[0; 4]);
                true
            }
            (WsMode::Messages, OP_CONT) if !self.frag.is_empty() => true,
            _ => return Err(invalid("unexpected data frame")),
        };
        self.rx = Rx::Payload {
            left: len,
            to_frag,
            fin,
        };
        Ok(true)
    }

    /// The last fragment is in: the message goes out as one LibIPC frame.
    fn end_fragments(&mut self, buf: &mut [u8], n: &mut usize) {
        let mut frag = std::mem::take(&mut self.frag);
        let len = (frag.len() - 4) as u32;
        frag[..4].copy_from_slice(&len.to_be_bytes());
        self.emit(buf, n, &frag);
        self.rx = Rx::Header;
    }

    /// Reads from the socket into `raw` (after moving what is left to its start).
    fn fill_raw(&mut self) -> io::Result<usize> {
        if self.raw_start > 0 {
            self.raw.copy_within(self.raw_start..self.raw_end, 0);
            self.raw_end -= self.raw_start;
            self.raw_start = 0;
        }
        let n = self.sock.read(&mut self.raw[self.raw_end..])?;
        self.raw_end += n;
        Ok(n)
    }
}

impl<S: Read + Write> Read for WsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = self.take_carry(buf);
        while n < buf.len() {
            let avail = self.raw_end - self.raw_start;
            let progressed = match self.rx {
                Rx::Header => self.header(buf, &mut n)?,
                Rx::Payload {
                    left: 0,
                    to_frag,
                    fin,
                } => {
                    if to_frag && fin {
                        self.end_fragments(buf, &mut n);
                    } else {
                        self.rx = Rx::Header;
                    }
                    true
                }
                Rx::Payload { left, to_frag, fin } if avail > 0 => {
                    let src = self.raw_start..self.raw_start + left.min(avail);
                    let k = if to_frag {
                        self.frag.extend_from_slice(&self.raw[src.clone()]);
                        src.len()
                    } else {
                        let k = src.len().min(buf.len() - n);
                        buf[n..n + k].copy_from_slice(&self.raw[src.start..src.start + k]);
                        n += k;
                        k
                    };
                    self.raw_start += k;
                    self.rx = Rx::Payload {
                        left: left - k,
                        to_frag,
                        fin,
                    };
                    true
                }
                Rx::Payload {
                    left,
                    to_frag: false,
                    fin,
                } if left >= DIRECT_READ && n == 0 => {
                    // Nothing buffered: the payload goes from the socket
                    // straight to the caller.
                    let k = left.min(buf.len());
                    let got = self.sock.read(&mut buf[..k])?;
                    if got == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.rx = Rx::Payload {
                        left: left - got,
                        to_frag: false,
                        fin,
                    };
                    return Ok(got);
                }
                Rx::Payload { .. } => false,
            };
            if progressed {
                continue;
            }
            if n > 0 || self.closed {
                break;
            }
            if self.fill_raw()? == 0 {
                if self.raw_start == self.raw_end && matches!(self.rx, Rx::Header) {
                    // The end of the stream between frames.
                    return Ok(0);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // A pong may have been queued.
        if self.tx_pos < self.tx.len() {
            let _ = self.flush();
        }
        Ok(n)
    }
}

impl<S: Read + Write> Write for WsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush()?;
        let take = buf.len().min(ENCODE_MAX);
        self.encode(&buf[..take]);
        match self.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(take),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.tx_pos < self.tx.len() {
            match self.sock.write(&self.tx[self.tx_pos..])? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                k => self.tx_pos += k,
            }
        }
        self.tx.clear();
        self.tx_pos = 0;
        Ok(())
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {what}"))
}

/// (fin, opcode, payload length, header length) of the frame at the start of
/// `b`, or `None` if its header is not complete. A server's frames are not
/// masked, and no extension is negotiated (no RSV bit).
fn parse_header(b: &[u8]) -> io::Result<Option<(bool, u8, usize, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x70 != 0 || b[1] & 0x80 != 0 {
        return Err(invalid("RSV bit or mask in a server frame"));
    }
    let (len, hlen) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(l) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    Ok(Some((b[0] & 0x80 != 0, b[0] & 0x0F, len, hlen)))
}

/// A frame header (RFC 6455, 5.2) with the shortest length form.
fn push_header(out: &mut Vec<u8>, first: u8, len: usize, mask: Option<[u8; 4]>) {
    let bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(first);
    match len {
        0..=125 => out.push(bit | len as u8),
        126..=0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Appends `data` XORed with `mask`, starting `offset` bytes into the message
/// (eight bytes at a time).
fn mask_into(out: &mut Vec<u8>, data: &[u8], mask: [u8; 4], offset: usize) {
    let m: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let chunks = data.chunks_exact(8);
    let tail = chunks.remainder();
    out.reserve(data.len());
    for c in chunks {
        let w = u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ wide;
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out.extend(tail.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Target, assert_echoes};

    /// A tungstenite WebSocket echo server on 127.0.0.1, a thread per client:
    /// each message back as it came.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let s = s.unwrap();
                std::thread::spawn(move || {
                    let mut ws = tungstenite::accept(s).unwrap();
                    while let Ok(m) = ws.read() {
                        if m.is_binary() && ws.send(m).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// The mio client through WebSocket, both modes: small and large messages
    /// echoed by tungstenite (which checks the masking) and checked.
    #[test]
    fn load_through_websocket() {
        let addr = echo_server();
        for mode in [WsMode::Messages, WsMode::Bytes] {
            echo_once(addr, mode, b"probe").unwrap();
            for (size, max) in [(100, 300), (70_000, 60), (0, 10)] {
                assert_echoes(Target::Ws(addr, mode), size, max);
            }
        }
    }

    /// A socket that hands out `input` `step` bytes at a time, then would
    /// block; what is written is kept.
    struct Script {
        input: Vec<u8>,
        pos: usize,
        step: usize,
        output: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.input.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.input.len() - self.pos);
            buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        push_header(&mut f, first, payload.len(), None);
        f.extend_from_slice(payload);
        f
    }

    /// Server frames split anywhere, a fragmented message with a ping inside
    /// it, read into buffers of any size: the same LibIPC frames come out, and
    /// the ping is answered with a masked pong.
    #[test]
    fn decodes_fragments_and_pings_in_any_pieces() {
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut input = frame(0x82, b"hello");
        input.extend(frame(0x02, b"frag"));
        input.extend(frame(0x89, b"p"));
        input.extend(frame(0x00, b"men"));
        input.extend(frame(0x80, b"ted"));
        input.extend(frame(0x82, &big));
        input.extend(frame(0x82, b""));
        let mut want = Vec::new();
        for p in [&b"hello"[..], b"fragmented", &big, b""] {
            want.extend_from_slice(&(p.len() as u32).to_be_bytes());
            want.extend_from_slice(p);
        }
        for step in [1, 3, 7, 100, 1 << 20] {
            for bufsize in [1, 5, 64, 1 << 16] {
                let sock = Script {
                    input: input.clone(),
                    pos: 0,
                    step,
                    output: Vec::new(),
                };
                let mut s = WsStream::new(sock, WsMode::Messages, Vec::new());
                let mut got = Vec::new();
                let mut buf = vec![0u8; bufsize];
                loop {
                    match s.read(&mut buf) {
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(got, want, "step {step}, buffer {bufsize}");
                let pong = &s.sock.output;
                assert_eq!((pong[0], pong[1], pong.len()), (0x8A, 0x81, 7));
                assert_eq!(pong[6] ^ pong[2], b'p');
            }
        }
    }

    /// Frames written in pieces become one masked message each; in `Bytes`
    /// mode the length travels inside the message.
    #[test]
    fn encodes_one_masked_message_per_frame() {
        let mut frames = Vec::new();
        for p in [&b"abc"[..], &[9u8; 300]] {
            frames.extend_from_slice(&(p.len() as u32).to_be_bytes());
            frames.extend_from_slice(p);
        }
        for (mode, sizes) in [(WsMode::Messages, [3, 300]), (WsMode::Bytes, [7, 304])] {
            let sock = Script {
                input: Vec::new(),
                pos: 0,
                step: 1,
                output: Vec::new(),
            };
            let mut s = WsStream::new(sock, mode, Vec::new());
            for piece in frames.chunks(5) {
                s.write_all(piece).unwrap();
            }
            let mut out = &s.sock.output[..];
            let mut payloads = Vec::new();
            while !out.is_empty() {
                assert_eq!(out[0], 0x82);
                assert_eq!(out[1] & 0x80, 0x80, "masked");
                let (len, hlen) = match out[1] & 0x7F {
                    126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                    n => (n as usize, 2),
                };
                let mask = &out[hlen..hlen + 4];
                let body = &out[hlen + 4..hlen + 4 + len];
                payloads.push(
                    body.iter()
                        .enumerate()
                        .map(|(i, b)| b ^ mask[i % 4])
                        .collect::<Vec<u8>>(),
                );
                out = &out[hlen + 4 + len..];
            }
            assert_eq!(payloads.iter().map(Vec::len).collect::<Vec<_>>(), sizes);
            match mode {
                WsMode::Messages => assert_eq!(payloads[0], b"abc"),
                WsMode::Bytes => assert_eq!(payloads[0], b"\0\0\0\x03abc"),
            }
            assert!(payloads[1].ends_with(&[9; 300]));
        }
    }
}
