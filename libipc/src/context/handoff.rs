//! Handed-off clients (see [`crate::handoff`]): a service's side, taking a
//! client's socket from a daemon, and the daemon's side, giving it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use mio::Interest;
use rustix::net::sockopt;

use super::Context;
use super::conn::{HandoffRx, Io, Role, set_nonblocking};
use crate::error::{Chain, Error, Result};
use crate::event::{ConnId, Event};
use crate::frame::HEADER_LEN;
use crate::handoff::{Declined, Handoff, MAX_HANDOFF, recv_with_fds, send_with_fd};
use crate::service;
use crate::switch::Relay;

/// Longest a daemon may take to send a whole handoff frame.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a daemon's handoff connection may take to write the rest of its
/// frame once the client's socket has gone with the first bytes.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Most handoffs a context reads at once (each may hold up to MAX_HANDOFF
/// for HANDOFF_TIMEOUT); past that, new handoff connections are closed at
/// once, and their daemons' clients with them.
const MAX_HANDOFFS: usize = 64;

impl Context {
    /// Listens, for service `service`, on its handoff endpoint if it has one.
    pub(super) fn add_handoff_listener(&mut self, service: ConnId) -> Result<()> {
        let handoff = match self.conns.get(service).map(|c| &c.io) {
            Some(Io::Listener(l)) => l.handoff_listener(),
            _ => None,
        };
        if let Some(listener) = handoff {
            let h = self.insert(
                Io::Handoff(listener?),
                Role::HandoffListener { service },
                Interest::READABLE,
            )?;
            self.handoff_listeners.insert(service, h);
        }
        Ok(())
    }

