//! `ipc-bench soak`: tcpd, tlsd and websocketd, all three at once, in front of
//! two echo services for a chosen time (default 10 minutes) under a mixed load,
//! with the daemons' memory and descriptors read at the start, every
//! `--report-every` and at the end. Not a speed test: a search for leaks, lost,
//! corrupted or reordered messages and hangs.
//!
//! Setup, in a fresh run directory: two echo services (`soak-a`, `soak-b`: the
//! libipc loop, keeping what backpressure refuses, see [`Kind::Queued`]), and
//! each daemon in routed mode on 127.0.0.1:0 (port read from its log) with
//! `--max-message-size` (default 1 MiB) and `--no-outbound`; tlsd with an
//! ECDSA P-256 certificate made on the spot. Everything else is the daemons'
//! defaults (workers = cores, idle timeout 300 s, info logging).
//!
//! The load: `--clients` concurrent client sessions, spread evenly over the
//! daemons, one client thread (a mio loop) per daemon. A session connects (TLS:
//! a full or, half the time, a resumed handshake; WebSocket: `GET /soak-a`),
//! names one of the two services at random (tcpd, tlsd: a framed name, the
//! first messages sent with it or after the `ok`), sends a random number of
//! messages with a random window, checks every echo in full, and closes; a new
//! session takes its place at once. Message sizes run from 1 byte to the limit
//! (log-uniform: most are small), and 3 % are exactly the limit, which must
//! pass. The payload is a pseudo-random stream keyed by (session, sequence
//! number), so every byte of every echo is checked, and an echo that is not
//! the one due is recognised as another request's (out of order) or as
//! nobody's (corrupt). Session kinds:
//!
//! - normal (79 %): all echoes received, then a clean close;
//! - slow reader (10 %): stops reading for 0.5 to 3 s after a few messages
//!   while it keeps sending (up to 24 MiB in flight), so that the daemon's
//!   queue, the service's and the kernel's buffers fill and backpressure
//!   reaches the client's writes; then reads everything, checked;
//! - abrupt (10 %): after a random number of messages, with echoes in flight,
//!   closes the socket, half the time in the middle of a frame, half the time
//!   with a reset (SO_LINGER 0), never with a TLS close_notify or a WebSocket
//!   close;
//! - over the limit (1 %): a few messages, then one of limit + 1 bytes, which
//!   the daemon must refuse by closing the connection, never echo.
//!
//! At `--duration` no new session or message starts; the echoes in flight get
//! `--grace` (default 30 s) to arrive, then everything stops (hard stop). A
//! session that waits 30 s for an echo without progress is a hang. Loss,
//! corruption, reordering, a hang, a daemon that exits, or any unexpected error
//! fails the run (exit status 1).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::signal::{Signal, killpg};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::Pid;
use rustls::ClientConfig;

use crate::RunDir;
use crate::client::{Stream, Target};
use crate::procs;
use crate::relay::{self, DaemonPaths, Tools};
use crate::server::{Kind, Server};
use crate::stream::connect;
use crate::tls;
use crate::ws::{self, WsMode, WsStream};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the load runs (e.g. 30s, 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent client sessions, spread evenly over the three daemons.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// The daemons' --max-message-size (K, M suffixes), at most 1M (the echo
    /// services' limit). Messages are 1 byte to this size, 3 % exactly this
    /// size; 1 % of the sessions send one byte more, to be refused.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    max_message_size: usize,
    /// Time between progress reports (memory, descriptors, traffic).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    report_every: Duration,
    /// After --duration: how long the echoes in flight may take to arrive
    /// before the hard stop.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    grace: Duration,
    /// Seed of the clients' random choices (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the daemons' and services' logs in this directory (default: they
    /// are kept only when the run fails, in $TMPDIR/ipc-bench-soak-logs-PID).
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    #[command(flatten)]
    daemons: DaemonPaths,
}

/// A duration: a number and `ms`, `s` (default), `m` or `h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.');
    let (num, unit) = s.split_at(split.unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a number and ms, s, m or h"))?;
    let scale = match unit {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))
}

/// Bytes, with an optional `K` or `M` (KiB, MiB) suffix.
fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.strip_suffix('M') {
        Some(n) => (n, 1 << 20),
        None => s.strip_suffix('K').map_or((s, 1), |n| (n, 1 << 10)),
    };
    let n: usize = num.parse().map_err(|_| format!("{s:?}: bytes, K or M"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// The daemons under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Tls,
    Ws,
}

impl Proto {
    const ALL: [Proto; 3] = [Proto::Tcp, Proto::Tls, Proto::Ws];

    fn daemon(self) -> &'static str {
        match self {
            Proto::Tcp => "tcpd",
            Proto::Tls => "tlsd",
            Proto::Ws => "websocketd",
        }
    }
}

const SERVICES: [&str; 2] = ["soak-a", "soak-b"];

