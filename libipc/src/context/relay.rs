//! Switched pairs: relaying between a network connection and a service through a
//! [`Transport`], and closing a pair cleanly when one side ends.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{Shutdown, shutdown};

use super::conn::{AfterFlush, Conn, Role, Switched, set_nonblocking, set_nonblocking_to};
use super::{Chunk, Context, Start};
use crate::error::{Chain, Error, Result};
use crate::event::{ConnId, Event};
use crate::frame::Decoder;
use crate::switch::{HookStatus, Relay, SwitchHooks, Transport};
use crate::traffic::Counter;

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
        self.pair(network, service, transport, Vec::new(), Start::Opening)
    }

    /// Makes `network` (with `transport`) and `service` a switched pair. `held` is
    /// what the transport already produced for the service; `start` says which
    /// transport hook opens the pair. Bytes either side's decoder held (a partial
    /// message) go through the transport, so nothing already read is lost.
    pub(super) fn pair(
        &mut self,
        network: ConnId,
        service: ConnId,
        mut transport: Box<dyn Transport>,
        held: Vec<u8>,
        start: Start,
    ) -> Result<()> {
        if network == service {
            return Err(Error::WrongKind {
                id: network,
                what: "a connection cannot be switched with itself",
            });
        }
        let Some((net, svc)) = self.conns.get2_mut(network, service) else {
            return Err(Error::NoSuchConnection(service));
        };
        set_nonblocking(net.io.fd())?;
        set_nonblocking(svc.io.fd())?;
        let from_net = net.decoder.take_pending();
        let from_svc = svc.decoder.take_pending();
        let mut counter = Box::<Counter>::default();
        counter.count_out(&from_svc);
        let mut relay = Relay::new(&mut svc.out, &mut net.out);
        relay.traffic = Some(&mut counter);
        // The answer first (to whichever side the transport gives it), then what
        // the network peer already sent.
        let _ = guarded(|| {
            match start {
                Start::Opening => transport.start(&mut relay),
                Start::Accepted => transport.accepted(&mut relay),
            }
            Ok(())
        });
        relay.frames_to_service(&held);
        let fed = guarded(|| {
            transport
                .on_network_data(&from_net, &mut relay)
                .and_then(|()| transport.on_service_data(&from_svc, &mut relay))
        });
        let finished = relay.finished.take();
        let ended = relay.ended;
        let sides = [
            (net, service, Some(transport), Some(counter)),
            (svc, network, None, None),
        ];
        for (c, peer, transport, counter) in sides {
            c.role = Role::Switched(Box::new(Switched {
                peer,
                transport,
                read_eof: false,
                after_flush: AfterFlush::Nothing,
                end_reason: None,
                counter,
                span: tracing::Span::none(),
                hooks: None,
                held: false,
                answers_unread: false,
            }));
            // Data may already wait in the socket: its edge may be consumed.
            c.readable = true;
            c.paused = false;
        }
        for id in [network, service] {
            self.mark_ready(id);
            self.mark_dirty(id);
        }
        match (fed, finished) {
            (Err(e), _) => self.fail_pair(network, e),
            (Ok(()), Some(reason)) => self.finish_pair(network, service, reason),
            (Ok(()), None) if ended => self.network_eof(network, service),
            (Ok(()), None) => {}
        }
        Ok(())
    }

    /// The transport of network connection `network` ended the conversation
    /// ([`Relay::finish`]): nothing more is read from either side, and each closes
    /// once what was accepted for it is written.
    fn finish_pair(&mut self, network: ConnId, service: ConnId, reason: Option<Error>) {
        if let Some(e) = &reason {
            tracing::debug!(conn = %network, error = %Chain(e), "transport ended the pair");
        }
        let mut reason = Some(reason);
        for id in [network, service] {
            if let Some(c) = self.conns.get_mut(id) {
                c.paused = true;
                if let Some(s) = c.switched() {
                    s.after_flush = AfterFlush::Close;
                    s.end_reason = reason.take().flatten().map(Box::new);
                }
            }
        }
        self.flush_or_finish(service);
        self.flush_or_finish(network);
    }

    /// Runs `f` on the transport of switched network connection `id`, then writes
    /// what it produced, or ends the pair as it asked.
    pub(super) fn with_transport<R>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut dyn Transport, &mut Relay<'_>) -> Result<R>,
    ) -> Result<R> {
        let peer = self
            .live_mut(id)?
            .switched()
            .filter(|s| s.transport.is_some())
            .map(|s| s.peer)
            .ok_or(Error::WrongKind {
                id,
                what: "not the network side of a switched pair",
            })?;
        let Some((net, svc)) = self.conns.get2_mut(id, peer) else {
            return Err(Error::NoSuchConnection(peer));
        };
        let Role::Switched(ns) = &mut net.role else {
            return Err(Error::NoSuchConnection(id));
        };
        let Some(t) = ns.transport.as_mut() else {
            return Err(Error::NoSuchConnection(id));
        };
        let _in_conn = ns.span.clone().entered();
        let mut relay = Relay::new(&mut svc.out, &mut net.out);
        relay.traffic = ns.counter.as_deref_mut();
        let result = guarded(|| f(t.as_mut(), &mut relay));
        let finished = relay.finished.take();
        match (result, finished) {
            (Err(e), _) => {
                // The pair's DISCONNECTION carries the error; the caller gets
                // its text (Error is not Clone).
                let text = match &e {
                    Error::Transport(t) => t.clone(),
                    other => Chain(other).to_string(),
                };
                self.fail_pair(id, e);
                Err(Error::Transport(text))
            }
            (Ok(r), Some(reason)) => {
                self.finish_pair(id, peer, reason);
                Ok(r)
            }
            (Ok(r), None) => {
                self.mark_dirty(id);
                self.mark_dirty(peer);
                Ok(r)
            }
        }
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
        s.hooks = Some(Box::new((hooks, Decoder::new(max.max(u32::MAX as usize)))));
        // Callbacks written for the original expect blocking descriptors.
        let fd = self.live(id)?.io.fd();
        set_nonblocking_to(fd, false)
    }

    /// One read from a switched connection, passed through the transport to its peer.
    pub(super) fn read_switched(&mut self, id: ConnId) {
        let pause_at = self.config.pause_at();
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let raw = c.io.fd().as_raw_fd();
        let max = self.config.max_message_size;
        let Some(s) = c.switched() else { return };
        let (peer, is_network) = (s.peer, s.transport.is_some());
        let mut hooked = false;
        let got = if let Some((hooks, _)) = s.hooks.as_deref_mut() {
            // The application reads; level-triggered through `recheck`. Into
            // one buffer per context, allocated (and zeroed) once.
            let room = max + crate::frame::HEADER_LEN;
            if self.hook_buf.len() < room {
                self.hook_buf = vec![0; room];
            }
            let (status, n) = hooks.read(raw, &mut self.hook_buf[..room]);
            c.readable = false;
            c.last_active = self.now;
            self.recheck.push(id);
            match status {
                HookStatus::Done => {
                    hooked = true;
                    Chunk::Data(n.min(room))
                }
                HookStatus::Ignore => Chunk::Blocked,
                HookStatus::Closing => Chunk::Eof,
                HookStatus::Error => Chunk::Failed(io::Error::other("switch read callback failed")),
            }
        } else {
            self.read_chunk(id)
        };
        let n = match got {
            Chunk::Data(n) => n,
            Chunk::Blocked => return,
            Chunk::Eof if is_network => return self.network_eof(id, peer),
            Chunk::Eof => {
                // A service that closes deliberately is a clean end; one whose
                // process is exiting (killed, crashed) vanished.
                let vanished = self
                    .conns
                    .get(id)
                    .is_some_and(|c| peer_process_exiting(c.io.fd()));
                return self.service_end(id, peer, !vanished, None);
            }
            Chunk::Failed(e) => return self.fail_pair(id, e.into()),
        };
        let Some((me, other)) = self.conns.get2_mut(id, peer) else {
            return self.disconnect(id, None);
        };
        let (Role::Switched(ms), Role::Switched(os)) = (&mut me.role, &mut other.role) else {
            return;
        };
        let data = if hooked {
            &self.hook_buf[..n]
        } else {
            &self.scratch[..n]
        };
        // Written straight to a socket unless the application's hooks write it.
        let me_fd = ms.hooks.is_none().then(|| me.io.fd());
        let other_fd = os.hooks.is_none().then(|| other.io.fd());
        let mut answered = 0;
        let (result, failed, finished, ended) = if let Some(t) = ms.transport.as_mut() {
            // Network side: unwrap for the service (peer).
            let _in_conn = ms.span.enter();
            let mut relay = Relay::new(&mut other.out, &mut me.out);
            (relay.service_fd, relay.network_fd) = (other_fd, me_fd);
            relay.traffic = ms.counter.as_deref_mut();
            let r = guarded(|| t.on_network_data(data, &mut relay));
            answered = relay.answered;
            (r, relay.failed, relay.finished, relay.ended)
        } else if let Some(t) = os.transport.as_mut() {
            // Service side: wrap for the network (peer).
            if let Some(c) = os.counter.as_deref_mut() {
                c.count_out(data);
            }
            let mut relay = Relay::new(&mut me.out, &mut other.out);
            (relay.service_fd, relay.network_fd) = (me_fd, other_fd);
            let r = guarded(|| t.on_service_data(data, &mut relay));
            (r, relay.failed, relay.finished, false)
        } else {
            (Ok(()), None, None, false)
        };
        // Traffic on a pair is activity for both sides (idle timeouts).
        other.last_active = self.now;
        let result = match failed {
            Some(e) => result.and(Err(e.into())),
            None => result,
        };
        if other.out.len() >= pause_at {
            me.paused = true;
        }
        // What reading a peer made us answer it (pongs, TLS alerts) waits
        // for it to read, as data does: a peer that keeps sending without
        // reading stops being read. Not one whose input made no answer: that
        // is data for the service, read whatever waits for the peer (or a
        // client that uploads before it reads its download would deadlock).
        if answered > 0 && me.out.len() >= pause_at {
            me.paused = true;
            ms.answers_unread = true;
        }
        let me_dirty = !me.out.is_empty();
        if self.config.switch_events {
            self.pending.push_back(Event::SwitchRx { id });
        }
        if let Err(e) = result {
            tracing::warn!(conn = %id, error = %Chain(&e), "relay refused data; closing the pair");
            return self.fail_pair(id, e);
        }
        if let Some(reason) = finished {
            let (net, svc) = if is_network { (id, peer) } else { (peer, id) };
            return self.finish_pair(net, svc, reason);
        }
        self.flush(peer);
        if me_dirty {
            self.mark_dirty(id);
        }
        if ended {
            self.network_eof(id, peer);
        }
    }

    /// The network side `id` of a pair sent EOF: the service gets everything
    /// already accepted, then EOF; its replies still flow back until it closes.
    pub(super) fn network_eof(&mut self, id: ConnId, peer: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.readable = false;
        let Some(s) = c.switched() else { return };
        if std::mem::replace(&mut s.read_eof, true) {
            // Ended already (a TLS close_notify, then the TCP FIN).
            return;
        }
        if let Some(Err(e)) = s.transport.as_mut().map(|t| guarded(|| t.network_closed())) {
            tracing::info!(conn = %id, error = %Chain(&e), "network peer closed uncleanly");
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
                let mut relay = Relay::new(&mut me.out, &mut other.out);
                let _ = guarded(|| {
                    t.service_closed(&mut relay, clean);
                    Ok(())
                });
            }
            os.after_flush = AfterFlush::Close;
            // Nobody is left to deliver the network peer's data to.
            other.paused = true;
        }
        self.disconnect(id, reason);
        self.flush_or_finish(peer);
    }

    /// Flushes `id`, and if its queue is already empty, applies its after-flush step.
    pub(super) fn flush_or_finish(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if !c.out.is_empty() {
            return self.flush(id);
        }
        match &mut c.role {
            Role::Switched(s) => {
                let after = s.after_flush;
                self.after_flush(id, after);
            }
            Role::Pending(p) if p.sending => self.give_more(id),
            Role::Pending(p) if p.closing.is_some() => self.linger(id),
            _ => {}
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
            AfterFlush::Close => match c.switched() {
                // The network side, while its peer may still be sending:
                // a lingering close, so that what it sends does not reset
                // the connection and destroy our last words.
                Some(s) if s.transport.is_some() && !s.read_eof => self.linger(id),
                s => {
                    let reason = s.and_then(|s| s.end_reason.take()).map(|e| *e);
                    self.disconnect(id, reason)
                }
            },
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
                let mut relay = Relay::new(&mut svc.out, &mut net.out);
                // Maybe the transport that just panicked: guarded again.
                let _ = guarded(|| {
                    t.service_closed(&mut relay, false);
                    Ok(())
                });
            }
            let _ = net.out.flush(net.io.fd());
        }
        let text = Chain(&error).to_string();
        self.disconnect(id, Some(error));
        self.disconnect(
            peer,
            Some(Error::Transport(format!("switched peer failed: {text}"))),
        );
    }
}

