//! Outgoing bytes of one connection: queued in order, written with vectored,
//! non-blocking, SIGPIPE-free sends, partial writes resumed.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, sendmsg};

use crate::{frame, pool};

/// Payloads up to this size are copied behind the previous message so that many
/// small messages leave in one buffer; larger ones keep their own allocation.
const COALESCE_MAX: usize = 16 * 1024;
/// Most iovecs handed to one `sendmsg`.
const MAX_IOV: usize = 64;

/// What one flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Bytes written.
    pub bytes: usize,
    /// Messages whose last byte was written.
    pub messages: usize,
    /// The socket took everything we had.
    pub drained: bool,
}

/// An ordered queue of bytes waiting to be written. Empty, it holds no
/// allocation at all (one pointer): an idle connection pays nothing for it.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    /// Present while something is queued or a message's end is still to be
    /// reported by [`OutQueue::flush`].
    q: Option<Box<Queued>>,
}

#[derive(Debug, Default)]
pub(crate) struct Queued {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already written.
    head: usize,
    /// Unwritten bytes.
    len: usize,
    /// Stream offsets at which queued messages end (only for framed messages).
    msg_ends: VecDeque<u64>,
    /// Total bytes queued / written since the queue was last empty: offsets
    /// for `msg_ends`.
    queued: u64,
    written: u64,
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.q.as_ref().map_or(0, |q| q.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages queued and not yet completely written.
    #[cfg(test)]
    pub fn messages(&self) -> usize {
        self.q.as_ref().map_or(0, |q| q.msg_ends.len())
    }

    /// True when the queue holds no allocation (what an idle connection keeps).
    #[cfg(test)]
    pub fn holds_nothing(&self) -> bool {
        self.q.is_none()
    }

    fn queued(&mut self) -> &mut Queued {
        self.q.get_or_insert_with(pool::take_queue)
    }

    /// Lets go of the queue's state (written and reported: nothing in it).
    fn release(&mut self) {
        if let Some(q) = self.q.take() {
            pool::give_queue(q);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let q = self.queued();
        match q.chunks.back_mut() {
            Some(tail) if tail.len() + bytes.len() <= tail.capacity().max(COALESCE_MAX) => {
                tail.extend_from_slice(bytes)
            }
            _ => {
                let mut chunk = pool::take(bytes.len());
                chunk.extend_from_slice(bytes);
                q.chunks.push_back(chunk);
            }
        }
        q.len += bytes.len();
        q.queued += bytes.len() as u64;
    }

    fn append_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let q = self.queued();
        q.len += bytes.len();
        q.queued += bytes.len() as u64;
        q.chunks.push_back(bytes);
    }

    /// Marks the end of a framed message at what is queued now.
    fn end_message(&mut self) {
        let q = self.queued();
        q.msg_ends.push_back(q.queued);
    }

    /// Queues one framed message. The caller has checked its length.
    pub fn push_message(&mut self, payload: &[u8]) {
        let hdr = frame::header(payload.len()).unwrap_or([0xff; 4]);
        self.append(&hdr);
        if payload.len() <= COALESCE_MAX {
            self.append(payload);
        } else {
            let mut own = pool::take(payload.len());
            own.extend_from_slice(payload);
            self.append_owned(own);
        }
        self.end_message();
    }

    /// Queues one framed message, taking ownership of a large payload to avoid a copy.
    pub fn push_message_vec(&mut self, payload: Vec<u8>) {
        if payload.len() <= COALESCE_MAX {
            self.push_message(&payload);
            return pool::give(payload);
        }
        let hdr = frame::header(payload.len()).unwrap_or([0xff; 4]);
        self.append(&hdr);
        self.append_owned(payload);
        self.end_message();
    }

    /// Queues raw bytes (relayed traffic: already framed, not counted as messages).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.append(bytes);
    }