/// One of the daemons, running; killed (with its process group) on drop.
struct Daemon {
    proto: Proto,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    fn start(proto: Proto, exe: &Path, rundir: &Path, max: usize) -> Result<Self> {
        let mut cmd = Command::new(exe);
        // Routed mode (no --service): the client names the service.
        cmd.args(["--listen", "127.0.0.1:0", "--no-outbound"])
            .arg("--rundir")
            .arg(rundir)
            .arg("--max-message-size")
            .arg(max.to_string())
            // Info: the listening address, and a line per connection closed.
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if proto == Proto::Tls {
            let (cert, key, _) = relay::cert_files(rundir);
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let log = rundir.join(format!("{}.log", proto.daemon()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let (child, addr) = relay::spawn_listening(&mut cmd, &log, deadline, proto.daemon())?;
        Ok(Daemon {
            proto,
            child,
            addr,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A process's memory and descriptors at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    fds: Option<usize>,
}

fn sample(pid: u32) -> Sample {
    Sample {
        rss_kib: procs::status_kib(pid, "VmRSS:"),
        hwm_kib: procs::status_kib(pid, "VmHWM:"),
        fds: procs::fd_count(pid),
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn count(n: Option<usize>) -> String {
    n.map_or("?".into(), |n| n.to_string())
}

/// What the clients of one daemon did and saw.
#[derive(Debug, Clone, Default)]
struct Stats {
    /// Sessions whose connection (and TLS or WebSocket handshake) was made.
    sessions: u64,
    /// Sessions ended as planned: every echo received, then closed.
    completed: u64,
    /// Slow-reader pauses taken, and those during which backpressure reached
    /// the client: its writes blocked.
    slow: u64,
    slow_blocked: u64,
    /// Sessions this client cut (mid-stream, mid-frame, reset).
    abrupt: u64,
    /// Messages over the limit that the daemon refused by closing.
    oversize_refused: u64,
    /// Sessions open now.
    open: usize,
    /// Requests queued (payload bytes), and echoes received and checked.
    sent: u64,
    sent_bytes: u64,
    received: u64,
    received_bytes: u64,
    /// Echoes exactly `--max-message-size` long.
    at_limit: u64,
    /// Echoes not awaited: their session was cut on purpose.
    abandoned: u64,
    /// Echoes that never came (daemon closed, hang, hard stop).
    lost: u64,
    /// Echoes of a later request while an earlier one was due.
    out_of_order: u64,
    /// Echoes that match no request (content, length) or that nobody asked for.
    corrupt: u64,
    /// Unexpected errors by kind, and the first few in full.
    errors: BTreeMap<String, u64>,
    examples: Vec<String>,
}

impl Stats {
    fn error(&mut self, kind: &str, detail: String) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
        if self.examples.len() < 8 {
            self.examples.push(detail);
        }
    }

    fn bad(&self) -> bool {
        self.lost + self.out_of_order + self.corrupt > 0 || !self.errors.is_empty()
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A small, fast pseudo-random generator (SplitMix64).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A message size: 3 % exactly `max`, the rest log-uniform in 1..=max.
    fn size(&mut self, max: usize) -> usize {
        if self.chance(0.03) {
            return max;
        }
        let x = (self.unit() * (max as f64).ln()).exp();
        (x as usize).clamp(1, max)
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of request `seq` of session `id`: its payload is [`pattern`] of it.
fn key(id: u64, seq: u64) -> u64 {
    mix(id.wrapping_mul(GOLDEN) ^ mix(seq))
}

/// Word `j` of the payload of `key`.
fn word(key: u64, j: usize) -> [u8; 8] {
    mix(key ^ (j as u64).wrapping_mul(GOLDEN)).to_le_bytes()
}

/// Appends the `len`-byte payload of `key`.
fn push_pattern(out: &mut Vec<u8>, key: u64, len: usize) {
    let start = out.len();
    out.resize(start + len, 0);
    for (j, chunk) in out[start..].chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&word(key, j)[..chunk.len()]);
    }
}

/// Whether `data` is the payload of `key` (every byte compared).
fn is_pattern(data: &[u8], key: u64) -> bool {
    data.chunks(8)
        .enumerate()
        .all(|(j, chunk)| chunk == &word(key, j)[..chunk.len()])
}

/// What a session does beside sending and checking.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Normal,
    /// After `at` requests, stop reading for `pause`.
    Slow {
        at: u64,
        pause: Duration,
    },
    /// After `at` requests, close: in the middle of a frame, with a reset.
    Abrupt {
        at: u64,
        mid_frame: bool,
        reset: bool,
    },
    /// After the planned requests are echoed, one of limit + 1 bytes.
    Oversize,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    Abrupt,
    OversizeRefused,
    Failed,
}

/// The longest a session may wait for an echo without any progress.
const STALL: Duration = Duration::from_secs(30);
/// How long an over-the-limit message may go unrefused.
const REFUSE_WITHIN: Duration = Duration::from_secs(10);
/// Reads per wake-up before the session yields to the others.
const READS_PER_TURN: usize = 64;
/// How often every session gets a turn, events or not (pauses, hangs, the stop).
const SCAN: Duration = Duration::from_millis(50);

/// What every session of one client thread shares.
struct Ctx<'a> {
    proto: Proto,
    max: usize,
    stats: &'a mut Stats,
    rng: &'a mut Rng,
    reg: &'a Registry,
    scratch: &'a mut [u8],
    stopping: bool,
}

struct Session {
    id: u64,
    /// Its slot in the client thread, which is its mio token.
    token: Token,
    service: &'static str,
    stream: Stream,
    mode: Mode,
    planned: u64,
    next_seq: u64,
    window: usize,
    /// Payload bytes in flight at most (one request always may be).
    cap: usize,
    outstanding: VecDeque<(u64, usize)>,
    in_flight: usize,
    out: Vec<u8>,
    out_pos: usize,
    want_write: bool,
    hdr: [u8; 4],
    hdr_have: usize,
    frame_len: usize,
    frame: Vec<u8>,
    /// tcpd, tlsd: the framed `ok` of the routed handshake is still due;
    /// `eager`: the first requests go with the name, not after the `ok`.
    awaiting_ok: bool,
    eager: bool,
    paused_until: Option<Instant>,
    paused_once: bool,
    blocked_in_pause: bool,
    oversize_at: Option<Instant>,
    last_progress: Instant,
    /// The read budget ran out with data maybe left (edge-triggered: no new
    /// wake-up for it).
    more_to_read: bool,
}

/// Where a session's next bytes come from.
enum Next {
    Frame,
    Cut,
    Nothing,
}

impl Session {
    fn open(
        ctx: &mut Ctx<'_>,
        addr: SocketAddr,
        tls: &[Arc<ClientConfig>; 2],
        id: u64,
        token: Token,
    ) -> Result<Self> {
        let rng = &mut *ctx.rng;
        let service = SERVICES[rng.below(2) as usize];
        // Short sessions (connect, a few messages, close) and longer ones.
        let longest = if rng.chance(0.3) { 5 } else { 300 };
        let planned = 1 + rng.below(longest);
        let r = rng.unit();
        let mode = if r < 0.01 {
            Mode::Oversize
        } else if r < 0.11 {
            Mode::Slow {
                at: rng.below(10),
                pause: Duration::from_millis(500 + rng.below(2500)),
            }
        } else if r < 0.21 {
            Mode::Abrupt {
                at: rng.below(planned + 1),
                mid_frame: rng.chance(0.5),
                reset: rng.chance(0.5),
            }
        } else {
            Mode::Normal
        };
        let (planned, window, cap) = match mode {
            // Enough to fill every buffer on the way while it does not read.
            Mode::Slow { .. } => (200 + rng.below(300), 4096, 24 << 20),
            _ => (planned, 1 + rng.below(16) as usize, 4 << 20),
        };
        let eager = rng.chance(0.5);
        let resume = rng.below(2) as usize;
        let stream = match ctx.proto {
            Proto::Tcp => connect(Target::Tcp(addr))?,
            Proto::Tls => connect(Target::Tls(addr, &tls[resume]))?,
            Proto::Ws => {
                let (s, early) = ws::handshake_path(addr, &format!("/{service}"))?;
                s.set_nonblocking(true)?;
                let s = WsStream::new(TcpStream::from_std(s), WsMode::Messages, early);
                Stream::Ws(Box::new(s))
            }
        };
        let mut s = Session {
            id,
            token,
            service,
            stream,
            mode,
            planned,
            next_seq: 0,
            window,
            cap,
            outstanding: VecDeque::new(),
            in_flight: 0,
            out: Vec::new(),
            out_pos: 0,
            want_write: false,
            hdr: [0; 4],
            hdr_have: 0,
            frame_len: 0,
            frame: Vec::new(),
            awaiting_ok: ctx.proto != Proto::Ws,
            eager,
            paused_until: None,
            paused_once: false,
            blocked_in_pause: false,
            oversize_at: None,
            last_progress: Instant::now(),
            more_to_read: false,
        };
        if s.awaiting_ok {
            // The framed form of the routed handshake.
            s.out
                .extend_from_slice(&(service.len() as u32).to_be_bytes());
            s.out.extend_from_slice(service.as_bytes());
        }
        ctx.reg
            .register(&mut s.stream, token, Interest::READABLE)
            .context("register")?;
        Ok(s)
    }

    fn label(&self, proto: Proto) -> String {
        format!("{} session {} ({})", proto.daemon(), self.id, self.service)
    }

    /// Reads, writes, and says whether the session is over.
    fn turn(&mut self, ctx: &mut Ctx<'_>, now: Instant) -> Option<End> {
        if let Some(until) = self.paused_until
            && (now >= until || ctx.stopping)
        {
            self.paused_until = None;
            self.last_progress = now;
            self.more_to_read = true;
        }
        if self.paused_until.is_none()
            && let Some(end) = self.read(ctx)
        {
            return Some(end);
        }
        if let Some(end) = self.write(ctx) {
            return Some(end);
        }
        self.check(ctx, now)
    }

    /// Ends the session if it is done, hangs, or an over-the-limit message
    /// went unrefused.
    fn check(&mut self, ctx: &mut Ctx<'_>, now: Instant) -> Option<End> {
        let drained = self.out_pos == self.out.len();
        if let Some(at) = self.oversize_at {
            if now.duration_since(at) > REFUSE_WITHIN {
                let what = format!(
                    "{}: a message of {} bytes (limit {}) not refused in {} s",
                    self.label(ctx.proto),
                    ctx.max + 1,
                    ctx.max,
                    REFUSE_WITHIN.as_secs()
                );
                ctx.stats.error("over-limit message not refused", what);
                return Some(End::Failed);
            }
            return None;
        }
        let idle = self.outstanding.is_empty() && drained && !self.awaiting_ok;
        let planned_done = self.next_seq >= self.planned;
        if idle && (ctx.stopping || (planned_done && !matches!(self.mode, Mode::Oversize))) {
            return Some(End::Completed);
        }
        if self.paused_until.is_none() && now.duration_since(self.last_progress) > STALL {
            let what = format!(
                "{}: no progress for {} s, {} echoes due{}",
                self.label(ctx.proto),
                STALL.as_secs(),
                self.outstanding.len(),
                if self.awaiting_ok {
                    ", routed handshake unanswered"
                } else {
                    ""
                }
            );
            return Some(self.fail(ctx, "hang (no progress)", what));
        }
        None
    }

    /// Records an unexpected end: the echoes still due are lost.
    fn fail(&mut self, ctx: &mut Ctx<'_>, kind: &str, what: String) -> End {
        ctx.stats.lost += self.outstanding.len() as u64;
        self.outstanding.clear();
        ctx.stats.error(kind, what);
        End::Failed
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) -> Option<End> {
        self.more_to_read = false;
        for _ in 0..READS_PER_TURN {
            let n = match self.stream.read(ctx.scratch) {
                Ok(0) => return Some(self.on_close(ctx, "closed by the daemon".into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(self.on_close(ctx, format!("read: {e}"))),
            };
            self.last_progress = Instant::now();
            // The scratch buffer is the context's: take it for the call.
            let scratch = std::mem::take(&mut ctx.scratch);
            let r = self.receive(ctx, &scratch[..n]);
            ctx.scratch = scratch;
            if r.is_some() {
                return r;
            }
        }
        self.more_to_read = true;
        None
    }

    /// The daemon closed the connection (or it failed): expected only after an
    /// over-the-limit message.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, how: String) -> End {
        if self.oversize_at.is_some() && self.outstanding.is_empty() {
            ctx.stats.oversize_refused += 1;
            return End::OversizeRefused;
        }
        let what = format!(
            "{}: {how}, {} echoes due{}",
            self.label(ctx.proto),
            self.outstanding.len(),
            if self.awaiting_ok {
                ", during the routed handshake"
            } else {
                ""
            }
        );
        let kind = if how.starts_with("closed") {
            "closed by the daemon"
        } else {
            "read error"
        };
        self.fail(ctx, kind, what)
    }

    /// Splits the bytes read into frames and checks each.
    fn receive(&mut self, ctx: &mut Ctx<'_>, mut data: &[u8]) -> Option<End> {
        loop {
            if self.hdr_have < 4 {
                if data.is_empty() {
                    return None;
                }
                let n = (4 - self.hdr_have).min(data.len());
                self.hdr[self.hdr_have..self.hdr_have + n].copy_from_slice(&data[..n]);
                self.hdr_have += n;
                data = &data[n..];
                if self.hdr_have < 4 {
                    return None;
                }
                self.frame_len = u32::from_be_bytes(self.hdr) as usize;
                self.frame.clear();
                if self.frame_len > ctx.max {
                    ctx.stats.corrupt += 1;
                    let what = format!(
                        "{}: a frame of {} bytes, over the limit",
                        self.label(ctx.proto),
                        self.frame_len
                    );
                    return Some(self.fail(ctx, "corrupt echo", what));
                }
            }
            let n = (self.frame_len - self.frame.len()).min(data.len());
            self.frame.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.frame.len() < self.frame_len {
                return None;
            }
            self.hdr_have = 0;
            let frame = std::mem::take(&mut self.frame);
            let r = self.reply(ctx, &frame);
            self.frame = frame;
            if r.is_some() {
                return r;
            }
        }
    }

    fn reply(&mut self, ctx: &mut Ctx<'_>, frame: &[u8]) -> Option<End> {
        if self.awaiting_ok {
            if frame == b"ok" {
                self.awaiting_ok = false;
                return None;
            }
            let what = format!(
                "{}: routed handshake answered {:?}",
                self.label(ctx.proto),
                String::from_utf8_lossy(&frame[..frame.len().min(80)])
            );
            return Some(self.fail(ctx, "service refused", what));
        }
        let Some(&(seq, len)) = self.outstanding.front() else {
            ctx.stats.corrupt += 1;
            let what = format!(
                "{}: an echo of {} bytes that nobody asked for",
                self.label(ctx.proto),
                frame.len()
            );
            return Some(self.fail(ctx, "corrupt echo", what));
        };
        if frame.len() == len && is_pattern(frame, key(self.id, seq)) {
            self.outstanding.pop_front();
            self.in_flight -= len;
            ctx.stats.received += 1;
            ctx.stats.received_bytes += len as u64;
            ctx.stats.at_limit += u64::from(len == ctx.max);
            return None;
        }
        let other = self
            .outstanding
            .iter()
            .skip(1)
            .find(|&&(s, l)| l == frame.len() && is_pattern(frame, key(self.id, s)));
        let (kind, what) = match other {
            Some(&(s, _)) => {
                ctx.stats.out_of_order += 1;
                let what = format!(
                    "{}: the echo of request {s} came while {seq} was due (lost or reordered)",
                    self.label(ctx.proto)
                );
                ("out of order", what)
            }
            None => {
                ctx.stats.corrupt += 1;
                let what = format!(
                    "{}: an echo of {} bytes matches no request ({seq} due, {len} bytes)",
                    self.label(ctx.proto),
                    frame.len()
                );
                ("corrupt echo", what)
            }
        };
        Some(self.fail(ctx, kind, what))
    }

    /// What to send next, into `out`.
    fn next(&mut self, ctx: &mut Ctx<'_>) -> Next {
        if self.oversize_at.is_some() {
            return Next::Nothing;
        }
        if let Mode::Abrupt { at, .. } = self.mode
            && self.next_seq == at
        {
            return Next::Cut;
        }
        if ctx.stopping || (self.awaiting_ok && !self.eager) {
            return Next::Nothing;
        }
        if let Mode::Slow { at, pause } = self.mode
            && self.next_seq == at
            && !self.paused_once
        {
            self.paused_once = true;
            self.paused_until = Some(Instant::now() + pause);
            ctx.stats.slow += 1;
        }
        let room = self.outstanding.len() < self.window
            && (self.in_flight < self.cap || self.outstanding.is_empty());
        if self.next_seq < self.planned && room {
            let len = ctx.rng.size(ctx.max);
            let seq = self.next_seq;
            self.out.extend_from_slice(&(len as u32).to_be_bytes());
            push_pattern(&mut self.out, key(self.id, seq), len);
            self.outstanding.push_back((seq, len));
            self.in_flight += len;
            self.next_seq += 1;
            ctx.stats.sent += 1;
            ctx.stats.sent_bytes += len as u64;
            return Next::Frame;
        }
        let all_echoed = self.outstanding.is_empty() && !self.awaiting_ok;
        if matches!(self.mode, Mode::Oversize) && self.next_seq >= self.planned && all_echoed {
            let len = ctx.max + 1;
            self.out.extend_from_slice(&(len as u32).to_be_bytes());
            push_pattern(&mut self.out, 0, len);
            self.oversize_at = Some(Instant::now());
            return Next::Frame;
        }
        Next::Nothing
    }

    /// Writes what there is to write, as far as the socket takes it.
    fn write(&mut self, ctx: &mut Ctx<'_>) -> Option<End> {
        loop {
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                match self.next(ctx) {
                    Next::Frame => {}
                    Next::Cut => return Some(self.cut(ctx)),
                    Next::Nothing => break,
                }
            }
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return self.write_error(ctx, e).err();
                }
                Ok(n) => {
                    self.out_pos += n;
                    self.last_progress = Instant::now();
                }
                Err(e) => match self.write_error(ctx, e) {
                    Ok(()) => return None,
                    Err(end) => return Some(end),
                },
            }
        }
        // TLS records, WebSocket frames still buffered.
        if let Err(e) = self.stream.flush() {
            return self.write_error(ctx, e).err();
        }
        if self.want_write {
            self.want_write = false;
            let _ = ctx
                .reg
                .reregister(&mut self.stream, self.token, Interest::READABLE);
        }
        None
    }

    /// `Ok`: wait for the socket (or try again); `Err`: the session is over.
    fn write_error(&mut self, ctx: &mut Ctx<'_>, e: io::Error) -> Result<(), End> {
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                if self.paused_until.is_some() && !self.blocked_in_pause {
                    self.blocked_in_pause = true;
                    ctx.stats.slow_blocked += 1;
                }
                if !self.want_write {
                    self.want_write = true;
                    let both = Interest::READABLE | Interest::WRITABLE;
                    let _ = ctx.reg.reregister(&mut self.stream, self.token, both);
                }
                Ok(())
            }
            io::ErrorKind::Interrupted => Ok(()),
            _ if self.oversize_at.is_some() => {
                // The daemon closed on the over-the-limit header while the
                // rest of it was being written: refused, as it should.
                ctx.stats.oversize_refused += 1;
                Err(End::OversizeRefused)
            }
            _ => {
                let what = format!("{}: write: {e}", self.label(ctx.proto));
                Err(self.fail(ctx, "write error", what))
            }
        }
    }

    /// Closes on purpose, with echoes in flight, maybe mid-frame, maybe with
    /// a reset.
    fn cut(&mut self, ctx: &mut Ctx<'_>) -> End {
        let Mode::Abrupt {
            mid_frame, reset, ..
        } = self.mode
        else {
            return End::Abrupt;
        };
        if mid_frame {
            let len = ctx.rng.size(ctx.max);
            self.out.extend_from_slice(&(len as u32).to_be_bytes());
            push_pattern(&mut self.out, 0, len / 2);
            // As much as the socket takes at once; the rest is never sent.
            let _ = self.stream.write(&self.out);
            let _ = self.stream.flush();
        }
        if reset {
            let lingerless = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let _ = setsockopt(&fd_of(&self.stream), sockopt::Linger, &lingerless);
        }
        ctx.stats.abandoned += self.outstanding.len() as u64;
        self.outstanding.clear();
        ctx.stats.abrupt += 1;
        End::Abrupt
    }
}

fn fd_of(s: &Stream) -> std::os::fd::BorrowedFd<'_> {
    match s {
        Stream::Unix(s) => s.as_fd(),
        Stream::Tcp(s) => s.as_fd(),
        Stream::Tls(s) => s.sock.as_fd(),
        Stream::Ws(s) => s.sock.as_fd(),
    }
}

/// One client thread's settings.
struct Plan {
    proto: Proto,
    addr: SocketAddr,
    clients: usize,
    max: usize,
    seed: u64,
    end: Instant,
    hard_end: Instant,
    abort: Arc<AtomicBool>,
}

/// The state of one client thread, but for its poll.
struct Client {
    slots: Vec<Option<Session>>,
    retry_at: Vec<Instant>,
    stats: Stats,
    rng: Rng,
    scratch: Vec<u8>,
    next_id: u64,
}

impl Client {
    fn ctx<'a>(
        &'a mut self,
        plan: &Plan,
        reg: &'a Registry,
        stopping: bool,
    ) -> (Ctx<'a>, &'a mut [Option<Session>]) {
        let ctx = Ctx {
            proto: plan.proto,
            max: plan.max,
            stats: &mut self.stats,
            rng: &mut self.rng,
            reg,
            scratch: &mut self.scratch,
            stopping,
        };
        (ctx, &mut self.slots)
    }
}