/// True when the process at the other end of unix socket `fd` (as it was when it
/// connected) is exiting or gone: its EOF was not a deliberate close. Linux
/// marks a task exiting (PF_EXITING in /proc/PID/stat) before it closes its
/// descriptors, so the answer is already right when its EOF arrives.
fn peer_process_exiting(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(cred) = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
    else {
        return false;
    };
    let pid = cred.pid();
    if pid <= 0 {
        // Another PID namespace: unknown, so not a crash.
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // No such process any more (or no /proc: ask the kernel directly).
        return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
    };
    // "PID (COMM) STATE PPID PGRP SESSION TTY TPGID FLAGS ...": COMM may hold
    // spaces and parentheses, so count fields after its last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().unwrap_or("");
    let flags = fields
        .nth(5)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

/// Hands each whole frame in `bytes` to the write hook.
pub(super) fn write_with_hooks(
    s: &mut Switched,
    raw: RawFd,
    bytes: &[u8],
) -> io::Result<crate::queue::Flushed> {
    let Some((hooks, decoder)) = s.hooks.as_deref_mut() else {
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

/// Runs a transport's handling of input: a panic in it (a bug meeting input
/// nobody thought of) becomes an error that closes that one connection, at
/// once and with its reason logged, instead of unwinding through the event
/// loop and leaving the client behind.
pub(super) fn guarded<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %what, "BUG: a transport panicked; closing its connection");
        Err(Error::Transport(format!("internal error (a bug): {what}")))
    })
}

