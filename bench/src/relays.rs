//! `ipc-bench relays`: tcpd against nginx, HAProxy and socat, each relaying TCP
//! clients to the same libipc echo service, plus the client on the service's
//! unix socket directly.
//!
//! Every run starts a fresh echo service and a fresh relay, runs the same client
//! as the other scenarios (over TCP, TCP_NODELAY; every reply checked) and kills
//! both. `--rounds` runs of each relay are interleaved (the order rotates each
//! round) and the median by message rate is reported. The idle workload holds
//! 1,000 connections, each having echoed one message, and reads the relay's
//! memory.
//!
//! `ipc-bench tls` is the same with other defaults: tlsd against HAProxy (`ssl
//! crt`) and stunnel, tcpd beside them as the figure without TLS, and two more
//! workloads, a new connection per echo with a full or a resumed TLS handshake
//! (tls.rs). `ipc-bench ws` is the same again for websocketd against websocat
//! and websockify, the client speaking WebSocket (ws.rs). Ratios compare tcpd,
//! tlsd and websocketd with the relays that speak the same protocol.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use crate::client::{self, Load};
use crate::procs::{self, Memory};
use crate::relay::{DaemonPaths, Relay, RelayKind, Tools};
use crate::server::{Kind, Server};
use crate::tls::{self, Cycles};
use crate::{Figures, RunDir};

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Runs per relay per loaded workload (the median by message rate is
    /// reported); the idle workload runs at most 3.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Workloads to run (repeatable); all by default.
    #[arg(long = "workload", value_enum)]
    workloads: Vec<Workload>,
    /// Relays to run (repeatable). `relays`: by default all the plain ones but
    /// `tcpd` (the default tcpd is tcpd-w2 on 2 cores); `tls`: tcpd-w1, tlsd-w1,
    /// tlsd-w2, haproxy-tls, stunnel; `ws`: websocketd-w1, websocketd-w2,
    /// websocat, websockify.
    #[arg(long = "relay", value_enum)]
    relays: Vec<RelayKind>,
    /// Connections held open by the idle workload.
    #[arg(long, default_value_t = 1000)]
    idle_conns: usize,
    /// Event loops of the echo service behind the relays: 1, or 2 (one per
    /// core, `Context::share_service`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    service_loops: u8,
    /// Pin the relay (all its threads and processes) to CPU 1, and this
    /// client and the echo service to CPU 0: the relay has a core of its own,
    /// so with enough load its message rate is the relay's own limit.
    #[arg(long)]
    pin_relay: bool,
    /// Client threads of the handshake workloads (each a connection at a time).
    #[arg(long, default_value_t = 4)]
    hs_threads: usize,
    /// Cap on the connections of one handshake run (warm-up included).
    #[arg(long, default_value_t = 200_000)]
    hs_max: u64,
    #[command(flatten)]
    daemons: DaemonPaths,
    /// The websocat binary (default: in $PATH, or ~/.cargo/bin/websocat).
    #[arg(long)]
    websocat: Option<PathBuf>,
    /// The websockify script (default: target/bench-venv/bin/websockify, or
    /// in $PATH).
    #[arg(long)]
    websockify: Option<PathBuf>,
}

/// Which default relays and workloads: `relays`, `tls` or `ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Plain,
    Tls,
    Ws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// 1 connection, 64 KiB messages, window 8 (throughput).
    #[value(name = "1conn-64k")]
    Throughput,
    /// 1 connection, 64 B messages, window 1 (latency).
    #[value(name = "1conn-64b")]
    Latency,
    /// 32 connections, 64 B messages, window 16 (message rate).
    #[value(name = "32conn-64b")]
    Rate,
    /// Idle connections: the relay's memory per connection.
    #[value(name = "idle")]
    Idle,
    /// A new connection per 64 B echo, closed after it; full TLS handshakes.
    #[value(name = "handshake")]
    Handshake,
    /// The same with TLS session resumption (TLS relays only).
    #[value(name = "resume")]
    Resume,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Throughput,
        Workload::Latency,
        Workload::Rate,
        Workload::Idle,
    ];
    const TLS: [Workload; 5] = [
        Workload::Throughput,
        Workload::Rate,
        Workload::Handshake,
        Workload::Resume,
        Workload::Idle,
    ];

    /// A connection per message: the rate is of connections.
    fn is_cycle(self) -> bool {
        matches!(self, Workload::Handshake | Workload::Resume)
    }

    /// (connections, size, window) of the loaded workloads.
    fn shape(self) -> (usize, usize, usize) {
        match self {
            Workload::Throughput => (1, 64 << 10, 8),
            Workload::Latency => (1, 64, 1),
            Workload::Rate => (32, 64, 16),
            Workload::Idle | Workload::Handshake | Workload::Resume => (0, 64, 1),
        }
    }

    fn name(self) -> String {
        self.to_possible_value()
            .expect("not skipped")
            .get_name()
            .to_owned()
    }
}