    /// Accepts daemons' handoff connections on listener `id`.
    pub(super) fn accept_handoff(&mut self, id: ConnId) {
        for _ in 0..64 {
            let Some(c) = self.conns.get_mut(id) else {
                return;
            };
            let (Io::Handoff(l), Role::HandoffListener { service }) = (&c.io, &c.role) else {
                return;
            };
            let service = *service;
            match l.accept() {
                Ok(_) if self.handoffs_open >= MAX_HANDOFFS => {
                    tracing::warn!("handoff refused: {MAX_HANDOFFS} already being read");
                }
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(true);
                    let rx = HandoffRx {
                        service,
                        got: Vec::new(),
                        fds: Vec::new(),
                    };
                    let fd = OwnedFd::from(stream);
                    match self.insert(
                        Io::Stream(fd),
                        Role::Handoff(Box::new(rx)),
                        Interest::READABLE,
                    ) {
                        Ok(h) => {
                            self.handoffs_open += 1;
                            if let Some(c) = self.conns.get_mut(h) {
                                c.deadline = Some(self.now + HANDOFF_TIMEOUT);
                                c.readable = true;
                            }
                            self.arm(h);
                            self.mark_ready(h);
                        }
                        Err(e) => tracing::warn!(error = %Chain(&e), "handoff connection dropped"),
                    }
                }
                // Reported by the policy's log line only (no ERROR event:
                // the endpoint is the library's, not the application's).
                Err(e) => {
                    if self.accept_stopped(id, &e).is_some() {
                        return;
                    }
                }
            }
        }
        self.mark_ready(id);
    }

    /// Reads a daemon's handoff frame on `id`; once whole, the client it
    /// carries joins the service.
    pub(super) fn read_handoff(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Role::Handoff(rx) = &mut c.role else {
            return;
        };
        let mut buf = [0; 64 << 10];
        let result = loop {
            match recv_with_fds(c.io.fd(), &mut buf) {
                Ok((0, fds)) => {
                    rx.fds.extend(fds);
                    break Err("the daemon closed before its frame was whole".to_owned());
                }
                Ok((n, fds)) => {
                    rx.fds.extend(fds);
                    rx.got.extend_from_slice(&buf[..n]);
                    let want = rx.got.get(..HEADER_LEN).map(|h| {
                        HEADER_LEN + u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize
                    });
                    match want {
                        Some(w) if w > HEADER_LEN + MAX_HANDOFF => {
                            break Err(format!("a frame of {w} bytes"));
                        }
                        Some(w) if rx.got.len() > w => {
                            break Err("bytes after the frame".to_owned());
                        }
                        Some(w) if rx.got.len() == w => break Ok(()),
                        _ => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        let Some(c) = self.take(id) else {
            return;
        };
        let Role::Handoff(rx) = c.role else {
            return;
        };
        let HandoffRx { service, got, fds } = *rx;
        let taken = result
            .and_then(|()| Handoff::decode(&got[HEADER_LEN..]).map_err(|e| e.to_string()))
            .and_then(|h| match <[OwnedFd; 1]>::try_from(fds) {
                Ok([fd]) => Ok((h, fd)),
                Err(fds) => Err(format!("{} descriptors, not one", fds.len())),
            })
            .and_then(|(h, fd)| match sockopt::socket_type(&fd) {
                Ok(rustix::net::SocketType::STREAM) => Ok((h, fd)),
                _ => Err("the descriptor is not a stream socket".to_owned()),
            });
        match taken {
            Ok((h, fd)) => self.join_handed_off(service, h, fd),
            Err(why) => tracing::warn!(conn = %id, "handoff refused: {why}"),
        }
    }

    /// Client `fd`, handed off with `h`, joins `service` as if it had
    /// connected to it.
    fn join_handed_off(&mut self, service: ConnId, h: Handoff, fd: OwnedFd) {
        if self.conns.get(service).is_none() {
            return tracing::debug!("handoff for a service closed meanwhile");
        }
        let new = match self.add_stream(fd) {
            Ok(new) => new,
            Err(e) => return tracing::warn!(error = %Chain(&e), "handed-off client dropped"),
        };
        let Some(c) = self.conns.get_mut(new) else {
            return;
        };
        c.client = true;
        c.out.push_raw(&h.answer);
        // The socket may hold more already: its edge came before it was ours.
        c.readable = true;
        self.pending.push_back(Event::Connection {
            id: new,
            listener: service,
        });
        if let Some(first) = h.first {
            self.pending.push_back(Event::Message {
                id: new,
                payload: first,
            });
        }
        let pending = &mut self.pending;
        let fed = c.decoder.feed_owned(&h.rest, |payload| {
            pending.push_back(Event::Message { id: new, payload })
        });
        self.mark_dirty(new);
        self.mark_ready(new);
        if let Err(e) = fed {
            tracing::warn!(conn = %new, error = %e, "protocol violation; closing connection");
            self.disconnect(new, Some(e));
        }
    }

    /// Adds connected stream `fd` whose first bytes (`rest`: LibIPC frames,
    /// possibly cut at the end) were read by someone else: they are its first
    /// messages.
    pub(super) fn add_stream_with(&mut self, fd: OwnedFd, rest: &[u8]) -> Result<ConnId> {
        let id = self.add_stream(fd)?;
        let Some(c) = self.conns.get_mut(id) else {
            return Err(Error::NoSuchConnection(id));
        };
        c.readable = true;
        let pending = &mut self.pending;
        let fed = c.decoder.feed_owned(rest, |payload| {
            pending.push_back(Event::Message { id, payload })
        });
        if let Err(e) = fed {
            self.remove(id);
            return Err(e);
        }
        self.mark_ready(id);
        Ok(id)
    }

    /// Hands network connection `id` (waiting for its service) to service
    /// `name`'s handoff endpoint; see `DaemonExt::hand_off`.
    pub(super) fn hand_off_to(
        &mut self,
        id: ConnId,
        name: &str,
        first: Option<&[u8]>,
    ) -> Result<std::result::Result<(), Declined>> {
        self.pending_of(id)?;
        let Some(Role::Pending(p)) = self.conns.get(id).map(|c| &c.role) else {
            return Err(Error::NoSuchConnection(id));
        };
        if !p.transport.can_hand_off() {
            return Ok(Err(Declined::NotPlain));
        }
        let dir = service::handoff_dir(&self.rundir);
        let sock = match service::connect_nonblocking(&dir, name.as_bytes()) {
            Ok(sock) => sock,
            // No endpoint, or a dead service's; or a full backlog: the
            // ordinary path says what applies.
            Err(_) => return Ok(Err(Declined::NotOffered)),
        };
        let Some(c) = self.conns.get_mut(id) else {
            return Err(Error::NoSuchConnection(id));
        };
        let Role::Pending(p) = &mut c.role else {
            return Err(Error::NoSuchConnection(id));
        };
        // What the transport answers and what it holds for the service, as
        // when attaching (see `pair`): the answer, the held frames, then what
        // the context held.
        let (mut to_net, mut to_svc) = Default::default();
        let mut relay = Relay::new(&mut to_svc, &mut to_net);
        let _ = super::relay::guarded(|| {
            p.transport.accepted(&mut relay);
            Ok(())
        });
        let held = p.to_service.take_bytes();
        relay.frames_to_service(&held);
        let h = Handoff {
            answer: to_net.take_bytes(),
            first: first.map(<[u8]>::to_vec),
            rest: to_svc.take_bytes(),
        };
        let wire = h.encode()?;
        let sent = send_with_fd(sock.as_fd(), &wire, c.io.fd());
        // The client's socket is the service's now (or lost with the
        // service): ours goes, with no shutdown, which would end theirs.
        self.close(id)?;
        let sent = sent.map_err(|e| {
            Error::Transport(format!("the service's handoff endpoint took nothing: {e}"))
        })?;
        if sent < wire.len() {
            // The rest, without a descriptor, as the socket takes it.
            set_nonblocking(sock.as_fd())?;
            let rest = self.insert(Io::Stream(sock), Role::Ipc, Interest::READABLE)?;
            if let Some(c) = self.conns.get_mut(rest) {
                c.out.push_raw(&wire[sent..]);
            }
            self.close_after_flush(rest, SEND_TIMEOUT)?;
        }
        Ok(Ok(()))
    }

    /// Gives local client `local` (of the daemon's outbound service) the
    /// daemon's connection `net` to the remote, whose handshake is done; see
    /// `DaemonExt::hand_back`.
    pub(super) fn hand_back_to(
        &mut self,
        net: ConnId,
        local: ConnId,
    ) -> Result<std::result::Result<(), Declined>> {
        self.pending_of(net)?;
        let l = self.live(local)?;
        if !matches!(l.role, Role::Ipc) || !l.out.is_empty() {
            return Ok(Err(Declined::NotOffered));
        }
        let Some((c, l)) = self.conns.get2_mut(net, local) else {
            return Err(Error::NoSuchConnection(net));
        };
        let Role::Pending(p) = &mut c.role else {
            return Err(Error::NoSuchConnection(net));
        };
        if !p.transport.can_hand_off() {
            return Ok(Err(Declined::NotPlain));
        }
        // The handoff frame is the answer (instead of `ok`); what the remote
        // sent after its own answer goes with it.
        let h = Handoff {
            answer: Vec::new(),
            first: None,
            rest: p.to_service.take_bytes(),
        };
        let wire = h.encode()?;
        let sent = send_with_fd(l.io.fd(), &wire, c.io.fd());
        // Ours goes, with no shutdown: the connection is the client's now.
        self.close(net)?;
        let sent = match sent {
            Ok(n) => n,
            Err(e) => {
                let _ = self.close(local);
                return Err(Error::Transport(format!(
                    "the local client took no handoff: {e}"
                )));
            }
        };
        if let Some(l) = self.conns.get_mut(local) {
            l.out.push_raw(&wire[sent..]);
        }
        self.close_after_flush(local, SEND_TIMEOUT)?;
        Ok(Ok(()))
    }
}
