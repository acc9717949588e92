//! [`DaemonExt`]: the part of [`Context`] only protocol daemons use.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mio::Interest;

use super::Context;
use super::conn::{Conn, Io, Pending, Role};
use super::{Start, relay::guarded};
use crate::error::{Error, Result};
use crate::event::ConnId;
use crate::service::ServiceListener;
use crate::switch::{Refusal, Relay, Transport};
use crate::traffic::Traffic;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Context {}
}

/// The part of [`Context`] only protocol daemons use: network connections
/// whose transport reads a handshake and names a service, attaching them to
/// services or refusing them, their deadlines, and the goodbye on shutdown.
///
/// A service or a client of one never needs this; it is a trait, in scope
/// only where imported ([`crate::switch::DaemonExt`]), so that `Context`'s own
/// documentation is the LibIPC API. The engine of the daemons (the
/// `libipc-daemon` crate) drives it: add an accepted client with
/// [`DaemonExt::add_network`] and its transport; the transport reads the
/// handshake and names a service ([`Event::ServiceRequest`](crate::Event::ServiceRequest)); the daemon
/// decides: [`DaemonExt::attach_service`] connects the service and switches
/// the pair, [`DaemonExt::refuse`] answers the client and closes it. Nothing
/// is read from the client while the daemon decides, and what came with the
/// name is delivered to the service first.
///
/// Implemented by `Context` only.
pub trait DaemonExt: sealed::Sealed {
    /// Creates a protocol daemon's outbound service `name`:
    /// `$RUNDIR/.outbound/name` ([`service::OUTBOUND_DIR`](crate::service::OUTBOUND_DIR)), where `IPC_NETWORK`
    /// clients find it and no network client of a daemon can name it. Otherwise
    /// as [`Context::service_init`].
    fn outbound_service_init(&mut self, name: &str) -> Result<ConnId>;

    /// Adds a network connection (an accepted TCP socket, say) whose service is not
    /// known yet. `transport` reads its handshake and names the service, reported
    /// as [`Event::ServiceRequest`](crate::Event::ServiceRequest). Set a deadline ([`DaemonExt::set_deadline`]) so
    /// that a client that never names one is timed out.
    fn add_network(&mut self, fd: OwnedFd, transport: Box<dyn Transport>) -> Result<ConnId>;

    /// [`DaemonExt::add_network`] for a client that goes to service `name`
    /// whatever it says (a daemon's fixed mode): [`Event::ServiceRequest`](crate::Event::ServiceRequest) for
    /// `name` is reported as soon as the transport's own handshake (TLS, a
    /// PROXY header) is done, at once if it has none. So the service sees the
    /// client only once it is a client, its TLS handshake finished.
    fn add_network_for(
        &mut self,
        fd: OwnedFd,
        transport: Box<dyn Transport>,
        name: &str,
    ) -> Result<ConnId>;

    /// Adds what network connection `id` (waiting for its service) told its
    /// transport about itself to `info`: the address a PROXY header gave, the
    /// TLS session, the WebSocket request.
    fn describe(&self, id: ConnId, info: &mut crate::switch::PeerInfo);

    /// While network connection `id` (waiting for its service, or switched) is
    /// still in its transport's own handshake (TLS, an HTTP upgrade), that
    /// phase's name.
    fn transport_handshake(&self, id: ConnId) -> Option<&'static str>;

    /// Sets the span entered around the transport's calls for network
    /// connection `id` (waiting for a service, or switched): its log lines then
    /// carry the daemon's fields for that client (peer, service).
    fn set_span(&mut self, id: ConnId, span: tracing::Span);

    /// Connects network connection `id` to local service `name` and switches them:
    /// the transport answers the client (`ok`), then what the client already sent
    /// reaches the service. Returns the service connection.
    ///
    /// Fails (leaving `id` waiting, so the caller can [`DaemonExt::refuse`] it) if
    /// `id` is not waiting for a service, the name is invalid, or the service
    /// cannot be reached.
    fn attach_service(&mut self, id: ConnId, name: &str) -> Result<ConnId>;

