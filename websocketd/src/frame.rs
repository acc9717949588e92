//! websocketd's reading of a client's WebSocket frames (RFC 6455, section 5),
//! straight into LibIPC frames for the service.
//!
//! A frame whole in the read (the usual case) is unmasked from the read into
//! the output, behind its LibIPC header: no buffer of its own, no copy
//! besides that one. Only a message cut by the end of a read, or in several
//! frames, is assembled in a buffer of the connection's, which is released
//! once it is complete: an idle connection holds no heap memory here.
//!
//! tungstenite's codec, which this replaces on the server's data path, copies
//! each read into a 4 KiB buffer of the connection's, allocates each message,
//! then each is copied again into the output: this is the same protocol (its
//! checks in its order, so the close codes are the same; see the tests, which
//! compare the two) without those copies and buffers.

use std::fmt;

/// The close code for a protocol error (RFC 6455, 7.4.1).
pub const PROTOCOL_ERROR: u16 = 1002;
/// The close code for a text message that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// The close code for a message larger than the maximum.
pub const TOO_BIG: u16 = 1009;

/// Largest payload of a control frame.
pub const MAX_CONTROL: usize = 125;

/// Largest frame header: 2 bytes, a 64-bit length, the mask.
const MAX_HEAD: usize = 14;

/// Most bytes reserved at once for a message that is still arriving: its
/// declared length is the client's word, so memory follows the bytes instead.
const RESERVE_STEP: usize = 64 * 1024;

/// Why a client's input ends the connection: the close code to send, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub code: u16,
    pub reason: &'static str,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close code {})", self.reason, self.code)
    }
}

const fn fault(code: u16, reason: &'static str) -> Fault {
    Fault { code, reason }
}

const BAD_UTF8: Fault = fault(INVALID_DATA, "invalid UTF-8 in a text message");
const BAD_CLOSE_REASON: Fault = fault(INVALID_DATA, "invalid UTF-8 in a close reason");
const MESSAGE_TOO_BIG: Fault = fault(TOO_BIG, "message too big");

/// The payload of a control frame, unmasked.
#[derive(Clone, Copy)]
pub struct Control {
    len: u8,
    bytes: [u8; MAX_CONTROL],
}

impl Control {
    fn new(payload: &[u8]) -> Self {
        let mut bytes = [0; MAX_CONTROL];
        bytes[..payload.len()].copy_from_slice(payload);
        Control {
            len: payload.len() as u8,
            bytes,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Control").field(&self.as_bytes()).finish()
    }
}

/// What a client's frames said, in order.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A whole data message (true: text), now at the end of the output as one
    /// LibIPC frame (unless messages are not taken).
    Message {
        text: bool,
    },
    /// A ping, whose payload the pong carries back.
    Ping(Control),
    Pong,
    /// The client's close: empty, or a code (any, see [`allowed_close_code`])
    /// and a UTF-8 reason. Nothing after it is read.
    Close(Control),
}

/// A data frame's type.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    left: usize,
    /// Payload bytes already read (where the mask stands).
    done: usize,
}

/// The reading side of one client's connection.
#[derive(Debug)]
pub struct Reader {
    max: usize,
    /// A frame header cut by the end of a read.
    head: [u8; MAX_HEAD],
    head_len: u8,
    /// The frame whose payload continues in the next read.
    frame: Option<Frame>,
    /// The type of the data message whose frames are being read (true: text),
    /// between its first frame and its last.
    open: Option<bool>,
    /// That message so far, when it spans frames or reads: its LibIPC header
    /// (the length still 0) and its payload, unmasked.
    message: Vec<u8>,
    /// How much of `message` is known to be valid UTF-8 (text).
    checked: usize,
    /// A control frame's payload cut by the end of a read.
    control: Vec<u8>,
    /// The client's close was read.
    closed: bool,
}

