//! The LibIPC wire format: a 4-byte big-endian payload length, then the payload.
//!
//! This module does no I/O. [`decode`] looks at a buffer and says whether a whole
//! frame is there; [`Decoder`] keeps the bytes of an unfinished frame between reads;
//! [`Scanner`] follows frame boundaries in a byte stream without copying it, which is
//! what a relay needs to validate traffic it passes through.
//!
//! Every declared length is checked against the maximum before anything is allocated
//! for it, and a zero-length payload is a valid message.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::pool;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default maximum payload size: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// The length prefix for a payload of `len` bytes.
///
/// Fails with [`Error::MessageTooLarge`] if `len` does not fit in 32 bits.
pub fn header(len: usize) -> Result<[u8; HEADER_LEN]> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| Error::MessageTooLarge {
            len: len as u64,
            max: u32::MAX as usize,
        })
}

/// Appends one frame holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(&header(payload.len())?);
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads and checks a length prefix.
fn declared_len(hdr: &[u8], max: usize) -> Result<usize> {
    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    if len > max {
        return Err(Error::MessageTooLarge {
            len: len as u64,
            max,
        });
    }
    Ok(len)
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns `Ok(Some(range))` with the payload's range in `buf` (the frame ends at
/// `range.end`), `Ok(None)` if more bytes are needed, or
/// [`Error::MessageTooLarge`] as soon as the header announces more than `max`.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<Range<usize>>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = declared_len(&buf[..HEADER_LEN], max)?;
    let end = HEADER_LEN + len;
    Ok((buf.len() >= end).then_some(HEADER_LEN..end))
}

/// Incremental decoder: turns a stream of reads into whole payloads.
///
/// Handles frames split over many reads and many frames in one read. Only the
/// bytes of an unfinished frame are kept between calls, in a buffer sized once
/// from the header (after checking it) and released when the frame is complete;
/// between frames a decoder holds no allocation at all.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    /// The unfinished frame, if the last input ended inside one.
    partial: Option<Box<Partial>>,
}

/// The bytes of a frame not yet complete.
#[derive(Debug)]
struct Partial {
    hdr: [u8; HEADER_LEN],
    /// Header bytes so far (`HEADER_LEN` once it is complete).
    hdr_have: usize,
    /// Its payload so far, once the header is complete.
    body: Vec<u8>,
    /// Its declared payload length.
    body_len: usize,
}

impl Partial {
    /// The header is complete: check it, then make room for exactly its payload.
    fn start_body(&mut self, max: usize) -> Result<()> {
        self.body_len = declared_len(&self.hdr, max)?;
        self.body = pool::take(self.body_len);
        Ok(())
    }
}

