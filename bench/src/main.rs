//! `ipc-bench`: the libipc echo service against a blocking thread-per-connection
//! echo service, driven by the same client over unix sockets.
//!
//! ```text
//! cargo run --release -p ipc-bench [-- --seconds 3 --scenario 1conn-64b]
//! ```
//!
//! Each measurement starts a fresh service process (`ipc-bench serve ...`, this
//! same binary), waits until its socket accepts connections, runs the client
//! driver (`client.rs`) in this process, and kills the service. Figures:
//! messages/s = echoed messages per second in the measured interval; MB/s =
//! payload bytes echoed per second, one direction, 10^6 bytes; p50/p99 = round
//! trip from queueing a request to reading its reply.
//!
//! `ipc-bench relays` (relays.rs) puts tcpd, nginx, HAProxy and socat in front of
//! the libipc echo service and drives each with the same client over TCP;
//! `ipc-bench tls` does the same for tlsd, HAProxy (`ssl crt`) and stunnel, with
//! handshake workloads (tls.rs); `ipc-bench ws` for websocketd, websocat and
//! websockify, the client speaking WebSocket (ws.rs). `ipc-bench soak` runs
//! tcpd, tlsd and websocketd together under a mixed load for minutes, for
//! leaks, loss and reordering (soak.rs).

mod client;
mod hist;
mod procs;
mod relay;
mod relays;
mod server;
mod soak;
mod stream;
mod tls;
mod ws;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::Pid;

use client::{Load, Outcome, Target};
use server::{Kind, Server};