impl Reader {
    /// A reader of messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Reader {
            max,
            head: [0; MAX_HEAD],
            head_len: 0,
            frame: None,
            open: None,
            message: Vec::new(),
            checked: 0,
            control: Vec::new(),
            closed: false,
        }
    }

    /// Bytes held of frames or a message not yet complete.
    pub fn pending(&self) -> usize {
        self.head_len as usize + self.message.len() + self.control.len()
    }

    /// Reads `input`: each whole message is appended to `out` as a LibIPC
    /// frame (length, payload) when `take`, checked and dropped otherwise;
    /// `on` hears of each message and control frame. Stops after a close.
    ///
    /// A fault ends the connection: the client broke the protocol, and nothing
    /// it sends can be read after that.
    pub fn read(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        take: bool,
        on: &mut impl FnMut(Event),
    ) -> Result<(), Fault> {
        while !input.is_empty() && !self.closed {
            let frame = match self.frame.take() {
                Some(frame) => frame,
                None => match self.next_head(&mut input)? {
                    Some(frame) => frame,
                    None => break,
                },
            };
            if frame.opcode >= CLOSE {
                self.read_control(frame, &mut input, on)?;
            } else {
                self.read_data(frame, &mut input, out, take, on)?;
            }
        }
        Ok(())
    }

    /// The header of the next frame, checked, taken from `input` (after the
    /// part of it the last read held); `None` if it is not complete yet.
    fn next_head(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, Fault> {
        let (head, used) = if self.head_len == 0 {
            match parse_head(input) {
                Some((head, len)) => (head, len),
                None => {
                    self.hold_head(input);
                    *input = &[];
                    return Ok(None);
                }
            }
        } else {
            let had = self.head_len as usize;
            let take = (MAX_HEAD - had).min(input.len());
            let mut joined = self.head;
            joined[had..had + take].copy_from_slice(&input[..take]);
            match parse_head(&joined[..had + take]) {
                Some((head, len)) => {
                    self.head_len = 0;
                    (head, len - had)
                }
                None => {
                    self.hold_head(&input[..take]);
                    *input = &input[take..];
                    return Ok(None);
                }
            }
        };
        *input = &input[used..];
        self.check(head).map(Some)
    }

    fn hold_head(&mut self, bytes: &[u8]) {
        let had = self.head_len as usize;
        self.head[had..had + bytes.len()].copy_from_slice(bytes);
        self.head_len += bytes.len() as u8;
    }

    /// tungstenite's checks of a frame, in its order (the first failing one
    /// gives the close code).
    fn check(&self, h: Head) -> Result<Frame, Fault> {
        if !matches!(h.opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(fault(PROTOCOL_ERROR, "reserved opcode"));
        }
        if h.len > self.max as u64 {
            return Err(MESSAGE_TOO_BIG);
        }
        let Some(mask) = h.mask else {
            return Err(fault(PROTOCOL_ERROR, "unmasked frame from a client"));
        };
        if h.rsv != 0 {
            return Err(fault(PROTOCOL_ERROR, "reserved bits set"));
        }
        let len = h.len as usize;
        if h.opcode >= CLOSE {
            if !h.fin {
                return Err(fault(PROTOCOL_ERROR, "fragmented control frame"));
            }
            if len > MAX_CONTROL {
                return Err(fault(PROTOCOL_ERROR, "control frame too long"));
            }
        } else {
            let fault = match (h.opcode, self.open) {
                (CONTINUATION, None) => fault(PROTOCOL_ERROR, "continuation of no message"),
                (CONTINUATION, Some(_)) if len > self.max - self.message_len() => MESSAGE_TOO_BIG,
                (CONTINUATION, Some(_)) | (_, None) => return Ok(frame(h, mask)),
                (_, Some(_)) => fault(PROTOCOL_ERROR, "new message inside a fragmented one"),
            };
            return Err(fault);
        }
        Ok(frame(h, mask))
    }

    /// The payload length of the message being assembled.
    fn message_len(&self) -> usize {
        self.message.len().saturating_sub(4)
    }

    fn read_control(
        &mut self,
        mut frame: Frame,
        input: &mut &[u8],
        on: &mut impl FnMut(Event),
    ) -> Result<(), Fault> {
        let n = frame.left.min(input.len());
        unmask_into(&mut self.control, &input[..n], frame.mask, frame.done);
        *input = &input[n..];
        frame.left -= n;
        frame.done += n;
        if frame.left > 0 {
            self.frame = Some(frame);
            return Ok(());
        }
        let control = Control::new(&self.control);
        self.control = Vec::new();
        match frame.opcode {
            PING => on(Event::Ping(control)),
            PONG => on(Event::Pong),
            _ => {
                check_close(control.as_bytes())?;
                self.closed = true;
                on(Event::Close(control));
            }
        }
        Ok(())
    }

    fn read_data(
        &mut self,
        mut frame: Frame,
        input: &mut &[u8],
        out: &mut Vec<u8>,
        take: bool,
        on: &mut impl FnMut(Event),
    ) -> Result<(), Fault> {
        if input.is_empty() && frame.left > 0 {
            // The payload is all in the next read (perhaps whole).
            self.frame = Some(frame);
            return Ok(());
        }
        let text = match frame.opcode {
            CONTINUATION => self.open.unwrap_or(false),
            op => op == TEXT,
        };
        if frame.done == 0 && frame.fin && self.open.is_none() && frame.left <= input.len() {
            // A message in one frame, whole in this read.
            let start = out.len();
            out.extend_from_slice(&(frame.left as u32).to_be_bytes());
            unmask_into(out, &input[..frame.left], frame.mask, 0);
            *input = &input[frame.left..];
            let mut checked = start + 4;
            if text && let Err(fault) = check_utf8(out, &mut checked, true) {
                out.truncate(start);
                return Err(fault);
            }
            if !take {
                out.truncate(start);
            }
            on(Event::Message { text });
            return Ok(());
        }
        if self.open.is_none() {
            self.open = Some(text);
            self.message.reserve(4 + frame.left.min(RESERVE_STEP));
            self.message.extend_from_slice(&[0; 4]);
            self.checked = 4;
        }
        let n = frame.left.min(input.len());
        self.message.reserve(n.max(frame.left.min(RESERVE_STEP)));
        unmask_into(&mut self.message, &input[..n], frame.mask, frame.done);
        *input = &input[n..];
        frame.left -= n;
        frame.done += n;
        let done = frame.left == 0 && frame.fin;
        if text {
            check_utf8(&self.message, &mut self.checked, done)?;
        }
        if frame.left > 0 {
            self.frame = Some(frame);
        } else if done {
            self.open = None;
            let mut message = std::mem::take(&mut self.message);
            let len = (message.len() - 4) as u32;
            message[..4].copy_from_slice(&len.to_be_bytes());
            if take {
                // A large message is handed over, a small one copied (the
                // output may have room for this read's other messages).
                if out.is_empty() && message.len() > out.capacity() {
                    *out = message;
                } else {
                    out.extend_from_slice(&message);
                }
            }
            on(Event::Message { text });
        }
        Ok(())
    }
}

