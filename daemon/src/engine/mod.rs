//! The engine of the protocol daemons (tcpd, tlsd, websocketd): worker event loops
//! that accept network clients on already-open listeners, run each through a
//! transport's handshake, connect it to the service it names (or the fixed one),
//! relay, and drain on shutdown. The binaries parse flags, set up logging, bind,
//! pick their transport and hand everything to [`Daemon::run`].
//!
//! Outbound, the daemon is also a LibIPC service (`tcp`, `tls`), in
//! `$RUNDIR/.outbound/` where no network client can name it: a local client
//! sends `SCHEME://HOST:PORT/SERVICE`, the daemon checks the destination against
//! [`DaemonConfig::outbound_allow`], connects to the remote daemon without
//! blocking its loop, performs the handshake, answers the local client (a framed
//! `ok`, or a framed `no: REASON`) and switches the two.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libipc::proxy::Cidr;
use libipc::service::AcceptBackoff;
use libipc::switch::{DaemonExt, ProxyConfig, Transport};
use libipc::traffic::Traffic;
use libipc::{Config, ConnId, Context, Event};
use libipc::{Error, Result};

mod dial;
mod drain;
mod inbound;
mod outbound;
mod resolver;
mod stats;
pub use outbound::Destination;
pub use resolver::{LookupFn, Resolver};
pub use stats::{Failure, ServiceStats, Snapshot, Stats};

/// The target of the engine's log lines about connections (`connected`,
/// `refused`, `connection closed`), whichever file they come from: what
/// operators filter on (`RUST_LOG=daemon::engine=debug`) and read.
const TARGET: &str = "daemon::engine";

/// How often workers add the traffic of open connections to [`Stats`].
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Makes the transport for a new inbound client (routed or fixed mode).
pub type InboundFactory = Arc<dyn Fn() -> Box<dyn Transport> + Send + Sync>;
/// Makes the transport for an outbound connection to `target`, or says why
/// there can be none (a host that is no TLS server name): the local client
/// is refused before anything is dialled.
pub type OutboundFactory =
    Arc<dyn Fn(&DialTarget<'_>) -> Result<Box<dyn Transport>, String> + Send + Sync>;

/// What a local client asked its daemon's outbound service for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialTarget<'a> {
    /// The protocol to speak (`tcp`, `tls`, `ws`, `wss`): the URI's scheme,
    /// or the daemon's own when the URI names a custom service name.
    pub scheme: &'a str,
    /// The remote service (the URI's path).
    pub service: &'a str,
    /// The host as written in the URI (TLS server name, HTTP `Host`).
    pub host: &'a str,
    /// The port (the scheme's default when the URI has none).
    pub port: u16,
}

