//! The two echo services, run in a child process (`ipc-bench serve ...`), and the
//! parent's handle on that process.
//!
//! They live in another process because the 10,000-connection scenario needs
//! 10,000 descriptors on each side and the hard limit is 20,000 per process; it
//! also keeps the client's and the service's CPU time apart.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;
use libipc::{Config, ConnId, Context, Event};
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Which echo service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// libipc's `Context` event loop.
    Libipc,
    /// The same service on two event loops (`Context::share_service`), one
    /// thread each.
    #[value(name = "libipc-2w")]
    Libipc2,
    /// Reference: a blocking thread per connection, plain reads and writes.
    Reference,
    /// libipc's example echo service, `pongd` (target/release/examples/pongd,
    /// from `cargo build --release -p libipc --examples`), run as it is.
    Pongd,
    /// The floor: a blocking thread per connection echoing bytes as they come,
    /// with no framing (one read and one write per batch of messages).
    Bytes,
    /// The same reference on TCP: its `--name` is the address to listen on
    /// (the `direct-tcp` relay: a client opening TCP straight to an echo).
    #[value(name = "reference-tcp")]
    ReferenceTcp,
    /// libipc's loop, echoing every message whatever the client's pace: a reply
    /// the connection's queue refuses (`Error::Backpressure`) is kept and
    /// scheduled again after the next MESSAGE_TX (the soak's slow readers).
    #[value(name = "libipc-queued")]
    Queued,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Libipc => "libipc",
            Kind::Libipc2 => "libipc-2loops",
            Kind::Reference => "reference",
            Kind::Bytes => "bytes",
            Kind::Pongd => "pongd",
            Kind::ReferenceTcp => "reference-tcp",
            Kind::Queued => "libipc-queued",
        }
    }
}

/// `--busy-poll-us` of this run, passed on to each libipc service started.
pub static BUSY_POLL_US: AtomicU64 = AtomicU64::new(0);

/// Line the child prints on stdout once its socket is listening.
const READY: &str = "ready";

/// Child side: runs the echo service until killed.
pub fn serve(kind: Kind, rundir: &Path, name: &str, busy_poll_us: u64) -> Result<()> {
    let config = Config::default()
        .busy_poll((busy_poll_us > 0).then(|| Duration::from_micros(busy_poll_us)));
    match kind {
        Kind::Libipc => serve_libipc(rundir, name, 1, config),
        Kind::Libipc2 => serve_libipc(rundir, name, 2, config),
        Kind::Reference => serve_reference(&rundir.join(name), echo_blocking),
        Kind::Bytes => serve_reference(&rundir.join(name), echo_bytes),
        Kind::Pongd => bail!("pongd is a program of its own: Server::start runs it"),
        Kind::ReferenceTcp => serve_reference_tcp(name),
        Kind::Queued => serve_queued(rundir, name),
    }
}

fn announce_ready() -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{READY}")?;
    out.flush()?;
    Ok(())
}

/// The service under test, written the way the libipc documentation shows,
/// on `loops` event loops (one thread each) sharing its clients.
fn serve_libipc(rundir: &Path, name: &str, loops: usize, config: Config) -> Result<()> {
    let mut ctx = Context::with_config(config.clone())?;
    ctx.set_rundir(rundir);
    let service = ctx.service_init(name)?;
    for _ in 1..loops {
        let shared = ctx.share_service(service)?;
        let config = config.clone();
        std::thread::spawn(move || -> Result<()> {
            let mut ctx = Context::with_config(config)?;
            ctx.add_service(shared)?;
            echo(&mut ctx)
        });
    }
    announce_ready()?;
    echo(&mut ctx)
}

fn echo(ctx: &mut Context) -> Result<()> {
    loop {
        match ctx.wait_event()? {
            // schedule_vec: the payload is ours already, so no copy for big ones.
            Event::Message { id, payload } => {
                if let Err(e) = ctx.schedule_vec(id, payload) {
                    // The client sees the missing reply and reports the run as failed.
                    eprintln!("libipc echo: schedule on {id}: {e}");
                }
            }
            Event::Error { id, error } => eprintln!("libipc echo: error on {id:?}: {error}"),
            _ => {}
        }
    }
}

