//! Handing a network client's socket to its service, so that no relay sits
//! in the data path (the protocol is written down in `docs/handoff.md`).
//!
//! A service created with `Context::service_init` also listens on
//! `$RUNDIR/.handoff/NAME` ([`HANDOFF_DIR`]: a name starting with `.`, so no
//! network client can name it). A protocol daemon that finished a plain TCP
//! client's handshake connects there and sends one LibIPC frame whose first
//! byte carries the client's socket (SCM_RIGHTS). The frame says what to write
//! to the client before anything else (the daemon's `ok`), an optional first
//! message for the service (`--peer-info`), and the bytes the client already
//! sent past its handshake. The service then owns the client: an ordinary
//! connection, with the service's own limits. A service that does not listen
//! there (the original's, socat) is relayed as before.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Error, Result};
use crate::frame;

/// The directory under the run directory where services take handed-off
/// clients; see [`crate::service::OUTBOUND_DIR`] for why it starts with `.`.
pub const HANDOFF_DIR: &str = ".handoff";

/// The first bytes of a handoff frame's payload.
const MAGIC: &[u8; 4] = b"IPCH";
/// The protocol version this library speaks.
const VERSION: u8 = 1;
/// `first` length meaning "no first message".
const NONE: u32 = u32::MAX;
/// Largest handoff frame payload a service takes.
pub const MAX_HANDOFF: usize = 4 << 20;

/// Why a daemon's handoff did not happen.
#[derive(Debug)]
pub enum Declined {
    /// The service takes no handed-off clients (no endpoint, or nobody
    /// listening on it); nothing changed: attach it as usual.
    NotOffered,
    /// The transport cannot step out (TLS, WebSocket); nothing changed.
    NotPlain,
}

/// What travels with a handed-off socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handoff {
    /// Written to the client before anything else (the daemon's `ok`).
    pub answer: Vec<u8>,
    /// Delivered to the service as a message of its own before anything the
    /// client sent (what `--peer-info` sends).
    pub first: Option<Vec<u8>>,
    /// What the client already sent past its handshake: LibIPC frames from
    /// the start of one, possibly cut at the end. Read before the socket.
    pub rest: Vec<u8>,
}

impl Handoff {
    /// The whole frame: a LibIPC frame header, then the payload.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let first = self.first.as_deref();
        let len = MAGIC.len()
            + 1
            + 4
            + self.answer.len()
            + 4
            + first.map_or(0, <[u8]>::len)
            + self.rest.len();
        if len > MAX_HANDOFF {
            return Err(Error::Transport(format!(
                "a handoff of {len} bytes is over the {MAX_HANDOFF}-byte limit"
            )));
        }
        let mut out = Vec::with_capacity(frame::HEADER_LEN + len);
        out.extend_from_slice(&frame::header(len)?);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.answer.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.answer);
        match first {
            Some(f) => {
                out.extend_from_slice(&(f.len() as u32).to_be_bytes());
                out.extend_from_slice(f);
            }
            None => out.extend_from_slice(&NONE.to_be_bytes()),
        }
        out.extend_from_slice(&self.rest);
        Ok(out)
    }

    /// Parses a handoff frame's payload (after its length header).
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Transport(format!("bad handoff: {why}"));
        let rest = payload
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("not a handoff frame"))?;
        let (&version, rest) = rest.split_first().ok_or_else(|| bad("cut short"))?;
        if version != VERSION {
            return Err(bad(&format!(
                "version {version}, this library speaks {VERSION}"
            )));
        }
        let (answer, rest) = take_field(rest).ok_or_else(|| bad("answer cut short"))?;
        let (first, rest) = match rest.get(..4) {
            Some(n) if u32::from_be_bytes(n.try_into().expect("4 bytes")) == NONE => {
                (None, &rest[4..])
            }
            _ => {
                let (f, rest) = take_field(rest).ok_or_else(|| bad("first message cut short"))?;
                (Some(f.to_vec()), rest)
            }
        };
        Ok(Handoff {
            answer: answer.to_vec(),
            first,
            rest: rest.to_vec(),
        })
    }
}

/// A 4-byte big-endian length and that many bytes.
fn take_field(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let field = b.get(4..4 + n)?;
    Some((field, &b[4 + n..]))
}

/// Sends `bytes` on unix stream `sock` with `fd` attached to the first of
/// them (SCM_RIGHTS), without blocking; returns how many were taken (the
/// rest is the caller's to write, without a descriptor).
pub fn send_with_fd(sock: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    Ok(rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        flags,
    )?)
}

/// Reads from unix stream `sock` into `buf` without blocking; returns the
/// bytes read and the descriptors that came with them (close-on-exec).
/// Descriptors the buffer had no room for are an error (the kernel closed
/// them: `MSG_CTRUNC`).
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    recv_fds(sock, buf, RecvFlags::DONTWAIT)
}

/// [`recv_with_fds`], waiting for bytes as the socket's mode and read
/// timeout say (a client's blocking request to a daemon).
pub fn recv_with_fds_waiting(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    recv_fds(sock, buf, RecvFlags::empty())
}

fn recv_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = flags | RecvFlags::CMSG_CLOEXEC;
    let got = rustix::net::recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, flags)?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "descriptors were dropped (out of descriptors, or more than one sent)",
        ));
    }
    Ok((got.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_handoff_round_trips() {
        for h in [
            Handoff::default(),
            Handoff {
                answer: b"ok".to_vec(),
                first: Some(br#"{"address":"127.0.0.1:5"}"#.to_vec()),
                rest: [&[0, 0, 0, 5][..], b"hello"].concat(),
            },
            Handoff {
                answer: vec![0, 0, 0, 2, b'o', b'k'],
                first: Some(Vec::new()),
                rest: vec![0, 0],
            },
        ] {
            let wire = h.encode().unwrap();
            let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
            assert_eq!(len, wire.len() - 4);
            assert_eq!(Handoff::decode(&wire[4..]).unwrap(), h);
        }
    }

    #[test]
    fn what_is_not_a_handoff_is_refused() {
        let good = Handoff {
            answer: b"ok".to_vec(),
            first: None,
            rest: Vec::new(),
        }
        .encode()
        .unwrap();
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            &good[4..8],
            &[&good[4..8], &[2][..]].concat(),
            &good[4..good.len() - 1],
            &[&good[4..9], &[0, 0, 0, 9][..]].concat(),
        ] {
            assert!(Handoff::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_descriptor_travels_with_the_first_byte() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mine, theirs) = UnixStream::pair().unwrap();
        assert_eq!(send_with_fd(a.as_fd(), b"xyz", theirs.as_fd()).unwrap(), 3);
        drop(theirs);
        let mut buf = [0; 8];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"xyz");
        assert_eq!(fds.len(), 1);
        let mut received = UnixStream::from(fds.into_iter().next().unwrap());
        received.write_all(b"through").unwrap();
        let mut got = [0; 7];
        (&mine).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through");
    }
}