#[derive(Debug, Parser)]
#[command(about = "Echo benchmark: libipc against a blocking thread-per-connection service")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of load before measuring (connections are made before it).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Scenarios to run (repeatable); all by default.
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// Override the number of connections of the selected scenarios.
    #[arg(long)]
    conns: Option<usize>,
    /// Override the payload size in bytes of the selected scenarios.
    #[arg(long)]
    size: Option<usize>,
    /// Override the requests kept outstanding per connection.
    #[arg(long)]
    window: Option<usize>,
    /// Connections of the baseline the 10,000-connection rate is compared with.
    #[arg(long, default_value_t = 100)]
    baseline_conns: usize,
    /// Cap on requests sent per run.
    #[arg(long, default_value_t = 100_000_000)]
    max_messages: u64,
    /// Pin this client to CPU 0 and the service (all its threads) to CPU 1.
    /// Without it the scheduler places them, and a 1-connection round trip is
    /// about 2.5 times as fast when it happens to put both on the same CPU.
    #[arg(long)]
    pin: bool,
    /// The libipc services poll this many microseconds without sleeping
    /// before they sleep (`Config::busy_poll`); 0: off, the default.
    #[arg(long, default_value_t = 0)]
    busy_poll_us: u64,

    /// Runs per service per scenario, alternating which goes first; the run
    /// with the median message rate is reported (the machine is shared and noisy).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run an echo service until killed (used by the benchmark itself).
    #[command(hide = true)]
    Serve {
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        rundir: PathBuf,
        #[arg(long)]
        name: String,
        /// Run on this CPU only.
        #[arg(long)]
        cpu: Option<usize>,
        /// `Config::busy_poll` of the libipc kinds, in µs (0: none).
        #[arg(long, default_value_t = 0)]
        busy_poll_us: u64,
    },
    /// tcpd against nginx, HAProxy and socat (and no relay) in front of the
    /// libipc echo service; see relays.rs.
    Relays(relays::RelayArgs),
    /// tlsd against HAProxy (`ssl crt`) and stunnel, tcpd beside them, in front
    /// of the same echo service: throughput, message rate, full and resumed
    /// handshakes per second, idle memory; see relays.rs and tls.rs.
    Tls(relays::RelayArgs),
    /// websocketd (1 and 2 workers) against websocat and websockify in front of
    /// the same echo service, the client speaking WebSocket: throughput,
    /// latency, message rate, idle memory; see relays.rs and ws.rs.
    Ws(relays::RelayArgs),
    /// tcpd, tlsd and websocketd at once in front of two echo services, for
    /// --duration (default 10 min) under a mixed load (connects, disconnects,
    /// random sizes up to the limit, slow readers, abrupt closes): memory and
    /// descriptors at the start and end, traffic, and any loss, corruption or
    /// reordering (which fail the run); see soak.rs.
    Soak(soak::SoakArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1 connection, 64-byte messages, window 1 (latency).
    #[value(name = "1conn-64b")]
    OneSmall,
    /// 32 connections, 64-byte messages, window 8 (message rate).
    #[value(name = "32conn-64b")]
    ManySmall,
    /// 1 connection, 64 KiB messages, window 4 (bandwidth).
    #[value(name = "1conn-64k")]
    OneLarge,
    /// libipc only: 10,000 connections against the baseline (100), window 1.
    #[value(name = "10kconn-64b")]
    TenK,
    /// libipc only: the service on 2 event loops against 1, 32 connections,
    /// 64-byte messages, window 16.
    #[value(name = "32conn-64b-2loops")]
    TwoLoops,
    /// The `pongd` example (build it: `cargo build --release -p libipc
    /// --examples`) against the byte echo (no framing, a thread per
    /// connection): the service's CPU time per message, 32 connections,
    /// 64-byte messages, window 16.
    #[value(name = "32conn-64b-cpu")]
    Cpu,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::OneSmall,
        Scenario::ManySmall,
        Scenario::OneLarge,
        Scenario::TenK,
        Scenario::TwoLoops,
        Scenario::Cpu,
    ];

    /// (connections, size, window). Window 1 where latency matters; the rate
    /// scenarios keep a few requests in flight so that neither side idles
    /// waiting for the other, while 8 x 64 B and 4 x 64 KiB stay far below
    /// libipc's per-connection high-water mark (1 MiB).
    fn shape(self) -> (usize, usize, usize) {
        match self {
            Scenario::OneSmall => (1, 64, 1),
            Scenario::ManySmall => (32, 64, 8),
            Scenario::OneLarge => (1, 64 << 10, 4),
            Scenario::TenK => (10_000, 64, 1),
            Scenario::TwoLoops | Scenario::Cpu => (32, 64, 16),
        }
    }

    fn name(self) -> String {
        self.to_possible_value()
            .expect("not skipped")
            .get_name()
            .to_owned()
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    mbps: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Figures {
    fn of(o: &Outcome, size: usize) -> Self {
        let secs = o.interval.as_secs_f64().max(1e-9);
        let us = |q| o.latency.quantile(q).as_nanos() as f64 / 1000.0;
        Figures {
            rate: o.messages as f64 / secs,
            mbps: o.messages as f64 * size as f64 / secs / 1e6,
            p50_us: us(0.50),
            p99_us: us(0.99),
        }
    }
}

/// What the whole run shares: settings, the run directory, the summary so far.
struct Bench {
    cli: Cli,
    rundir: RunDir,
    runs: usize,
    failed: bool,
    summary: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Serve {
            kind,
            ref rundir,
            ref name,
            cpu,
            busy_poll_us,
        }) => serve(kind, rundir, name, cpu, busy_poll_us),
        Some(Cmd::Relays(args)) => relays::run(args, relays::Suite::Plain),
        Some(Cmd::Tls(args)) => relays::run(args, relays::Suite::Tls),
        Some(Cmd::Ws(args)) => relays::run(args, relays::Suite::Ws),
        Some(Cmd::Soak(args)) => soak::run(args),
        None => bench(cli),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ipc-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    kind: Kind,
    rundir: &Path,
    name: &str,
    cpu: Option<usize>,
    busy_poll_us: u64,
) -> Result<bool> {
    // Die with the benchmark, even if it is killed before it can stop us.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if let Some(cpu) = cpu {
        pin(cpu)?;
    }
    raise_nofile()?;
    server::serve(kind, rundir, name, busy_poll_us)?;
    Ok(true)
}

/// Restricts this process (and the threads it creates later) to `cpu`.
fn pin(cpu: usize) -> Result<()> {
    pin_task(0, cpu)
}

/// Restricts thread (or process) `tid` (0: the calling thread) to `cpu`.
fn pin_task(tid: u32, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(tid as i32), &set)
        .with_context(|| format!("pin task {tid} to CPU {cpu}"))
}

/// Raises the soft descriptor limit to the hard one; returns it.
fn raise_nofile() -> Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    // Root may raise the hard limit too (10,000 idle connections through a
    // relay take 20,000 descriptors in the client and as many in the relay);
    // the services and relays started from here inherit it.
    if hard < WANT_NOFILE && setrlimit(Resource::RLIMIT_NOFILE, WANT_NOFILE, WANT_NOFILE).is_ok() {
        return Ok(WANT_NOFILE);
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raise RLIMIT_NOFILE")?;
    }
    Ok(hard)
}

/// The descriptor limit asked for when the hard one is lower.
const WANT_NOFILE: u64 = 65_536;