/// What a daemon does and its limits.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Every client goes to this service, with no handshake (fixed mode).
    pub fixed_service: Option<String>,
    /// Services clients may reach (empty: any).
    pub allow: Vec<String>,
    /// Open network connections at most, over all workers.
    pub max_connections: usize,
    /// Time a client has to name its service.
    pub handshake_timeout: Duration,
    /// Time a client has to finish the transport's own handshake (TLS), counted
    /// from the connection; `None`: only `handshake_timeout` applies.
    pub transport_handshake_timeout: Option<Duration>,
    /// A connection with no traffic for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Probe a connection quiet for this long ([`libipc::switch::Transport::keepalive`],
    /// a WebSocket ping); a transport that probes closes the connection itself
    /// when probes go unanswered. `None`: only `idle_timeout` applies.
    pub keepalive: Option<Duration>,
    /// On shutdown, how long open connections may take to finish.
    pub drain_timeout: Duration,
    /// Largest message accepted from a client.
    pub max_message_size: usize,
    /// The run directory.
    pub rundir: PathBuf,
    /// The daemon's own LibIPC service for outbound connections (`None`: none),
    /// in `$RUNDIR/.outbound/`.
    pub local_service: Option<String>,
    /// When another process already serves `local_service` (another instance
    /// on the same RUNDIR), say which and serve inbound clients only, instead
    /// of failing. For a default name; a name the operator asked for is
    /// theirs to get, or an error.
    pub local_service_if_free: bool,
    /// Where the outbound service may connect (empty: anywhere).
    pub outbound_allow: Vec<Destination>,
    /// Outbound services (this daemon's or another's on the same RUNDIR) that
    /// network clients may name, to chain daemons on purpose. Empty by default:
    /// a network client that could reach one could make it dial anywhere.
    pub expose_outbound: Vec<String>,
    /// The URI scheme outbound requests must use (`tcp`, `tls`).
    pub scheme: String,
    /// More schemes the outbound service dials (websocketd's `wss` beside
    /// `ws`), each offered under its own name beside `local_service` when
    /// that is the default (the scheme).
    pub also_schemes: Vec<String>,
    /// The HTTP CONNECT proxy outbound connections go through (`--proxy`,
    /// `HTTPS_PROXY`), and the hosts that go direct (`NO_PROXY`).
    pub proxy: Option<Arc<ProxyConfig>>,
    /// Load balancers trusted to send a PROXY protocol header (v1 or v2)
    /// first: clients from these networks must, and the address the header
    /// gives is the client's. Clients from elsewhere are taken as they are
    /// (a PROXY header from them is a bad handshake). Empty: no PROXY protocol.
    pub proxy_from: Vec<Cidr>,
    /// Send each service, as the first message of a connection, what the
    /// daemon knows about the client ([`PeerInfo`] as JSON).
    pub peer_info: bool,
    /// How long a service whose listen backlog is full is tried again
    /// before the client is told `service busy` ([`BUSY_WAIT`] in the daemons).
    pub busy_wait: Duration,
    /// Hand a client's socket to its service when the service takes it and
    /// the transport is plain frames (tcpd's `--handoff`): the daemon then
    /// steps out of that connection (see `libipc::handoff`).
    pub handoff: bool,
}

/// How long the daemons try a busy service again (a burst its accept loop
/// has not caught up with usually clears in that time).
pub const BUSY_WAIT: Duration = Duration::from_millis(100);

/// A running daemon's stop switch: [`Shutdown::trigger`] makes every worker stop
/// accepting and drain. Cheap to clone; safe to call from a signal-handling thread.
#[derive(Debug, Clone)]
pub struct Shutdown {
    wakers: Arc<Vec<std::os::unix::net::UnixStream>>,
}

impl Shutdown {
    /// Asks every worker to drain and exit.
    pub fn trigger(&self) {
        for w in self.wakers.iter() {
            // A full pipe already holds a wake-up: nothing is lost.
            let _ = io::Write::write(&mut &*w, b"x");
        }
    }
}

/// A daemon ready to run: listeners already bound, transports chosen.
pub struct Daemon {
    config: DaemonConfig,
    listeners: Vec<TcpListener>,
    inbound: InboundFactory,
    outbound: Option<OutboundFactory>,
    shutdown: Shutdown,
    worker_ends: Vec<std::os::unix::net::UnixStream>,
    stats: Arc<Stats>,
    resolver: Resolver,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon with `workers` event loops sharing `listeners`.
    pub fn new(
        config: DaemonConfig,
        listeners: Vec<TcpListener>,
        workers: usize,
        inbound: InboundFactory,
        outbound: Option<OutboundFactory>,
    ) -> Result<Self> {
        let mut wakers = Vec::new();
        let mut worker_ends = Vec::new();
        for _ in 0..workers.max(1) {
            let (a, b) = std::os::unix::net::UnixStream::pair()?;
            a.set_nonblocking(true)?;
            wakers.push(a);
            worker_ends.push(b);
        }
        for l in &listeners {
            l.set_nonblocking(true)?;
        }
        Ok(Daemon {
            config,
            listeners,
            inbound,
            outbound,
            shutdown: Shutdown {
                wakers: Arc::new(wakers),
            },
            worker_ends,
            stats: Arc::default(),
            resolver: Resolver::default(),
        })
    }