#[cfg(test)]
mod tests {
    //! What an idle connection keeps after traffic: no buffer of any kind.

    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use super::Role;
    use crate::event::ConnId;
    use crate::switch::Frames;
    use crate::{Context, frame};

    /// Runs `ctx` (whose timer wakes it) until `done`, failing after 20 s.
    fn run_until(ctx: &mut Context, what: &str, mut done: impl FnMut(&Context) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(ctx) {
            assert!(Instant::now() < deadline, "{what}: not within 20 s");
            ctx.wait_event().unwrap();
        }
    }

    fn assert_holds_nothing(ctx: &Context, ids: &[ConnId]) {
        for &id in ids {
            let c = ctx.conns.get(id).expect("still open");
            assert!(
                c.out.holds_nothing(),
                "{id}: its send queue keeps an allocation"
            );
            assert!(
                c.decoder.holds_nothing(),
                "{id}: its decoder keeps a buffer"
            );
            if let Role::Switched(s) = &c.role {
                assert!(s.end_reason.is_none(), "{id}: ended");
            }
        }
    }

    #[test]
    fn an_idle_switched_pair_holds_no_buffers() {
        let (net_mine, mut net_peer) = UnixStream::pair().unwrap();
        let (svc_mine, mut svc_peer) = UnixStream::pair().unwrap();
        let mut ctx = Context::new().unwrap();
        ctx.set_timer(Some(Duration::from_millis(10)));
        let net = ctx.add_stream(net_mine.into()).unwrap();
        let svc = ctx.add_stream(svc_mine.into()).unwrap();
        let big = vec![7u8; 3 << 20];
        let mut sent = Vec::new();
        frame::encode(&big, &mut sent).unwrap();
        frame::encode(b"small", &mut sent).unwrap();
        // Half a header before the switch: the decoder holds it, then the
        // pair takes it over.
        net_peer.write_all(&sent[..2]).unwrap();
        run_until(&mut ctx, "the half header read", |ctx| {
            ctx.conns.get(net).is_some_and(|c| c.decoder.pending() == 2)
        });
        ctx.add_switch(net, svc, Box::new(Frames::new(4 << 20)))
            .unwrap();
        // More than the sockets' buffers hold, both ways: queued, then written.
        let rest = sent[2..].to_vec();
        let len = sent.len();
        let client = std::thread::spawn(move || {
            net_peer.write_all(&rest).unwrap();
            let mut back = vec![0; len];
            net_peer.read_exact(&mut back).unwrap();
            assert_eq!(back, sent);
            net_peer
        });
        let echo = std::thread::spawn(move || {
            let mut got = vec![0; len];
            svc_peer.read_exact(&mut got).unwrap();
            svc_peer.write_all(&got).unwrap();
            svc_peer
        });
        run_until(&mut ctx, "the echo", |_| client.is_finished());
        let _peers = (client.join().unwrap(), echo.join().unwrap());
        // One more turn: what was written is accounted for.
        ctx.wait_event().unwrap();
        assert_holds_nothing(&ctx, &[net, svc]);
    }

