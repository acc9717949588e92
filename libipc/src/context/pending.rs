//! Network connections before their service is attached: the handshake phase.
//!
//! A daemon adds an accepted client with [`Context::add_network`] and its
//! transport. The transport reads the handshake and names a service
//! ([`Event::ServiceRequest`]); the daemon decides: [`Context::attach_service`]
//! connects the service and switches the pair, [`Context::refuse`] answers the
//! client and closes it. Nothing is read from the client while the daemon decides,
//! and what came with the name is delivered to the service first.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{Shutdown, shutdown};

use mio::Interest;

use super::conn::{Io, Pending, Role, set_nonblocking};
use super::{Chunk, Context, Start};
use crate::error::{Chain, Error, Result};
use crate::event::{ConnId, Event};
use crate::queue::OutQueue;
use crate::service;
use crate::switch::{Refusal, Relay, Transport};

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
    /// Adds a network connection (an accepted TCP socket, say) whose service is not
    /// known yet. `transport` reads its handshake and names the service, reported
    /// as [`Event::ServiceRequest`]. Set a deadline ([`Context::set_deadline`]) so
    /// that a client that never names one is timed out.
    pub fn add_network(&mut self, fd: OwnedFd, transport: Box<dyn Transport>) -> Result<ConnId> {
        self.add_pending(fd, transport, None)
    }

    /// [`Context::add_network`] for a client that goes to service `name`
    /// whatever it says (a daemon's fixed mode): [`Event::ServiceRequest`] for
    /// `name` is reported as soon as the transport's own handshake (TLS, a
    /// PROXY header) is done, at once if it has none. So the service sees the
    /// client only once it is a client, its TLS handshake finished.
    pub fn add_network_for(
        &mut self,
        fd: OwnedFd,
        transport: Box<dyn Transport>,
        name: &str,
    ) -> Result<ConnId> {
        self.add_pending(fd, transport, Some(name.as_bytes().to_vec()))
    }

    fn add_pending(
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

    /// Adds what network connection `id` (waiting for its service) told its
    /// transport about itself to `info`: the address a PROXY header gave, the
    /// TLS session, the WebSocket request.
    pub fn describe(&self, id: ConnId, info: &mut crate::switch::PeerInfo) {
        if let Some(Role::Pending(p)) = self.conns.get(id).map(|c| &c.role) {
            let _ = super::relay::guarded(|| {
                p.transport.describe(info);
                Ok(())
            });
        }
    }

    /// [`Context::attach_service`], with `first` delivered to the service as a
    /// message of its own before anything the client sent (`--peer-info`).
    pub fn attach_service_with(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<ConnId> {
        self.attach_named(id, name, false, first)
    }

    /// [`Context::attach_service_with`] for a protocol daemon's outbound service
    /// (`$RUNDIR/.outbound/name`): how an operator chains daemons on purpose.
    pub fn attach_outbound_service_with(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<ConnId> {
        self.attach_named(id, name, true, first)
    }

    /// Connects `id` to service `name` (an outbound service if `outbound`) and
    /// switches them, `first` queued ahead.
    fn attach_named(
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

    /// Connects network connection `id` to local service `name` and switches them:
    /// the transport answers the client (`ok`), then what the client already sent
    /// reaches the service. Returns the service connection.
    ///
    /// Fails (leaving `id` waiting, so the caller can [`Context::refuse`] it) if
    /// `id` is not waiting for a service, the name is invalid, or the service
    /// cannot be reached.
    pub fn attach_service(&mut self, id: ConnId, name: &str) -> Result<ConnId> {
        self.attach_service_with(id, name, None)
    }

    /// Switches network connection `id` (waiting for a service) with `local`, an
    /// existing plain connection (a client of the daemon's own service, for
    /// instance). As with [`Context::attach_service`], the client is answered first.
    pub fn attach(&mut self, id: ConnId, local: ConnId) -> Result<()> {
        self.pending_of(id)?;
        if !matches!(self.live(local)?.role, Role::Ipc) {
            return Err(Error::WrongKind {
                id: local,
                what: "only a plain connection can be attached",
            });
        }
        let Some(c) = self.conns.get_mut(id) else {
            return Err(Error::NoSuchConnection(id));
        };
        let Role::Pending(p) = std::mem::replace(&mut c.role, Role::Ipc) else {
            return Err(Error::NoSuchConnection(id));
        };
        let Pending {
            transport,
            mut to_service,
            span,
            ended,
            ..
        } = *p;
        let held = to_service.take_bytes();
        let _in_conn = span.enter();
        self.pair(id, local, transport, held, Start::Accepted)?;
        if let Some(s) = self.conns.get_mut(id).and_then(|c| c.switched()) {
            s.span = span.clone();
        }
        if ended {
            // What came before the client's end is queued for the service:
            // now the end itself.
            self.network_eof(id, local);
        }
        Ok(())
    }

    /// Turns network connection `id` away: its transport answers with `refusal`
    /// in its own form (`no: TEXT` in tcpd's handshake, an HTTP status for
    /// websocketd), and the connection closes once that is written. Its
    /// DISCONNECTION carries [`Error::Denied`] with the refusal's text.
    pub fn refuse(&mut self, id: ConnId, refusal: Refusal) -> Result<()> {
        let c = self
            .conns
            .get_mut(id)
            .filter(|c| !c.dead)
            .ok_or(Error::NoSuchConnection(id))?;
        let Role::Pending(p) = &mut c.role else {
            return Err(Error::WrongKind {
                id,
                what: "only a connection waiting for a service can be refused",
            });
        };
        if p.sending || p.closing.is_some() {
            // Answered already (a timeout racing the answer): that answer
            // stands, bounded by ANSWER_STALL.
            return Ok(());
        }
        let _in_conn = p.span.clone().entered();
        let mut relay = Relay::new(&mut p.to_service, &mut c.out);
        let _ = super::relay::guarded(|| {
            p.transport.refused(refusal, &mut relay);
            Ok(())
        });
        p.closing = Some(Some(Error::Denied(refusal.to_string())));
        c.paused = true;
        self.answer_timer(id);
        self.flush_or_finish(id);
        Ok(())
    }

    /// Network client `id` is being answered without a service: its own
    /// deadlines (the handshake's) no longer apply, [`ANSWER_STALL`] does.
    fn answer_timer(&mut self, id: ConnId) {
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

    /// While network connection `id` (waiting for its service, or switched) is
    /// still in its transport's own handshake (TLS, an HTTP upgrade), that
    /// phase's name.
    pub fn transport_handshake(&self, id: ConnId) -> Option<&'static str> {
        match self.conns.get(id).map(|c| &c.role) {
            Some(Role::Pending(p)) => p.transport.handshake_phase(),
            Some(Role::Switched(s)) => s.transport.as_ref().and_then(|t| t.handshake_phase()),
            _ => None,
        }
    }

    /// Sets the span entered around the transport's calls for network
    /// connection `id` (waiting for a service, or switched): its log lines then
    /// carry the daemon's fields for that client (peer, service).
    pub fn set_span(&mut self, id: ConnId, span: tracing::Span) {
        match self.conns.get_mut(id).map(|c| &mut c.role) {
            Some(Role::Pending(p)) => p.span = span,
            Some(Role::Switched(s)) if s.transport.is_some() => s.span = span,
            _ => {}
        }
    }

    fn pending_of(&self, id: ConnId) -> Result<()> {
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
            Some(Role::Switched(s)) => s.end_reason.take(),
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