    /// Resolves outbound host names with `resolver` (its lookup function and
    /// limits) instead of the system resolver's defaults.
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The daemon's counters (for a metrics endpoint).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The handle that stops this daemon.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs the workers until they have drained after a shutdown. Returns the
    /// first worker error, if any.
    pub fn run(self) -> Result<()> {
        self.run_then(|| {})
    }

    /// [`Daemon::run`], calling `ready` once every worker is set up (the
    /// listeners registered, the outbound service bound) and before any runs:
    /// the moment to tell a service manager the daemon is ready.
    pub fn run_then(self, ready: impl FnOnce()) -> Result<()> {
        let mut workers = Vec::new();
        for (n, wake) in self.worker_ends.into_iter().enumerate() {
            let listeners = self
                .listeners
                .iter()
                .map(TcpListener::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            let mut worker = Worker {
                n,
                config: self.config.clone(),
                inbound: self.inbound.clone(),
                // Only one process may serve a name: the first worker does.
                outbound: if n == 0 { self.outbound.clone() } else { None },
                stats: self.stats.clone(),
                next_stats: Instant::now() + STATS_INTERVAL,
                overflow: 0,
                accept_backoff: AcceptBackoff::default(),
                ctx: Context::with_config(
                    Config::default()
                        .max_message_size(self.config.max_message_size)
                        // Relaying needs no event; traffic is read per second.
                        .switch_events(false),
                )?,
                listeners: HashMap::new(),
                wake: None,
                conns: HashMap::new(),
                dialing: HashMap::new(),
                lookups: None,
                local_service: Vec::new(),
                draining: None,
            };
            worker.ctx.set_rundir(&self.config.rundir);
            worker.setup(listeners, wake, &self.resolver)?;
            workers.push(worker);
        }
        ready();
        let mut handles = Vec::new();
        for worker in workers {
            handles.push(
                std::thread::Builder::new()
                    .name(format!("worker-{}", worker.n))
                    .spawn(move || worker.run())?,
            );
        }
        // Workers hold their own copies; ours would keep the port listening
        // (accepting clients nobody serves) while they drain.
        drop(self.listeners);
        let mut result = Ok(());
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => result = result.and(Err(Error::Transport("worker panicked".into()))),
            }
        }
        result
    }
}

/// What a worker remembers about a network connection.
#[derive(Debug)]
struct NetConn {
    /// The TCP peer (for a proxied client, the balancer).
    peer: SocketAddr,
    service: Option<String>,
    since: Instant,
    /// The service connection, once attached.
    service_id: Option<ConnId>,
    /// For outbound connections: the local client waiting for it.
    local: Option<ConnId>,
    /// Traffic already added to the stats.
    reported: Traffic,
    /// Accepted past --max-connections: refused once it names its service.
    overflow: bool,
    /// Shutting down: held for its goodbye, sent once its service is quiet.
    leaving: bool,
    /// From a trusted balancer (PROXY protocol).
    proxied: bool,
    /// Its service's backlog was full (boxed: rare, and a connection is held
    /// by the thousand).
    busy: Option<Box<Busy>>,
    /// Log lines about this connection are in this span (peer, service, and the
    /// TLS identity when there is one).
    span: tracing::Span,
}

/// A client whose service's backlog was full: the name to try again at its
/// deadline, the tries so far and when the first failed (see
/// `inbound::BUSY_RETRIES`).
#[derive(Debug, Default)]
struct Busy {
    retry: Option<Vec<u8>>,
    tries: usize,
    since: Option<Instant>,
}

