//! Flags, logging, listeners and signals shared by the daemons.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Daemon, DaemonConfig, InboundFactory, OutboundFactory, Shutdown};
use anyhow::{Context as _, Result, bail};
use libipc::switch::{Frames, ProxyConfig, Routed, Transport};
use nix::sys::signal::{SigSet, Signal};

/// Flags every daemon takes (flattened into each binary's own).
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Fixed mode: every client goes to this service without naming one (it is
    /// connected once the client's TLS handshake or PROXY header, if any, is done).
    #[arg(long, value_parser = service_name)]
    pub service: Option<String>,

    /// Only these services may be reached (repeatable; default: any in RUNDIR).
    #[arg(long = "allow-service", value_name = "NAME", value_parser = service_name)]
    pub allow: Vec<String>,

    /// Do not offer the outbound service.
    #[arg(long, conflicts_with = "outbound_allow")]
    pub no_outbound: bool,

    /// Where the outbound service may connect (repeatable, or comma-separated):
    /// HOST, CIDR, HOST:PORT, CIDR:PORT or [IPv6]:PORT, e.g. 10.0.0.0/8:9000,
    /// db.example.org:9443, *.example.org, [2001:db8::/32]:443. A network entry
    /// matches the address a host name resolves to; a name entry matches the
    /// name as written in the request, never an IP literal. Default: anywhere
    /// the daemon host can reach (any local client in the run directory's
    /// group may then use it to reach any host and port). With a policy, the
    /// outbound service must be this daemon's: if another process has its
    /// name, the daemon stops.
    #[arg(long, value_name = "DEST", value_delimiter = ',')]
    pub outbound_allow: Vec<crate::engine::Destination>,

    /// Let network clients name the outbound service NAME (this daemon's, or
    /// another daemon's on the same RUNDIR), to chain daemons on purpose
    /// (repeatable). Off by default: a network client that reaches an outbound
    /// service can make it connect anywhere its --outbound-allow permits.
    /// Logged as a warning at startup.
    #[arg(long, value_name = "NAME", value_parser = service_name)]
    pub expose_outbound: Vec<String>,

    /// Run directory of the services.
    #[arg(long, env = "RUNDIR", default_value = libipc::service::DEFAULT_RUNDIR)]
    pub rundir: PathBuf,

    /// Open network connections at most; more are refused at once.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,

    /// Time a client has to name its service (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Close connections with no traffic for this long (0: never).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Largest message a client may send, in bytes (suffixes K, M: KiB, MiB).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub max_message_size: usize,

    /// Event loops sharing the listeners (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,

    /// On SIGTERM/SIGINT, how long open connections may take to finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log level, or a RUST_LOG-style filter (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Serve metrics (Prometheus text format) at http://ADDR/metrics, on a
    /// listener of their own (e.g. 127.0.0.1:9100). With socket activation, a
    /// socket named `metrics` (FileDescriptorName=) is used instead.
    #[arg(long, env = "METRICS_ADDRESS", value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Log format: `text` (one human-readable line per event) or `json` (one
    /// JSON object per line, for log collectors).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Behind a load balancer: clients from a --proxy-from network must start
    /// with a PROXY protocol header (v1 or v2, as HAProxy's send-proxy and
    /// send-proxy-v2 write it), and the client address it gives is the one
    /// logged and passed on; its health checks (LOCAL) are not clients.
    /// Clients from elsewhere are served as they are; a PROXY header from them
    /// is bad input.
    #[arg(long, requires = "proxy_from")]
    pub proxy_protocol: bool,

    /// A balancer's address or network (CIDR, e.g. 10.0.0.0/8 or
    /// 2001:db8::/32) whose PROXY headers are believed (repeatable; needs
    /// --proxy-protocol).
    #[arg(long, value_name = "CIDR", requires = "proxy_protocol")]
    pub proxy_from: Vec<libipc::proxy::Cidr>,

    /// Send the service, as the first message of each connection, what the
    /// daemon knows about the client, as one JSON object: {"address":
    /// "IP:PORT"} (the real client's, behind a trusted balancer; then also
    /// "via"), "tls" (version, server_name, alpn, identity: the client
    /// certificate's, with mutual TLS) and "websocket" (path, origin,
    /// subprotocol). Absent facts are left out. Off by default: a service
    /// that does not expect it would take it for the client's first message.
    #[arg(long)]
    pub peer_info: bool,

    /// Outbound connections go through this HTTP proxy (HTTP CONNECT), for
    /// every scheme: http://[USER:PASSWORD@]HOST[:PORT] (port 1080 when
    /// none, as in curl; the user and password, %-escaped, are sent as basic
    /// proxy authentication and never logged). Default: the https_proxy or
    /// HTTPS_PROXY variable, as curl reads it; an empty value: no proxy.
    /// --outbound-allow still judges the target, never the proxy: through a
    /// proxy a host name is allowed only by a name entry (the daemon never
    /// sees its address).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,

    /// Hosts outbound connections reach directly rather than through the
    /// proxy (comma-separated, as curl reads NO_PROXY): names (each with the
    /// names under it; a leading dot is the same), addresses, networks
    /// (10.0.0.0/8), `*` for all. Default: the no_proxy or NO_PROXY variable.
    #[arg(long, value_name = "LIST")]
    pub no_proxy: Option<String>,
}