/// Gives the session in slot `i` (if any) a turn; closes it if it is over.
fn turn(slots: &mut [Option<Session>], i: usize, ctx: &mut Ctx<'_>, now: Instant) {
    let Some(s) = slots.get_mut(i).and_then(Option::as_mut) else {
        return;
    };
    if let Some(end) = s.turn(ctx, now)
        && let Some(s) = slots[i].take()
    {
        close(s, end, ctx);
    }
}

fn close(mut s: Session, end: End, ctx: &mut Ctx<'_>) {
    let _ = ctx.reg.deregister(&mut s.stream);
    match end {
        End::Completed => ctx.stats.completed += 1,
        // Counted where they happened.
        End::Abrupt | End::OversizeRefused | End::Failed => {}
    }
    // Dropped: closed (with a reset if `cut` set SO_LINGER 0).
}

/// One daemon's clients: `plan.clients` sessions at a time until the end,
/// then the echoes in flight until the hard stop. Publishes its counters into
/// `shared` as it goes.
fn drive(plan: &Plan, shared: &Mutex<Stats>) -> Result<()> {
    let tls = [tls::client_config(false)?, tls::client_config(true)?];
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut c = Client {
        slots: (0..plan.clients).map(|_| None).collect(),
        retry_at: vec![Instant::now(); plan.clients],
        stats: Stats::default(),
        rng: Rng(plan.seed),
        scratch: vec![0u8; 256 << 10],
        next_id: (plan.proto as u64) << 48,
    };
    let mut published = Instant::now();
    let mut next_scan = Instant::now();
    loop {
        let now = Instant::now();
        let stopping = now >= plan.end || plan.abort.load(Ordering::Relaxed);
        let hard_stop = now >= plan.hard_end;
        let retry_at = std::mem::take(&mut c.retry_at);
        let mut next_id = c.next_id;
        let (mut ctx, slots) = c.ctx(plan, poll.registry(), stopping);
        let mut retry_at = retry_at;
        for i in 0..slots.len() {
            if stopping || slots[i].is_some() || retry_at[i] > now {
                continue;
            }
            next_id += 1;
            match Session::open(&mut ctx, plan.addr, &tls, next_id, Token(i)) {
                Ok(s) => {
                    ctx.stats.sessions += 1;
                    slots[i] = Some(s);
                    // Its first bytes: the name, the first requests.
                    turn(slots, i, &mut ctx, Instant::now());
                }
                Err(e) => {
                    let what = format!("{}: connect: {e:#}", plan.proto.daemon());
                    ctx.stats.error("connect", what);
                    retry_at[i] = now + Duration::from_millis(200);
                }
            }
        }
        // Every session's turn now and then (pauses over, hangs, the stop),
        // and at once for those with reads left over.
        let scan = now >= next_scan || hard_stop;
        if scan {
            next_scan = now + SCAN;
        }
        for i in 0..slots.len() {
            if scan || slots[i].as_ref().is_some_and(|s| s.more_to_read) {
                turn(slots, i, &mut ctx, Instant::now());
            }
        }
        if hard_stop {
            for slot in slots.iter_mut() {
                let Some(mut s) = slot.take() else { continue };
                if !s.outstanding.is_empty() || s.awaiting_ok {
                    let what = format!(
                        "{}: {} echoes due at the hard stop",
                        s.label(plan.proto),
                        s.outstanding.len()
                    );
                    s.fail(&mut ctx, "unanswered at the hard stop", what);
                }
                close(s, End::Failed, &mut ctx);
            }
        }
        let idle = slots.iter().all(Option::is_none);
        let busy = slots.iter().flatten().any(|s| s.more_to_read);
        c.retry_at = retry_at;
        c.next_id = next_id;
        c.stats.open = c.slots.iter().flatten().count();
        if hard_stop || (stopping && idle) {
            break;
        }
        if now.duration_since(published) >= Duration::from_millis(250) {
            *shared.lock().expect("stats lock") = c.stats.clone();
            published = now;
        }
        let timeout = if busy {
            Duration::ZERO
        } else {
            next_scan.saturating_duration_since(Instant::now())
        };
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => r.context("poll")?,
        }
        let now = Instant::now();
        let (mut ctx, slots) = c.ctx(plan, poll.registry(), stopping);
        for ev in events.iter() {
            turn(slots, ev.token().0, &mut ctx, now);
        }
    }
    c.stats.open = 0;
    *shared.lock().expect("stats lock") = c.stats;
    Ok(())
}

