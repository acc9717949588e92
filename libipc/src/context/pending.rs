//! Network connections before their service is attached: the handshake phase.
//!
//! A daemon adds an accepted client with [`DaemonExt::add_network`](crate::switch::DaemonExt::add_network) and its
//! transport. The transport reads the handshake and names a service
//! ([`Event::ServiceRequest`]); the daemon decides: [`DaemonExt::attach_service`](crate::switch::DaemonExt::attach_service)
//! connects the service and switches the pair, [`DaemonExt::refuse`](crate::switch::DaemonExt::refuse) answers the
//! client and closes it. Nothing is read from the client while the daemon decides,
//! and what came with the name is delivered to the service first.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{Shutdown, shutdown};

use mio::Interest;

use super::conn::{Io, Pending, Role, set_nonblocking};
use super::{Chunk, Context};
use crate::error::{Chain, Error, Result};
use crate::event::{ConnId, Event};
use crate::queue::OutQueue;
use crate::service;
use crate::switch::{DaemonExt, Relay, Transport};

/// Longest a refused client is read (and dropped) after its answer.
pub(super) const LINGER: Duration = Duration::from_secs(2);
/// Longest a client answered without a service may take none of its answer
/// before it is closed: what a client that never reads holds (a descriptor,
/// at most one part of the answer) is held this long, whatever the answer's
/// size, and one that reads slowly gets all of it.
pub(super) const ANSWER_STALL: Duration = Duration::from_secs(30);
/// Most connections lingering at once in a context; past that, refused clients
/// are closed at once (a flood must not hold descriptors).
const MAX_LINGERING: usize = 1024;

impl Context {
    pub(super) fn add_pending(
        &mut self,
        fd: OwnedFd,
        transport: Box<dyn Transport>,
        fixed: Option<Vec<u8>>,
    ) -> Result<ConnId> {
        set_nonblocking(fd.as_fd())?;
        let pending = Pending {
            transport,
            to_service: OutQueue::default(),
            closing: None,
            span: tracing::Span::none(),
            fixed,
            ended: false,
            sending: false,
        };
        let id = self.insert(
            Io::Stream(fd),
            Role::Pending(Box::new(pending)),
            Interest::READABLE,
        )?;
        if let Some(c) = self.conns.get_mut(id)
            && let Role::Pending(p) = &mut c.role
        {
            let mut relay = Relay::new(&mut p.to_service, &mut c.out);
            let _ = super::relay::guarded(|| {
                p.transport.start(&mut relay);
                Ok(())
            });
            if let Some(name) = p.fixed_request() {
                c.paused = true;
                self.pending.push_back(Event::ServiceRequest { id, name });
            }
        }
        self.mark_dirty(id);
        Ok(id)
    }

    /// Connects `id` to service `name` (an outbound service if `outbound`) and
    /// switches them, `first` queued ahead.
    pub(super) fn attach_named(
        &mut self,
        id: ConnId,
        name: &str,
        outbound: bool,
        first: Option<&[u8]>,
    ) -> Result<ConnId> {
        self.pending_of(id)?;
        let fd = if outbound {
            service::connect_nonblocking(&service::outbound_dir(&self.rundir), name.as_bytes())?
        } else {
            service::connect_nonblocking(&self.rundir, name.as_bytes())?
        };
        let svc = self.insert(Io::Stream(fd), Role::Ipc, Interest::READABLE)?;
        if let (Some(first), Some(c)) = (first, self.conns.get_mut(svc)) {
            // Straight into the service's queue: ahead of the client's data,
            // and not counted as the client's traffic.
            c.out.push_message(first);
        }
        if let Err(e) = self.attach(id, svc) {
            self.remove(svc);
            return Err(e);
        }
        Ok(svc)
    }

    /// Network client `id` is being answered without a service: its own
    /// deadlines (the handshake's) no longer apply, [`ANSWER_STALL`] does.
    pub(super) fn answer_timer(&mut self, id: ConnId) {
        let now = self.now;
        if let Some(c) = self.conns.get_mut(id) {
            c.deadline = None;
            c.idle = Some(ANSWER_STALL);
            c.last_active = now;
            self.arm(id);
        }
    }

    /// Closes network client `id`, which took nothing of its answer for
    /// [`ANSWER_STALL`].
    pub(super) fn abandon_answer(&mut self, id: ConnId) {
        tracing::debug!(conn = %id, "answer abandoned: the client stopped reading");
        let why = format!(
            "the client stopped reading its answer (nothing taken for {} s)",
            ANSWER_STALL.as_secs()
        );
        self.disconnect(id, Some(Error::Transport(why)));
    }