    /// [`DaemonExt::attach_service`], with `first` delivered to the service as a
    /// message of its own before anything the client sent (`--peer-info`).
    fn attach_service_with(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<ConnId>;

    /// [`DaemonExt::attach_service_with`] for a protocol daemon's outbound service
    /// (`$RUNDIR/.outbound/name`): how an operator chains daemons on purpose.
    fn attach_outbound_service_with(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<ConnId>;

    /// Hands network connection `id` (waiting for its service) to service
    /// `name` itself, when the service takes handed-off clients and the
    /// client's stream is plain frames ([`Transport::can_hand_off`]): its
    /// socket goes to the service with the transport's answer (`ok`), `first`
    /// (`--peer-info`) and what the client already sent (see
    /// [`crate::handoff`]); `id` is gone then, with no event. `Ok(Err(_))`:
    /// nothing changed, attach it as usual. An error: the handoff failed
    /// after the client was given up (the service went away meanwhile).
    fn hand_off(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<std::result::Result<(), crate::handoff::Declined>>;

    /// Gives the daemon's connection `net` to a remote daemon (its
    /// handshake done, the remote said ok) to `local`, the local client of
    /// the outbound service that asked for it and offered to take it
    /// ([`crate::network::HANDOFF_OPTION`]): the socket goes to the client
    /// with a handoff frame instead of `ok` (see [`crate::handoff`]), and the
    /// daemon keeps neither connection. `Ok(Err(_))`: nothing changed,
    /// attach them as usual.
    fn hand_back(
        &mut self,
        net: ConnId,
        local: ConnId,
    ) -> Result<std::result::Result<(), crate::handoff::Declined>>;

    /// Switches network connection `id` (waiting for a service) with `local`, an
    /// existing plain connection (a client of the daemon's own service, for
    /// instance). As with [`DaemonExt::attach_service`], the client is answered first.
    fn attach(&mut self, id: ConnId, local: ConnId) -> Result<()>;

    /// Turns network connection `id` away: its transport answers with `refusal`
    /// in its own form (`no: TEXT` in tcpd's handshake, an HTTP status for
    /// websocketd), and the connection closes once that is written. Its
    /// DISCONNECTION carries [`Error::Denied`] with the refusal's text.
    fn refuse(&mut self, id: ConnId, refusal: Refusal) -> Result<()>;

    /// Sets (or clears) an absolute deadline for connection `id`: when it passes,
    /// [`Event::Timeout`](crate::Event::Timeout) is reported once. Daemons use it for handshake timeouts.
    fn set_deadline(&mut self, id: ConnId, at: Option<Instant>) -> Result<()>;

    /// Sets (or clears) an idle timeout for connection `id`: [`Event::Timeout`](crate::Event::Timeout) is
    /// reported once when no byte has moved on it, either way, for `idle`.
    fn set_idle_timeout(&mut self, id: ConnId, idle: Option<Duration>) -> Result<()>;

    /// When the loop last woke up (read once per wake-up; cheaper than the clock
    /// for callers that only need it to the event).
    fn last_wake(&self) -> Instant;

    /// Stops reporting external `id` for `delay` (or until it becomes readable
    /// anew), for a descriptor the application cannot serve now: a listener
    /// out of descriptors (EMFILE) stays readable, and the level-triggered
    /// check would report it again at once, making the loop spin.
    fn retry_external_in(&mut self, id: ConnId, delay: Duration) -> Result<()>;

    /// What crossed network connection `id`'s pair so far (switched pairs only;
    /// still answered in the DISCONNECTION of `id`).
    fn traffic(&self, id: ConnId) -> Option<Traffic>;

    /// Asks the transport of switched network connection `id` to probe its peer
    /// (a WebSocket ping); see [`Transport::keepalive`]. An error means the peer
    /// stopped answering: the pair is closed.
    fn keepalive(&mut self, id: ConnId) -> Result<bool>;

    /// Gets switched network connection `id` ready for its goodbye when the
    /// daemon shuts down, if its transport has one (a WebSocket close 1001,
    /// see [`Transport::can_go_away`]): nothing more is read from the client,
    /// so that the service can answer everything it was already given, and the
    /// goodbye ([`DaemonExt::going_away`]) then follows the last answer. What
    /// the client sends meanwhile is not taken (the goodbye tells it why).
    /// False when the transport has no goodbye: such a conversation finishes
    /// on its own.
    fn hold_for_goodbye(&mut self, id: ConnId) -> bool;

    /// Asks the transport of switched network connection `id` to tell its peer
    /// the daemon is going away (a WebSocket close with 1001); see
    /// [`Transport::going_away`]. False when it has no way to.
    fn going_away(&mut self, id: ConnId) -> bool;
}

impl DaemonExt for Context {
    fn outbound_service_init(&mut self, name: &str) -> Result<ConnId> {
        let listener = ServiceListener::bind_outbound(&self.rundir, name.as_bytes())?;
        tracing::debug!(path = %listener.path().display(), "outbound service listening");
        self.insert(
            Io::Listener(Box::new(listener)),
            Role::Listener,
            Interest::READABLE,
        )
    }

    fn add_network(&mut self, fd: OwnedFd, transport: Box<dyn Transport>) -> Result<ConnId> {
        self.add_pending(fd, transport, None)
    }

    fn add_network_for(
        &mut self,
        fd: OwnedFd,
        transport: Box<dyn Transport>,
        name: &str,
    ) -> Result<ConnId> {
        self.add_pending(fd, transport, Some(name.as_bytes().to_vec()))
    }

    fn describe(&self, id: ConnId, info: &mut crate::switch::PeerInfo) {
        if let Some(Role::Pending(p)) = self.conns.get(id).map(|c| &c.role) {
            let _ = guarded(|| {
                p.transport.describe(info);
                Ok(())
            });
        }
    }

    fn transport_handshake(&self, id: ConnId) -> Option<&'static str> {
        match self.conns.get(id).map(|c| &c.role) {
            Some(Role::Pending(p)) => p.transport.handshake_phase(),
            Some(Role::Switched(s)) => s.transport.as_ref().and_then(|t| t.handshake_phase()),
            _ => None,
        }
    }

    fn set_span(&mut self, id: ConnId, span: tracing::Span) {
        match self.conns.get_mut(id).map(|c| &mut c.role) {
            Some(Role::Pending(p)) => p.span = span,
            Some(Role::Switched(s)) if s.transport.is_some() => s.span = span,
            _ => {}
        }
    }

    fn attach_service(&mut self, id: ConnId, name: &str) -> Result<ConnId> {
        self.attach_service_with(id, name, None)
    }

    fn attach_service_with(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<ConnId> {
        self.attach_named(id, name, false, first)
    }

    fn attach_outbound_service_with(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<ConnId> {
        self.attach_named(id, name, true, first)
    }

    fn hand_off(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<std::result::Result<(), crate::handoff::Declined>> {
        self.hand_off_to(id, name, first)
    }

    fn hand_back(
        &mut self,
        net: ConnId,
        local: ConnId,
    ) -> Result<std::result::Result<(), crate::handoff::Declined>> {
        self.hand_back_to(net, local)
    }

    fn attach(&mut self, id: ConnId, local: ConnId) -> Result<()> {
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

    fn refuse(&mut self, id: ConnId, refusal: Refusal) -> Result<()> {
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
        let _ = guarded(|| {
            p.transport.refused(refusal, &mut relay);
            Ok(())
        });
        p.closing = Some(Some(Error::Denied(refusal.to_string())));
        c.paused = true;
        self.answer_timer(id);
        self.flush_or_finish(id);
        Ok(())
    }

    fn set_deadline(&mut self, id: ConnId, at: Option<Instant>) -> Result<()> {
        self.live_mut(id)?.deadline = at;
        self.arm(id);
        Ok(())
    }

    fn set_idle_timeout(&mut self, id: ConnId, idle: Option<Duration>) -> Result<()> {
        let c = self.live_mut(id)?;
        c.idle = idle;
        c.last_active = Instant::now();
        self.arm(id);
        Ok(())
    }

    fn last_wake(&self) -> Instant {
        self.now
    }

    fn retry_external_in(&mut self, id: ConnId, delay: Duration) -> Result<()> {
        let c = self.live_mut(id)?;
        if !matches!(c.role, Role::External) {
            return Err(Error::WrongKind {
                id,
                what: "not an external descriptor",
            });
        }
        // Still readable as far as anyone knows: reported again at the retry.
        c.readable = true;
        self.recheck.retain(|&r| r != id);
        self.retry_accept_at(id, Instant::now() + delay);
        Ok(())
    }

    fn traffic(&self, id: ConnId) -> Option<Traffic> {
        match self.last_gone {
            Some((gone, _, traffic)) if gone == id => traffic,
            _ => match &self.conns.get(id)?.role {
                Role::Switched(s) => s.counter.as_ref().map(|c| c.traffic),
                _ => None,
            },
        }
    }

    fn keepalive(&mut self, id: ConnId) -> Result<bool> {
        self.with_transport(id, |t, relay| t.keepalive(relay))
    }

    fn hold_for_goodbye(&mut self, id: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(id) else {
            return false;
        };
        let Some(s) = c.switched() else { return false };
        if !s.transport.as_ref().is_some_and(|t| t.can_go_away()) {
            return false;
        }
        s.held = true;
        c.paused = true;
        true
    }

    fn going_away(&mut self, id: ConnId) -> bool {
        let asked = self
            .with_transport(id, |t, relay| Ok(t.going_away(relay)))
            .unwrap_or(false);
        // Read again: the peer's answer to the goodbye.
        if let Some(s) = self.conns.get_mut(id).and_then(Conn::switched)
            && std::mem::take(&mut s.held)
        {
            self.resume(id);
        }
        asked
    }
}