impl NetConn {
    /// A connection with `peer`; `proxied`: a trusted balancer, whose PROXY
    /// header will name the client (recorded as the span's `peer` then).
    fn new(peer: SocketAddr, service: Option<String>, proxied: bool) -> Self {
        let span = tracing::info_span!(
            "conn",
            peer = tracing::field::Empty,
            via = tracing::field::Empty,
            service = tracing::field::Empty,
            identity = tracing::field::Empty
        );
        span.record(
            if proxied { "via" } else { "peer" },
            tracing::field::display(peer),
        );
        if let Some(s) = &service {
            span.record("service", tracing::field::display(s));
        }
        NetConn {
            peer,
            service,
            since: Instant::now(),
            service_id: None,
            local: None,
            reported: Traffic::default(),
            overflow: false,
            leaving: false,
            proxied,
            busy: None,
            span,
        }
    }
}

struct Worker {
    n: usize,
    config: DaemonConfig,
    inbound: InboundFactory,
    outbound: Option<OutboundFactory>,
    stats: Arc<Stats>,
    /// When open connections' traffic is next added to the stats.
    next_stats: Instant,
    /// Connections accepted past the limit, waiting to be refused.
    overflow: usize,
    /// Failed accepts (out of descriptors), reported once a second.
    accept_backoff: AcceptBackoff,
    ctx: Context,
    listeners: HashMap<ConnId, TcpListener>,
    wake: Option<(ConnId, std::os::unix::net::UnixStream)>,
    /// Boxed: the map's slots (about twice as many as connections, each
    /// touched) then cost a pointer, not a whole `NetConn`.
    conns: HashMap<ConnId, Box<NetConn>>,
    /// Local clients with an outbound connection in progress.
    dialing: HashMap<ConnId, dial::Dialing>,
    /// The outbound service's name lookups (the worker that has one).
    lookups: Option<resolver::Lookups>,
    /// The outbound service's listeners (one per name).
    local_service: Vec<ConnId>,
    draining: Option<Instant>,
}

impl Worker {
    fn setup(
        &mut self,
        listeners: Vec<TcpListener>,
        wake: std::os::unix::net::UnixStream,
        resolver: &Resolver,
    ) -> Result<()> {
        for l in listeners {
            let id = self.ctx.add_external(OwnedFd::from(l.try_clone()?))?;
            self.listeners.insert(id, l);
        }
        wake.set_nonblocking(true)?;
        let id = self.ctx.add_external(OwnedFd::from(wake.try_clone()?))?;
        self.wake = Some((id, wake));
        if self.outbound.is_some() {
            self.offer_outbound(resolver)?;
        }
        Ok(())
    }