/// The HTTP proxy of outbound connections: `--proxy` and `--no-proxy`, or the
/// variables curl reads. `None`: connections go direct.
pub fn proxy_config(common: &Common) -> Result<Option<Arc<ProxyConfig>>> {
    let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok());
    let (url, from) = match &common.proxy {
        Some(url) => (url.clone(), "--proxy"),
        None => match var(&["https_proxy", "HTTPS_PROXY"]) {
            Some(url) => (url, "HTTPS_PROXY"),
            None => return Ok(None),
        },
    };
    if url.trim().is_empty() {
        return Ok(None);
    }
    let no_proxy = common
        .no_proxy
        .clone()
        .or_else(|| var(&["no_proxy", "NO_PROXY"]))
        .unwrap_or_default();
    // The error never quotes the URL's password.
    let proxy =
        ProxyConfig::parse(url.trim(), &no_proxy).map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
    Ok(Some(Arc::new(proxy)))
}

/// The outbound service's name, for the daemons that have one (tcpd, tlsd).
#[derive(Debug, Clone, clap::Args)]
pub struct OutboundName {
    /// Name of the daemon's own LibIPC service for outbound connections, in
    /// `$RUNDIR/.outbound/` (IPC_NETWORK URIs name it as their scheme).
    /// Default: the scheme (`tcp`, `tls`), if no other daemon on the RUNDIR
    /// has it yet.
    ///
    /// The default name is offered by the first daemon on the RUNDIR to take
    /// it: any other says at startup which process has it and serves inbound
    /// clients only (it does not take the name over when that process exits).
    /// A name given here, or an --outbound-allow policy, is this daemon's to
    /// serve: if another process has the name, the daemon stops with an error.
    #[arg(long, env = "IPC_SERVICE_NAME", value_name = "NAME", value_parser = service_name)]
    pub service_name: Option<String>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A service name ([`libipc::service::validate_name`]): flags that name
/// services are checked as they are parsed, so a bad one is a usage error
/// that says the rule.
pub fn service_name(s: &str) -> Result<String, String> {
    libipc::service::validate_name(s.as_bytes())
        .map(str::to_owned)
        .map_err(|e| e.to_string())
}

/// A duration: a number and `ms`, `s` (default), `m` or `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

/// A size in bytes, with an optional `K`/`KiB` or `M`/`MiB` suffix; at most 4 GiB.
pub fn parse_size(s: &str) -> Result<usize, String> {
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

/// `A::parse()`, except that `PROGRAM --generate-docs DIR` (alone) writes the
/// program's man page and shell completions to DIR and exits: see [`crate::docs`].
pub fn parse<A: clap::Parser>() -> A {
    crate::docs::generate_if_asked::<A>();
    A::parse()
}

/// Sets up logging, runs `run`, and turns its outcome into an exit code (errors
/// are logged and printed once, with their causes).
pub fn main_with(name: &str, common: &Common, run: impl FnOnce() -> Result<()>) -> ExitCode {
    let log_level = &common.log_level;
    // rustls warns about every client that sends an IP address as its SNI
    // name (allowed in practice, ignored): quiet unless asked for.
    let quiet_rustls = if log_level.contains("rustls") {
        log_level.clone()
    } else {
        format!("{log_level},rustls=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&quiet_rustls));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{name}: bad --log-level {log_level:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match common.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The context the binary added, then each cause once.
            let message = format!("{e:#}");
            tracing::error!("{message}");
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What a daemon binary hands to [`run`].
#[allow(missing_debug_implementations)] // holds closures
pub struct Plan<'a> {
    /// The program's name, for logs.
    pub name: &'a str,
    /// `--listen` values (for [`run`]; [`serve`] is given its listeners).
    pub listen: &'a [String],
    /// The common flags.
    pub common: &'a Common,
    /// Makes each inbound client's transport.
    pub inbound: InboundFactory,
    /// The daemon's outbound service, if it offers one (`--no-outbound` turns
    /// it off).
    pub outbound: Option<Outbound<'a>>,
    /// Time for the transport's own handshake (tlsd: --tls-handshake-timeout).
    pub transport_handshake_timeout: Option<std::time::Duration>,
    /// The transport names the fixed service itself (websocketd answers its
    /// HTTP upgrade first), instead of the daemon attaching it on accept.
    pub fixed_in_transport: bool,
    /// Probe quiet connections this often (websocketd: --ping-interval).
    pub keepalive: Option<Duration>,
    /// Called on SIGHUP (reload).
    pub on_hup: Box<dyn Fn() + Send>,
    /// Hand clients' sockets to the services that take them (tcpd's
    /// `--handoff`; only plain-frames transports can).
    pub handoff: bool,
}

/// A daemon's outbound service: local clients' `SCHEME://HOST:PORT/SERVICE`
/// requests, dialled.
#[allow(missing_debug_implementations)] // holds a closure
pub struct Outbound<'a> {
    /// The name the operator gave it (`--service-name`), in
    /// `$RUNDIR/.outbound/`; `None`: the scheme, offered only if no other
    /// daemon on the RUNDIR has it already (see [`OutboundName`]).
    pub service_name: Option<&'a str>,
    /// The URI scheme it dials (`tcp`, `tls`), and the default name of the
    /// service; the service's own name is accepted too.
    pub scheme: &'a str,
    /// More schemes it dials (websocketd: `wss` beside `ws`), each offered
    /// under its own name too when `service_name` is the default.
    pub also_schemes: &'a [&'a str],
    /// Makes each outbound connection's transport.
    pub factory: OutboundFactory,
}

/// The transport of a client of a daemon that speaks LibIPC frames on the
/// network (tcpd, and tlsd inside TLS): the routed handshake first, unless
/// the daemon is in fixed mode (`--service`).
pub fn frames_inbound(common: &Common) -> Box<dyn Transport> {
    let frames = Frames::new(common.max_message_size);
    if common.service.is_some() {
        Box::new(frames)
    } else {
        Box::new(Routed::new(frames))
    }
}

/// The sockets a daemon serves: its clients' listeners, and the metrics one.
#[derive(Debug)]
pub struct Listeners {
    clients: Vec<TcpListener>,
    metrics: Option<TcpListener>,
}

impl Listeners {
    /// The sockets systemd passed (socket activation), or else `listen` and
    /// `--metrics` bound.
    pub fn open(listen: &[String], common: &Common) -> Result<Self> {
        let mut metrics = None;
        let clients = match crate::systemd::listen_fds()? {
            Some(fds) => {
                let mut listeners = Vec::new();
                for (name, l) in fds {
                    if name == "metrics" {
                        metrics = Some(l);
                        continue;
                    }
                    tracing::info!(address = %l.local_addr()?, name, "listening (socket activation)");
                    listeners.push(l);
                }
                if listeners.is_empty() {
                    bail!("socket activation passed no listening TCP socket");
                }
                listeners
            }
            None => bind(listen)?,
        };
        if let (None, Some(addr)) = (&metrics, &common.metrics) {
            let mut bound = bind(std::slice::from_ref(addr)).context("--metrics")?;
            metrics = bound.pop();
        }
        Ok(Listeners { clients, metrics })
    }

    /// Where clients reach the daemon, as bound: with the port picked for
    /// port 0, and the addresses of the sockets systemd passed.
    pub fn addresses(&self) -> Result<Vec<SocketAddr>> {
        self.clients
            .iter()
            .map(|l| l.local_addr().context("the address of a listener"))
            .collect()
    }
}

/// Opens the listeners ([`Listeners::open`]) and [`serve`]s them.
pub fn run(plan: Plan<'_>) -> Result<()> {
    let listeners = Listeners::open(plan.listen, plan.common)?;
    serve(plan, listeners)
}

/// Validates names, starts the workers on `listeners` and the signal thread,
/// and runs until drained. SIGTERM/SIGINT drain then return; a second one
/// exits at once.
pub fn serve(plan: Plan<'_>, listeners: Listeners) -> Result<()> {
    let c = plan.common;
    if let Some(name) = plan.outbound.as_ref().and_then(|o| o.service_name) {
        // The daemon's own flag (`value_parser = service_name`), or a name
        // chosen in code.
        libipc::service::validate_name(name.as_bytes()).context("--service-name")?;
    }
    for s in &c.expose_outbound {
        tracing::warn!(
            service = %s,
            "--expose-outbound: network clients may use the outbound service {s:?} and make it \
             connect wherever its --outbound-allow permits"
        );
    }
    let outbound = plan.outbound.filter(|_| !c.no_outbound);
    if outbound.is_none() && !c.outbound_allow.is_empty() {
        bail!("--outbound-allow: {} offers no outbound service", plan.name);
    }
    let proxy = match &outbound {
        Some(_) => proxy_config(c)?,
        None => None,
    };
    // Signals go to one thread that waits for them; block them in every thread
    // before any starts.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]);
    signals.thread_block().context("blocking signals")?;
    raise_fd_limit(c.max_connections);
    let Listeners {
        clients: listeners,
        metrics,
    } = listeners;
    let workers = c
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = DaemonConfig {
        fixed_service: c.service.clone().filter(|_| !plan.fixed_in_transport),
        allow: c.allow.clone(),
        max_connections: c.max_connections,
        handshake_timeout: c.handshake_timeout,
        transport_handshake_timeout: plan.transport_handshake_timeout,
        idle_timeout: (!c.idle_timeout.is_zero()).then_some(c.idle_timeout),
        keepalive: plan.keepalive,
        drain_timeout: c.drain_timeout,
        max_message_size: c.max_message_size,
        rundir: c.rundir.clone(),
        local_service: outbound
            .as_ref()
            .map(|o| o.service_name.unwrap_or(o.scheme).to_owned()),
        // A name or a policy the operator gave is for this daemon's own
        // outbound service: not to be left to another one silently.
        local_service_if_free: outbound
            .as_ref()
            .is_some_and(|o| o.service_name.is_none() && c.outbound_allow.is_empty()),
        outbound_allow: c.outbound_allow.clone(),
        expose_outbound: c.expose_outbound.clone(),
        scheme: outbound
            .as_ref()
            .map_or_else(String::new, |o| o.scheme.to_owned()),
        also_schemes: outbound.as_ref().map_or_else(Vec::new, |o| {
            o.also_schemes.iter().map(|s| (*s).to_owned()).collect()
        }),
        proxy,
        proxy_from: c.proxy_from.clone(),
        peer_info: c.peer_info,
        busy_wait: crate::engine::BUSY_WAIT,
        handoff: plan.handoff,
    };
    let outbound = outbound.map(|o| o.factory);
    let daemon = Daemon::new(config, listeners, workers, plan.inbound, outbound)?;
    spawn_signal_thread(signals, daemon.shutdown_handle(), plan.on_hup)?;
    if let Some(l) = metrics {
        crate::metrics::spawn(l, daemon.stats(), plan.name.to_owned()).context("--metrics")?;
    }
    let mode = if c.service.is_some() {
        "fixed"
    } else {
        "routed"
    };
    daemon.run_then(|| {
        tracing::info!(workers, mode, rundir = %c.rundir.display(), "{} ready", plan.name);
        // Listeners queue clients, the outbound service is bound: ready.
        crate::systemd::notify("READY=1");
    })?;
    tracing::info!("{} stopped", plan.name);
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard one: each relayed
/// client holds two, and the common soft limit of 1024 would stop a daemon at
/// about 500 clients, far below --max-connections. Warns if even the hard limit
/// is too low.
fn raise_fd_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut limit = soft;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        tracing::debug!(from = soft, to = hard, "raised the open-file limit");
        limit = hard;
    }
    let needed = 2 * max_connections as u64 + 64;
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            "the open-file limit is below what --max-connections needs (2 per client)"
        );
    }
}

