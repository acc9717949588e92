//! Switched pairs: relaying between a network connection and a service through a
//! [`Transport`], and closing a pair cleanly when one side ends.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{Shutdown, shutdown};

use super::Context;
use super::conn::{AfterFlush, Conn, Role, Switched, read_fd, set_nonblocking, set_nonblocking_to};
use crate::error::{Error, Result};
use crate::event::{ConnId, Event};
use crate::frame::Decoder;
use crate::switch::{HookStatus, Relay, SwitchHooks, Transport};

impl Context {
    /// Joins two connections: payloads from `network` are unwrapped by `transport`
    /// and sent to `service` as LibIPC frames, and frames from `service` are wrapped
    /// and sent to `network`. Both become non-blocking; anything already queued on
    /// them is still written first. When one side ends, the other is closed after
    /// what was already accepted for it has been written.
    pub fn add_switch(
        &mut self,
        network: ConnId,
        service: ConnId,
        transport: Box<dyn Transport>,
    ) -> Result<()> {
        for id in [network, service] {
            let c = self.live(id)?;
            if !matches!(c.role, Role::Ipc | Role::External) {
                return Err(Error::WrongKind {
                    id,
                    what: "only stream connections can be switched",
                });
            }
        }
        if network == service {
            return Err(Error::WrongKind {
                id: network,
                what: "a connection cannot be switched with itself",
            });
        }
        for (id, peer, transport) in [
            (network, service, Some(transport)),
            (service, network, None),
        ] {
            let c = self.live_mut(id)?;
            set_nonblocking(c.io.fd())?;
            // Bytes already read but not yet a whole message go to the relay.
            let leftover = std::mem::replace(&mut c.decoder, Decoder::new(0));
            if leftover.pending() > 0 {
                tracing::debug!(%id, "switching with a partial message buffered");
            }
            c.role = Role::Switched(Box::new(Switched {
                peer,
                transport,
                read_eof: false,
                after_flush: AfterFlush::Nothing,
                hooks: None,
            }));
            // An External was registered without interest in its readability edge
            // having been consumed; read it now in case data is already there.
            c.readable = true;
            self.mark_ready(id);
        }
        Ok(())
    }

    /// Lets the application read and write switched connection `id` itself: `hooks`
    /// reads one frame when the descriptor is readable and writes each frame relayed
    /// to it. Fails if `id` is not switched.
    pub fn set_switch_hooks(&mut self, id: ConnId, hooks: Box<dyn SwitchHooks>) -> Result<()> {
        let max = self.config.max_message_size;
        let s = self.live_mut(id)?.switched().ok_or(Error::WrongKind {
            id,
            what: "not a switched connection",
        })?;
        s.hooks = Some((hooks, Decoder::new(max.max(u32::MAX as usize))));
        // Callbacks written for the original expect blocking descriptors.
        let fd = self.live(id)?.io.fd();
        set_nonblocking_to(fd, false)
    }

    /// One read from a switched connection, passed through the transport to its peer.
    pub(super) fn read_switched(&mut self, id: ConnId) {
        self.ensure_scratch();
        let pause_at = self.config.pause_at();
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let raw = c.io.fd().as_raw_fd();
        let max = self.config.max_message_size;
        let Some(s) = c.switched() else { return };
        let (peer, is_network) = (s.peer, s.transport.is_some());
        let mut hooked = None;
        let got = if let Some((hooks, _)) = s.hooks.as_mut() {
            let mut frame = Vec::with_capacity(max + crate::frame::HEADER_LEN);
            let status = hooks.read(raw, &mut frame);
            c.readable = false;
            self.recheck.push(id);
            match status {
                HookStatus::Done => {
                    let n = frame.len();
                    hooked = Some(frame);
                    Ok(n)
                }
                HookStatus::Ignore => return,
                HookStatus::Closing => Ok(0),
                HookStatus::Error => Err(io::Error::other("switch read callback failed")),
            }
        } else {
            read_fd(c.io.fd(), &mut self.scratch)
        };
        let n = match got {
            Ok(0) if is_network => return self.network_eof(id, peer),
            Ok(0) => return self.service_end(id, peer, true, None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return;
            }
            Err(e) => return self.fail_pair(id, e.into()),
        };
        if hooked.is_some() {
            // Level-triggered through `recheck`.
        } else if n < self.scratch.len() && !c.hup {
            c.readable = false;
        } else {
            self.mark_ready(id);
        }
        let Some((me, other)) = self.conns.get2_mut(id, peer) else {
            return self.disconnect(id, None);
        };
        let (Role::Switched(ms), Role::Switched(os)) = (&mut me.role, &mut other.role) else {
            return;
        };
        let data = hooked.as_deref().unwrap_or(&self.scratch[..n]);
        let result = if let Some(t) = ms.transport.as_mut() {
            // Network side: unwrap for the service (peer).
            let mut relay = Relay {
                to_service: &mut other.out,
                to_network: &mut me.out,
            };
            t.on_network_data(data, &mut relay)
        } else if let Some(t) = os.transport.as_mut() {
            // Service side: wrap for the network (peer).
            let mut relay = Relay {
                to_service: &mut me.out,
                to_network: &mut other.out,
            };
            t.on_service_data(data, &mut relay)
        } else {
            Ok(())
        };
        if other.out.len() >= pause_at {
            me.paused = true;
        }
        let me_dirty = !me.out.is_empty();
        self.pending.push_back(Event::SwitchRx { id });
        if let Err(e) = result {
            tracing::warn!(conn = %id, error = %e, "relay refused data; closing the pair");
            return self.fail_pair(id, e);
        }
        self.flush(peer);
        if me_dirty {
            self.mark_dirty(id);
        }
    }