/// Runs the soak; true if nothing was lost, corrupted or reordered and no
/// unexpected error happened.
pub fn run(args: SoakArgs) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    // With the seed, the same sessions, sizes and pauses (not the same timing).
    let mut cmd = crate::repro();
    if args.seed.is_none() {
        let _ = write!(cmd, " --seed {seed}");
    }
    let build = "cargo build --release -p tcpd -p tlsd -p websocketd -p ipc-bench";
    println!("reproduce: {build} && {cmd}");
    let nofile = crate::raise_nofile()?;
    println!("machine:   {}; RLIMIT_NOFILE {nofile}", crate::machine());
    let max = args.max_message_size;
    if max == 0 || max > libipc::frame::DEFAULT_MAX_MESSAGE_SIZE {
        bail!("--max-message-size: 1 byte to 1 MiB (the echo services refuse more)");
    }
    if !(3..=3000).contains(&args.clients) {
        bail!("--clients: 3 (one per daemon) to 3000");
    }
    if args.duration.is_zero() || args.report_every.is_zero() {
        bail!("--duration and --report-every must be more than 0");
    }
    let tools = Tools::find(args.daemons.given())?;
    let ours = ["tcpd", "tlsd", "websocketd"];
    let versions = tools.versions();
    let lines = versions.lines().filter(|l| {
        ours.iter()
            .any(|d| l.trim_start().starts_with(&format!("{d}:")))
    });
    println!("daemons:\n{}", lines.collect::<Vec<_>>().join("\n"));
    let rundir = RunDir::create()?;
    relay::write_certs(&rundir.0)?;
    let deadline = Duration::from_secs(10);
    let services = SERVICES
        .iter()
        .map(|n| Server::start(Kind::Queued, &rundir.0, n, None, deadline))
        .collect::<Result<Vec<_>>>()?;
    let mut daemons = Vec::new();
    for proto in Proto::ALL {
        let exe = match proto {
            Proto::Tcp => &tools.tcpd,
            Proto::Tls => &tools.tlsd,
            Proto::Ws => &tools.websocketd,
        };
        let name = proto.daemon();
        let exe = exe.as_ref().with_context(|| {
            format!("no {name} binary: build it with `cargo build --release -p {name}` (or pass --{name} PATH)")
        })?;
        daemons.push(Daemon::start(proto, exe, &rundir.0, max)?);
    }
    println!(
        "setup:     echo services {} and {} (pids {}, {}); each daemon in routed mode on \
         127.0.0.1, --max-message-size {max}, --no-outbound, defaults otherwise",
        SERVICES[0],
        SERVICES[1],
        services[0].pid(),
        services[1].pid()
    );
    for d in &daemons {
        println!(
            "           {} pid {} at {}",
            d.proto.daemon(),
            d.pid(),
            d.addr
        );
    }
    println!(
        "load:      {} clients ({} per daemon), messages 1 B..{max} B (3 % exactly {max} B), \
         seed {seed}\n           for {} s, then up to {} s for the echoes in flight",
        args.clients,
        per_daemon(args.clients).map(|n| n.to_string()).join("/"),
        args.duration.as_secs_f64(),
        args.grace.as_secs_f64()
    );

    let pids: Vec<u32> = daemons.iter().map(Daemon::pid).collect();
    hold_still(&pids);
    let start = pids.iter().map(|&p| sample(p)).collect::<Vec<_>>();
    let svc_start = services.iter().map(|s| sample(s.pid())).collect::<Vec<_>>();
    let t0 = Instant::now();
    let end = t0 + args.duration;
    let hard_end = end + args.grace;
    let abort = Arc::new(AtomicBool::new(false));
    let shared: Vec<Mutex<Stats>> = Proto::ALL.iter().map(|_| Mutex::default()).collect();
    let plans: Vec<Plan> = daemons
        .iter()
        .zip(per_daemon(args.clients))
        .enumerate()
        .map(|(i, (d, clients))| Plan {
            proto: d.proto,
            addr: d.addr,
            clients,
            max,
            seed: mix(seed ^ (i as u64 + 1).wrapping_mul(GOLDEN)),
            end,
            hard_end,
            abort: abort.clone(),
        })
        .collect();
    println!("\n== progress (RSS MiB / open fds per daemon; echoes received; errors)");
    let mut history = vec![(Duration::ZERO, start.clone())];
    let mut died = Vec::new();
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .zip(&shared)
            .map(|(plan, stats)| scope.spawn(move || drive(plan, stats)))
            .collect();
        let mut next_report = t0 + args.report_every;
        let early = t0 + args.duration.min(Duration::from_secs(20));
        let mut early_checked = false;
        while !handles.iter().all(|h| h.is_finished()) {
            let now = Instant::now();
            if now > hard_end + Duration::from_secs(30) {
                // The threads stop at the hard stop; this is only a backstop.
                break;
            }
            if !early_checked && now >= early {
                early_checked = true;
                for (d, s) in daemons.iter().zip(&shared) {
                    let s = s.lock().expect("stats lock");
                    if s.received == 0 && s.error_count() > 0 {
                        println!(
                            "  no echo through {} in {} s: stopping ({:?})",
                            d.proto.daemon(),
                            (now - t0).as_secs(),
                            s.examples.first()
                        );
                        abort.store(true, Ordering::Relaxed);
                    }
                }
            }
            for d in daemons.iter_mut() {
                if !died.contains(&d.proto)
                    && let Ok(Some(status)) = d.child.try_wait()
                {
                    println!("  {} EXITED: {status}", d.proto.daemon());
                    died.push(d.proto);
                    abort.store(true, Ordering::Relaxed);
                }
            }
            if now >= next_report && now < end {
                let samples: Vec<Sample> = pids.iter().map(|&p| sample(p)).collect();
                println!("{}", progress(now - t0, &samples, &shared));
                history.push((now - t0, samples));
                next_report += args.report_every;
            }
            let wait = if now >= end {
                Duration::from_millis(100)
            } else {
                next_report.min(end).saturating_duration_since(now)
            };
            std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(200)));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect::<Vec<_>>()
    });
    let load_end = t0.elapsed();
    // The daemons close their side of the last connections; give them a moment
    // (bounded) to get back to their descriptors at the start.
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle
        && pids.iter().zip(&start).any(|(&p, s)| {
            procs::fd_count(p)
                .zip(s.fds)
                .is_some_and(|(now, then)| now > then)
        })
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let finish: Vec<Sample> = pids.iter().map(|&p| sample(p)).collect();
    let svc_finish: Vec<Sample> = services.iter().map(|s| sample(s.pid())).collect();
    println!("{}", progress(load_end, &finish, &shared));
    history.push((load_end, finish.clone()));
    for d in daemons.iter_mut() {
        if !died.contains(&d.proto)
            && let Ok(Some(status)) = d.child.try_wait()
        {
            println!("  {} EXITED: {status}", d.proto.daemon());
            died.push(d.proto);
        }
    }
    let stats: Vec<Stats> = shared
        .into_iter()
        .map(|m| m.into_inner().expect("stats lock"))
        .collect();

    let mut failed = !died.is_empty();
    for (d, o) in daemons.iter().zip(outcomes) {
        if let Err(e) = o {
            println!("  {} clients FAILED: {e:#}", d.proto.daemon());
            failed = true;
        }
    }
    println!(
        "\n== soak: {} s of load, {} clients, limit {max} B, seed {seed}",
        args.duration.as_secs_f64(),
        args.clients
    );
    println!("{}", memory_table(&daemons, &history, &start, &finish));
    println!("{}", traffic_table(&daemons, &stats, max));
    for (d, s) in daemons.iter().zip(&stats) {
        let unaccounted = s.sent as i128 - (s.received + s.abandoned + s.lost) as i128;
        if unaccounted != 0 {
            println!(
                "  {}: {unaccounted} requests neither echoed, abandoned nor lost (a bench bug)",
                d.proto.daemon()
            );
            failed = true;
        }
        if s.bad() {
            failed = true;
            println!("  {} errors by kind: {:?}", d.proto.daemon(), s.errors);
            for e in &s.examples {
                println!("    {e}");
            }
        }
    }
    println!(
        "\ndaemon logs (the daemons' view; warnings and errors by message, closes by reason):"
    );
    for d in &daemons {
        println!("{}", log_summary(d.proto.daemon(), &d.log));
    }
    println!("echo services (RSS MiB, fds, start -> end):");
    for ((name, a), b) in SERVICES.iter().zip(&svc_start).zip(&svc_finish) {
        println!(
            "  {name}: {} -> {} MiB, {} -> {} fds",
            mib(a.rss_kib),
            mib(b.rss_kib),
            count(a.fds),
            count(b.fds)
        );
    }
    let keep = match (&args.keep_logs, failed) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => {
            Some(std::env::temp_dir().join(format!("ipc-bench-soak-logs-{}", std::process::id())))
        }
        (None, false) => None,
    };
    if let Some(dir) = keep {
        std::fs::create_dir_all(&dir)?;
        for d in &daemons {
            std::fs::copy(&d.log, dir.join(format!("{}.log", d.proto.daemon())))?;
        }
        println!("logs kept in {}", dir.display());
    }
    println!("\nreproduce: {build} && {cmd}");
    if failed {
        println!(
            "FAILED: loss, corruption, reordering, a hang, an exit or an unexpected error (see above)"
        );
    } else {
        println!("PASSED: no loss, corruption or reordering; no unexpected error");
    }
    Ok(!failed)
}