/// The command that reproduces this run.
fn repro() -> String {
    let mut cmd = String::from("cargo run --release -p ipc-bench");
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        cmd.push_str(" --");
    }
    for a in args {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:".contains(c));
        if plain {
            let _ = write!(cmd, " {a}");
        } else {
            let _ = write!(cmd, " '{}'", a.replace('\'', r"'\''"));
        }
    }
    cmd
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

fn bench(cli: Cli) -> Result<bool> {
    let mut cmd = repro();
    if cli.scenarios.is_empty() || cli.scenarios.contains(&Scenario::Cpu) {
        // The pongd example runs as it is.
        cmd = format!("cargo build --release -p libipc --examples && {cmd}");
    }
    println!("reproduce: {cmd}");
    let nofile = raise_nofile()?;
    println!("machine:   {}; RLIMIT_NOFILE {nofile}", machine());
    println!(
        "figures:   msgs/s and MB/s (payload bytes one way, 10^6) over {} s after {} s warm-up;\n           \
         p50/p99 round trip; srv CPU = service process CPU time per message;\n           \
         srv RSS = service peak resident memory",
        cli.seconds, cli.warmup
    );
    check_args(&cli, nofile)?;
    if cli.busy_poll_us > 0 {
        server::BUSY_POLL_US.store(cli.busy_poll_us, std::sync::atomic::Ordering::Relaxed);
        println!(
            "busy poll: {} µs before the libipc services sleep",
            cli.busy_poll_us
        );
    }
    if cli.pin {
        pin(0)?;
        println!("pinning:   client on CPU 0, service on CPU 1");
    }
    let rundir = RunDir::create()?;
    println!("rundir:    {}", rundir.0.display());
    let scenarios = if cli.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        cli.scenarios.clone()
    };
    let mut b = Bench {
        cli,
        rundir,
        runs: 0,
        failed: false,
        summary: String::new(),
    };
    for s in scenarios {
        let (conns, size, window) = s.shape();
        let conns = b.cli.conns.unwrap_or(conns);
        let size = b.cli.size.unwrap_or(size);
        let window = b.cli.window.unwrap_or(window).max(1);
        println!(
            "\n== {}: {conns} connection(s), {size}-byte messages, window {window}",
            s.name()
        );
        if s == Scenario::TenK {
            scale(&mut b, s, conns, size, window)?;
        } else if s == Scenario::TwoLoops {
            loops(&mut b, s, conns, size, window)?;
        } else if s == Scenario::Cpu {
            cpu(&mut b, s, conns, size, window)?;
        } else {
            compare(&mut b, s, conns, size, window)?;
        }
    }
    println!(
        "\n== summary (median run of {} per service)\n\
         | scenario | service | conns | size B | window | msgs/s | MB/s | p50 µs | p99 µs | srv CPU µs/msg | srv RSS MB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{}",
        b.cli.rounds.max(1),
        b.summary
    );
    println!("reproduce: {cmd}");
    if b.failed {
        println!("FAILED: some runs lost, corrupted or did not serve messages (see above)");
    }
    Ok(!b.failed)
}

fn check_args(cli: &Cli, nofile: u64) -> Result<()> {
    let positive = |v: f64| (0.0..1e6).contains(&v);
    if !positive(cli.seconds) || cli.seconds == 0.0 || !positive(cli.warmup) {
        bail!("--seconds must be > 0 and --warmup >= 0");
    }
    if cli.size.unwrap_or(0) > libipc::frame::DEFAULT_MAX_MESSAGE_SIZE {
        bail!("--size: libipc refuses messages over 1 MiB by default");
    }
    // Each connection is one descriptor in this process and one in the service.
    let most = cli.conns.unwrap_or(10_000).max(cli.baseline_conns) as u64;
    if most + 64 > nofile {
        bail!("{most} connections need more than RLIMIT_NOFILE ({nofile}) descriptors");
    }
    Ok(())
}

/// One reported run.
#[derive(Debug, Clone, Copy)]
struct Run {
    kind: Kind,
    conns: usize,
    fig: Figures,
    /// Service CPU time per message, µs.
    srv_cpu: Option<f64>,
    /// Service peak resident memory, MB.
    rss: Option<f64>,
}

