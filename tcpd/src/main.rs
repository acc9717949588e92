//! tcpd: TCP clients to local LibIPC services, and local clients to remote ones.
//!
//! Thin by design: flags, logging, binding, signals. The relaying is libipc's
//! daemon engine with the plain LibIPC-frames transport.

use std::net::{TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use ipc::daemon::{Daemon, DaemonConfig, Shutdown};
use ipc::switch::{Dial, Frames, Routed, Transport};
use nix::sys::signal::{SigSet, Signal};

/// Puts local LibIPC services on TCP.
///
/// Inbound, each TCP client is connected to the service `$RUNDIR/<name>`: the one
/// given with --service (fixed mode), or the one the client names first (routed
/// mode: the raw name, optionally ending in a newline, answered `ok`; or the name
/// in one LibIPC frame, answered with a framed `ok`). Then LibIPC frames flow both
/// ways. Failures are answered `no: REASON` before the connection is closed.
///
/// Outbound, tcpd is also a LibIPC service (`tcp`): a local client that sends
/// `tcp://HOST:PORT/SERVICE` is connected to SERVICE behind the tcpd at HOST:PORT.
/// With IPC_NETWORK="pong tcp://HOST:PORT/pong", libipc's connect does this itself.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on (repeatable; IPv4, IPv6 `[::1]:9000`, or a host name;
    /// port 0 picks a free port, logged at startup).
    #[arg(
        long,
        env = "ADDRESS",
        value_delimiter = ',',
        default_value = "127.0.0.1:9000"
    )]
    listen: Vec<String>,

    /// Fixed mode: every client goes to this service, with no handshake.
    #[arg(long)]
    service: Option<String>,

    /// Only these services may be reached (repeatable; default: any in RUNDIR).
    #[arg(long = "allow-service", value_name = "NAME")]
    allow: Vec<String>,

    /// Name of tcpd's own LibIPC service, for outbound connections.
    #[arg(long, env = "IPC_SERVICE_NAME", default_value = "tcp")]
    service_name: String,

    /// Do not offer the outbound service.
    #[arg(long)]
    no_outbound: bool,

    /// Run directory of the services.
    #[arg(long, env = "RUNDIR", default_value = ipc::service::DEFAULT_RUNDIR)]
    rundir: PathBuf,

    /// Open network connections at most; more are refused at once.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,

    /// Time a client has to name its service (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,

    /// Close connections with no traffic for this long (0: never).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Largest message a client may send, in bytes (suffixes K, M: KiB, MiB).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    max_message_size: usize,

    /// Event loops sharing the listeners (default: number of cores).
    #[arg(long)]
    workers: Option<usize>,

    /// On SIGTERM/SIGINT, how long open connections may take to finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Log level, or a RUST_LOG-style filter (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and ms, s, m or h"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    })
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes"))?;
    let mult = match unit {
        "" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (K, M)")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    if v > u32::MAX as usize {
        return Err(format!("{s:?}: a LibIPC message is at most 4 GiB"));
    }
    Ok(v)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tcpd: bad --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tcpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if let Some(s) = &args.service {
        ipc::service::validate_name(s.as_bytes()).context("--service")?;
    }
    for s in &args.allow {
        ipc::service::validate_name(s.as_bytes()).context("--allow-service")?;
    }
    // Signals go to one thread that waits for them; block them everywhere else
    // before any thread starts.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]);
    signals.thread_block().context("blocking signals")?;

    let mut listeners = Vec::new();
    for spec in &args.listen {
        let addrs: Vec<_> = spec
            .to_socket_addrs()
            .with_context(|| format!("--listen {spec}: cannot resolve"))?
            .collect();
        if addrs.is_empty() {
            bail!("--listen {spec}: no address");
        }
        for addr in addrs {
            let l =
                TcpListener::bind(addr).with_context(|| format!("--listen {spec}: bind {addr}"))?;
            tracing::info!(address = %l.local_addr()?, "listening");
            listeners.push(l);
        }
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let max = args.max_message_size;
    let fixed = args.service.is_some();
    let inbound: ipc::daemon::InboundFactory = Arc::new(move || -> Box<dyn Transport> {
        if fixed {
            Box::new(Frames::new(max))
        } else {
            Box::new(Routed::new(Frames::new(max)))
        }
    });
    let outbound: Option<ipc::daemon::OutboundFactory> = (!args.no_outbound).then(|| {
        Arc::new(move |service: &str| -> Box<dyn Transport> {
            Box::new(Dial::new(service, Frames::new(max)))
        }) as ipc::daemon::OutboundFactory
    });
    let config = DaemonConfig {
        fixed_service: args.service.clone(),
        allow: args.allow.clone(),
        max_connections: args.max_connections,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
        drain_timeout: args.drain_timeout,
        max_message_size: max,
        rundir: args.rundir.clone(),
        local_service: Some(args.service_name.clone()),
        scheme: "tcp".into(),
    };
    let daemon = Daemon::new(config, listeners, workers, inbound, outbound)?;
    spawn_signal_thread(signals, daemon.shutdown_handle())?;
    tracing::info!(
        workers,
        mode = if fixed { "fixed" } else { "routed" },
        rundir = %args.rundir.display(),
        "tcpd ready"
    );
    daemon.run()?;
    tracing::info!("tcpd stopped");
    Ok(())
}

fn spawn_signal_thread(signals: SigSet, shutdown: Shutdown) -> Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            while let Ok(sig) = signals.wait() {
                match sig {
                    Signal::SIGHUP => tracing::info!("SIGHUP: tcpd has nothing to reload"),
                    _ if stopping => {
                        tracing::warn!(signal = %sig, "second signal: exiting now");
                        std::process::exit(1);
                    }
                    _ => {
                        tracing::info!(signal = %sig, "stopping: no new connections, draining");
                        stopping = true;
                        shutdown.trigger();
                    }
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