/// Waits (5 s at most) until the daemons' descriptor counts have held still
/// for half a second: a daemon logs its address before its workers are up,
/// and the start figures are of a daemon ready to serve.
fn hold_still(pids: &[u32]) {
    let counts = || pids.iter().map(|&p| procs::fd_count(p)).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut last, mut since) = (counts(), Instant::now());
    while Instant::now() < deadline && since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
        let now = counts();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// `clients` spread over the three daemons.
fn per_daemon(clients: usize) -> [usize; 3] {
    std::array::from_fn(|i| clients / 3 + usize::from(i < clients % 3))
}

fn progress(t: Duration, samples: &[Sample], shared: &[Mutex<Stats>]) -> String {
    let mut line = format!("  {:>6.0} s", t.as_secs_f64());
    for ((p, s), st) in Proto::ALL.iter().zip(samples).zip(shared) {
        let st = st.lock().expect("stats lock");
        let _ = write!(
            line,
            " | {} {}/{} {} open, {} echoes, {} err",
            p.daemon(),
            mib(s.rss_kib),
            count(s.fds),
            st.open,
            st.received,
            st.error_count()
        );
    }
    line
}

fn memory_table(
    daemons: &[Daemon],
    history: &[(Duration, Vec<Sample>)],
    start: &[Sample],
    finish: &[Sample],
) -> String {
    let mut t = String::from(
        "| daemon | RSS start MiB | RSS end MiB | peak RSS MiB | fds start | fds end | RSS MiB at each report |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (i, d) in daemons.iter().enumerate() {
        let series: Vec<String> = history.iter().map(|(_, s)| mib(s[i].rss_kib)).collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} |",
            d.proto.daemon(),
            mib(start[i].rss_kib),
            mib(finish[i].rss_kib),
            mib(finish[i].hwm_kib),
            count(start[i].fds),
            count(finish[i].fds),
            series.join(" "),
        );
    }
    let times: Vec<String> = history
        .iter()
        .map(|(t, _)| format!("{:.0}", t.as_secs_f64()))
        .collect();
    let _ = write!(t, "(reports at {} s)", times.join(", "));
    t
}