    /// Network client `id` has taken everything of its answer so far, and
    /// its transport has more ([`crate::switch::Relay::more_to_send`]): asks
    /// for the next part, written straight to the socket as far as it takes
    /// it. A part given means another turn once it is written; nothing given
    /// ends the answer.
    pub(super) fn give_more(&mut self, id: ConnId) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Role::Pending(p) = &mut c.role else {
            return;
        };
        p.sending = false;
        let _in_conn = p.span.clone().entered();
        let mut relay = Relay::new(&mut p.to_service, &mut c.out);
        relay.network_fd = Some(c.io.fd());
        let _ = super::relay::guarded(|| {
            p.transport.network_drained(&mut relay);
            Ok(())
        });
        let (given, more) = (relay.answered, relay.more);
        let (failed, finished) = (relay.failed.take(), relay.finished.take());
        if let Some(e) = failed {
            return self.disconnect(id, Some(e.into()));
        }
        match finished {
            Some(reason) => p.closing = Some(reason),
            None if more && given > 0 => p.sending = true,
            None => {
                p.closing = Some(Some(Error::Transport(
                    "the transport left its answer unfinished".into(),
                )))
            }
        }
        if given > 0 {
            c.last_active = now;
            // Written next turn (or now taken whole by the socket: the next
            // part then), so that other connections get their turn between parts.
            self.mark_dirty(id);
        } else {
            self.flush_or_finish(id);
        }
    }

    pub(super) fn pending_of(&self, id: ConnId) -> Result<()> {
        match &self.live(id)?.role {
            Role::Pending(p) if p.closing.is_none() => Ok(()),
            _ => Err(Error::WrongKind {
                id,
                what: "not a network connection waiting for a service",
            }),
        }
    }

    /// A network client whose last answer is written (a refusal, or the end
    /// of its conversation when the service left first): shut down our side,
    /// then read and drop what it still sends until it closes, for at most
    /// [`LINGER`]. Closing at once with its input unread would reset the
    /// connection, and a client still sending (an HTTP request after an early
    /// 503, frames after its service name, messages to a service that just
    /// died) could lose the answer, or the reason it was closed.
    pub(super) fn linger(&mut self, id: ConnId) {
        let lingering_now = self.lingering;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.lingering {
            return;
        }
        let fd = c.io.fd().as_raw_fd();
        if lingering_now >= MAX_LINGERING || shutdown(fd, Shutdown::Write).is_err() {
            return self.end_linger(id);
        }
        c.lingering = true;
        self.lingering += 1;
        c.paused = false;
        c.idle = None;
        c.deadline = Some(self.now + LINGER);
        self.arm(id);
        self.mark_ready(id);
    }

    /// Ends a lingering close (the client closed, or [`LINGER`] passed), with
    /// the reason the connection was ending for.
    pub(super) fn end_linger(&mut self, id: ConnId) {
        let reason = match self.conns.get_mut(id).map(|c| &mut c.role) {
            Some(Role::Pending(p)) => p.closing.take().flatten(),
            Some(Role::Switched(s)) => s.end_reason.take().map(|e| *e),
            _ => None,
        };
        self.disconnect(id, reason);
    }

    /// One read from a lingering connection: dropped, up to its EOF.
    pub(super) fn read_lingering(&mut self, id: ConnId) {
        match self.read_chunk(id) {
            Chunk::Data(_) | Chunk::Blocked => {}
            Chunk::Eof | Chunk::Failed(_) => self.end_linger(id),
        }
    }

    /// One read from a network connection in its handshake.
    pub(super) fn read_pending(&mut self, id: ConnId) {
        let n = match self.read_chunk(id) {
            Chunk::Data(n) => n,
            Chunk::Blocked => return,
            end @ (Chunk::Eof | Chunk::Failed(_)) => {
                // The transport judges the end, EOF or reset alike: an error
                // only if the client was in the middle of something (a
                // balancer's health check resets its connections).
                let judged = match self.conns.get_mut(id).map(|c| &mut c.role) {
                    Some(Role::Pending(p)) => {
                        Some(super::relay::guarded(|| p.transport.network_closed()))
                    }
                    _ => None,
                };
                let reason = match (end, judged) {
                    (_, Some(Ok(()))) => None,
                    (Chunk::Failed(e), _) => Some(e.into()),
                    (_, judged) => judged.and_then(Result::err),
                };
                return self.disconnect(id, reason);
            }
        };
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Role::Pending(p) = &mut c.role else {
            return;
        };
        let _in_conn = p.span.clone().entered();
        let mut relay = Relay::new(&mut p.to_service, &mut c.out);
        let data = &self.scratch[..n];
        let result = super::relay::guarded(|| p.transport.on_network_data(data, &mut relay));
        let request = relay.request.take();
        let finished = relay.finished.take();
        let more = relay.more;
        p.ended |= relay.ended;
        match (result, finished) {
            (Err(e), _) => {
                tracing::debug!(conn = %id, error = %Chain(&e), "handshake failed");
                p.closing = Some(Some(e));
                c.paused = true;
            }
            // Answered without a service (an HTTP response): close once written.
            (Ok(()), Some(reason)) => {
                p.closing = Some(reason);
                c.paused = true;
            }
            // Answered, more to come as the client reads (a file): the
            // request is all there is to read.
            (Ok(()), None) if more && request.is_none() => {
                p.sending = true;
                c.paused = true;
            }
            (Ok(()), None) => {
                if let Some(name) = request.or_else(|| p.fixed_request()) {
                    // Wait for the daemon's decision before reading more.
                    c.paused = true;
                    self.pending.push_back(Event::ServiceRequest { id, name });
                }
            }
        }
        if c.answering() {
            self.answer_timer(id);
        }
        self.flush_or_finish(id);
    }
}
