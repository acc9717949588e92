//! What the in-process engine tests share: a tcpd-like [`Daemon`] on
//! 127.0.0.1:0, run on a thread of the test, its counters, and clients that
//! speak the routed handshake. libipc's own test helpers (an echo service,
//! frames, a temporary RUNDIR) come with it.
//!
//! Every wait is bounded: by a socket timeout of [`PROMPT`], or a deadline.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use daemon::engine::{
    Daemon, DaemonConfig, DialTarget, InboundFactory, OutboundFactory, Resolver, Shutdown,
    Snapshot, Stats,
};
use libipc::Config;
use libipc::switch::{Dial, Frames, Routed, Transport};

// libipc's own test helpers.
#[path = "../../../libipc/tests/common/mod.rs"]
mod common;
pub use common::*;

/// How long a client waits for an answer the worker should give at once: far
/// less than [`LIMIT`], so that a stalled worker fails the test, not hangs it.
pub const PROMPT: Duration = Duration::from_secs(3);

/// The largest message in these tests' daemons.
const MAX_MESSAGE: usize = 1 << 20;

/// A listener on a port the system picks, bound before the daemon so that a
/// test can name it (the outbound tests' lookups do).
pub fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// tcpd's configuration in routed mode on `rundir`, with no outbound service
/// and limits no test reaches unless it sets them.
pub fn config(rundir: PathBuf) -> DaemonConfig {
    DaemonConfig {
        fixed_service: None,
        allow: Vec::new(),
        max_connections: 100,
        handshake_timeout: Duration::from_secs(10),
        transport_handshake_timeout: None,
        idle_timeout: None,
        keepalive: None,
        drain_timeout: Duration::from_secs(1),
        max_message_size: MAX_MESSAGE,
        rundir,
        local_service: None,
        local_service_if_free: false,
        outbound_allow: Vec::new(),
        expose_outbound: Vec::new(),
        scheme: "tcp".into(),
        also_schemes: Vec::new(),
        proxy: None,
        proxy_from: Vec::new(),
        peer_info: false,
        busy_wait: daemon::engine::BUSY_WAIT,
        handoff: false,
    }
}

/// A daemon to start: its configuration and what [`Daemon`] is given.
pub struct Setup {
    tmp: tempfile::TempDir,
    pub config: DaemonConfig,
    pub outbound: bool,
    pub resolver: Resolver,
}

impl Setup {
    /// tcpd in routed mode (see [`config`]) on a temporary RUNDIR.
    pub fn routed() -> Setup {
        let (tmp, rundir) = rundir();
        Setup {
            tmp,
            config: config(rundir),
            outbound: false,
            resolver: Resolver::default(),
        }
    }

    /// The RUNDIR, where a test starts its services.
    pub fn rundir(&self) -> &Path {
        &self.config.rundir
    }

    /// Runs it with one worker on `listener`, once it is ready.
    pub fn start(self, listener: TcpListener) -> Running {
        let addr = listener.local_addr().unwrap();
        let rundir = self.config.rundir.clone();
        // tcpd's transports: fixed mode reads frames from the first byte.
        let inbound: InboundFactory = if self.config.fixed_service.is_some() {
            Arc::new(|| -> Box<dyn Transport> { Box::new(Frames::new(MAX_MESSAGE)) })
        } else {
            Arc::new(|| -> Box<dyn Transport> { Box::new(Routed::new(Frames::new(MAX_MESSAGE))) })
        };
        let outbound: Option<OutboundFactory> = self.outbound.then(|| -> OutboundFactory {
            Arc::new(|t: &DialTarget<'_>| -> Result<Box<dyn Transport>, String> {
                Ok(Box::new(Dial::new(t.service, Frames::new(MAX_MESSAGE))))
            })
        });
        let daemon = Daemon::new(self.config, vec![listener], 1, inbound, outbound)
            .unwrap()
            .with_resolver(self.resolver);
        let shutdown = daemon.shutdown_handle();
        let stats = daemon.stats();
        let (ready, is_ready) = mpsc::channel();
        let (ran, done) = mpsc::channel();
        thread::spawn(move || {
            let result = daemon.run_then(move || ready.send(()).unwrap());
            let _ = ran.send(result);
        });
        is_ready.recv_timeout(LIMIT).expect("the daemon is ready");
        Running {
            _tmp: self.tmp,
            rundir,
            addr,
            stats,
            shutdown,
            done,
        }
    }
}