    /// Writes `bytes` straight to `fd` if nothing is queued before them, and
    /// queues what the socket did not take. Returns the bytes written directly.
    pub fn push_raw_through(&mut self, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
        if !self.is_empty() || bytes.is_empty() {
            self.push_raw(bytes);
            return Ok(0);
        }
        let n = match send_vectored(fd, &[IoSlice::new(bytes)]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        self.push_raw(&bytes[n..]);
        Ok(n)
    }

    /// Takes every queued byte out of the queue (for hooks that write by themselves).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let Some(q) = self.q.as_mut() else {
            return Vec::new();
        };
        let mut all = Vec::with_capacity(q.len);
        for (i, chunk) in q.chunks.iter().enumerate() {
            all.extend_from_slice(&chunk[if i == 0 { q.head } else { 0 }..]);
        }
        q.consume(q.len);
        if q.msg_ends.is_empty() {
            self.release();
        }
        all
    }

    /// Writes as much as the socket takes. `WouldBlock` is not an error: it leaves
    /// `drained` false. Other errors (the peer is gone) are returned.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<Flushed> {
        let mut done = Flushed::default();
        let Some(q) = self.q.as_mut() else {
            done.drained = true;
            return Ok(done);
        };
        while q.len > 0 {
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            let mut offered = 0;
            for (i, chunk) in q.chunks.iter().take(MAX_IOV).enumerate() {
                let skip = if i == 0 { q.head } else { 0 };
                iov[i] = IoSlice::new(&chunk[skip..]);
                offered += chunk.len() - skip;
                count += 1;
            }
            let n = match send_vectored(fd, &iov[..count]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            q.consume(n);
            done.bytes += n;
            if n < offered {
                // A short write means the socket buffer is full; trying again now
                // would only return EAGAIN. Wait for writability instead.
                break;
            }
        }
        while q.msg_ends.front().is_some_and(|&end| end <= q.written) {
            q.msg_ends.pop_front();
            done.messages += 1;
        }
        done.drained = q.len == 0;
        if done.drained && q.msg_ends.is_empty() {
            // Written chunks went back to the pool: an idle connection holds
            // nothing, not even the rings of chunk pointers and message ends
            // (those go back to the pool too, for the next busy connection).
            self.release();
        }
        Ok(done)
    }
}

impl Queued {
    /// Entries the rings have room for.
    pub(crate) fn ring_capacity(&self) -> usize {
        self.chunks.capacity() + self.msg_ends.capacity()
    }

    /// Empty again, keeping the rings' capacity (see [`pool::give_queue`]).
    pub(crate) fn reset(&mut self) {
        for chunk in self.chunks.drain(..) {
            pool::give(chunk);
        }
        self.msg_ends.clear();
        (self.head, self.len, self.queued, self.written) = (0, 0, 0, 0);
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        self.written += n as u64;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.head;
            if n >= left {
                n -= left;
                self.head = 0;
                if let Some(chunk) = self.chunks.pop_front() {
                    pool::give(chunk);
                }
            } else {
                self.head += n;
                n = 0;
            }
        }
    }
}

/// `sendmsg` with `MSG_NOSIGNAL` (a gone peer is `EPIPE`, never `SIGPIPE`); falls back
/// to `writev` for descriptors that are not sockets (pipes given to `add_external`).
fn send_vectored(fd: BorrowedFd<'_>, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        match sendmsg::<()>(fd.as_raw_fd(), iov, &[], MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOTSOCK) => {
                return loop {
                    match nix::sys::uio::writev(fd, iov) {
                        Err(Errno::EINTR) => continue,
                        r => break r.map_err(io::Error::from),
                    }
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_leave_in_order_and_are_counted() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut q = OutQueue::default();
        q.push_message(b"A");
        q.push_message_vec(vec![b'B'; 40_000]);
        q.push_message(b"");
        q.push_message(b"C");
        assert_eq!(q.messages(), 4);
        let f = q.flush(a.as_fd()).unwrap();
        assert!(f.drained);
        assert_eq!(f.messages, 4);
        assert_eq!(f.bytes, 4 * 4 + 1 + 40_000 + 1);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        let mut dec = crate::frame::Decoder::new(1 << 20);
        let mut out = Vec::new();
        dec.feed(&got, |p| out.push(p.to_vec())).unwrap();
        assert_eq!(
            out,
            vec![b"A".to_vec(), vec![b'B'; 40_000], vec![], b"C".to_vec()]
        );
    }

    #[test]
    fn partial_writes_resume() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut q = OutQueue::default();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        q.push_message(&big);
        q.push_message(b"tail");
        let f = q.flush(a.as_fd()).unwrap();
        assert!(!f.drained, "a unix socket buffer is smaller than 3 MB");
        assert_eq!(f.messages, 0);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut msgs = 0;
        while !q.is_empty() {
            let f = q.flush(a.as_fd()).unwrap();
            msgs += f.messages;
            if !f.drained {
                nix::poll::poll(
                    &mut [nix::poll::PollFd::new(
                        a.as_fd(),
                        nix::poll::PollFlags::POLLOUT,
                    )],
                    nix::poll::PollTimeout::from(1000u16),
                )
                .unwrap();
            }
        }
        assert_eq!(msgs, 2);
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 4 + big.len() + 4 + 4);
        assert_eq!(&got[4..4 + big.len()], &big[..]);
        assert_eq!(&got[got.len() - 4..], b"tail");
    }

    #[test]
    fn gone_peer_is_an_error_not_sigpipe() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut q = OutQueue::default();
        q.push_message(b"hello");
        let err = q.flush(a.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