fn traffic_table(daemons: &[Daemon], stats: &[Stats], max: usize) -> String {
    let mut t = format!(
        "| daemon | sessions | completed | slow-reader pauses (writes blocked) | cut by the client | over-limit refused \
         | messages sent | echoes checked | GB each way | echoes of {max} B | abandoned (cut) | lost \
         | out of order | corrupt | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut total = Stats::default();
    for s in stats {
        total.sessions += s.sessions;
        total.completed += s.completed;
        total.slow += s.slow;
        total.slow_blocked += s.slow_blocked;
        total.abrupt += s.abrupt;
        total.oversize_refused += s.oversize_refused;
        total.sent += s.sent;
        total.received += s.received;
        total.received_bytes += s.received_bytes;
        total.at_limit += s.at_limit;
        total.abandoned += s.abandoned;
        total.lost += s.lost;
        total.out_of_order += s.out_of_order;
        total.corrupt += s.corrupt;
        for (k, v) in &s.errors {
            *total.errors.entry(k.clone()).or_default() += v;
        }
    }
    let names = daemons.iter().map(|d| d.proto.daemon()).chain(["total"]);
    for (name, s) in names.zip(stats.iter().chain([&total])) {
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {} ({}) | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
            s.sessions,
            s.completed,
            s.slow,
            s.slow_blocked,
            s.abrupt,
            s.oversize_refused,
            s.sent,
            s.received,
            s.received_bytes as f64 / 1e9,
            s.at_limit,
            s.abandoned,
            s.lost,
            s.out_of_order,
            s.corrupt,
            s.error_count(),
        );
    }
    t
}