/// The frame `h` starts, unmasked with `mask`.
fn frame(h: Head, mask: [u8; 4]) -> Frame {
    Frame {
        opcode: h.opcode,
        fin: h.fin,
        mask,
        left: h.len as usize,
        done: 0,
    }
}

/// A frame header as sent.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    rsv: u8,
    opcode: u8,
    len: u64,
    mask: Option<[u8; 4]>,
}

/// The header at the start of `b` and its length; `None` if `b` ends before
/// it does.
fn parse_head(b: &[u8]) -> Option<(Head, usize)> {
    let [b0, b1, rest @ ..] = b else {
        return None;
    };
    let (len, rest) = match b1 & 0x7F {
        126 => match rest {
            [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) as u64, rest),
            _ => return None,
        },
        127 => {
            let (l, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*l), rest)
        }
        n => (n as u64, rest),
    };
    let (mask, rest) = if b1 & 0x80 == 0 {
        (None, rest)
    } else {
        let (m, rest) = rest.split_first_chunk::<4>()?;
        (Some(*m), rest)
    };
    let head = Head {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        opcode: b0 & 0x0F,
        len,
        mask,
    };
    Some((head, b.len() - rest.len()))
}

/// Appends `src` to `out`, unmasked with `mask` from payload offset `at`:
/// eight bytes at a time.
fn unmask_into(out: &mut Vec<u8>, src: &[u8], mask: [u8; 4], at: usize) {
    let start = out.len();
    out.extend_from_slice(src);
    let mut m = mask;
    if !at.is_multiple_of(4) {
        m.rotate_left(at % 4);
    }
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = out[start..].chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(m.iter().cycle()) {
        *b ^= k;
    }
}

/// Checks that `buf[*checked..]` is UTF-8 and moves `checked` past it; unless
/// `complete`, it may end inside a character (the rest of which is to come).
fn check_utf8(buf: &[u8], checked: &mut usize, complete: bool) -> Result<(), Fault> {
    match std::str::from_utf8(&buf[*checked..]) {
        Ok(_) => {
            *checked = buf.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() && !complete => {
            *checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(BAD_UTF8),
    }
}

/// A close frame's payload: empty, or a code and a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), Fault> {
    match payload {
        [] => Ok(()),
        [_] => Err(fault(PROTOCOL_ERROR, "close frame of one byte")),
        [_, _, reason @ ..] => match std::str::from_utf8(reason) {
            Ok(_) => Ok(()),
            Err(_) => Err(BAD_CLOSE_REASON),
        },
    }
}

/// The code of a close payload checked by [`Reader`] (`None`: empty).
pub fn close_code(payload: &[u8]) -> Option<u16> {
    payload.first_chunk::<2>().map(|c| u16::from_be_bytes(*c))
}

/// Whether a peer may send close code `code` (RFC 6455, 7.4; as tungstenite:
/// the codes defined there but 1004, 1005, 1006 and 1015, those of the IANA
/// registry and private ones).
pub fn allowed_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// Appends a server's (unmasked) frame of `opcode` (FIN set) with `payload`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_head(out, 0x80 | opcode, payload.len() as u64, None);
    out.extend_from_slice(payload);
}

