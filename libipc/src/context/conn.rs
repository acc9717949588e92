//! One connection of a context: its descriptor, its role, its buffers and flags,
//! and the small non-blocking I/O helpers the loop uses.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::Result;
use crate::event::ConnId;
use crate::frame::Decoder;
use crate::queue::OutQueue;
use crate::service::ServiceListener;
use crate::switch::{SwitchHooks, Transport};

#[derive(Debug)]
pub(super) enum Io {
    /// Boxed: a context has few listeners and may have thousands of streams.
    Listener(Box<ServiceListener>),
    /// A service's handoff endpoint (see [`crate::handoff`]).
    Handoff(std::os::unix::net::UnixListener),
    Stream(OwnedFd),
}

impl Io {
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Io::Listener(l) => l.listener().as_fd(),
            Io::Handoff(l) => l.as_fd(),
            Io::Stream(fd) => fd.as_fd(),
        }
    }
}

#[derive(Debug)]
pub(super) enum Role {
    Listener,
    Ipc,
    External,
    Switched(Box<Switched>),
    /// A network connection whose service is not attached yet.
    Pending(Box<Pending>),
    /// Service `service`'s handoff endpoint.
    HandoffListener {
        service: ConnId,
    },
    /// A daemon handing service `service` a client (its frame so far).
    Handoff(Box<HandoffRx>),
}

#[derive(Debug)]
pub(super) struct HandoffRx {
    pub(super) service: ConnId,
    pub(super) got: Vec<u8>,
    pub(super) fds: Vec<OwnedFd>,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) transport: Box<dyn Transport>,
    /// What the transport already has for the service, delivered once attached.
    pub(super) to_service: OutQueue,
    /// Refused or broken: close once the answer is written, with this reason.
    pub(super) closing: Option<Option<crate::Error>>,
    /// Entered around the transport's calls (the daemon's span for the client).
    pub(super) span: tracing::Span,
    /// The service this client goes to whatever it says (fixed mode): asked
    /// for as soon as the transport's own handshake is done.
    pub(super) fixed: Option<Vec<u8>>,
    /// The client already ended its side inside the transport's protocol (a
    /// TLS close_notify with its last data): the service gets EOF once
    /// attached.
    pub(super) ended: bool,
    /// The transport's answer is not all given yet ([`crate::switch::Relay::more_to_send`]):
    /// the rest is asked for as the client reads it.
    pub(super) sending: bool,
}

impl Pending {
    /// The fixed service, once the transport's handshake no longer stands in
    /// the way (taken: it is asked for once).
    pub(super) fn fixed_request(&mut self) -> Option<Vec<u8>> {
        if self.closing.is_none() && self.transport.handshake_phase().is_none() {
            self.fixed.take()
        } else {
            None
        }
    }
}