    /// The network side `id` of a pair sent EOF: the service gets everything
    /// already accepted, then EOF; its replies still flow back until it closes.
    fn network_eof(&mut self, id: ConnId, peer: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.readable = false;
        let Some(s) = c.switched() else { return };
        s.read_eof = true;
        if let Some(Err(e)) = s.transport.as_mut().map(|t| t.network_closed()) {
            tracing::warn!(conn = %id, error = %e, "network peer closed mid-message");
        }
        if let Some(ps) = self.conns.get_mut(peer).and_then(Conn::switched) {
            ps.after_flush = AfterFlush::ShutdownWrite;
            self.flush_or_finish(peer);
        }
    }

    /// The service side `id` of a pair ended (`clean`: by EOF, not by an error):
    /// the network peer gets the transport's goodbye and is closed once everything
    /// accepted for it is written.
    pub(super) fn service_end(
        &mut self,
        id: ConnId,
        peer: ConnId,
        clean: bool,
        reason: Option<Error>,
    ) {
        if let Some((me, other)) = self.conns.get2_mut(id, peer)
            && let Role::Switched(os) = &mut other.role
        {
            if let Some(t) = os.transport.as_mut() {
                let mut relay = Relay {
                    to_service: &mut me.out,
                    to_network: &mut other.out,
                };
                t.service_closed(&mut relay, clean);
            }
            os.after_flush = AfterFlush::Close;
            // Nobody is left to deliver the network peer's data to.
            other.paused = true;
        }
        self.disconnect(id, reason);
        self.flush_or_finish(peer);
    }

    /// Flushes `id`, and if its queue is already empty, applies its after-flush step.
    fn flush_or_finish(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if !c.out.is_empty() {
            return self.flush(id);
        }
        if let Some(s) = c.switched() {
            let after = s.after_flush;
            self.after_flush(id, after);
        }
    }

    pub(super) fn after_flush(&mut self, id: ConnId, after: AfterFlush) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        match after {
            AfterFlush::Nothing => {}
            AfterFlush::ShutdownWrite => {
                let _ = shutdown(c.io.fd().as_raw_fd(), Shutdown::Write);
                if let Some(s) = c.switched() {
                    s.after_flush = AfterFlush::Nothing;
                }
            }
            AfterFlush::Close => self.disconnect(id, None),
        }
    }

    /// A switched pair failed (I/O error, or the transport refused data): the
    /// network side gets the transport's goodbye, as far as it can take it now, and
    /// both sides close.
    pub(super) fn fail_pair(&mut self, id: ConnId, error: Error) {
        let Some(peer) = self
            .conns
            .get_mut(id)
            .and_then(Conn::switched)
            .map(|s| s.peer)
        else {
            return self.disconnect(id, Some(error));
        };
        if let Some((me, other)) = self.conns.get2_mut(id, peer) {
            let (net, svc) = match &me.role {
                Role::Switched(s) if s.transport.is_some() => (me, other),
                _ => (other, me),
            };
            if let Role::Switched(ns) = &mut net.role
                && let Some(t) = ns.transport.as_mut()
            {
                let mut relay = Relay {
                    to_service: &mut svc.out,
                    to_network: &mut net.out,
                };
                t.service_closed(&mut relay, false);
            }
            let _ = net.out.flush(net.io.fd());
        }
        let text = error.to_string();
        self.disconnect(id, Some(error));
        self.disconnect(
            peer,
            Some(Error::Transport(format!("switched peer failed: {text}"))),
        );
    }
}

/// Hands each whole frame in `bytes` to the write hook.
pub(super) fn write_with_hooks(
    s: &mut Switched,
    raw: RawFd,
    bytes: &[u8],
) -> io::Result<crate::queue::Flushed> {
    let Some((hooks, decoder)) = s.hooks.as_mut() else {
        return Ok(crate::queue::Flushed::default());
    };
    let mut status = HookStatus::Done;
    let mut frame = Vec::new();
    decoder
        .feed(bytes, |payload| {
            if status != HookStatus::Done {
                return;
            }
            frame.clear();
            frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            frame.extend_from_slice(payload);
            status = hooks.write(raw, &frame);
        })
        .map_err(io::Error::other)?;
    match status {
        HookStatus::Done | HookStatus::Ignore => Ok(crate::queue::Flushed {
            bytes: bytes.len(),
            messages: 0,
            drained: true,
        }),
        HookStatus::Closing | HookStatus::Error => {
            Err(io::Error::other("switch write callback failed"))
        }
    }
}
