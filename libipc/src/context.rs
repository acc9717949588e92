//! The event loop: one [`Context`] owns a `mio::Poll`, the connections and their buffers.
//!
//! Readiness is edge-triggered (epoll, kqueue). A connection remembers that it is
//! readable until a read comes back short or `WouldBlock`, and one read per
//! connection per round keeps the loop fair; a connection with more to read goes
//! back on a ready list. Outgoing messages are queued by `schedule` and written at
//! the start of the next `wait_event`, all queued messages of a connection in one
//! vectored `sendmsg`. Work per event is O(1) in the number of connections.
//!
//! Idle connections hold no read buffer: reads go into one scratch buffer per
//! context, and only the bytes of an unfinished frame are kept per connection.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::poll::PollFlags;

use crate::error::{Error, Result};
use crate::event::{ConnId, Event};
use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::network::{self, Route};
use crate::service::{self, ServiceListener};
use crate::slab::Slab;

mod conn;
mod pending;
mod readwrite;
mod relay;
mod timers;

pub(crate) use conn::wait_fd;
pub use conn::write_frame;
use conn::{Conn, Io, Role, read_fd, set_nonblocking};

/// Limits of a context. All have safe defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload accepted from a peer (default 1 MiB). A peer announcing more
    /// is disconnected with [`Error::MessageTooLarge`]; other connections carry on.
    pub max_message_size: usize,
    /// Outgoing bytes queued for one connection past which `schedule` refuses with
    /// [`Error::Backpressure`] (default 1 MiB). Half of it stops reading from the
    /// connection (or, for a switched pair, from the side feeding it).
    pub high_water: usize,
    /// Reading resumes when the queue falls below this (default 128 KiB).
    pub low_water: usize,
    /// Bytes read from one connection per round, and the size of the context's one
    /// read buffer (default 256 KiB).
    pub read_chunk: usize,
    /// How long `connect_service` waits for a protocol daemon's answer (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            high_water: 1 << 20,
            low_water: 128 << 10,
            read_chunk: 256 << 10,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::high_water`] and [`Config::low_water`].
    pub fn water_marks(mut self, high: usize, low: usize) -> Self {
        self.high_water = high.max(1);
        self.low_water = low.min(self.high_water / 2);
        self
    }

    fn pause_at(&self) -> usize {
        self.high_water / 2
    }
}

/// What one read from a connection gave.
#[derive(Debug)]
enum Chunk {
    /// This many bytes, at the start of the scratch buffer.
    Data(usize),
    /// End of stream.
    Eof,
    /// Nothing now (or the connection is gone).
    Blocked,
    /// The read failed.
    Failed(io::Error),
}

/// Which transport hook opens a switched pair.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// `add_switch`: the transport may speak first.
    Opening,
    /// After a service request: the transport answers the client.
    Accepted,
}

/// A LibIPC context: services, connections, and the loop that waits on them.
///
/// Not thread-safe by design (like the original): run one context per thread.
#[derive(Debug)]
pub struct Context {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    by_fd: HashMap<RawFd, ConnId>,
    pending: VecDeque<Event>,
    ready: VecDeque<ConnId>,
    dirty: Vec<ConnId>,
    /// Externals reported readable, and hooked switched connections after a read:
    /// checked again before blocking (level-triggered, as the original's poll).
    recheck: Vec<ConnId>,
    /// The connection whose DISCONNECTION was delivered last, and its former
    /// descriptor number: `fd()` still answers for it until the next call.
    last_gone: Option<(ConnId, RawFd, Option<crate::traffic::Traffic>)>,
    /// Connection deadlines, earliest first; entries are checked against the
    /// connection when they come due, so moving a deadline costs nothing.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Listeners that hit the descriptor limit (and externals the application
    /// said it could not serve), retried after a pause.
    accept_retry: Option<(Instant, Vec<ConnId>)>,
    scratch: Vec<u8>,
    /// The connection of the last event returned.
    last_delivered: Option<ConnId>,
    /// Time of the last poll: when bytes move, connections take it as `last_active`.
    now: Instant,
    timer: Option<Duration>,
    rundir: PathBuf,
    /// Refused clients in a lingering close.
    lingering: usize,
    /// Routes overriding `IPC_NETWORK`.
    network: Option<String>,
    config: Config,
}

impl Context {
    /// A context with default limits, using `$RUNDIR` (default `/tmp/.libipc-run`).
    pub fn new() -> Result<Self> {
        Self::with_config(Config::default())
    }

    /// A context with the given limits.
    pub fn with_config(config: Config) -> Result<Self> {
        Ok(Context {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Slab::default(),
            by_fd: HashMap::new(),
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            dirty: Vec::new(),
            recheck: Vec::new(),
            last_gone: None,
            lingering: 0,
            timers: BinaryHeap::new(),
            accept_retry: None,
            scratch: Vec::new(),
            now: Instant::now(),
            last_delivered: None,
            timer: None,
            rundir: service::rundir_from_env(),
            network: None,
            config,
        })
    }

    /// The run directory where services are created and looked up.
    pub fn rundir(&self) -> &Path {
        &self.rundir
    }

    /// Uses another run directory (instead of `$RUNDIR`).
    pub fn set_rundir(&mut self, dir: impl Into<PathBuf>) {
        self.rundir = dir.into();
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sets the timer. As in the original, it is an inactivity timeout restarted by
    /// every call to [`Context::wait_event`]: if nothing happens for `timer`, the
    /// call returns [`Event::Timer`]. `None` waits forever; a zero timer makes
    /// `wait_event` return `Timer` whenever nothing is ready right now.
    pub fn set_timer(&mut self, timer: Option<Duration>) {
        self.timer = timer;
    }

    /// Number of open connections (listeners and externals included).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when the context has no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file descriptor of connection `id`.
    ///
    /// For the connection named by the DISCONNECTION just returned, this is the
    /// number its (now closed) descriptor had, until the next `wait_event`.
    pub fn fd(&self, id: ConnId) -> Option<RawFd> {
        match self.last_gone {
            Some((gone, fd, _)) if gone == id => Some(fd),
            _ => self.conns.get(id).map(|c| c.io.fd().as_raw_fd()),
        }
    }

    /// The connection using file descriptor `fd`.
    pub fn id_of_fd(&self, fd: RawFd) -> Option<ConnId> {
        self.by_fd.get(&fd).copied()
    }

    /// Bytes queued for connection `id` and not yet written.
    pub fn queued(&self, id: ConnId) -> Result<usize> {
        Ok(self.live(id)?.out.len())
    }

    fn live(&self, id: ConnId) -> Result<&Conn> {
        self.conns
            .get(id)
            .filter(|c| !c.dead && !c.closing)
            .ok_or(Error::NoSuchConnection(id))
    }

    fn live_mut(&mut self, id: ConnId) -> Result<&mut Conn> {
        self.conns
            .get_mut(id)
            .filter(|c| !c.dead && !c.closing)
            .ok_or(Error::NoSuchConnection(id))
    }

    fn insert(&mut self, io: Io, role: Role, interest: Interest) -> Result<ConnId> {
        let raw = io.fd().as_raw_fd();
        let id = self
            .conns
            .insert(Conn::new(io, role, self.config.max_message_size));
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&raw), Token(id.slot()), interest)
        {
            self.conns.remove(id);
            return Err(e.into());
        }
        self.by_fd.insert(raw, id);
        Ok(id)
    }

    /// Creates service `name`: `$RUNDIR/name`, mode 0660, locked against a second
    /// instance. Clients connecting to it produce [`Event::Connection`].
    pub fn service_init(&mut self, name: &str) -> Result<ConnId> {
        let listener = ServiceListener::bind(&self.rundir, name.as_bytes())?;
        tracing::debug!(path = %listener.path().display(), "service listening");
        self.insert(Io::Listener(listener), Role::Listener, Interest::READABLE)
    }

    /// Creates a protocol daemon's outbound service `name`:
    /// `$RUNDIR/.outbound/name` ([`service::OUTBOUND_DIR`]), where `IPC_NETWORK`
    /// clients find it and no network client of a daemon can name it. Otherwise
    /// as [`Context::service_init`].
    pub fn outbound_service_init(&mut self, name: &str) -> Result<ConnId> {
        let listener = ServiceListener::bind_outbound(&self.rundir, name.as_bytes())?;
        tracing::debug!(path = %listener.path().display(), "outbound service listening");
        self.insert(Io::Listener(listener), Role::Listener, Interest::READABLE)
    }

    /// Connects to service `name` and adds the connection.
    ///
    /// If `IPC_NETWORK` (or [`Context::set_network`]) routes `name` elsewhere, the
    /// connection goes there: to another local service, or through a protocol
    /// daemon to a remote one (see [`crate::network`]); this blocks until the daemon
    /// answers, at most [`Config::connect_timeout`]. Otherwise it connects to
    /// `$RUNDIR/name`.
    pub fn connect_service(&mut self, name: &str) -> Result<ConnId> {
        let network = match &self.network {
            Some(n) => n.clone(),
            None => std::env::var(network::IPC_NETWORK).unwrap_or_default(),
        };
        let stream = match network::route(&network, name)? {
            Route::Local(local) => service::connect(&self.rundir, local.as_bytes())?,
            Route::Daemon { daemon, uri } => {
                let stream = service::connect_outbound(&self.rundir, daemon.as_bytes())?;
                network::ask_daemon(stream, daemon, uri, self.config.connect_timeout)?
            }
        };
        self.add_stream(stream.into())
    }

    /// Uses `routes` (the `IPC_NETWORK` syntax) instead of the environment variable.
    pub fn set_network(&mut self, routes: Option<String>) {
        self.network = routes;
    }

    /// Adds an already connected stream speaking LibIPC frames (a unix or TCP socket).
    /// It is made non-blocking.
    pub fn add_stream(&mut self, fd: OwnedFd) -> Result<ConnId> {
        set_nonblocking(fd.as_fd())?;
        self.insert(Io::Stream(fd), Role::Ipc, Interest::READABLE)
    }

    /// Watches a foreign descriptor: [`Event::External`] is reported while it is
    /// readable; the application does its I/O. The context owns the descriptor
    /// (closing the connection closes it) but leaves its blocking mode alone.
    pub fn add_external(&mut self, fd: OwnedFd) -> Result<ConnId> {
        self.insert(Io::Stream(fd), Role::External, Interest::READABLE)
    }

    /// Queues `payload` for connection `id`; it is written by the next
    /// [`Context::wait_event`], after everything queued before it.
    ///
    /// Fails with [`Error::Backpressure`] (nothing queued) when the connection
    /// already has [`Config::high_water`] bytes waiting, with
    /// [`Error::MessageTooLarge`] above 4 GiB, or [`Error::NoSuchConnection`].
    pub fn schedule(&mut self, id: ConnId, payload: &[u8]) -> Result<()> {
        self.check_schedule(id, payload.len())?
            .out
            .push_message(payload);
        self.mark_dirty(id);
        Ok(())
    }

    /// Like [`Context::schedule`], taking ownership to avoid copying large payloads.
    pub fn schedule_vec(&mut self, id: ConnId, payload: Vec<u8>) -> Result<()> {
        self.check_schedule(id, payload.len())?
            .out
            .push_message_vec(payload);
        self.mark_dirty(id);
        Ok(())
    }

    fn check_schedule(&mut self, id: ConnId, len: usize) -> Result<&mut Conn> {
        crate::frame::header(len)?;
        let high = self.config.high_water;
        // A connection whose DISCONNECTION is not delivered yet still takes replies
        // to its last messages; they are written, as far as the socket takes them,
        // when that event is delivered.
        let c = self
            .conns
            .get_mut(id)
            .filter(|c| !c.closing)
            .ok_or(Error::NoSuchConnection(id))?;
        match c.role {
            Role::Ipc | Role::External => {}
            _ => {
                return Err(Error::WrongKind {
                    id,
                    what: "messages can only be sent on plain connections",
                });
            }
        }
        if c.out.len() >= high {
            return Err(Error::Backpressure {
                id,
                queued: c.out.len(),
            });
        }
        Ok(c)
    }

    /// Sends `payload` now, blocking until it (and everything queued before it) is
    /// written. Fails if the peer is gone (never raises SIGPIPE).
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

    /// Closes connection `id` now: queued messages are dropped, a service socket file
    /// is removed. No DISCONNECTION event is reported for it. A switched peer is
    /// closed after its queue is written.
    pub fn close(&mut self, id: ConnId) -> Result<()> {
        let conn = self.conns.get(id).ok_or(Error::NoSuchConnection(id))?;
        if let Role::Switched(s) = &conn.role {
            // Half a pair cannot go on alone.
            if s.transport.is_some() {
                self.disconnect(s.peer, None);
            } else {
                let peer = s.peer;
                self.service_end(id, peer, false, None);
            }
        }
        self.pending.retain(|e| e.id() != Some(id));
        self.remove(id);
        Ok(())
    }

    /// Closes plain connection `id` once what is queued for it is written,
    /// or after `within` if its peer does not read that long: a last answer
    /// (a refusal) that a peer which never reads cannot make the loop wait
    /// for. Nothing more is read from it, and, as after [`Context::close`],
    /// no event is reported for it and its id is no longer valid.
    pub fn close_after_flush(&mut self, id: ConnId, within: Duration) -> Result<()> {
        let c = self.live_mut(id)?;
        if !matches!(c.role, Role::Ipc | Role::External) {
            return Err(Error::WrongKind {
                id,
                what: "only a plain connection closes after its queue",
            });
        }
        c.closing = true;
        c.paused = true;
        c.idle = None;
        c.deadline = Some(Instant::now() + within);
        self.pending.retain(|e| e.id() != Some(id));
        self.arm(id);
        // Most last words fit in the socket at once: written now, they do
        // not wait for the next round (nor outlive a loop that is ending).
        self.flush(id);
        Ok(())
    }

    /// Closes every connection (service sockets are removed).
    pub fn close_all(&mut self) {
        for id in self.conns.ids() {
            self.remove(id);
        }
        self.pending.clear();
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.remove(id) {
            if conn.lingering {
                self.lingering -= 1;
            }
            let raw = conn.io.fd().as_raw_fd();
            if !conn.dead {
                let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            }
            self.by_fd.remove(&raw);
        }
    }

    fn mark_ready(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id)
            && !c.in_ready
        {
            c.in_ready = true;
            self.ready.push_back(id);
        }
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id)
            && !c.in_dirty
        {
            c.in_dirty = true;
            self.dirty.push(id);
        }
    }

    /// Waits for the next event.
    ///
    /// Writes what was scheduled, then returns events one by one. Fails only if the
    /// poller itself fails; everything about one connection is reported as an event.
    pub fn wait_event(&mut self) -> Result<Event> {
        // The clock is read here and after each poll; in between, `self.now`
        // is older only by the time spent handling events.
        self.now = Instant::now();
        let deadline = self.timer.map(|t| self.now + t);
        self.last_gone = None;
        loop {
            // Write a connection's replies as soon as the application moves on to
            // another connection's events: its socket is still warm in the cache,
            // and all the replies to one read still leave in one write.
            if !self.dirty.is_empty()
                && self.pending.front().and_then(Event::id) != self.last_delivered
            {
                self.flush_dirty();
            }
            if let Some(ev) = self.next_pending() {
                self.last_delivered = ev.id();
                return Ok(ev);
            }
            self.flush_dirty();
            self.recheck_externals();
            if !self.pending.is_empty() {
                continue;
            }
            if self.pending.capacity() > 1024 {
                // A burst grew it; do not keep that memory while idle.
                self.pending.shrink_to(64);
            }
            let now = self.now;
            let mut timeout = deadline.map(|d| d.saturating_duration_since(now));
            if !self.ready.is_empty() {
                timeout = Some(Duration::ZERO);
            } else if timeout == Some(Duration::ZERO) {
                return Ok(Event::Timer);
            } else if !self.dirty.is_empty() {
                // An answer's next part (`give_more`), due next turn: not
                // a wait, but no reason to hold up the timer either.
                timeout = Some(Duration::ZERO);
            }
            let retry_at = self.accept_retry.as_ref().map(|(at, _)| *at);
            let timer_at = self.timers.peek().map(|Reverse((at, _))| *at);
            for at in [retry_at, timer_at].into_iter().flatten() {
                let wait = at.saturating_duration_since(now);
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in self.events.iter() {
                let Some(id) = self.conns.id_at(ev.token().0) else {
                    continue;
                };
                let Some(c) = self.conns.get_mut(id) else {
                    continue;
                };
                if c.dead {
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.readable = true;
                    c.hup |= ev.is_read_closed() || ev.is_error();
                    if !c.in_ready {
                        c.in_ready = true;
                        self.ready.push_back(id);
                    }
                }
                if (ev.is_writable() || ev.is_write_closed() || ev.is_error()) && !c.in_dirty {
                    c.in_dirty = true;
                    self.dirty.push(id);
                }
            }
            let now = Instant::now();
            self.now = now;
            self.expire_timers(now);
            self.retry_accepts();
            self.run_ready();
            if self.pending.is_empty()
                && self.ready.is_empty()
                && self.dirty.is_empty()
                && deadline.is_some_and(|d| now >= d)
            {
                return Ok(Event::Timer);
            }
        }
    }

    fn next_pending(&mut self) -> Option<Event> {
        let ev = self.pending.pop_front()?;
        if let Event::Disconnection { id, .. } = &ev {
            // The connection stayed so that replies to its last messages could be
            // written; now its id goes away (its descriptor number stays readable
            // through `fd()` until the next call).
            if let Some(c) = self.conns.get_mut(*id) {
                let _ = c.out.flush(c.io.fd());
                let traffic = match &c.role {
                    Role::Switched(s) => s.counter.as_ref().map(|c| c.traffic),
                    _ => None,
                };
                self.last_gone = Some((*id, c.io.fd().as_raw_fd(), traffic));
                self.remove(*id);
            }
        }
        Some(ev)
    }

    fn run_ready(&mut self) {
        // Only what is ready now: connections re-queued below wait for the next round.
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            c.in_ready = false;
            if c.dead || !c.readable || c.paused {
                continue;
            }
            if c.lingering {
                self.read_lingering(id);
                continue;
            }
            match c.role {
                Role::Listener => self.accept(id),
                Role::Ipc => self.read_ipc(id),
                Role::External => {
                    c.readable = false;
                    self.recheck.push(id);
                    self.pending.push_back(Event::External { id });
                }
                Role::Switched(_) => self.read_switched(id),
                Role::Pending(_) => self.read_pending(id),
            }
        }
    }
}