    #[test]
    fn an_idle_client_holds_no_buffers() {
        let (mine, mut peer) = UnixStream::pair().unwrap();
        let mut ctx = Context::new().unwrap();
        ctx.set_timer(Some(Duration::from_millis(10)));
        let id = ctx.add_stream(mine.into()).unwrap();
        let mut sent = Vec::new();
        frame::encode(&vec![1u8; 1 << 20], &mut sent).unwrap();
        // A frame cut in two reads: assembled in the decoder, then released.
        peer.write_all(&sent[..100]).unwrap();
        run_until(&mut ctx, "the first part read", |ctx| {
            ctx.conns
                .get(id)
                .is_some_and(|c| c.decoder.pending() == 100)
        });
        let rest = sent[100..].to_vec();
        let client = std::thread::spawn(move || {
            peer.write_all(&rest).unwrap();
            let mut back = vec![0; sent.len()];
            peer.read_exact(&mut back).unwrap();
            assert_eq!(back, sent);
            peer
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client.is_finished() {
            assert!(Instant::now() < deadline, "the echo: not within 20 s");
            if let crate::Event::Message { id, payload } = ctx.wait_event().unwrap() {
                ctx.schedule_vec(id, payload).unwrap();
            }
        }
        let _peer = client.join().unwrap();
        assert_holds_nothing(&ctx, &[id]);
    }
}
