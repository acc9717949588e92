//! The load generator: one mio event loop driving N connections, the same code
//! for every service and relay, over a unix socket or over TCP.
//!
//! Each connection keeps `window` requests outstanding: a reply is checked, its
//! round trip recorded, and the next request sent. Every reply's length and tag
//! (sequence number and connection number) is checked, and the whole payload of
//! every 16th reply per connection. Only replies received inside the measured
//! interval (after the warm-up) count; requests still outstanding at its end are
//! drained (and checked) before returning.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::time::TimeVal;

use crate::hist::Histogram;
use crate::procs;
use crate::server::process_cpu;
use crate::stream::connect;
pub use crate::stream::{Stream, Target};

/// Bytes at the start of each payload naming it: sequence number, connection number.
const TAG: usize = 12;
/// Every SAMPLE-th reply of a connection (starting with the first) is compared in full.
const SAMPLE: u64 = 16;
/// How long outstanding replies may take to come back after the measured interval.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Load<'a> {
    pub target: Target<'a>,
    pub conns: usize,
    pub size: usize,
    pub window: usize,
    pub warmup: Duration,
    pub seconds: Duration,
    pub max_messages: u64,
    pub server_pid: u32,
    /// A relay between client and service: the root of its process tree, whose
    /// CPU time (all descendants: socat forks one per connection) is reported.
    pub relay_pid: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub connect_time: Duration,
    /// Replies received inside the measured interval, and its length.
    pub messages: u64,
    pub interval: Duration,
    pub latency: Histogram,
    /// Connections with at least one reply in the interval; fewest and most replies.
    pub served: usize,
    pub min_per_conn: u64,
    pub max_per_conn: u64,
    /// Replies compared in full, and all replies received (interval or not).
    pub checked_full: u64,
    pub received: u64,
    pub errors: Vec<String>,
    pub server_cpu: Option<Duration>,
    pub relay_cpu: Option<Duration>,
    pub client_cpu: Duration,
}

/// Connections left open by [`run_and_hold`], closed on drop.
#[derive(Debug)]
pub struct Held(Vec<Stream>);

impl Held {
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

struct Conn {
    stream: Stream,
    out: Vec<u8>,
    out_pos: usize,
    want_write: bool,
    partial: Vec<u8>,
    sent_at: VecDeque<Instant>,
    next_seq: u64,
    expect_seq: u64,
    in_interval: u64,
    failed: bool,
}

/// Run-wide state the per-connection code updates.
struct Shared {
    /// The payload of every request, before its tag is written over its start.
    template: Vec<u8>,
    window: usize,
    measure_from: Instant,
    stop_at: Instant,
    sent: u64,
    max_messages: u64,
    received: u64,
    /// Requests of failed connections, never to be answered.
    abandoned: u64,
    counted: u64,
    last_counted: Instant,
    checked_full: u64,
    latency: Histogram,
}

impl Shared {
    fn new(template: Vec<u8>, window: usize, measure_from: Instant, seconds: Duration) -> Self {
        Shared {
            template,
            window: window.max(1),
            measure_from,
            stop_at: measure_from + seconds,
            sent: 0,
            max_messages: u64::MAX,
            received: 0,
            abandoned: 0,
            counted: 0,
            last_counted: measure_from,
            checked_full: 0,
            latency: Histogram::default(),
        }
    }

    fn may_send(&self, now: Instant) -> bool {
        now < self.stop_at && self.sent < self.max_messages
    }
}

fn tag(seq: u64, conn: usize) -> [u8; TAG] {
    let mut t = [0u8; TAG];
    t[..8].copy_from_slice(&seq.to_le_bytes());
    t[8..].copy_from_slice(&(conn as u32).to_le_bytes());
    t
}

impl Conn {
    fn new(stream: Stream, window: usize) -> Self {
        Conn {
            stream,
            out: Vec::new(),
            out_pos: 0,
            want_write: false,
            partial: Vec::new(),
            sent_at: VecDeque::with_capacity(window),
            next_seq: 0,
            expect_seq: 0,
            in_interval: 0,
            failed: false,
        }
    }