/// The minimum tcpd/other (tlsd/other) ratio the issues ask for, if any:
/// message rate (and MB/s) for every loaded workload, and also p50 no longer
/// for latency; handshakes per second.
fn target(w: Workload, other: RelayKind) -> Option<f64> {
    use RelayKind::*;
    match (w, other) {
        (Workload::Throughput, Nginx | Haproxy) => Some(1.5),
        (Workload::Throughput, Nginx256k | Haproxy256k) => Some(1.0),
        (Workload::Latency | Workload::Rate, Nginx | Haproxy) => Some(1.0),
        (
            Workload::Throughput | Workload::Rate | Workload::Handshake | Workload::Resume,
            HaproxyTls | Stunnel,
        ) => Some(1.0),
        (Workload::Throughput | Workload::Latency | Workload::Rate, Websocat) => Some(1.0),
        _ => None,
    }
}

/// Idle memory target: bytes per connection.
const IDLE_TARGET: f64 = 1024.0;

/// One loaded run's result.
#[derive(Debug, Clone, Copy)]
struct Run {
    fig: Figures,
    /// CPU µs per message: relay (all its processes), service.
    relay_cpu: Option<f64>,
    svc_cpu: Option<f64>,
}

/// One idle run's result: memory per connection, bytes.
#[derive(Debug, Clone, Copy)]
struct Idle {
    /// Connections held (fewer than asked for a relay that cannot hold them).
    conns: usize,
    relay_rss: Option<f64>,
    relay_pss: Option<f64>,
    relay_procs: usize,
    svc_rss: f64,
    /// Time to make all the connections (back to back, blocking connects).
    connect_ms: f64,
}

struct State {
    args: RelayArgs,
    tools: Tools,
    rundir: RunDir,
    runs: usize,
    failed: bool,
}