    fn run(mut self) -> Result<()> {
        loop {
            if let Some(deadline) = self.draining {
                if self.conns.is_empty() {
                    tracing::debug!(worker = self.n, "drained");
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!(
                        worker = self.n,
                        open = self.conns.len(),
                        "drain timeout: closing"
                    );
                    for id in self.conns.keys().copied().collect::<Vec<_>>() {
                        self.close_net(id, "drain timeout");
                    }
                    return Ok(());
                }
                self.ctx.set_timer(Some(left.min(STATS_INTERVAL)));
            } else {
                // Wakes a quiet worker to report the last second's traffic.
                let open = !self.conns.is_empty();
                self.ctx.set_timer(open.then_some(STATS_INTERVAL));
            }
            // A bug that panics while one client's event is handled (a
            // transport meeting input nobody thought of) must not take the
            // worker, and every other client on it, down: it is logged (the
            // panic message is printed too) and the loop goes on.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
                let event = self.ctx.wait_event()?;
                self.handle(event);
                self.report_traffic();
                Ok(())
            }));
            match step {
                Ok(result) => result?,
                Err(_) => tracing::error!(
                    worker = self.n,
                    "BUG: a panic while handling an event (message above); the worker carries on"
                ),
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::External { id } if self.listeners.contains_key(&id) => self.accept(id),
            Event::External { id } if self.wake.as_ref().is_some_and(|(w, _)| *w == id) => {
                self.start_drain()
            }
            Event::External { id } if self.lookups.as_ref().is_some_and(|l| l.wake_id == id) => {
                self.lookups_done()
            }
            Event::ServiceRequest { id, name } => self.route(id, &name),
            Event::Timeout { id } => self.timeout(id),
            Event::Disconnection { id, reason } => self.disconnected(id, reason),
            Event::Message { id, payload } => self.outbound_request(id, &payload),
            Event::Error { error, .. } => tracing::warn!(error = %error, "event loop error"),
            _ => {}
        }
    }

    /// Closes a network connection (and its service side) now.
    fn close_net(&mut self, id: ConnId, why: &str) {
        if let Some(local) = self.forget(id, Some(why)).and_then(|c| c.local) {
            self.answer_local(local, &format!("no: {why}"));
        }
        let _ = self.ctx.close(id);
    }

    /// Drops what the worker knew of network connection `id`: it no longer
    /// counts against the limit, and its close line is logged.
    fn forget(&mut self, id: ConnId, why: Option<&str>) -> Option<Box<NetConn>> {
        let conn = self.conns.remove(&id)?;
        if conn.overflow {
            self.overflow -= 1;
        } else {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
        let traffic = self.ctx.traffic(id).unwrap_or_default();
        if conn.proxied && conn.service_id.is_none() && why.is_none() {
            // A balancer's health check (a clean close before any client
            // spoke): no line at the default level.
            tracing::debug!(parent: &conn.span, "balancer health check");
        } else {
            // The line first: whoever sees the counters move can find it.
            log_closed(&conn, why, &traffic);
        }
        if conn.service_id.is_some()
            && conn.local.is_none()
            && let Some(service) = &conn.service
        {
            self.stats
                .add_traffic(service, traffic.since(&conn.reported), true);
        }
        Some(conn)
    }

    /// Adds the traffic of open connections to the stats (once a second).
    fn report_traffic(&mut self) {
        let now = self.ctx.last_wake();
        if now < self.next_stats {
            return;
        }
        self.next_stats = now + STATS_INTERVAL;
        for (id, conn) in self.conns.iter_mut() {
            if let (Some(_), None, Some(service), Some(t)) = (
                conn.service_id,
                conn.local,
                &conn.service,
                self.ctx.traffic(*id),
            ) && t != conn.reported
            {
                self.stats
                    .add_traffic(service, t.since(&conn.reported), false);
                conn.reported = t;
            }
        }
    }

    fn disconnected(&mut self, id: ConnId, reason: Option<Error>) {
        let why = reason.as_ref().map(|e| e.to_string());
        if let Some(conn) = self.forget(id, why.as_deref()) {
            if conn.service_id.is_none() && conn.local.is_none() {
                // Gone before reaching a service (refusals were counted already).
                match &reason {
                    Some(Error::Denied(_)) => {}
                    // A balancer's health check, not a failed client.
                    None if conn.proxied => {}
                    Some(Error::Tls(_)) => self.stats.failed(Failure::Tls),
                    Some(Error::Proxy(_)) => self.stats.failed(Failure::ProxyHeader),
                    Some(Error::Handshake(_)) => self.stats.failed(Failure::BadHandshake),
                    _ => self.stats.failed(Failure::ClosedEarly),
                }
            }
            if let Some(local) = conn.local
                && let Some(dialing) = self.dialing.remove(&local)
            {
                // The outbound connection failed before the remote said ok.
                self.dial_failed(local, dialing, reason.as_ref());
            }
        } else {
            // A local client went away, maybe while dialing.
            self.local_left(id);
        }
        if self.draining.is_some() && self.conns.is_empty() {
            tracing::debug!(worker = self.n, "last connection closed while draining");
        }
    }
}

fn log_closed(conn: &NetConn, why: Option<&str>, traffic: &Traffic) {
    tracing::info!(
        parent: &conn.span,
        duration_ms = conn.since.elapsed().as_millis() as u64,
        bytes_in = traffic.bytes_in,
        bytes_out = traffic.bytes_out,
        messages_in = traffic.messages_in,
        messages_out = traffic.messages_out,
        reason = why.unwrap_or("closed"),
        "connection closed"
    );
}
