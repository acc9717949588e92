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

use crate::error::{Error, Result};
use crate::event::{ConnId, Event};
use crate::service;
use crate::slab::Slab;

mod config;
mod conn;
mod daemon;
mod handoff;
mod pending;
mod readwrite;
mod relay;
mod services;
mod timers;
mod wait;

pub use config::Config;
pub use conn::write_frame;
use conn::{Conn, Io, Role, set_nonblocking};
pub use daemon::DaemonExt;

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
/// A service creates its socket with [`Context::service_init`] and answers
/// what arrives; a client connects with [`Context::connect_service`]. Both
/// call [`Context::wait_event`] in a loop and send with
/// [`Context::schedule`], which queues: the next `wait_event` writes, so a
/// slow peer never blocks the others. Blocking calls ([`Context::write`],
/// [`Context::read`]) are there for short clients.
///
/// Not thread-safe by design (like the original): run one context per
/// thread. Protocol daemons use more of it, through
/// [`DaemonExt`](crate::switch::DaemonExt).
///
/// # Example
///
/// A service and its client, in one context here (they are usually two
/// programs):
///
/// ```
/// use libipc::{Context, Event};
///
/// # let rundir = tempfile::tempdir()?;
/// let mut ctx = Context::new()?;
/// # ctx.set_rundir(rundir.path());
/// ctx.service_init("echo")?;
/// let client = ctx.connect_service("echo")?;
/// ctx.schedule(client, b"hello")?;
/// let reply = loop {
///     match ctx.wait_event()? {
///         // On the service's side: send back what came.
///         Event::Message { id, payload } if id != client => ctx.schedule(id, &payload)?,
///         // On the client's side: the echo.
///         Event::Message { payload, .. } => break payload,
///         _ => {}
///     }
/// };
/// assert_eq!(reply, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Context {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    by_fd: HashMap<RawFd, ConnId>,
    pending: VecDeque<Event>,
    ready: VecDeque<ConnId>,
    /// Entries of `ready` left to read before the next poll (see `run_ready`).
    round_left: usize,
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
    /// Each service's handoff endpoint (see `crate::handoff`).
    handoff_listeners: HashMap<ConnId, ConnId>,
    /// Daemons' handoffs being read.
    handoffs_open: usize,
    /// Failed accepts on service listeners, reported once a second.
    accept_backoff: service::AcceptBackoff,
    scratch: Vec<u8>,
    /// What switch hooks read into (`set_switch_hooks`): a whole frame of the
    /// largest size, so allocated only when hooks first read.
    hook_buf: Vec<u8>,
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
            round_left: 0,
            dirty: Vec::new(),
            recheck: Vec::new(),
            last_gone: None,
            lingering: 0,
            timers: BinaryHeap::new(),
            accept_retry: None,
            accept_backoff: service::AcceptBackoff::default(),
            handoff_listeners: HashMap::new(),
            handoffs_open: 0,
            scratch: Vec::new(),
            hook_buf: Vec::new(),
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

    /// Sets what [`Context::schedule`] may queue for one connection:
    /// `Some(bytes)` refuses with [`Error::Backpressure`] once that much waits
    /// (the high-water mark becomes `bytes`); `None` queues without bound, as
    /// the original (see [`Config::schedule_backpressure`]).
    pub fn set_queue_limit(&mut self, limit: Option<usize>) {
        self.config = match limit {
            Some(bytes) => {
                let low = self.config.low_water;
                self.config.clone().water_marks(bytes, low)
            }
            None => self.config.clone(),
        }
        .schedule_backpressure(limit.is_some());
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

    /// Adds an already connected stream speaking LibIPC frames (a unix or TCP socket).
    /// It is made non-blocking.
    pub fn add_stream(&mut self, fd: OwnedFd) -> Result<ConnId> {
        set_nonblocking(fd.as_fd())?;
        self.insert(Io::Stream(fd), Role::Ipc, Interest::READABLE)
    }

    /// Watches a foreign descriptor: [`Event::External`] is reported while it is
    /// readable; the application does its I/O. The context owns the descriptor
    /// (closing the connection closes it) but leaves its blocking mode alone.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    /// use libipc::{Context, Event};
    ///
    /// let mut ctx = Context::new()?;
    /// let (ours, mut theirs) = UnixStream::pair()?;
    /// let watched = ctx.add_external(ours.into())?;
    /// theirs.write_all(b"x")?;
    /// assert!(matches!(ctx.wait_event()?, Event::External { id } if id == watched));
    /// // Read from `ctx.fd(watched)` here; until then it is reported again.
    /// assert!(matches!(ctx.wait_event()?, Event::External { id } if id == watched));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_external(&mut self, fd: OwnedFd) -> Result<ConnId> {
        self.insert(Io::Stream(fd), Role::External, Interest::READABLE)
    }

    /// Queues `payload` for connection `id`; it is written by the next
    /// [`Context::wait_event`], after everything queued before it.
    ///
    /// Fails with [`Error::Backpressure`] (nothing queued) when the connection
    /// already has [`Config::high_water`] bytes waiting, with
    /// [`Error::MessageTooLarge`] above 4 GiB, or [`Error::NoSuchConnection`].
    /// [`Event::MessageTx`] says when a message has been written: a sender
    /// refused for backpressure waits for it and tries again.
    ///
    /// ```
    /// use libipc::{Config, Context, Error, Event};
    ///
    /// # let rundir = tempfile::tempdir()?;
    /// let config = Config::default().water_marks(64 << 10, 16 << 10);
    /// let mut ctx = Context::with_config(config)?;
    /// # ctx.set_rundir(rundir.path());
    /// ctx.service_init("feed")?;
    /// let _slow_client = ctx.connect_service("feed")?; // never reads
    /// let Event::Connection { id, .. } = ctx.wait_event()? else { panic!() };
    ///
    /// let chunk = vec![0; 16 << 10];
    /// let mut queued = 0;
    /// loop {
    ///     match ctx.schedule(id, &chunk) {
    ///         Ok(()) => queued += 1,
    ///         // The client is behind: stop producing until MessageTx events come.
    ///         Err(Error::Backpressure { .. }) => break,
    ///         Err(e) => return Err(e.into()),
    ///     }
    /// }
    /// assert_eq!(queued, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        let high = self
            .config
            .schedule_backpressure
            .then_some(self.config.high_water);
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
        if high.is_some_and(|high| c.out.len() >= high) {
            return Err(Error::Backpressure {
                id,
                queued: c.out.len(),
            });
        }
        Ok(c)
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
        drop(self.take(id));
    }

    /// Removes connection `id` from the loop and gives it back (closed when
    /// dropped). A service's handoff endpoint goes with it.
    fn take(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(id)?;
        if conn.lingering {
            self.lingering -= 1;
        }
        if matches!(conn.role, Role::Handoff(_)) {
            self.handoffs_open -= 1;
        }
        let raw = conn.io.fd().as_raw_fd();
        if !conn.dead {
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        }
        self.by_fd.remove(&raw);
        if let Some(h) = self.handoff_listeners.remove(&id) {
            self.remove(h);
        }
        Some(conn)
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
    /// poller itself fails; everything about one connection is reported as an event:
    /// a peer that breaks the protocol is disconnected
    /// ([`Event::Disconnection`] with the reason) and the others carry on.
    ///
    /// With a timer ([`Context::set_timer`]) it returns [`Event::Timer`] when
    /// nothing happened for that long:
    ///
    /// ```
    /// use std::time::Duration;
    /// use libipc::{Context, Event};
    ///
    /// # let rundir = tempfile::tempdir()?;
    /// let mut ctx = Context::new()?;
    /// # ctx.set_rundir(rundir.path());
    /// ctx.service_init("clock")?;
    /// ctx.set_timer(Some(Duration::from_millis(10)));
    /// match ctx.wait_event()? {
    ///     Event::Timer => { /* periodic work */ }
    ///     Event::Connection { id, .. } => println!("client {id}"),
    ///     Event::Message { id, payload } => ctx.schedule(id, &payload)?,
    ///     Event::Disconnection { id, reason } => println!("{id} left: {reason:?}"),
    ///     _ => {}
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_event(&mut self) -> Result<Event> {
        self.next_event()
    }
}