pub fn run(args: RelayArgs, suite: Suite) -> Result<bool> {
    let cmd = crate::repro();
    let build = match suite {
        Suite::Ws => "cargo build --release -p websocketd -p ipc-bench",
        _ => "cargo build --release -p tcpd -p tlsd -p ipc-bench",
    };
    println!("reproduce: {build} && {cmd}");
    let nofile = crate::raise_nofile()?;
    println!("machine:   {}; RLIMIT_NOFILE {nofile}", crate::machine());
    if args.idle_conns * 2 + 64 > nofile as usize {
        bail!(
            "--idle-conns {}: RLIMIT_NOFILE is {nofile}",
            args.idle_conns
        );
    }
    if !(args.seconds > 0.0 && args.warmup >= 0.0) {
        bail!("--seconds must be > 0 and --warmup >= 0");
    }
    let tools = Tools::find(Tools {
        websocat: args.websocat.clone(),
        websockify: args.websockify.clone(),
        ..args.daemons.given()
    })?;
    println!("tools:\n{}", tools.versions().trim_end());
    println!(
        "service:   the libipc echo service on {} event loop(s)",
        args.service_loops
    );
    if args.pin_relay {
        crate::pin(0)?;
        println!("pinning:   the relay on CPU 1; this client and the echo service on CPU 0");
    }
    let mut relays = match (args.relays.is_empty(), suite) {
        (false, _) => args.relays.clone(),
        (true, Suite::Plain) => RelayKind::DEFAULT.to_vec(),
        (true, Suite::Tls) => RelayKind::TLS_DEFAULT.to_vec(),
        (true, Suite::Ws) => RelayKind::WS_DEFAULT.to_vec(),
    };
    for k in relays.clone() {
        if let Some(why) = tools.missing(k) {
            if k.is_ours() {
                bail!("{why}");
            }
            println!("skipped:   {} ({why})", k.label());
            relays.retain(|&r| r != k);
        }
    }
    println!(
        "figures:   msgs/s and MB/s (payload one way, 10^6 B) over {} s after {} s warm-up; \
         p50/p99 round trip;\n           CPU µs/msg of the relay (all its processes) and of \
         the echo service; median of {} runs by msgs/s",
        args.seconds,
        args.warmup,
        args.rounds.max(1)
    );
    let workloads = match (args.workloads.is_empty(), suite) {
        (false, _) => args.workloads.clone(),
        (true, Suite::Plain | Suite::Ws) => Workload::ALL.to_vec(),
        (true, Suite::Tls) => Workload::TLS.to_vec(),
    };
    let mut st = State {
        args,
        tools,
        rundir: RunDir::create()?,
        runs: 0,
        failed: false,
    };
    if relays.iter().any(|k| k.is_tls()) {
        crate::relay::write_certs(&st.rundir.0)?;
        println!(
            "TLS:       TLS 1.3 only, TLS13_AES_128_GCM_SHA256, X25519; ECDSA P-256 server \
             certificate; the client checks the handshake signature, not the chain"
        );
    }
    if relays.iter().any(|k| k.ws_mode().is_some()) {
        println!(
            "WebSocket: binary messages, masked by the client; websocketd and websocat carry \
             one LibIPC message per\n           WebSocket message, websockify and \
             websocat-bytes LibIPC frames (length included) inside the messages"
        );
    }
    let mut report = String::new();
    for w in workloads {
        let (conns, size, window) = w.shape();
        if w == Workload::Idle {
            println!(
                "\n== idle: {} connections, each echoed one {size}-byte message",
                st.args.idle_conns
            );
            // Memory hardly varies from run to run: three runs are plenty.
            let n = st.args.rounds.min(3);
            let res = rounds(&mut st, &relays, n, idle)?;
            report += &idle_table(&st, &res);
        } else if w.is_cycle() {
            let resume = w == Workload::Resume;
            // Resumption is a TLS matter: the plain relays sit it out.
            let these: Vec<RelayKind> = relays
                .iter()
                .copied()
                .filter(|k| !resume || k.is_tls())
                .collect();
            println!(
                "\n== {}: {} client threads, each a new connection ({} TLS handshake), one \
                 {size}-byte echo, close",
                w.name(),
                st.args.hs_threads,
                if resume { "resumed" } else { "full" }
            );
            let n = st.args.rounds;
            let res = rounds(&mut st, &these, n, |st, k| connects(st, k, resume))?;
            report += &loaded_table(w, conns, size, window, &these, &res);
        } else {
            println!(
                "\n== {}: {conns} connection(s), {size}-byte messages, window {window}",
                w.name()
            );
            let n = st.args.rounds;
            let res = rounds(&mut st, &relays, n, |st, k| {
                loaded(st, k, conns, size, window)
            })?;
            report += &loaded_table(w, conns, size, window, &relays, &res);
        }
    }
    println!("\n{report}");
    println!("reproduce: {build} && {cmd}");
    if st.failed {
        println!("FAILED: some runs failed, lost or corrupted messages (see above)");
    }
    Ok(!st.failed)
}

/// Runs `one` for each relay `--rounds` times, rotating the order every round;
/// keeps the successful runs of each relay with their round number.
fn rounds<T>(
    st: &mut State,
    relays: &[RelayKind],
    rounds: usize,
    mut one: impl FnMut(&mut State, RelayKind) -> Result<T>,
) -> Result<HashMap<RelayKind, Vec<(usize, T)>>> {
    let mut res: HashMap<RelayKind, Vec<(usize, T)>> = HashMap::new();
    for r in 0..rounds.max(1) {
        for i in 0..relays.len() {
            let k = relays[(i + r) % relays.len()];
            match one(st, k) {
                Ok(v) => res.entry(k).or_default().push((r, v)),
                Err(e) => {
                    st.failed = true;
                    println!("  {:<12} FAILED: {e:#}", k.label());
                }
            }
        }
    }
    Ok(res)
}