/// Appends a frame header: first byte `b0`, the length `len` in its shortest
/// form, the mask if any.
fn push_head(out: &mut Vec<u8>, b0: u8, len: u64, mask: Option<[u8; 4]>) {
    let masked = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    match len {
        0..=125 => out.push(masked | len as u8),
        126..=0xFFFF => {
            out.push(masked | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(masked | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Appends a close frame with `code` and `reason` (at most 123 bytes).
pub fn push_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = [0; MAX_CONTROL];
    let reason = reason.as_bytes();
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason);
    push_frame(out, CLOSE, &payload[..2 + reason.len()]);
}

/// The opcodes a server sends.
pub mod opcode {
    pub const TEXT: u8 = super::TEXT;
    pub const BINARY: u8 = super::BINARY;
    pub const CLOSE: u8 = super::CLOSE;
    pub const PING: u8 = super::PING;
    pub const PONG: u8 = super::PONG;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_reference::{Seen, ours, reference};
    use proptest::prelude::*;

    /// A client frame: first byte `b0`, `payload` masked with `mask` (unless
    /// `None`); `len`: the declared length instead of the payload's.
    fn client_frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>, len: Option<u64>) -> Vec<u8> {
        let mut f = Vec::new();
        push_head(&mut f, b0, len.unwrap_or(payload.len() as u64), mask);
        match mask {
            Some(mask) => f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m)),
            None => f.extend_from_slice(payload),
        }
        f
    }

    /// What a client sends, valid or not.
    #[derive(Debug, Clone)]
    enum Item {
        /// A data message cut into frames at `cuts` (a ping between them
        /// with `pings`).
        Message {
            text: bool,
            payload: Vec<u8>,
            cuts: Vec<prop::sample::Index>,
            pings: bool,
        },
        Control(u8, Vec<u8>),
        /// A frame as is: first byte, payload, masked, a declared length
        /// (always above the maximum: one cut short is waited for).
        Raw(u8, Vec<u8>, bool, Option<u64>),
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // Text with characters of every length, to be cut inside them.
            "\\PC{0,60}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..300),
        ]
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            6 => (any::<bool>(), payload(), prop::collection::vec(any::<prop::sample::Index>(), 0..4), any::<bool>())
                .prop_map(|(text, payload, cuts, pings)| Item::Message { text, payload, cuts, pings }),
            2 => (prop::sample::select(vec![PING, PONG]), prop::collection::vec(any::<u8>(), 0..126))
                .prop_map(|(op, p)| Item::Control(op, p)),
            1 => prop_oneof![
                Just(vec![]),
                Just(vec![0x03]),
                (prop::sample::select(vec![1000u16, 1001, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1014, 1015, 1016, 2999, 3000, 4999, 5000, 999]),
                 payload().prop_map(|p| p.into_iter().take(60).collect::<Vec<u8>>()))
                    .prop_map(|(code, reason)| [&code.to_be_bytes()[..], &reason].concat()),
            ].prop_map(|p| Item::Control(CLOSE, p)),
            1 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..130), any::<bool>(),
                  prop::option::of(prop::sample::select(vec![(1u64 << 20) + 1, 1 << 40, u64::MAX])))
                .prop_map(|(b0, p, masked, len)| Item::Raw(b0, p, masked, len)),
        ]
    }

    fn encode(items: &[Item], masks: &[[u8; 4]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut masks = masks.iter().cycle().copied();
        for item in items {
            match item {
                Item::Message {
                    text,
                    payload,
                    cuts,
                    pings,
                } => {
                    let mut at: Vec<usize> =
                        cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
                    at.sort();
                    at.insert(0, 0);
                    at.push(payload.len());
                    for (i, w) in at.windows(2).enumerate() {
                        let op = if i == 0 {
                            if *text { TEXT } else { BINARY }
                        } else {
                            CONTINUATION
                        };
                        let fin = if i + 2 == at.len() { 0x80 } else { 0 };
                        out.extend(client_frame(
                            fin | op,
                            &payload[w[0]..w[1]],
                            masks.next(),
                            None,
                        ));
                        if *pings && fin == 0 {
                            out.extend(client_frame(0x80 | PING, &[i as u8], masks.next(), None));
                        }
                    }
                }
                Item::Control(op, p) => out.extend(client_frame(0x80 | op, p, masks.next(), None)),
                Item::Raw(b0, p, masked, len) => {
                    let mask = masks.next().filter(|_| *masked);
                    out.extend(client_frame(*b0, p, mask, *len));
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever a client sends, in whatever reads, our reader sees the
        /// messages, control frames and faults tungstenite sees.
        #[test]
        fn reads_as_tungstenite_does(
            items in prop::collection::vec(item(), 0..8),
            masks in prop::collection::vec(any::<[u8; 4]>(), 1..4),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            max in prop::sample::select(vec![100usize, 250, 1 << 20]),
        ) {
            let bytes = encode(&items, &masks);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.sort();
            at.insert(0, 0);
            at.push(bytes.len());
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            prop_assert_eq!(ours(&chunks, max), reference(&chunks, max));
        }

        /// Unmasking eight bytes at a time, from any offset, is unmasking
        /// byte by byte.
        #[test]
        fn unmasks_as_byte_by_byte(
            data in prop::collection::vec(any::<u8>(), 0..100),
            mask in any::<[u8; 4]>(),
            at in 0usize..8,
        ) {
            let mut out = vec![9];
            unmask_into(&mut out, &data, mask, at);
            let want: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[(at + i) % 4]).collect();
            prop_assert_eq!(&out[1..], &want[..]);
        }
    }

    #[test]
    fn messages_of_the_maximum_pass_and_one_byte_more_is_too_big() {
        let mask = Some([3, 1, 4, 1]);
        for len in [10, 11] {
            let payload = vec![b'x'; len];
            let whole = client_frame(0x80 | BINARY, &payload, mask, None);
            let fragmented = [
                client_frame(TEXT, &payload[..5], mask, None),
                client_frame(0x80 | CONTINUATION, &payload[5..], mask, None),
            ]
            .concat();
            for bytes in [whole, fragmented] {
                let seen = ours(&[&bytes], 10);
                assert_eq!(seen, reference(&[&bytes], 10), "{len} bytes");
                assert_eq!(matches!(seen[..], [Seen::Fault(TOO_BIG)]), len > 10);
            }
        }
    }

    #[test]
    fn invalid_utf8_fails_before_its_frame_is_complete() {
        let frame = client_frame(0x80 | TEXT, b"ok \xFF and more", Some([1, 2, 3, 4]), None);
        let mut reader = Reader::new(1000);
        let read = reader.read(&frame[..11], &mut Vec::new(), true, &mut |_| {});
        assert_eq!(read, Err(BAD_UTF8));
        // A character cut by the end of a read is not.
        let frame = client_frame(0x80 | TEXT, "é".as_bytes(), Some([1, 2, 3, 4]), None);
        let mut reader = Reader::new(1000);
        let mut out = Vec::new();
        assert_eq!(
            reader.read(&frame[..7], &mut out, true, &mut |_| {}),
            Ok(())
        );
        assert_eq!(
            reader.read(&frame[7..], &mut out, true, &mut |_| {}),
            Ok(())
        );
        assert_eq!(out, [&[0, 0, 0, 2][..], "é".as_bytes()].concat());
    }

    #[test]
    fn between_messages_a_reader_holds_no_buffer() {
        let mask = Some([9, 8, 7, 6]);
        let bytes = [
            client_frame(TEXT, b"one ", mask, None),
            client_frame(0x80 | PING, &[5; 100], mask, None),
            client_frame(0x80 | CONTINUATION, b"message", mask, None),
        ]
        .concat();
        let mut reader = Reader::new(1000);
        let mut out = Vec::new();
        let mut events = 0;
        // A byte at a time: every frame is cut.
        for b in bytes.chunks(1) {
            reader
                .read(b, &mut out, true, &mut |_| events += 1)
                .unwrap();
            if events < 2 {
                assert!(reader.pending() > 0 || reader.frame.is_some());
            }
        }
        assert_eq!(events, 2);
        assert_eq!(out, b"\0\0\0\x0bone message");
        assert_eq!(reader.pending(), 0);
        assert_eq!(reader.message.capacity() + reader.control.capacity(), 0);
    }
}