#[derive(Debug)]
pub(super) struct Switched {
    pub(super) peer: ConnId,
    /// Present on the network side of the pair.
    pub(super) transport: Option<Box<dyn Transport>>,
    /// This side sent EOF.
    pub(super) read_eof: bool,
    /// Once the queue is written: shut down our writing side, or close.
    pub(super) after_flush: AfterFlush,
    /// Why the pair ended, reported when `after_flush` closes it (boxed: a
    /// pair that has not ended, which is most, keeps one pointer for it).
    pub(super) end_reason: Option<Box<crate::Error>>,
    /// What crossed the pair (kept on the network side).
    pub(super) counter: Option<Box<crate::traffic::Counter>>,
    /// Entered around the transport's calls (network side).
    pub(super) span: tracing::Span,
    /// Application-driven reads and writes (C callbacks), with the decoder that
    /// cuts outgoing bytes into the whole frames the write hook expects.
    pub(super) hooks: Option<Box<(Box<dyn SwitchHooks>, Decoder)>>,
    /// Network side held for a goodbye (`DaemonExt::hold_for_goodbye`): not
    /// read, whatever the backpressure says, until the goodbye is sent.
    pub(super) held: bool,
    /// Network side not read because what reading it made the transport
    /// answer (pongs, TLS alerts) waits unread by the peer: read again once
    /// the peer has read that (below the low-water mark).
    pub(super) answers_unread: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFlush {
    Nothing,
    ShutdownWrite,
    Close,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) io: Io,
    pub(super) role: Role,
    pub(super) out: OutQueue,
    pub(super) decoder: Decoder,
    pub(super) readable: bool,
    /// The peer's EOF (or an error) is already known: read until it shows, even
    /// after a short read.
    pub(super) hup: bool,
    pub(super) want_write: bool,
    pub(super) paused: bool,
    pub(super) in_ready: bool,
    pub(super) in_dirty: bool,
    pub(super) dead: bool,
    /// Absolute deadline (e.g. a handshake timeout).
    pub(super) deadline: Option<Instant>,
    /// Idle timeout, counted from `last_active`.
    pub(super) idle: Option<Duration>,
    /// Last time bytes moved on this connection.
    pub(super) last_active: Instant,
    /// A network client whose last answer is written and our side shut down:
    /// what it still sends is read and dropped until it closes (a lingering
    /// close, see `Context::linger`).
    pub(super) lingering: bool,
    /// Let go by the application (`Context::close_after_flush`): removed,
    /// with no event, once its queue is written or its deadline passes.
    pub(super) closing: bool,
    /// A client of one of the context's services (accepted by its listener):
    /// only such a connection stops being read while replies to it pile up.
    pub(super) client: bool,
}

impl Conn {
    pub(super) fn new(io: Io, role: Role, max: usize) -> Self {
        Conn {
            io,
            role,
            out: OutQueue::default(),
            decoder: Decoder::new(max),
            readable: false,
            hup: false,
            want_write: false,
            paused: false,
            in_ready: false,
            in_dirty: false,
            dead: false,
            deadline: None,
            idle: None,
            last_active: Instant::now(),
            lingering: false,
            closing: false,
            client: false,
        }
    }

    /// When this connection's timeout expires, if it has one.
    pub(super) fn expiry(&self) -> Option<Instant> {
        let idle = self.idle.map(|d| self.last_active + d);
        match (self.deadline, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A network client being answered without a service (a refusal, an HTTP
    /// answer), before its lingering close.
    pub(super) fn answering(&self) -> bool {
        !self.lingering
            && matches!(&self.role, Role::Pending(p) if p.sending || p.closing.is_some())
    }

    pub(super) fn switched(&mut self) -> Option<&mut Switched> {
        match &mut self.role {
            Role::Switched(s) => Some(s),
            _ => None,
        }
    }
}

pub(super) fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    set_nonblocking_to(fd, true)
}

pub(super) fn set_nonblocking_to(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    if flags.contains(OFlag::O_NONBLOCK) != on {
        fcntl(fd, FcntlArg::F_SETFL(flags ^ OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

pub(super) fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Blocks until `fd` is ready for `flags` (or `timeout` passes).
/// Writes one LibIPC frame holding `payload` to `fd`, a stream socket outside
/// any context (blocking or not: this waits while it is full). Fails if the
/// payload is over 4 GiB or the peer is gone (never SIGPIPE).
pub fn write_frame(fd: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    crate::frame::header(payload.len()).map_err(io::Error::other)?;
    let mut q = crate::queue::OutQueue::default();
    q.push_message(payload);
    while !q.flush(fd)?.drained {
        wait_fd(fd, PollFlags::POLLOUT, None)?;
    }
    Ok(())
}

pub(super) fn wait_fd(
    fd: BorrowedFd<'_>,
    flags: PollFlags,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
    };
    loop {
        match nix::poll::poll(&mut [PollFd::new(fd, flags)], t) {
            Err(Errno::EINTR) => continue,
            Ok(n) => return Ok(n > 0),
            Err(e) => return Err(e.into()),
        }
    }
}