/// A fresh echo service and relay for one run.
fn start(st: &mut State, kind: RelayKind) -> Result<(Server, Relay)> {
    st.runs += 1;
    let name = format!("echo-{}", st.runs);
    let dir = &st.rundir.0;
    let deadline = Duration::from_secs(10);
    let service = if st.args.service_loops == 2 {
        Kind::Libipc2
    } else {
        Kind::Libipc
    };
    let pin = st.args.pin_relay;
    let server = Server::start(service, dir, &name, pin.then_some(0), deadline)?;
    let rdir = dir.join(format!("{}-{}", kind.label(), st.runs));
    let relay = Relay::start(kind, &st.tools, dir, &name, &rdir, deadline)?;
    if let (true, Some(pid)) = (pin, relay.pid()) {
        crate::procs::pin_tree(pid, 1)?;
    }
    Ok((server, relay))
}

fn loaded(
    st: &mut State,
    kind: RelayKind,
    conns: usize,
    size: usize,
    window: usize,
) -> Result<Run> {
    let (server, relay) = start(st, kind)?;
    let load = Load {
        target: relay.target(),
        conns,
        size,
        window,
        warmup: Duration::from_secs_f64(st.args.warmup),
        seconds: Duration::from_secs_f64(st.args.seconds),
        max_messages: u64::MAX,
        server_pid: server.pid(),
        relay_pid: relay.pid(),
    };
    let o = client::run(&load)?;
    drop(relay);
    drop(server);
    let fig = Figures::of(&o, size);
    let per_msg = |cpu: Duration| cpu.as_secs_f64() * 1e6 / o.messages.max(1) as f64;
    let run = Run {
        fig,
        relay_cpu: o.relay_cpu.map(per_msg),
        svc_cpu: o.server_cpu.map(per_msg),
    };
    println!(
        "  {:<12} {:>9.0} msgs/s {:>7.1} MB/s  p50 {:>7.1} µs  p99 {:>7.1} µs | CPU µs/msg \
         relay {} svc {} cli {:.2} | served {}/{conns}, {} checked in full",
        kind.label(),
        fig.rate,
        fig.mbps,
        fig.p50_us,
        fig.p99_us,
        opt(run.relay_cpu, 2),
        opt(run.svc_cpu, 2),
        per_msg(o.client_cpu),
        o.served,
        o.checked_full,
    );
    if o.served < conns || !o.errors.is_empty() || o.messages == 0 {
        let first = o.errors.first().cloned().unwrap_or_default();
        bail!(
            "{} error(s), {}/{conns} served: {first}",
            o.errors.len(),
            o.served
        );
    }
    Ok(run)
}

/// The handshake workloads: a new connection per echo.
fn connects(st: &mut State, kind: RelayKind, resume: bool) -> Result<Run> {
    let (server, relay) = start(st, kind)?;
    let Some(addr) = relay.addr() else {
        bail!("the handshake workloads need a relay (TCP)");
    };
    let w = Cycles {
        addr,
        tls: kind.is_tls().then_some(resume),
        threads: st.args.hs_threads,
        warmup: Duration::from_secs_f64(st.args.warmup),
        seconds: Duration::from_secs_f64(st.args.seconds),
        max: st.args.hs_max,
        server_pid: server.pid(),
        relay_pid: relay.pid(),
    };
    let o = tls::cycles(&w)?;
    drop(relay);
    drop(server);
    let secs = o.interval.as_secs_f64().max(1e-9);
    let us = |q| o.latency.quantile(q).as_nanos() as f64 / 1000.0;
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / o.count.max(1) as f64;
    let run = Run {
        fig: Figures {
            rate: o.count as f64 / secs,
            mbps: 0.0,
            p50_us: us(0.5),
            p99_us: us(0.99),
        },
        relay_cpu: o.relay_cpu.map(per),
        svc_cpu: o.server_cpu.map(per),
    };
    println!(
        "  {:<12} {:>9.0} conns/s  p50 {:>7.1} µs  p99 {:>7.1} µs | CPU µs/conn relay {} svc {} \
         | {} connections, {} resumed",
        kind.label(),
        run.fig.rate,
        run.fig.p50_us,
        run.fig.p99_us,
        opt(run.relay_cpu, 1),
        opt(run.svc_cpu, 1),
        o.total,
        o.resumed,
    );
    if let Some(e) = o.errors.first() {
        bail!("{} error(s): {e}", o.errors.len());
    }
    if o.count == 0 {
        bail!("no connection completed in the measured interval");
    }
    Ok(run)
}