/// The echo service of the soak: no reply is ever dropped. `schedule` copies
/// the payload so that a refused one is still ours to keep; what a connection's
/// queue refuses waits, in order, with every later message for it, until a
/// MESSAGE_TX says its queue moved.
fn serve_queued(rundir: &Path, name: &str) -> Result<()> {
    let mut ctx = Context::new()?;
    ctx.set_rundir(rundir);
    ctx.service_init(name)?;
    announce_ready()?;
    let mut held: HashMap<ConnId, VecDeque<Vec<u8>>> = HashMap::new();
    loop {
        match ctx.wait_event()? {
            Event::Message { id, payload } => {
                let waiting = held.get(&id).is_some_and(|q| !q.is_empty());
                if waiting || !try_schedule(&mut ctx, id, &payload) {
                    held.entry(id).or_default().push_back(payload);
                }
            }
            Event::MessageTx { id } => {
                if let Some(q) = held.get_mut(&id) {
                    while q.front().is_some_and(|p| try_schedule(&mut ctx, id, p)) {
                        q.pop_front();
                    }
                    if q.is_empty() {
                        held.remove(&id);
                    }
                }
            }
            Event::Disconnection { id, .. } => {
                held.remove(&id);
            }
            Event::Error { id, error } => eprintln!("libipc-queued echo: error on {id:?}: {error}"),
            _ => {}
        }
    }
}

/// Schedules a copy of `payload`; false if the queue is full (try again later).
fn try_schedule(ctx: &mut Context, id: ConnId, payload: &[u8]) -> bool {
    match ctx.schedule(id, payload) {
        Ok(()) => true,
        Err(libipc::Error::Backpressure { .. }) => false,
        Err(e) => {
            // The connection is going away: its echoes are not wanted any more.
            eprintln!("libipc-queued echo: schedule on {id}: {e}");
            true
        }
    }
}

/// The reference: what plain blocking sockets achieve, one thread per connection.
fn serve_reference(path: &Path, echo: fn(&UnixStream) -> io::Result<()>) -> Result<()> {
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    serve_threads(listener.incoming(), |_| Ok(()), echo)
}

/// The same reference on TCP (Nagle off, as the relays have it).
fn serve_reference_tcp(addr: &str) -> Result<()> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    serve_threads(
        listener.incoming(),
        |s: &std::net::TcpStream| s.set_nodelay(true),
        echo_blocking,
    )
}

/// Says it is ready, then serves each connection of `incoming` with `echo` on
/// a thread of its own, after `setup`.
fn serve_threads<S>(
    incoming: impl Iterator<Item = io::Result<S>>,
    setup: impl Fn(&S) -> io::Result<()>,
    echo: fn(&S) -> io::Result<()>,
) -> Result<()>
where
    S: Send + 'static,
    for<'a> &'a S: Read + Write,
{
    announce_ready()?;
    for stream in incoming {
        let stream = stream.context("accept")?;
        setup(&stream)?;
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                if let Err(e) = echo(&stream) {
                    eprintln!("reference echo: {e}");
                }
            })
            .context("spawn connection thread")?;
    }
    Ok(())
}

fn echo_blocking<S>(stream: &S) -> io::Result<()>
where
    for<'a> &'a S: Read + Write,
{
    let mut rx = BufReader::with_capacity(256 << 10, stream);
    let mut tx = BufWriter::with_capacity(256 << 10, stream);
    let mut payload = Vec::new();
    loop {
        let mut hdr = [0u8; 4];
        match rx.read_exact(&mut hdr) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return tx.flush(),
            r => r?,
        }
        let len = u32::from_be_bytes(hdr) as usize;
        if len > 16 << 20 {
            return Err(io::Error::other(format!("frame of {len} bytes")));
        }
        payload.resize(len, 0);
        rx.read_exact(&mut payload)?;
        tx.write_all(&hdr)?;
        tx.write_all(&payload)?;
        // Replies to frames that arrived together leave together (as libipc's do);
        // flush as soon as no complete frame is buffered, or the client could wait
        // for a reply while we wait for its next request.
        let buffered = rx.buffer();
        let whole_frame_buffered = buffered.len() >= 4
            && buffered.len()
                >= 4 + u32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]])
                    as usize;
        if !whole_frame_buffered {
            tx.flush()?;
        }
    }
}