/// Binds every `--listen` address (host names resolved; port 0 logged as bound).
fn bind(specs: &[String]) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for spec in specs {
        let addrs: Vec<_> = spec
            .to_socket_addrs()
            .with_context(|| format!("--listen {spec}: cannot resolve"))?
            .collect();
        if addrs.is_empty() {
            bail!("--listen {spec}: no address");
        }
        for addr in addrs {
            let l = listen(addr).with_context(|| format!("--listen {spec}: bind {addr}"))?;
            tracing::info!(address = %l.local_addr()?, "listening");
            listeners.push(l);
        }
    }
    Ok(listeners)
}

/// A listening TCP socket with the deepest backlog the system allows: std's 128
/// overflows under bursts of connects, and each overflow costs a client a 1 s
/// SYN retry.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, listen,
        setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // As std does: a restarted daemon can bind while old connections linger.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match addr {
        std::net::SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        std::net::SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?,
    }
    listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}

fn spawn_signal_thread(
    signals: SigSet,
    shutdown: Shutdown,
    on_hup: Box<dyn Fn() + Send>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            while let Ok(sig) = signals.wait() {
                match sig {
                    Signal::SIGHUP => {
                        crate::systemd::notify(&crate::systemd::reloading());
                        on_hup();
                        crate::systemd::notify("READY=1");
                    }
                    _ if stopping => {
                        tracing::warn!(signal = %sig, "second signal: exiting now");
                        std::process::exit(1);
                    }
                    _ => {
                        tracing::info!(signal = %sig, "stopping: no new connections, draining");
                        crate::systemd::notify("STOPPING=1");
                        stopping = true;
                        shutdown.trigger();
                    }
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