fn idle(st: &mut State, kind: RelayKind) -> Result<Idle> {
    let (server, relay) = start(st, kind)?;
    let n = st
        .args
        .idle_conns
        .min(kind.max_conns().unwrap_or(usize::MAX));
    let pid = relay.pid();
    if matches!(kind, RelayKind::Socat | RelayKind::Websockify) {
        // The readiness probe's fork may still be exiting: not part of the baseline.
        wait_single(pid.unwrap_or(0))?;
    }
    let before = (
        pid.map(procs::tree_memory),
        procs::tree_memory(server.pid()),
    );
    // One message each, so that every connection is relayed end to end (and
    // every relay has allocated what a connection that has carried traffic
    // holds); then nothing more.
    let load = Load {
        target: relay.target(),
        conns: n,
        size: 64,
        window: 1,
        warmup: Duration::ZERO,
        seconds: Duration::from_secs(60),
        max_messages: n as u64,
        server_pid: server.pid(),
        relay_pid: pid,
    };
    let (o, held) = client::run_and_hold(&load)?;
    if o.received != n as u64 || !o.errors.is_empty() || held.count() != n {
        let first = o.errors.first().cloned().unwrap_or_default();
        bail!("{} of {n} echoed: {first}", o.received);
    }
    let after = (
        pid.map(procs::tree_memory),
        procs::tree_memory(server.pid()),
    );
    drop(held);
    let per = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
    let diff = |f: fn(&Memory) -> u64| Some(per(f(after.0.as_ref()?), f(before.0.as_ref()?)));
    let res = Idle {
        conns: n,
        relay_rss: diff(|m| m.rss),
        relay_pss: diff(|m| m.pss),
        relay_procs: after.0.map_or(0, |m| m.processes),
        svc_rss: per(after.1.rss, before.1.rss),
        connect_ms: o.connect_time.as_secs_f64() * 1e3,
    };
    println!(
        "  {:<12} relay per conn: RSS {} KiB, PSS {} KiB ({} processes; RSS {} -> {} MB) | \
         service RSS {:.2} KiB/conn | {n} connections in {:.0} ms",
        kind.label(),
        opt(res.relay_rss.map(|b| b / 1024.0), 2),
        opt(res.relay_pss.map(|b| b / 1024.0), 2),
        res.relay_procs,
        opt(before.0.map(|m| m.rss as f64 / 1e6), 1),
        opt(after.0.map(|m| m.rss as f64 / 1e6), 1),
        res.svc_rss / 1024.0,
        res.connect_ms,
    );
    Ok(res)
}