/// A daemon running on a thread of the test; stopped when dropped.
pub struct Running {
    _tmp: tempfile::TempDir,
    pub rundir: PathBuf,
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    /// What `run` returned, once it has.
    done: Receiver<libipc::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        let _ = self.done.recv_timeout(LIMIT);
    }
}

impl Running {
    /// A network client, its reads bounded by [`PROMPT`].
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(PROMPT)).unwrap();
        s
    }

    /// A client that asked for `name` in the framed handshake, and its answer.
    pub fn ask(&self, name: &[u8]) -> (TcpStream, String) {
        let mut s = self.connect();
        s.write_all(&frame(name)).unwrap();
        let answer = framed_answer(&mut s);
        (s, answer)
    }

    /// A client connected to echo service `name` (framed handshake), that
    /// checked one echo.
    pub fn echo_client(&self, name: &str) -> TcpStream {
        let (mut s, answer) = self.ask(name.as_bytes());
        assert_eq!(answer, "ok", "asking for {name}");
        assert_echoes(&mut s, b"hello");
        s
    }

    /// The daemon's counters now.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// The counters once `done` holds for them (workers count a close when
    /// they handle it, after the client has seen it), within [`PROMPT`].
    pub fn stats_when(&self, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + PROMPT;
        loop {
            let s = self.stats();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the counters never settled: {s:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks the daemon to drain.
    pub fn trigger(&self) {
        self.shutdown.trigger();
    }

    /// Waits (at most `within`) for `run` to return; how long it took.
    pub fn returned_within(&self, within: Duration) -> Duration {
        let started = Instant::now();
        match self.done.recv_timeout(within) {
            Ok(result) => result.expect("run() succeeds"),
            Err(_) => panic!("run() still running after {within:?}"),
        }
        started.elapsed()
    }
}

/// The framed answer to a handshake, as text.
pub fn framed_answer(s: &mut impl Read) -> String {
    String::from_utf8_lossy(&read_frame(s).expect("an answer")).into_owned()
}

/// Sends `message` in a frame and reads it back.
pub fn assert_echoes(s: &mut TcpStream, message: &[u8]) {
    s.write_all(&frame(message)).unwrap();
    assert_eq!(read_frame(s).expect("the echo"), message);
}

/// Everything until the daemon closes the connection (a reset counts as a
/// close), within [`PROMPT`].
pub fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("not closed within {PROMPT:?}: {e} (after {got:?})"),
    }
}

/// An echo service of the test, counting the connections it accepts.
pub struct Service {
    rundir: PathBuf,
    name: String,
    accepted: Arc<AtomicUsize>,
    probes: usize,
}

impl Service {
    /// Echo service `name` in `rundir`, serving until the test ends.
    pub fn start(rundir: &Path, name: &str) -> Service {
        let (_seen, accepted) = counting_echo_service(rundir, name, Config::default(), usize::MAX);
        Service {
            rundir: rundir.to_owned(),
            name: name.to_owned(),
            accepted,
            probes: 0,
        }
    }

    /// The connections the daemon made to this service so far. Exact: a
    /// probe of the test's own is echoed first, and connections are accepted
    /// in the order they came, so every earlier one has been counted.
    pub fn connections(&mut self) -> usize {
        let mut probe = client(&self.rundir, &self.name);
        probe.set_read_timeout(Some(PROMPT)).unwrap();
        probe.write_all(&frame(b"probe")).unwrap();
        assert_eq!(read_frame(&mut probe).expect("the probe's echo"), b"probe");
        self.probes += 1;
        self.accepted.load(Ordering::Relaxed) - self.probes
    }
}