/// One service process, one client run.
fn measure(b: &mut Bench, kind: Kind, conns: usize, size: usize, window: usize) -> Result<Run> {
    b.runs += 1;
    let name = format!("{}-{}", kind.label(), b.runs);
    let cpu = b.cli.pin.then_some(1);
    let server = Server::start(kind, &b.rundir.0, &name, cpu, Duration::from_secs(10))?;
    let load = Load {
        target: Target::Unix(server.path()),
        conns,
        size,
        window,
        warmup: Duration::from_secs_f64(b.cli.warmup),
        seconds: Duration::from_secs_f64(b.cli.seconds),
        max_messages: b.cli.max_messages,
        server_pid: server.pid(),
        relay_pid: None,
    };
    let o = client::run(&load)?;
    let rss = server.peak_rss_mb();
    drop(server);
    let fig = Figures::of(&o, size);
    let per_msg = |cpu: Duration| cpu.as_secs_f64() * 1e6 / o.messages.max(1) as f64;
    let srv_cpu = o.server_cpu.map(per_msg);
    println!(
        "  {:<9} {conns:>5} conns {:>9.0} msgs/s {:>7.1} MB/s  p50 {:>8.1} µs  p99 {:>8.1} µs  \
         | CPU µs/msg srv {} cli {:.2} | srv peak RSS {} MB | served {}/{conns}, \
         replies/conn {}..{}, {} checked in full, connect {:.0} ms",
        kind.label(),
        fig.rate,
        fig.mbps,
        fig.p50_us,
        fig.p99_us,
        fmt_opt(srv_cpu),
        per_msg(o.client_cpu),
        fmt_opt(rss),
        o.served,
        o.min_per_conn,
        o.max_per_conn,
        o.checked_full,
        o.connect_time.as_secs_f64() * 1e3,
    );
    if o.served < conns || !o.errors.is_empty() || o.messages == 0 {
        b.failed = true;
        let (n, all) = (o.errors.len(), o.received);
        println!("  FAILED: {n} error(s), {all} replies in all");
        if o.messages == 0 {
            println!(
                "    no reply inside the measured interval (--max-messages reached in the warm-up?)"
            );
        }
        for e in o.errors.iter().take(5) {
            println!("    {e}");
        }
    }
    Ok(Run {
        kind,
        conns,
        fig,
        srv_cpu,
        rss,
    })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.2}"))
}

/// Runs each of `pair` `--rounds` times, alternating which goes first, and
/// returns for each the run with the median message rate.
fn rounds(b: &mut Bench, pair: [(Kind, usize); 2], size: usize, window: usize) -> Result<[Run; 2]> {
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for r in 0..b.cli.rounds.max(1) {
        for k in [r % 2, 1 - r % 2] {
            let (kind, conns) = pair[k];
            runs[k].push(measure(b, kind, conns, size, window)?);
        }
    }
    Ok(runs.map(|mut v| {
        v.sort_by(|x, y| x.fig.rate.total_cmp(&y.fig.rate));
        v[v.len() / 2]
    }))
}

/// [`rounds`], each median run added to the summary (in `pair`'s order).
fn summarized_rounds(
    b: &mut Bench,
    s: Scenario,
    pair: [(Kind, usize); 2],
    size: usize,
    window: usize,
) -> Result<[Run; 2]> {
    let runs = rounds(b, pair, size, window)?;
    for run in &runs {
        summary_row(b, s, size, window, run);
    }
    Ok(runs)
}

fn summary_row(b: &mut Bench, s: Scenario, size: usize, window: usize, run: &Run) {
    let f = run.fig;
    let _ = writeln!(
        b.summary,
        "| {} | {} | {} | {size} | {window} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
        s.name(),
        run.kind.label(),
        run.conns,
        f.rate,
        f.mbps,
        f.p50_us,
        f.p99_us,
        fmt_opt(run.srv_cpu),
        fmt_opt(run.rss),
    );
}

/// `a / b` for each figure of two runs: msgs/s, MB/s, p50, p99, CPU/msg, RSS.
fn ratios(a: &Run, b: &Run) -> [Option<f64>; 6] {
    let div = |x: Option<f64>, y: Option<f64>| Some(x? / y?);
    let (fa, fb) = (a.fig, b.fig);
    [
        Some(fa.rate / fb.rate),
        Some(fa.mbps / fb.mbps),
        Some(fa.p50_us / fb.p50_us),
        Some(fa.p99_us / fb.p99_us),
        div(a.srv_cpu, b.srv_cpu),
        div(a.rss, b.rss),
    ]
}

fn ratio_row(b: &mut Bench, s: Scenario, label: &str, r: [Option<f64>; 6]) {
    let cells: Vec<String> = r
        .iter()
        .map(|v| v.map_or(String::new(), |v| format!("**{v:.2}x**")))
        .collect();
    let _ = writeln!(
        b.summary,
        "| {} | {label} | | | | {} |",
        s.name(),
        cells.join(" | ")
    );
}