/// Waits (5 s at most) until `root` has no child process left.
fn wait_single(root: u32) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while procs::tree(root).len() > 1 {
        if std::time::Instant::now() > deadline {
            bail!("the relay's probe process did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The median run by message rate.
fn median(runs: &[(usize, Run)]) -> Option<Run> {
    let mut v: Vec<Run> = runs.iter().map(|(_, r)| *r).collect();
    v.sort_by(|a, b| a.fig.rate.total_cmp(&b.fig.rate));
    v.get(v.len() / 2).copied()
}

fn median_of(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The median over rounds of `f(a) / f(b)`, `a` and `b` from the same round:
/// on a shared machine whose load drifts, runs a few seconds apart are
/// comparable where runs minutes apart may not be.
fn paired(a: &[(usize, Run)], b: &[(usize, Run)], f: fn(&Run) -> f64) -> Option<f64> {
    let ratios = a
        .iter()
        .filter_map(|(r, x)| b.iter().find(|(rb, _)| rb == r).map(|(_, y)| f(x) / f(y)))
        .collect();
    median_of(ratios)
}

fn loaded_table(
    w: Workload,
    conns: usize,
    size: usize,
    window: usize,
    relays: &[RelayKind],
    res: &HashMap<RelayKind, Vec<(usize, Run)>>,
) -> String {
    let (title, unit) = if w.is_cycle() {
        let how = if w == Workload::Resume {
            "resumed"
        } else {
            "full"
        };
        (
            format!("a new connection per {size} B echo ({how} TLS handshake), closed after it"),
            "conn",
        )
    } else {
        (
            format!("{conns} connection(s), {size} B, window {window}"),
            "msg",
        )
    };
    let mut t = format!(
        "### {}: {title}\n\n\
         | relay | runs | {unit}s/s | {unit}s/s min..max | MB/s | p50 µs | p99 µs | \
         relay CPU µs/{unit} | service CPU µs/{unit} |\n|---|---|---|---|---|---|---|---|---|\n",
        w.name()
    );
    let med: HashMap<RelayKind, Run> = res
        .iter()
        .filter_map(|(k, v)| Some((*k, median(v)?)))
        .collect();
    for k in relays {
        let Some(r) = med.get(k) else {
            let _ = writeln!(t, "| {} | 0 | failed | | | | | | |", k.label());
            continue;
        };
        let rates = res[k].iter().map(|(_, r)| r.fig.rate);
        let (lo, hi) = rates.fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {lo:.0}..{hi:.0} | {} | {:.1} | {:.1} | {} | {} |",
            k.label(),
            res[k].len(),
            r.fig.rate,
            opt((!w.is_cycle()).then_some(r.fig.mbps), 1),
            r.fig.p50_us,
            r.fig.p99_us,
            opt(r.relay_cpu, 2),
            opt(r.svc_cpu, 2),
        );
    }
    t += "\nRatios: \"medians\" divides the medians above; \"same round\" is the median of \
          the ratios between runs of the same round. The verdict is the same-round one \
          (the medians' when they disagree is in brackets).\n\n\
          | ratio | rate medians | rate same round | p50 medians | p50 same round | \
          p99 medians | relay CPU medians | target | verdict |\n\
          |---|---|---|---|---|---|---|---|---|\n";
    for tk in relays.iter().filter(|k| k.is_ours()) {
        let Some(a) = med.get(tk) else { continue };
        // Only relays of the same protocol are compared (TLS with TLS).
        let others = relays
            .iter()
            .filter(|k| !k.is_ours() && k.protocol() == tk.protocol());
        for other in others {
            let Some(b) = med.get(other) else { continue };
            let rate = a.fig.rate / b.fig.rate;
            let p50 = a.fig.p50_us / b.fig.p50_us;
            let rate_p = paired(&res[tk], &res[other], |r| r.fig.rate).unwrap_or(f64::NAN);
            let p50_p = paired(&res[tk], &res[other], |r| r.fig.p50_us).unwrap_or(f64::NAN);
            let cpu = a.relay_cpu.zip(b.relay_cpu).map(|(x, y)| x / y);
            let (goal, verdict) = match target(w, *other) {
                None => (String::new(), String::new()),
                Some(min) => {
                    // For latency, p50 must also be no longer.
                    let latency = w == Workload::Latency;
                    let met = |rate: f64, p50: f64| rate >= min && (!latency || p50 <= 1.0 / min);
                    let goal = if latency {
                        format!("msgs/s >= {min}x, p50 <= 1x")
                    } else {
                        format!("{unit}s/s >= {min}x")
                    };
                    let (paired_met, med_met) = (met(rate_p, p50_p), met(rate, p50));
                    let mut v = met_text(paired_met);
                    if paired_met != med_met {
                        v += &format!(" ({})", met_text(med_met));
                    }
                    (goal, v)
                }
            };
            let _ = writeln!(
                t,
                "| {}/{} | {rate:.2}x | {rate_p:.2}x | {p50:.2}x | {p50_p:.2}x | {:.2}x | {} | \
                 {goal} | {verdict} |",
                tk.label(),
                other.label(),
                a.fig.p99_us / b.fig.p99_us,
                cpu.map_or("-".into(), |c| format!("{c:.2}x")),
            );
        }
    }
    t + "\n"
}

/// A ratio with two decimals, or three significant digits below 0.1.
fn ratio_text(r: f64) -> String {
    if r < 0.1 {
        format!("{:.*}x", (2.0 - r.log10().floor()) as usize, r)
    } else {
        format!("{r:.2}x")
    }
}

fn met_text(met: bool) -> String {
    if met { "met" } else { "**not met**" }.into()
}

fn idle_table(st: &State, res: &HashMap<RelayKind, Vec<(usize, Idle)>>) -> String {
    let n = st.args.idle_conns;
    let mut t = format!(
        "### idle: {n} connections, each having echoed one 64 B message\n\n\
         Relay memory per connection = (resident memory of all the relay's processes \
         with {n} connections - with 0) / {n} (or as many as the relay can hold: see \
         the conns column). Median of the runs.\n\n\
         | relay | runs | conns | relay RSS KiB/conn | relay PSS KiB/conn | relay processes | \
         service RSS KiB/conn | connect ms | target (tcpd <= 1 KiB RSS; tlsd below the \
         other TLS relays; websocketd below websocat); RSS ratios |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    let median_rss =
        |v: &[(usize, Idle)]| median_of(v.iter().filter_map(|(_, i)| i.relay_rss).collect());
    let mut keys: Vec<&RelayKind> = res.keys().collect();
    keys.sort_by_key(|k| RelayKind::value_variants().iter().position(|v| v == *k));
    for k in keys {
        let v = &res[k];
        // Medians of each column separately (memory hardly varies between runs).
        let med =
            |f: fn(&Idle) -> Option<f64>| median_of(v.iter().filter_map(|(_, i)| f(i)).collect());
        let kib = |f: fn(&Idle) -> Option<f64>| med(f).map(|b| b / 1024.0);
        let rss = med(|i| i.relay_rss);
        // The other relays of the same protocol: the least memory among the
        // rivals (the target), and the ratio to each.
        let others: Vec<(RelayKind, f64)> = res
            .iter()
            .filter(|(o, _)| !o.is_ours() && o.protocol() == k.protocol())
            .filter_map(|(o, v)| Some((*o, median_rss(v)?)))
            .collect();
        let best = others
            .iter()
            .filter(|(o, _)| o.is_rival())
            .map(|(_, r)| *r)
            .reduce(f64::min);
        let ratios = |r: f64| {
            let mut v: Vec<String> = others
                .iter()
                .map(|(o, x)| format!("{} {}", ratio_text(r / x), o.label()))
                .collect();
            v.sort();
            v.join(", ")
        };
        let verdict = match (rss, best) {
            (Some(r), _) if k.is_tcpd() => met_text(r <= IDLE_TARGET),
            (Some(r), Some(best)) if k.is_ours() => {
                format!("{} ({})", met_text(r < best), ratios(r))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {verdict} |",
            k.label(),
            v.len(),
            v.last().map_or(0, |(_, i)| i.conns),
            opt(rss.map(|b| b / 1024.0), 2),
            opt(kib(|i| i.relay_pss), 2),
            v.last().map_or(0, |(_, i)| i.relay_procs),
            opt(kib(|i| Some(i.svc_rss)), 2),
            opt(med(|i| Some(i.connect_ms)), 0),
        );
    }
    t + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64) -> Run {
        let fig = Figures {
            rate,
            mbps: 0.0,
            p50_us: 1e6 / rate,
            p99_us: 0.0,
        };
        Run {
            fig,
            relay_cpu: None,
            svc_cpu: None,
        }
    }

    /// Same-round ratios ignore a round only one side has, and take the median.
    #[test]
    fn ratios_of_the_same_round() {
        let a = [
            (0, run(100.0)),
            (1, run(50.0)),
            (2, run(90.0)),
            (3, run(7.0)),
        ];
        let b = [(0, run(50.0)), (1, run(50.0)), (2, run(100.0))];
        let r = paired(&a, &b, |r| r.fig.rate).unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
        assert_eq!(median(&a).unwrap().fig.rate, 90.0);
        assert_eq!(paired(&a, &[], |r| r.fig.rate), None);
    }

    #[test]
    fn small_ratios_keep_three_digits() {
        assert_eq!(ratio_text(1.234), "1.23x");
        assert_eq!(ratio_text(0.0246), "0.0246x");
        assert_eq!(ratio_text(0.00181), "0.00181x");
    }
}