/// Bytes back as they come: what one read brings, one write returns.
fn echo_bytes(stream: &UnixStream) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    let (mut rx, mut tx) = (stream, stream);
    loop {
        match rx.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => tx.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parent side: a running service process, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    path: PathBuf,
}

impl Server {
    /// Starts `ipc-bench serve` and waits (up to `deadline`) until its socket
    /// accepts connections.
    pub fn start(
        kind: Kind,
        rundir: &Path,
        name: &str,
        cpu: Option<usize>,
        deadline: Duration,
    ) -> Result<Self> {
        if kind == Kind::Pongd {
            return Self::start_pongd(rundir, name, cpu, deadline);
        }
        let exe = std::env::current_exe().context("current_exe")?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--kind")
            .arg(kind.to_possible_value().expect("not skipped").get_name())
            .arg("--rundir")
            .arg(rundir)
            .arg("--name")
            .arg(name);
        if let Some(cpu) = cpu {
            // The child inherits our affinity; --cpu replaces it.
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        let busy_poll_us = BUSY_POLL_US.load(Ordering::Relaxed);
        if busy_poll_us > 0 {
            cmd.arg("--busy-poll-us").arg(busy_poll_us.to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn the service process")?;
        let mut server = Server {
            child,
            path: rundir.join(name),
        };
        server.wait_ready(Instant::now() + deadline)?;
        Ok(server)
    }

    /// Starts the `pongd` example next to this executable's directory
    /// (`examples/pongd`) on `rundir/name`, waits for its "ready" log line,
    /// and pins it to `cpu` if given.
    fn start_pongd(
        rundir: &Path,
        name: &str,
        cpu: Option<usize>,
        deadline: Duration,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("current_exe")?;
        let pongd = exe.with_file_name("examples").join("pongd");
        if !pongd.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p libipc --examples`",
                pongd.display()
            );
        }
        let mut child = Command::new(&pongd)
            .arg(name)
            .env("RUNDIR", rundir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", pongd.display()))?;
        // Its log: the ready line, then one line per client; drained to the
        // end so that pongd never blocks on a full pipe.
        let stderr = child.stderr.take().context("pongd's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("pongd ready") {
                    let _ = tx.send(());
                }
            }
        });
        let mut server = Server {
            child,
            path: rundir.join(name),
        };
        if rx.recv_timeout(deadline).is_err() {
            let status = server.child.try_wait()?;
            bail!("pongd did not say it was ready (status {status:?})");
        }
        if let Some(cpu) = cpu {
            crate::procs::pin_tree(server.pid(), cpu)?;
        }
        UnixStream::connect(&server.path)
            .with_context(|| format!("probe connection to {}", server.path.display()))?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The service's peak resident memory (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0 / 1e6)
    }

    /// Waits for the child's "ready" line (no sleeping: poll(2) on its stdout),
    /// then checks that the socket path really accepts a connection.
    fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        let stdout = self.child.stdout.take().context("child stdout")?;
        let line = read_line_until(stdout, deadline)?;
        if line.trim() != READY {
            let status = self.child.try_wait()?;
            bail!("service did not start (said {line:?}, status {status:?})");
        }
        UnixStream::connect(&self.path)
            .with_context(|| format!("probe connection to {}", self.path.display()))?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: the services have no clean shutdown; the run directory is
        // removed by its owner.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line_until(stdout: ChildStdout, deadline: Instant) -> Result<String> {
    let mut reader = BufReader::new(stdout);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("service not ready before the deadline");
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(reader.get_ref().as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("poll the service's stdout"),
        }
        // Readable: the child wrote its line (one small write) or exited (EOF).
        let mut line = String::new();
        reader.read_line(&mut line)?;
        return Ok(line);
    }
}

/// CPU time used so far (user + system, all threads) by process `pid` from /proc/<pid>/stat.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc reports in USER_HZ, which is 100 on Linux whatever the kernel's HZ.
    Some(Duration::from_millis(ticks * 10))
}