/// A daemon's log, summed up: warnings and errors by message, closed
/// connections by reason.
fn log_summary(name: &str, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut levels: BTreeMap<String, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        // The reason is also on the refusal's warning: counted once, on the close.
        if line.contains("connection closed")
            && let Some(r) = line.split(" reason=").nth(1)
        {
            let r = r.strip_prefix('"').map_or_else(
                || r.split_whitespace().next().unwrap_or_default(),
                |q| q.split('"').next().unwrap_or_default(),
            );
            *reasons.entry(r.to_owned()).or_default() += 1;
        }
        for level in ["WARN", "ERROR"] {
            let Some(rest) = line.split_once(&format!(" {level} ")).map(|(_, r)| r) else {
                continue;
            };
            // After the span (`conn{...}: `) and the target (`daemon::engine: `),
            // the message's words up to its first field.
            let rest = rest.rsplit_once("}: ").map_or(rest, |(_, r)| r);
            let rest = rest.split_once(": ").map_or(rest, |(_, r)| r);
            let words: Vec<&str> = rest
                .split_whitespace()
                .take_while(|w| !w.contains('='))
                .collect();
            *levels
                .entry(format!("{level} {}", words.join(" ")))
                .or_default() += 1;
        }
    }
    let mut out = format!("  {name}: {} lines", text.lines().count());
    let mut by_count: Vec<_> = levels.into_iter().collect();
    by_count.sort_by_key(|b| std::cmp::Reverse(b.1));
    for (msg, n) in by_count.iter().take(8) {
        let _ = write!(out, "\n    {n} x {msg}");
    }
    if !reasons.is_empty() {
        let r: Vec<String> = reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(out, "\n    connections closed, by reason: {}", r.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10 min").is_err() && parse_duration("m").is_err());
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1G").is_err());
        assert_eq!(per_daemon(64), [22, 21, 21]);
    }

    #[test]
    fn log_summary_counts_each_close_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tlsd.log");
        let lines = [
            r#"2026-11-26T14:43:34Z  WARN conn{peer=127.0.0.1:1 service=soak-b}: daemon::engine: refused reason="service down""#,
            r#"2026-11-26T14:43:34Z  INFO conn{peer=127.0.0.1:1 service=soak-b}: daemon::engine: connection closed duration_ms=4 bytes_in=0 reason="service down""#,
            r#"2026-11-26T14:43:35Z  INFO conn{peer=127.0.0.1:2 service=soak-a}: daemon::engine: connection closed duration_ms=4 bytes_in=9 reason="closed""#,
            r#"2026-11-26T14:43:36Z  WARN libipc::context::relay: relay refused data; closing the pair conn=#8.1 error=Broken pipe"#,
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let s = log_summary("tlsd", &log);
        assert!(s.contains("4 lines"), "{s}");
        assert!(s.contains("1 x WARN refused\n"), "{s}");
        assert!(
            s.contains("1 x WARN relay refused data; closing the pair"),
            "{s}"
        );
        assert!(s.contains("by reason: closed: 1, service down: 1"), "{s}");
    }

    #[test]
    fn payloads_are_checked_in_full() {
        let mut rng = Rng(7);
        for _ in 0..200 {
            let len = rng.size(1 << 20);
            assert!((1..=1 << 20).contains(&len));
        }
        for len in [1, 7, 8, 9, 100, 4096] {
            let mut v = Vec::new();
            push_pattern(&mut v, key(3, 4), len);
            assert_eq!(v.len(), len);
            assert!(is_pattern(&v, key(3, 4)));
            // Another request's payload, and any flipped byte, do not match.
            assert!(len < 8 || !is_pattern(&v, key(3, 5)));
            v[len / 2] ^= 0x20;
            assert!(!is_pattern(&v, key(3, 4)));
        }
    }
}
