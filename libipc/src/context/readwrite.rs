//! The loop's reads and writes: accepting, reading a connection's next chunk
//! into the shared scratch buffer, writing queues with vectored sends,
//! backpressure (pausing and resuming reads), and externals that stay readable.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::event::{ConnId, Event};
use crate::service::AcceptBackoff;

use super::conn::{AfterFlush, Conn, Io, Role, read_fd, wait_fd};
use super::{Chunk, Context};

impl Context {
    /// Sends `payload` now, blocking until it (and everything queued before it) is
    /// written. Fails if the peer is gone (never raises SIGPIPE).
    ///
    /// With [`Context::read`], for a client that asks and waits, without a loop:
    ///
    /// ```
    /// use libipc::{Context, Event};
    ///
    /// # let rundir = tempfile::tempdir()?;
    /// # let dir = rundir.path().to_owned();
    /// # let mut service = Context::new()?;
    /// # service.set_rundir(&dir);
    /// # service.service_init("echo")?;
    /// # let echo = std::thread::spawn(move || -> libipc::Result<()> {
    /// #     loop {
    /// #         match service.wait_event()? {
    /// #             Event::Message { id, payload } => service.schedule(id, &payload)?,
    /// #             Event::Disconnection { .. } => return Ok(()),
    /// #             _ => {}
    /// #         }
    /// #     }
    /// # });
    /// // Another thread serves "echo".
    /// let mut ctx = Context::new()?;
    /// # ctx.set_rundir(&dir);
    /// let id = ctx.connect_service("echo")?;
    /// ctx.write(id, b"ping")?;
    /// assert_eq!(ctx.read(id)?, b"ping");
    /// ctx.close(id)?;
    /// # echo.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write(&mut self, id: ConnId, payload: &[u8]) -> Result<()> {
        crate::frame::header(payload.len())?;
        let c = self.live_mut(id)?;
        if !matches!(c.role, Role::Ipc | Role::External) {
            return Err(Error::WrongKind {
                id,
                what: "messages can only be sent on plain connections",
            });
        }
        c.out.push_message(payload);
        let mut done = 0;
        loop {
            let f = c.out.flush(c.io.fd())?;
            done += f.messages;
            if f.drained {
                break;
            }
            wait_fd(c.io.fd(), PollFlags::POLLOUT, None)?;
        }
        // Messages scheduled earlier still get their MESSAGE_TX; ours does not.
        for _ in 1..done {
            self.pending.push_back(Event::MessageTx { id });
        }
        Ok(())
    }

    /// Reads one message from connection `id`, blocking until one arrives, outside
    /// the event loop. A message already read by the loop is returned first.
    pub fn read(&mut self, id: ConnId) -> Result<Vec<u8>> {
        if let Some(pos) = self
            .pending
            .iter()
            .position(|e| matches!(e, Event::Message { id: i, .. } if *i == id))
            && let Some(Event::Message { payload, .. }) = self.pending.remove(pos)
        {
            return Ok(payload);
        }
        self.ensure_scratch();
        let c = self
            .conns
            .get_mut(id)
            .filter(|c| !c.dead && matches!(c.role, Role::Ipc))
            .ok_or(Error::NoSuchConnection(id))?;
        let mut first = None;
        while first.is_none() {
            let n = match read_fd(c.io.fd(), &mut self.scratch) {
                Ok(0) => {
                    c.decoder.finish()?;
                    return Err(Error::Closed);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_fd(c.io.fd(), PollFlags::POLLIN, None)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let pending = &mut self.pending;
            c.decoder
                .feed_owned(&self.scratch[..n], |payload| match first {
                    None => first = Some(payload),
                    Some(_) => pending.push_back(Event::Message { id, payload }),
                })?;
        }
        Ok(first.unwrap_or_default())
    }

    pub(super) fn accept(&mut self, id: ConnId) {
        /// How long a loop that took more than its share of a shared
        /// listener's clients leaves a new one to the others.
        const DEFER: Duration = Duration::from_millis(2);
        // Bounded so one busy listener cannot starve the others. A listener
        // shared with other contexts wakes them all: one client a round, and
        // only this loop's share, so that clients spread over the loops
        // rather than going to whichever woke first.
        let per_round = match self.conns.get(id).map(|c| &c.io) {
            Some(Io::Listener(l)) if l.is_shared() => 1,
            _ => 128,
        };
        for _ in 0..per_round {
            let Some(Conn {
                io: Io::Listener(l),
                ..
            }) = self.conns.get_mut(id)
            else {
                return;
            };
            if !l.take_turn() {
                return self.retry_accept_at(id, self.now + DEFER);
            }
            match l.listener().accept() {
                Ok((stream, _)) => {
                    l.accepted_one();
                    match self.add_stream(stream.into()) {
                        Ok(new) => {
                            if let Some(c) = self.conns.get_mut(new) {
                                c.client = true;
                            }
                            self.pending.push_back(Event::Connection {
                                id: new,
                                listener: id,
                            })
                        }
                        Err(error) => self.pending.push_back(Event::Error {
                            id: Some(id),
                            error,
                        }),
                    }
                }
                Err(e) => match self.accept_stopped(id, &e) {
                    None => {}
                    Some(report) => {
                        // An application that logs each ERROR event logs one
                        // line a second, not one per retry.
                        if report {
                            self.pending.push_back(Event::Error {
                                id: Some(id),
                                error: e.into(),
                            });
                        }
                        return;
                    }
                },
            }
        }
        self.mark_ready(id);
    }

    /// Accept on listener `id` failed with `e`: `None` to try again at once
    /// (interrupted); else this round of accepts is over, with `Some(true)`
    /// when the failure is the one to report (see [`Context::accept_failed`]).
    /// Nothing left to accept marks the listener unreadable until the next
    /// poll says otherwise.
    pub(super) fn accept_stopped(&mut self, id: ConnId, e: &io::Error) -> Option<bool> {
        match e.kind() {
            io::ErrorKind::Interrupted => None,
            io::ErrorKind::WouldBlock => {
                if let Some(c) = self.conns.get_mut(id) {
                    c.readable = false;
                }
                Some(false)
            }
            _ => Some(self.accept_failed(id, e)),
        }
    }

    /// Accept on listener `id` (a service's, or its handoff endpoint) failed
    /// with `e`, EMFILE and friends: the client stays in the backlog, and the
    /// listener is tried again after [`AcceptBackoff::RETRY`]. Reported as
    /// the daemons report it (logged at most once a second, with a count):
    /// true when this failure is the one to report.
    pub(super) fn accept_failed(&mut self, id: ConnId, e: &io::Error) -> bool {
        self.retry_accept_at(id, self.now + AcceptBackoff::RETRY);
        let Some(failures) = self.accept_backoff.failed(self.now) else {
            return false;
        };
        tracing::warn!(listener = %id, error = %e, failures, "accept failed; retrying in 100 ms");
        true
    }

    /// Tries listener (or external) `id` again at `at`, or at the retry
    /// already due sooner.
    pub(super) fn retry_accept_at(&mut self, id: ConnId, at: Instant) {
        let retry = self.accept_retry.get_or_insert_with(|| (at, Vec::new()));
        retry.0 = retry.0.min(at);
        if !retry.1.contains(&id) {
            retry.1.push(id);
        }
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
        if c.client && c.out.len() >= self.config.pause_at() {
            // A client sends without reading our replies: stop reading it
            // until it does. Only a client: a program that stopped reading
            // its service because its own queue was full, facing a service
            // that stopped reading it because its replies were piling up,
            // would wait for the other forever.
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
                if flushed.bytes > 0 && self.config.switch_events {
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