    fn push_request(&mut self, idx: usize, sh: &mut Shared, now: Instant) {
        let size = sh.template.len();
        let t = TAG.min(size);
        self.out.extend_from_slice(&(size as u32).to_be_bytes());
        self.out.extend_from_slice(&tag(self.next_seq, idx)[..t]);
        self.out.extend_from_slice(&sh.template[t..]);
        self.sent_at.push_back(now);
        self.next_seq += 1;
        sh.sent += 1;
    }

    /// Tops the window up, then writes what the socket takes.
    fn refill_and_flush(&mut self, idx: usize, sh: &mut Shared, reg: &Registry) -> io::Result<()> {
        if self.out_pos > 0 && self.out_pos * 2 >= self.out.len() {
            // With a wide window the buffer may never empty completely: drop what
            // was written (moving at most as much as was written: amortised O(1)).
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        let now = Instant::now();
        while self.sent_at.len() < sh.window && sh.may_send(now) {
            self.push_request(idx, sh, now);
        }
        loop {
            // Then, through TLS, the records still queued.
            let r = if self.out_pos < self.out.len() {
                self.stream.write(&self.out[self.out_pos..])
            } else {
                self.stream.flush().map(|()| 0)
            };
            match r {
                Ok(0) if self.out_pos == self.out.len() => break,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.want_write {
                        self.want_write = true;
                        let both = Interest::READABLE | Interest::WRITABLE;
                        reg.reregister(&mut self.stream, Token(idx), both)?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.want_write {
            // Writability is only watched while blocked: otherwise every read the
            // service does would wake us up for nothing.
            self.want_write = false;
            reg.reregister(&mut self.stream, Token(idx), Interest::READABLE)?;
        }
        Ok(())
    }

    /// Splits `data` (bytes read at `now`) into replies; every frame must be
    /// exactly as long as a request.
    fn receive(
        &mut self,
        idx: usize,
        mut data: &[u8],
        now: Instant,
        sh: &mut Shared,
    ) -> Result<()> {
        let frame = 4 + sh.template.len();
        let mut partial = std::mem::take(&mut self.partial);
        if !partial.is_empty() {
            let take = (frame - partial.len()).min(data.len());
            partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if partial.len() == frame {
                self.reply(idx, &partial, now, sh)?;
                partial.clear();
            }
        }
        while data.len() >= frame {
            self.reply(idx, &data[..frame], now, sh)?;
            data = &data[frame..];
        }
        partial.extend_from_slice(data);
        self.partial = partial;
        Ok(())
    }

    fn reply(&mut self, idx: usize, frame: &[u8], now: Instant, sh: &mut Shared) -> Result<()> {
        let size = sh.template.len();
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if len != size {
            bail!("connection {idx}: echo of {len} bytes, sent {size}");
        }
        let payload = &frame[4..];
        let seq = self.expect_seq;
        let t = TAG.min(size);
        if payload[..t] != tag(seq, idx)[..t] {
            bail!("connection {idx}: reply {seq} carries the wrong tag");
        }
        if seq.is_multiple_of(SAMPLE) {
            if payload[t..] != sh.template[t..] {
                bail!("connection {idx}: reply {seq} differs from its request");
            }
            sh.checked_full += 1;
        }
        let sent = self
            .sent_at
            .pop_front()
            .context("a reply nobody asked for")?;
        self.expect_seq += 1;
        sh.received += 1;
        if now >= sh.measure_from && now < sh.stop_at {
            sh.latency.record(now - sent);
            sh.counted += 1;
            sh.last_counted = now;
            self.in_interval += 1;
        }
        Ok(())
    }
}

fn own_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let t = |tv: TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
        t(u.user_time()) + t(u.system_time())
    })
}

/// Connects, runs the load for warm-up + `seconds`, drains, and reports.
pub fn run(load: &Load<'_>) -> Result<Outcome> {
    drive(load).map(|(o, _)| o)
}

/// As [`run`], but hands back the connections, still open, for the caller to
/// measure something while they are idle (memory of a relay per connection).
pub fn run_and_hold(load: &Load<'_>) -> Result<(Outcome, Held)> {
    let (o, conns) = drive(load)?;
    Ok((o, Held(conns.into_iter().map(|c| c.stream).collect())))
}

fn drive(load: &Load<'_>) -> Result<(Outcome, Vec<Conn>)> {
    let mut poll = Poll::new()?;
    let connecting = Instant::now();
    let connect_deadline = connecting + Duration::from_secs(60);
    let mut conns = Vec::with_capacity(load.conns);
    for idx in 0..load.conns {
        if Instant::now() > connect_deadline {
            bail!("only {idx} of {} connections made in 60 s", load.conns);
        }
        let mut stream =
            connect(load.target).with_context(|| format!("connection {idx} of {}", load.conns))?;
        poll.registry()
            .register(&mut stream, Token(idx), Interest::READABLE)?;
        conns.push(Conn::new(stream, load.window));
    }
    let connect_time = connecting.elapsed();

    let start = Instant::now();
    let template: Vec<u8> = (0..load.size).map(|i| (i * 31 + 7) as u8).collect();
    let mut sh = Shared::new(template, load.window, start + load.warmup, load.seconds);
    sh.max_messages = load.max_messages;
    let hard_end = sh.stop_at + DRAIN;
    let mut errors = Vec::new();
    let mut failed = 0;
    for (idx, c) in conns.iter_mut().enumerate() {
        if let Err(e) = c.refill_and_flush(idx, &mut sh, poll.registry()) {
            errors.push(format!("connection {idx}: write: {e}"));
            c.failed = true;
            failed += 1;
            sh.abandoned += c.sent_at.len() as u64;
            c.sent_at.clear();
        }
    }

    let mut events = Events::with_capacity(1024);
    // 256 KiB: a few 64 KiB replies, or thousands of small ones, per read.
    let mut scratch = vec![0u8; 256 << 10];
    let (mut cpu_from, mut cpu_to) = (None, None);
    let sample = || CpuSample {
        server: process_cpu(load.server_pid),
        relay: load.relay_pid.and_then(procs::tree_cpu),
        client: own_cpu(),
    };
    loop {
        let now = Instant::now();
        if cpu_from.is_none() && now >= sh.measure_from {
            cpu_from = Some(sample());
        }
        if cpu_to.is_none() && now >= sh.stop_at {
            cpu_to = Some(sample());
        }
        let outstanding = sh.sent - sh.received - sh.abandoned;
        if (!sh.may_send(now) && outstanding == 0) || now >= hard_end {
            break;
        }
        if failed == conns.len() {
            break;
        }
        let next = [sh.measure_from, sh.stop_at, hard_end]
            .into_iter()
            .find(|&t| t > now)
            .unwrap_or(hard_end);
        match poll.poll(&mut events, Some(next - now)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for ev in events.iter() {
            let idx = ev.token().0;
            let c = &mut conns[idx];
            if c.failed {
                continue;
            }
            let mut result = Ok(());
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                result = read_all(c, idx, &mut scratch, &mut sh);
            }
            if result.is_ok() {
                result = c
                    .refill_and_flush(idx, &mut sh, poll.registry())
                    .map_err(anyhow::Error::from);
            }
            if let Err(e) = result {
                errors.push(format!("connection {idx}: {e:#}"));
                c.failed = true;
                failed += 1;
                // Its outstanding requests will never be answered: stop waiting.
                sh.abandoned += c.sent_at.len() as u64;
                c.sent_at.clear();
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
    if cpu_to.is_none() {
        // The message cap ended the interval early.
        cpu_to = Some(sample());
    }
    let lost = sh.sent - sh.received - sh.abandoned;
    if lost > 0 {
        errors.push(format!(
            "{lost} replies missing {} s after the end",
            DRAIN.as_secs()
        ));
    }
    let interval_end = if sh.sent >= sh.max_messages {
        sh.last_counted.min(sh.stop_at)
    } else {
        sh.stop_at
    };
    let cpu = |f: fn(&CpuSample) -> Option<Duration>| {
        Some(f(cpu_to.as_ref()?)?.saturating_sub(f(cpu_from.as_ref()?)?))
    };
    let outcome = Outcome {
        connect_time,
        messages: sh.counted,
        interval: interval_end.saturating_duration_since(sh.measure_from),
        served: conns.iter().filter(|c| c.in_interval > 0).count(),
        min_per_conn: conns.iter().map(|c| c.in_interval).min().unwrap_or(0),
        max_per_conn: conns.iter().map(|c| c.in_interval).max().unwrap_or(0),
        checked_full: sh.checked_full,
        received: sh.received,
        errors,
        server_cpu: cpu(|c| c.server),
        relay_cpu: cpu(|c| c.relay),
        client_cpu: cpu(|c| Some(c.client)).unwrap_or_default(),
        latency: sh.latency,
    };
    Ok((outcome, conns))
}

/// CPU time used so far by the service, the relay's processes, and this client.
struct CpuSample {
    server: Option<Duration>,
    relay: Option<Duration>,
    client: Duration,
}

/// Reads until the socket is drained.
fn read_all(c: &mut Conn, idx: usize, scratch: &mut [u8], sh: &mut Shared) -> Result<()> {
    loop {
        let n = match c.stream.read(scratch) {
            Ok(0) => bail!("the service closed the connection"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        c.receive(idx, &scratch[..n], Instant::now(), sh)?;
        if n < scratch.len() && c.stream.short_read_drains() {
            // A short read emptied the socket; data arriving later raises a new
            // edge, so the extra read that would return EAGAIN can be skipped.
            return Ok(());
        }
    }
}

/// For the tests of every kind of stream: `max` requests of `size` bytes on 3
/// connections, window 4, to an echo at `target`; every reply must come back
/// and be checked.
#[cfg(test)]
pub fn assert_echoes(target: Target<'_>, size: usize, max: u64) -> Outcome {
    let load = Load {
        target,
        conns: 3,
        size,
        window: 4,
        warmup: Duration::ZERO,
        seconds: Duration::from_secs(10),
        max_messages: max,
        server_pid: std::process::id(),
        relay_pid: None,
    };
    let (o, held) = run_and_hold(&load).unwrap();
    assert!(o.errors.is_empty(), "{size} B: {:?}", o.errors);
    assert_eq!((o.received, o.served, held.count()), (max, 3, 3));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::UnixStream;

    /// Requests echoed back in odd-sized pieces are accepted; a reply whose
    /// payload differs from its request, or comes back shorter, is refused.
    #[test]
    fn replies_are_split_and_checked() {
        let (a, _b) = UnixStream::pair().unwrap();
        let now = Instant::now();
        let template: Vec<u8> = (0..100u8).collect();
        let mut sh = Shared::new(template, 40, now, Duration::from_secs(60));
        let mut c = Conn::new(Stream::Unix(a), 40);
        for _ in 0..40 {
            c.push_request(3, &mut sh, now);
        }
        let echo = c.out.clone();
        for piece in echo.chunks(37) {
            c.receive(3, piece, now, &mut sh).unwrap();
        }
        assert_eq!((sh.received, sh.counted, sh.checked_full), (40, 40, 3));
        assert_eq!(sh.latency.count(), 40);

        // Reply 16 is compared in full: flip one byte past its tag.
        let mut bad = c.out.clone();
        bad[16 * 104 + 4 + TAG + 1] ^= 1;
        let mut c = Conn::new(Stream::Unix(UnixStream::pair().unwrap().0), 40);
        for _ in 0..40 {
            c.push_request(3, &mut sh, now);
        }
        let err = c.receive(3, &bad, now, &mut sh).unwrap_err();
        assert!(err.to_string().contains("reply 16 differs"), "{err}");

        // A frame announcing another length is refused at once.
        let mut c = Conn::new(Stream::Unix(UnixStream::pair().unwrap().0), 1);
        c.push_request(0, &mut sh, now);
        let mut short = c.out.clone();
        short[3] = 99;
        let err = c.receive(0, &short, now, &mut sh).unwrap_err();
        assert!(err.to_string().contains("echo of 99 bytes"), "{err}");
    }

    /// Over TCP, against a plain byte echo (which is what a relay in front of an
    /// echo service looks like), every request comes back and is checked.
    #[test]
    fn tcp_round_trips() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        let o = assert_echoes(Target::Tcp(addr), 1000, 300);
        assert!(o.checked_full >= 3 * (100 / SAMPLE), "{}", o.checked_full);
    }
}