/// A payload found by the decoder: in the caller's input, or assembled by it.
enum Found<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Decoder {
    /// A decoder accepting payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Decoder { max, partial: None }
    }

    /// The largest payload this decoder accepts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes held of a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| p.hdr_have + p.body.len())
    }

    /// True when the decoder holds no allocation (between frames).
    #[cfg(test)]
    pub(crate) fn holds_nothing(&self) -> bool {
        self.partial.is_none()
    }

    /// Feeds bytes read from the stream; calls `on_frame` with each complete payload,
    /// in order, and returns how many there were.
    ///
    /// Fails with [`Error::MessageTooLarge`] when a header announces more than the
    /// maximum; the stream cannot be resynchronised after that and must be closed.
    pub fn feed(&mut self, input: &[u8], mut on_frame: impl FnMut(&[u8])) -> Result<usize> {
        self.feed_found(input, &mut |f| match f {
            Found::Borrowed(p) => on_frame(p),
            Found::Owned(p) => {
                on_frame(&p);
                pool::give(p);
            }
        })
    }

    /// Like [`Decoder::feed`], handing each payload over as an owned buffer: a
    /// frame that spanned reads is given without another copy.
    pub fn feed_owned(&mut self, input: &[u8], mut on_frame: impl FnMut(Vec<u8>)) -> Result<usize> {
        self.feed_found(input, &mut |f| match f {
            Found::Owned(p) => on_frame(p),
            Found::Borrowed(p) if p.len() <= pool::SMALL => on_frame(p.to_vec()),
            Found::Borrowed(p) => {
                let mut v = pool::take(p.len());
                v.extend_from_slice(p);
                on_frame(v)
            }
        })
    }

    fn feed_found(
        &mut self,
        mut input: &[u8],
        on_frame: &mut dyn FnMut(Found<'_>),
    ) -> Result<usize> {
        let mut frames = 0;
        if let Some(p) = self.partial.as_deref_mut() {
            if p.hdr_have < HEADER_LEN {
                let take = (HEADER_LEN - p.hdr_have).min(input.len());
                p.hdr[p.hdr_have..p.hdr_have + take].copy_from_slice(&input[..take]);
                p.hdr_have += take;
                input = &input[take..];
                if p.hdr_have < HEADER_LEN {
                    return Ok(0);
                }
                p.start_body(self.max)?;
            }
            let take = (p.body_len - p.body.len()).min(input.len());
            p.body.extend_from_slice(&input[..take]);
            input = &input[take..];
            if p.body.len() < p.body_len {
                return Ok(0);
            }
            let body = std::mem::take(&mut p.body);
            self.partial = None;
            on_frame(Found::Owned(body));
            frames += 1;
        }
        while let Some(payload) = decode(input, self.max)? {
            on_frame(Found::Borrowed(&input[payload.clone()]));
            frames += 1;
            input = &input[payload.end..];
        }
        if !input.is_empty() {
            let take = HEADER_LEN.min(input.len());
            let mut p = Box::new(Partial {
                hdr: [0; HEADER_LEN],
                hdr_have: take,
                body: Vec::new(),
                body_len: 0,
            });
            p.hdr[..take].copy_from_slice(&input[..take]);
            if take == HEADER_LEN {
                // Checked against the maximum by `decode` already.
                p.start_body(self.max)?;
                p.body.extend_from_slice(&input[take..]);
            }
            self.partial = Some(p);
        }
        Ok(frames)
    }

    /// Takes the bytes of the unfinished frame (when the stream changes hands).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let Some(mut p) = self.partial.take() else {
            return Vec::new();
        };
        let mut out = p.hdr[..p.hdr_have].to_vec();
        out.append(&mut p.body);
        out
    }

    /// Called at end of stream: fails with [`Error::Truncated`] if a frame was cut short.
    pub fn finish(&self) -> Result<()> {
        let missing = match self.partial.as_deref() {
            None => return Ok(()),
            Some(p) if p.hdr_have < HEADER_LEN => HEADER_LEN - p.hdr_have,
            Some(p) => p.body_len - p.body.len(),
        };
        Err(Error::Truncated { missing })
    }
}

/// Follows frame boundaries in a byte stream that is passed on unchanged.
///
/// A relay feeds it every chunk it forwards; it checks each header against the
/// maximum in place and counts whole frames, without copying or buffering payloads.
///
/// Small (16 bytes: every switched pair has a few, idle ones included): a
/// declared length fits in 32 bits, so do the maximum and what is left of the
/// current payload.
#[derive(Debug, Clone)]
pub struct Scanner {
    max: u32,
    remaining: u32,
    hdr: [u8; HEADER_LEN],
    hdr_have: u8,
}

