//! The loop's reads and writes: accepting, reading a connection's next chunk
//! into the shared scratch buffer, writing queues with vectored sends,
//! backpressure (pausing and resuming reads), and externals that stay readable.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::Error;
use crate::event::{ConnId, Event};

use super::conn::{AfterFlush, Conn, Io, Role, read_fd};
use super::{Chunk, Context};

impl Context {
    pub(super) fn accept(&mut self, id: ConnId) {
        // Bounded so one busy listener cannot starve the others.
        for _ in 0..128 {
            let Some(Conn {
                io: Io::Listener(l),
                ..
            }) = self.conns.get(id)
            else {
                return;
            };
            match l.listener().accept() {
                Ok((stream, _)) => match self.add_stream(stream.into()) {
                    Ok(new) => self.pending.push_back(Event::Connection {
                        id: new,
                        listener: id,
                    }),
                    Err(error) => self.pending.push_back(Event::Error {
                        id: Some(id),
                        error,
                    }),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(c) = self.conns.get_mut(id) {
                        c.readable = false;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; try
                    // again shortly rather than spinning on it.
                    tracing::warn!(listener = %id, error = %e, "accept failed; retrying in 100 ms");
                    let at = Instant::now() + Duration::from_millis(100);
                    let retry = self.accept_retry.get_or_insert_with(|| (at, Vec::new()));
                    retry.1.push(id);
                    self.pending.push_back(Event::Error {
                        id: Some(id),
                        error: e.into(),
                    });
                    return;
                }
            }
        }
        self.mark_ready(id);
    }

    pub(super) fn retry_accepts(&mut self) {
        if let Some((at, ids)) = self.accept_retry.take() {
            if Instant::now() < at {
                self.accept_retry = Some((at, ids));
                return;
            }
            for id in ids {
                self.mark_ready(id);
            }
        }
    }

    pub(super) fn ensure_scratch(&mut self) {
        if self.scratch.len() < self.config.read_chunk {
            self.scratch = vec![0; self.config.read_chunk];
        }
    }

    /// One read from connection `id` into the scratch buffer, with the readiness
    /// bookkeeping every read path shares: a short read means drained (unless EOF is
    /// already known), a full one puts the connection back on the ready list.
    pub(super) fn read_chunk(&mut self, id: ConnId) -> Chunk {
        self.ensure_scratch();
        let Some(c) = self.conns.get_mut(id) else {
            return Chunk::Blocked;
        };
        match read_fd(c.io.fd(), &mut self.scratch) {
            Ok(0) => Chunk::Eof,
            Ok(n) => {
                c.last_active = self.now;
                let more = n == self.scratch.len() || c.hup;
                c.readable = more;
                if more && !c.in_ready {
                    c.in_ready = true;
                    self.ready.push_back(id);
                }
                Chunk::Data(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                Chunk::Blocked
            }
            Err(e) => Chunk::Failed(e),
        }
    }

    /// One read from a plain connection, decoded into MESSAGE events.
    pub(super) fn read_ipc(&mut self, id: ConnId) {
        let n = match self.read_chunk(id) {
            Chunk::Data(n) => n,
            Chunk::Blocked => return,
            Chunk::Failed(e) => return self.disconnect(id, Some(e.into())),
            Chunk::Eof => {
                let reason = self.conns.get(id).and_then(|c| c.decoder.finish().err());
                if let Some(e) = &reason {
                    tracing::warn!(conn = %id, error = %e, "peer closed mid-message");
                }
                return self.disconnect(id, reason);
            }
        };
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let pending = &mut self.pending;
        let fed = c.decoder.feed_owned(&self.scratch[..n], |payload| {
            pending.push_back(Event::Message { id, payload })
        });
        if let Err(e) = fed {
            tracing::warn!(conn = %id, error = %e, "protocol violation; closing connection");
            return self.disconnect(id, Some(e));
        }
        if c.out.len() >= self.config.pause_at() {
            // The peer sends without reading our replies: stop reading it.
            c.paused = true;
        }
    }

    /// Marks `id` gone: deregistered now, removed when its DISCONNECTION is delivered.
    pub(super) fn disconnect(&mut self, id: ConnId, reason: Option<Error>) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.dead {
            return;
        }
        c.dead = true;
        let raw = c.io.fd().as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        self.pending.push_back(Event::Disconnection { id, reason });
    }

    pub(super) fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            if let Some(c) = self.conns.get_mut(id) {
                c.in_dirty = false;
            }
            self.flush(id);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            // Keep the allocation.
            self.dirty = dirty;
        }
    }

    pub(super) fn flush(&mut self, id: ConnId) {
        let low = self.config.low_water;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.dead {
            return;
        }
        let flushed = match &mut c.role {
            Role::Switched(s) if s.hooks.is_some() => {
                let raw = c.io.fd().as_raw_fd();
                let bytes = c.out.take_bytes();
                super::relay::write_with_hooks(s, raw, &bytes)
            }
            _ => c.out.flush(c.io.fd()),
        };
        let flushed = match flushed {
            Ok(f) => f,
            Err(_) if c.closing => return self.remove(id),
            Err(e) => {
                tracing::debug!(conn = %id, error = %e, "write failed");
                return match c.role {
                    Role::Switched(_) => self.fail_pair(id, e.into()),
                    _ => self.disconnect(id, Some(e.into())),
                };
            }
        };
        if flushed.bytes > 0 {
            c.last_active = self.now;
        }
        let want_write = !flushed.drained;
        if want_write != c.want_write {
            c.want_write = want_write;
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let raw = c.io.fd().as_raw_fd();
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut SourceFd(&raw), Token(id.slot()), interest);
        }
        let below_low = c.out.len() < low;
        match &mut c.role {
            Role::Switched(s) => {
                let (peer, after) = (s.peer, s.after_flush);
                let answers_read = below_low && std::mem::take(&mut s.answers_unread);
                if flushed.bytes > 0 {
                    self.pending.push_back(Event::SwitchTx { id });
                }
                if flushed.drained && after != AfterFlush::Nothing {
                    return self.after_flush(id, after);
                }
                if answers_read {
                    self.resume(id);
                }
                if below_low {
                    self.resume(peer);
                }
            }
            Role::Pending(p) => {
                // Paused while the daemon decides: stays paused here.
                if flushed.drained && p.sending {
                    self.give_more(id);
                } else if flushed.drained && p.closing.is_some() {
                    self.linger(id);
                }
            }
            _ if c.closing => {
                if flushed.drained {
                    self.remove(id);
                }
            }
            _ => {
                for _ in 0..flushed.messages {
                    self.pending.push_back(Event::MessageTx { id });
                }
                if below_low && c.paused {
                    c.paused = false;
                    self.mark_ready(id);
                }
            }
        }
    }

    pub(super) fn resume(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        if !c.paused || c.dead {
            return;
        }
        if let Role::Switched(s) = &c.role {
            // A side that is ending reads nothing more; one held for its
            // goodbye not yet; nor one whose answers its peer has not read,
            // or that feeds a full queue.
            let feeds_full = self
                .conns
                .get(s.peer)
                .is_some_and(|p| p.out.len() >= self.config.pause_at());
            if s.after_flush == AfterFlush::Close || s.held || s.answers_unread || feeds_full {
                return;
            }
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.paused = false;
        }
        self.mark_ready(id);
    }

    /// Reports externals still readable (level-triggered behaviour, as poll(2) gave
    /// the original): one zero-timeout poll over those reported last time.
    pub(super) fn recheck_externals(&mut self) {
        if self.recheck.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.recheck);
        let live: Vec<(ConnId, &Conn)> = ids
            .iter()
            .filter_map(|&id| {
                self.conns
                    .get(id)
                    .filter(|c| {
                        !c.dead
                            && match &c.role {
                                Role::External => true,
                                Role::Switched(s) => s.hooks.is_some(),
                                _ => false,
                            }
                    })
                    .map(|c| (id, c))
            })
            .collect();
        let mut fds: Vec<PollFd<'_>> = live
            .iter()
            .map(|(_, c)| PollFd::new(c.io.fd(), PollFlags::POLLIN))
            .collect();
        if nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) <= 0 {
            return;
        }
        let still: Vec<ConnId> = live
            .iter()
            .zip(&fds)
            .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|((id, _), _)| *id)
            .collect();
        for id in still {
            if let Some(c) = self.conns.get_mut(id) {
                c.readable = true;
            }
            self.mark_ready(id);
        }
    }
}