/// libipc against the reference at the same load.
fn compare(b: &mut Bench, s: Scenario, conns: usize, size: usize, window: usize) -> Result<()> {
    let pair = [(Kind::Libipc, conns), (Kind::Reference, conns)];
    let [lib, refr] = summarized_rounds(b, s, pair, size, window)?;
    let r = ratios(&lib, &refr);
    let [rate, mbps, p50, p99, cpu, _] = r.map(|v| v.unwrap_or(f64::NAN));
    // The target is 0.9x the reference: for latencies, at most 1/0.9 as long.
    let met = rate >= 0.9 && p50 <= 1.0 / 0.9 && p99 <= 1.0 / 0.9;
    let verdict = if met { "met" } else { "NOT met" };
    println!(
        "  libipc/reference: msgs/s {rate:.2}x, MB/s {mbps:.2}x, p50 {p50:.2}x, p99 {p99:.2}x, \
         srv CPU/msg {cpu:.2}x  (target: rates >= 0.9x, latencies <= 1.11x: {verdict})"
    );
    ratio_row(b, s, &format!("**libipc/reference** (target {verdict})"), r);
    Ok(())
}

/// libipc at `conns` against libipc at the baseline connection count (the
/// thread-per-connection reference is not run at 10,000 connections).
fn scale(b: &mut Bench, s: Scenario, conns: usize, size: usize, window: usize) -> Result<()> {
    let base_conns = b.cli.baseline_conns;
    println!(
        "  (reference not run here: a thread per connection at {conns} connections is not \
         the comparison; libipc at {base_conns} connections is)"
    );
    let pair = [(Kind::Libipc, base_conns), (Kind::Libipc, conns)];
    let [base, many] = summarized_rounds(b, s, pair, size, window)?;
    let r = ratios(&many, &base);
    let [rate, _, p50, p99, cpu, _] = r.map(|v| v.unwrap_or(f64::NAN));
    let verdict = if rate >= 0.8 { "met" } else { "NOT met" };
    println!(
        "  libipc {conns}/{base_conns} conns: msgs/s {rate:.2}x  (target >= 0.8x: {verdict}); \
         srv CPU/msg {cpu:.2}x; p50 {p50:.2}x, p99 {p99:.2}x (window 1: latency grows with \
         the number of requests in flight)"
    );
    let label = format!("**libipc {conns}/{base_conns}** (target {verdict})");
    ratio_row(b, s, &label, r);
    Ok(())
}

/// libipc on two event loops against one, at the same load. The client
/// shares the machine's cores with the service: the srv CPU column says how
/// much more of them the service used.
fn loops(b: &mut Bench, s: Scenario, conns: usize, size: usize, window: usize) -> Result<()> {
    let pair = [(Kind::Libipc2, conns), (Kind::Libipc, conns)];
    let [two, one] = summarized_rounds(b, s, pair, size, window)?;
    let r = ratios(&two, &one);
    let [rate, _, p50, p99, cpu, _] = r.map(|v| v.unwrap_or(f64::NAN));
    let verdict = if rate >= 1.4 { "met" } else { "NOT met" };
    println!(
        "  libipc 2 loops/1 loop: msgs/s {rate:.2}x  (target >= 1.4x: {verdict}); srv CPU/msg \
         {cpu:.2}x; p50 {p50:.2}x, p99 {p99:.2}x"
    );
    ratio_row(b, s, &format!("**2 loops/1 loop** (target {verdict})"), r);
    Ok(())
}

/// pongd's CPU time per message against the byte echo's, at the same load.
fn cpu(b: &mut Bench, s: Scenario, conns: usize, size: usize, window: usize) -> Result<()> {
    let pair = [(Kind::Pongd, conns), (Kind::Bytes, conns)];
    let [lib, bytes] = summarized_rounds(b, s, pair, size, window)?;
    let r = ratios(&lib, &bytes);
    let [rate, _, _, _, ratio, _] = r.map(|v| v.unwrap_or(f64::NAN));
    let own = lib.srv_cpu.unwrap_or(f64::NAN);
    let verdict = if own <= 0.25 && ratio <= 2.0 {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "  pongd/bytes: srv CPU/msg {own:.3} µs, {ratio:.2}x the byte echo's  (target: <= 0.25 µs \
         and <= 2x: {verdict}); msgs/s {rate:.2}x"
    );
    ratio_row(b, s, &format!("**pongd/bytes** (target {verdict})"), r);
    Ok(())
}

/// The temporary run directory, removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("ipc-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(RunDir(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