impl Scanner {
    /// A scanner accepting payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Scanner {
            // No header declares more than u32::MAX.
            max: u32::try_from(max).unwrap_or(u32::MAX),
            remaining: 0,
            hdr: [0; HEADER_LEN],
            hdr_have: 0,
        }
    }

    /// Scans the next chunk of the stream; returns how many frames ended in it.
    ///
    /// Fails with [`Error::MessageTooLarge`] on the first header over the maximum.
    pub fn scan(&mut self, data: &[u8]) -> Result<usize> {
        self.scan_valid(data).1
    }

    /// Like [`Scanner::scan`], and also returns how many bytes of `data` come
    /// before the first bad header: the part that is safe to pass on.
    pub fn scan_valid(&mut self, data: &[u8]) -> (usize, Result<usize>) {
        let mut frames = 0;
        let mut pos = 0;
        while pos < data.len() {
            if self.remaining > 0 {
                let take = (self.remaining as usize).min(data.len() - pos);
                // At most `remaining`: fits.
                self.remaining -= take as u32;
                pos += take;
                if self.remaining == 0 {
                    frames += 1;
                }
                continue;
            }
            let header_start = pos;
            let have = usize::from(self.hdr_have);
            let take = (HEADER_LEN - have).min(data.len() - pos);
            self.hdr[have..have + take].copy_from_slice(&data[pos..pos + take]);
            self.hdr_have += take as u8;
            pos += take;
            if usize::from(self.hdr_have) == HEADER_LEN {
                self.hdr_have = 0;
                match declared_len(&self.hdr, self.max as usize) {
                    // At most `max`: fits.
                    Ok(len) => self.remaining = len as u32,
                    Err(e) => return (header_start, Err(e)),
                }
                if self.remaining == 0 {
                    frames += 1;
                }
            }
        }
        (pos, Ok(frames))
    }

    /// True when the stream so far ends exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.hdr_have == 0 && self.remaining == 0
    }

    /// Bytes missing to complete the current frame (0 at a boundary).
    pub fn missing(&self) -> usize {
        if self.hdr_have > 0 {
            HEADER_LEN - usize::from(self.hdr_have)
        } else {
            self.remaining as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode(p, &mut out).unwrap();
        }
        out
    }

    fn collect(dec: &mut Decoder, input: &[u8]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        dec.feed(input, |p| got.push(p.to_vec())).unwrap();
        got
    }

    #[test]
    fn decode_needs_whole_frame() {
        let buf = frames(&[b"hello"]);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut], 100).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(decode(&buf, 100).unwrap(), Some(4..9));
    }

    #[test]
    fn several_frames_in_one_read() {
        let buf = frames(&[b"a", b"", b"ccc"]);
        let mut dec = Decoder::new(100);
        assert_eq!(
            collect(&mut dec, &buf),
            vec![b"a".to_vec(), vec![], b"ccc".to_vec()]
        );
        assert_eq!(dec.pending(), 0);
        dec.finish().unwrap();
    }

    #[test]
    fn frame_split_over_every_byte() {
        let payloads: Vec<Vec<u8>> = vec![vec![7; 300], vec![], vec![1, 2, 3]];
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let buf = frames(&refs);
        let mut dec = Decoder::new(1000);
        let mut got = Vec::new();
        for b in &buf {
            got.extend(collect(&mut dec, std::slice::from_ref(b)));
        }
        assert_eq!(got, payloads);
    }

    #[test]
    fn every_split_point_of_two_frames() {
        let buf = frames(&[b"first message", b"second"]);
        for cut in 0..=buf.len() {
            let mut dec = Decoder::new(100);
            let mut got = collect(&mut dec, &buf[..cut]);
            got.extend(collect(&mut dec, &buf[cut..]));
            assert_eq!(got, vec![b"first message".to_vec(), b"second".to_vec()]);
        }
    }

    #[test]
    fn oversized_header_refused_before_payload_arrives() {
        let mut dec = Decoder::new(1024);
        let err = dec.feed(&[0xff, 0xff, 0xff, 0xff], |_| {}).unwrap_err();
        assert!(matches!(
            err,
            Error::MessageTooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
        // Split header: still refused once the 4th byte arrives.
        let mut dec = Decoder::new(1024);
        dec.feed(&[0x00, 0x00], |_| {}).unwrap();
        assert!(dec.feed(&[0x04, 0x01], |_| {}).is_err());
        // Exactly the maximum is fine.
        let mut dec = Decoder::new(3);
        assert_eq!(collect(&mut dec, &frames(&[b"abc"])), vec![b"abc".to_vec()]);
    }

    #[test]
    fn truncated_stream_reports_missing_bytes() {
        let buf = frames(&[b"abcdef"]);
        let mut dec = Decoder::new(100);
        dec.feed(&buf[..7], |_| panic!("incomplete")).unwrap();
        assert!(matches!(dec.finish(), Err(Error::Truncated { missing: 3 })));
        let mut dec = Decoder::new(100);
        dec.feed(&buf[..1], |_| {}).unwrap();
        assert!(matches!(dec.finish(), Err(Error::Truncated { missing: 3 })));
    }

    #[test]
    fn large_partial_buffer_is_handed_over_and_released() {
        let big = vec![9u8; 100_000];
        let buf = frames(&[&big, b"x"]);
        let mut dec = Decoder::new(200_000);
        dec.feed(&buf[..50_000], |_| {}).unwrap();
        assert_eq!(dec.pending(), 50_000);
        let mut got = Vec::new();
        dec.feed_owned(&buf[50_000..], |p| got.push(p)).unwrap();
        assert_eq!(got, vec![big, b"x".to_vec()]);
        assert_eq!(dec.pending(), 0);
        assert!(dec.holds_nothing(), "an idle decoder holds no buffer");
    }

    #[test]
    fn scanner_follows_boundaries() {
        let buf = frames(&[b"x", b"", &[5u8; 70]]);
        for cut in 0..=buf.len() {
            let mut sc = Scanner::new(100);
            let n = sc.scan(&buf[..cut]).unwrap() + sc.scan(&buf[cut..]).unwrap();
            assert_eq!(n, 3);
            assert!(sc.at_boundary());
        }
        let mut sc = Scanner::new(100);
        sc.scan(&buf[..6]).unwrap();
        assert!(!sc.at_boundary());
        assert_eq!(sc.missing(), 3);
        assert!(Scanner::new(10).scan(&frames(&[&[0; 11]])).is_err());
    }

    #[test]
    fn header_refuses_lengths_over_u32() {
        assert!(header(u32::MAX as usize).is_ok());
        #[cfg(target_pointer_width = "64")]
        assert!(header(u32::MAX as usize + 1).is_err());
    }
}
