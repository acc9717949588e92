//! Host name lookups for the outbound service, off the event loop.
//!
//! The system resolver (`getaddrinfo`) blocks, for as long as a slow DNS
//! server makes it, and cannot be cancelled. Done on the worker, one slow name
//! would stop every client of that worker. Here a few threads of their own do
//! the lookups and hand the answers back through a channel, waking the worker
//! through a socket pair its loop watches. The worker bounds how long a local
//! client waits ([`Resolver::timeout`]: then it is answered and a late answer
//! dropped) and how many lookups are outstanding ([`Resolver::max_pending`],
//! timed-out ones included, since their threads are still busy: past it new
//! requests are refused rather than queued without end).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libipc::Result;
use libipc::{ConnId, Context};

/// Looks up the addresses of `host` (a name, never an IP literal) for `port`.
/// It may block: it runs on the resolver's threads.
pub type LookupFn = Arc<dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// Threads doing lookups at most: enough that one slow name does not hold up
/// the others, few enough that a flood of names stays a small cost.
const MAX_THREADS: usize = 4;

/// How a daemon resolves the host names of outbound requests, and its limits.
#[derive(Clone)]
pub struct Resolver {
    lookup: LookupFn,
    timeout: Duration,
    max_pending: usize,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("timeout", &self.timeout)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl Default for Resolver {
    /// The system resolver, 5 s per lookup, 64 outstanding.
    fn default() -> Self {
        Resolver::new(Arc::new(|host: &str, port: u16| {
            Ok((host, port).to_socket_addrs()?.collect())
        }))
    }
}

impl Resolver {
    /// Lookups done by `lookup` (tests give one that is slow on purpose).
    pub fn new(lookup: LookupFn) -> Self {
        Resolver {
            lookup,
            timeout: Duration::from_secs(5),
            max_pending: 64,
        }
    }

    /// How long a local client waits for its lookup before the answer
    /// `no: cannot resolve HOST: timed out` (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Lookups outstanding at most (default 64); past it, requests for host
    /// names are refused with `no: too many name lookups in progress`.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// The lookup timeout in force.
    pub fn lookup_timeout(&self) -> Duration {
        self.timeout
    }
}

struct Job {
    seq: u64,
    local: ConnId,
    host: String,
    port: u16,
}

/// A finished lookup, for the local client `local` that asked (lookup `seq`).
pub(super) struct Answer {
    pub(super) seq: u64,
    pub(super) local: ConnId,
    pub(super) result: io::Result<Vec<SocketAddr>>,
}

/// A worker's lookups: the threads (started as needed), the channels and the
/// wake-up socket registered with the worker's context.
pub(super) struct Lookups {
    resolver: Resolver,
    jobs: Sender<Job>,
    queue: Arc<Mutex<Receiver<Job>>>,
    answers: Receiver<Answer>,
    answer_tx: Sender<Answer>,
    /// The threads' end of the wake-up pair, and the worker's.
    wake_tx: Arc<UnixStream>,
    wake_rx: UnixStream,
    /// The worker's end as registered with its context.
    pub(super) wake_id: ConnId,
    threads: usize,
    /// Jobs handed out whose answers are not back yet.
    outstanding: usize,
    next_seq: u64,
}

impl Lookups {
    pub(super) fn new(resolver: Resolver, ctx: &mut Context) -> Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let wake_id = ctx.add_external(OwnedFd::from(wake_rx.try_clone()?))?;
        let (jobs, queue) = mpsc::channel();
        let (answer_tx, answers) = mpsc::channel();
        Ok(Lookups {
            resolver,
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            answers,
            answer_tx,
            wake_tx: Arc::new(wake_tx),
            wake_rx,
            wake_id,
            threads: 0,
            outstanding: 0,
            next_seq: 0,
        })
    }

    pub(super) fn timeout(&self) -> Duration {
        self.resolver.timeout
    }

    /// Starts looking up `host` for local client `local`; returns the lookup's
    /// number, or why it cannot start (a refusal for the client).
    pub(super) fn start(
        &mut self,
        local: ConnId,
        host: &str,
        port: u16,
    ) -> std::result::Result<u64, &'static str> {
        if self.outstanding >= self.resolver.max_pending {
            return Err("too many name lookups in progress");
        }
        if self.outstanding >= self.threads && self.threads < MAX_THREADS {
            self.spawn()
                .map_err(|_| "cannot start a name lookup thread")?;
        }
        self.next_seq += 1;
        let job = Job {
            seq: self.next_seq,
            local,
            host: host.to_owned(),
            port,
        };
        self.jobs
            .send(job)
            .map_err(|_| "the name lookup threads are gone")?;
        self.outstanding += 1;
        Ok(self.next_seq)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let queue = self.queue.clone();
        let answers = self.answer_tx.clone();
        let wake = self.wake_tx.clone();
        let lookup = self.resolver.lookup.clone();
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                loop {
                    // The worker dropped its sender: it is gone, and so are we.
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A lookup function that panics must not take its
                    // thread (and, uncounted, a slot) with it.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        lookup(&job.host, job.port)
                    }))
                    .unwrap_or_else(|_| Err(io::Error::other("the lookup failed")));
                    let answer = Answer {
                        seq: job.seq,
                        local: job.local,
                        result,
                    };
                    if answers.send(answer).is_err() {
                        return;
                    }
                    // A full socket already holds a wake-up: nothing is lost.
                    let _ = (&*wake).write(b"x");
                }
            })?;
        self.threads += 1;
        Ok(())
    }

    /// The answers that came back (on the wake-up socket's event).
    pub(super) fn take_answers(&mut self) -> Vec<Answer> {
        let mut buf = [0; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        let answers: Vec<Answer> = self.answers.try_iter().collect();
        self.outstanding -= answers.len();
        answers
    }
}
