//! The relays under test (tcpd, nginx, HAProxy, socat; with TLS: tlsd, HAProxy
//! `ssl crt`, stunnel), each started as a child process in front of the echo
//! service's unix socket, and the tools' lookup.
//!
//! Configurations are generated into the run directory. Every relay listens on
//! 127.0.0.1: tcpd picks its own port (`--listen 127.0.0.1:0`, read back from its
//! log); the others get a port found free by binding port 0 and releasing it. A
//! relay is ready once a TCP connection to it carries one echoed message to the
//! service and back. It is killed, with everything it forked, on drop.
//!
//! The TLS relays all use the same certificate and key (ECDSA P-256, made by
//! [`write_certs`] in the run directory) and accept TLS 1.3 only.
//!
//! The WebSocket relays (websocketd, websocat, websockify) are spoken to in
//! WebSocket by the client, in one of the two ways of [`WsMode`]: one LibIPC
//! message per WebSocket message where the relay does the framing (websocketd,
//! websocat `lengthprefixed:`), the LibIPC frames inside the messages where it
//! relays bytes (websockify, websocat without the overlay).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rustls::ClientConfig;

use crate::client::Target;
use crate::tls;
use crate::ws::{self, WsMode};

/// What stands between the client and the echo service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum RelayKind {
    /// No relay: the client connects to the service's unix socket.
    Direct,
    /// No relay, and not our service: the client opens TCP straight to a
    /// thread-per-connection echo (the physical reference for TCP relays).
    #[value(name = "direct-tcp")]
    DirectTcp,
    /// tcpd with its default number of workers (the number of cores).
    Tcpd,
    /// tcpd --workers 1.
    #[value(name = "tcpd-w1")]
    TcpdW1,
    /// tcpd --workers 2.
    #[value(name = "tcpd-w2")]
    TcpdW2,
    /// tcpd --handoff: each client's socket goes to the service, which
    /// takes handed-off clients (it is built on this libipc); tcpd steps out.
    #[value(name = "tcpd-handoff")]
    TcpdHandoff,
    /// IPC_NETWORK `tcp://`: the client asks tcpd's outbound service for the
    /// service behind tcpd's own port (tcpd relays both hops).
    #[value(name = "net-tcp")]
    NetTcp,
    /// The same with tcpd --handoff: the client is given tcpd's connection,
    /// whose far end tcpd gave the service (one TCP connection, no relay).
    #[value(name = "net-tcp-handoff")]
    NetTcpHandoff,
    /// IPC_NETWORK `ws://`: the client asks websocketd's outbound service
    /// for the service behind websocketd's own port (both hops WebSocket).
    #[value(name = "net-ws")]
    NetWs,
    /// nginx stream proxy, default buffers (proxy_buffer_size 16k).
    Nginx,
    /// nginx stream proxy, proxy_buffer_size 256k.
    #[value(name = "nginx-256k")]
    Nginx256k,
    /// HAProxy mode tcp, default buffers (tune.bufsize 16384).
    Haproxy,
    /// HAProxy mode tcp, tune.bufsize 262144.
    #[value(name = "haproxy-256k")]
    Haproxy256k,
    /// socat TCP-LISTEN:PORT,fork,reuseaddr,backlog=1024 UNIX-CONNECT:PATH (a
    /// process per connection).
    Socat,
    /// tlsd --workers 1 (TLS 1.3 only).
    #[value(name = "tlsd-w1")]
    TlsdW1,
    /// tlsd --workers 2 (TLS 1.3 only).
    #[value(name = "tlsd-w2")]
    TlsdW2,
    /// HAProxy mode tcp, `bind ... ssl crt FILE ssl-min-ver TLSv1.3`.
    #[value(name = "haproxy-tls")]
    HaproxyTls,
    /// stunnel (a thread per connection), sslVersionMin TLSv1.3.
    Stunnel,
    /// websocketd --workers 1 (--message-type binary).
    #[value(name = "websocketd-w1")]
    WebsocketdW1,
    /// websocketd --workers 2 (--message-type binary).
    #[value(name = "websocketd-w2")]
    WebsocketdW2,
    /// websocat --binary ws-l:ADDR lengthprefixed:unix:PATH (one WebSocket
    /// message = one LibIPC message, as websocketd).
    Websocat,
    /// websocat --binary ws-l:ADDR unix:PATH (bytes; the client sends LibIPC
    /// frames inside the messages).
    #[value(name = "websocat-bytes")]
    WebsocatBytes,
    /// websockify --unix-target=PATH (bytes, a process per connection; the
    /// client sends LibIPC frames inside the messages).
    Websockify,
}

/// What the client speaks to a relay; only relays of the same protocol are
/// compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plain,
    Tls,
    WebSocket,
}

impl RelayKind {
    /// What `relays` runs when no `--relay` is given. On this project's 2-core
    /// machines the default tcpd (workers = cores) is tcpd-w2, so it is not run
    /// a third time.
    pub const DEFAULT: [RelayKind; 8] = [
        RelayKind::Direct,
        RelayKind::TcpdW1,
        RelayKind::TcpdW2,
        RelayKind::Nginx,
        RelayKind::Nginx256k,
        RelayKind::Haproxy,
        RelayKind::Haproxy256k,
        RelayKind::Socat,
    ];

    pub fn label(self) -> String {
        self.to_possible_value()
            .expect("not skipped")
            .get_name()
            .to_owned()
    }

    /// What `tls` runs when no `--relay` is given: tcpd-w1 as the figure
    /// without TLS.
    pub const TLS_DEFAULT: [RelayKind; 5] = [
        RelayKind::TcpdW1,
        RelayKind::TlsdW1,
        RelayKind::TlsdW2,
        RelayKind::HaproxyTls,
        RelayKind::Stunnel,
    ];

    /// What `ws` runs when no `--relay` is given.
    pub const WS_DEFAULT: [RelayKind; 4] = [
        RelayKind::WebsocketdW1,
        RelayKind::WebsocketdW2,
        RelayKind::Websocat,
        RelayKind::Websockify,
    ];

    /// The IPC_NETWORK scheme the client asks for, for the `net-*` relays.
    pub fn network_scheme(self) -> Option<&'static str> {
        match self {
            RelayKind::NetTcp | RelayKind::NetTcpHandoff => Some("tcp"),
            RelayKind::NetWs => Some("ws"),
            _ => None,
        }
    }

    pub fn is_tcpd(self) -> bool {
        matches!(
            self,
            RelayKind::Tcpd
                | RelayKind::TcpdW1
                | RelayKind::TcpdW2
                | RelayKind::TcpdHandoff
                | RelayKind::NetTcp
                | RelayKind::NetTcpHandoff
        )
    }

    /// tcpd, tlsd or websocketd: the relays measured against the others.
    pub fn is_ours(self) -> bool {
        self.is_tcpd()
            || self.is_websocketd()
            || matches!(self, RelayKind::TlsdW1 | RelayKind::TlsdW2)
    }

    pub fn is_websocketd(self) -> bool {
        matches!(self, RelayKind::WebsocketdW1 | RelayKind::WebsocketdW2)
    }

    /// How the client speaks WebSocket to it, if it does.
    pub fn ws_mode(self) -> Option<WsMode> {
        match self {
            RelayKind::WebsocketdW1 | RelayKind::WebsocketdW2 | RelayKind::Websocat => {
                Some(WsMode::Messages)
            }
            RelayKind::WebsocatBytes | RelayKind::Websockify => Some(WsMode::Bytes),
            _ => None,
        }
    }

    pub fn protocol(self) -> Protocol {
        if self.is_tls() {
            Protocol::Tls
        } else if self.ws_mode().is_some() {
            Protocol::WebSocket
        } else {
            Protocol::Plain
        }
    }

    /// The most connections it can hold, if fewer than the idle workload's:
    /// websockify waits with select(2), which fails on a descriptor past 1023
    /// ("filedescriptor out of range in select()"), and with its parent
    /// holding each client's socket, that happens near 500 connections.
    pub fn max_conns(self) -> Option<usize> {
        (self == RelayKind::Websockify).then_some(400)
    }

    /// The other relays that ours must beat (the issues' targets): the memory
    /// per idle connection is compared with the least of these.
    pub fn is_rival(self) -> bool {
        matches!(
            self,
            RelayKind::HaproxyTls | RelayKind::Stunnel | RelayKind::Websocat
        )
    }

    /// Whether clients speak TLS to it.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            RelayKind::TlsdW1 | RelayKind::TlsdW2 | RelayKind::HaproxyTls | RelayKind::Stunnel
        )
    }
}

/// Where our daemons' binaries are: the flags every bench that runs them takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DaemonPaths {
    /// The tcpd binary (default: `tcpd` next to this executable, i.e.
    /// target/release/tcpd for a release build).
    #[arg(long)]
    pub tcpd: Option<PathBuf>,
    /// The tlsd binary (default: `tlsd` next to this executable).
    #[arg(long)]
    pub tlsd: Option<PathBuf>,
    /// The websocketd binary (default: `websocketd` next to this executable).
    #[arg(long)]
    pub websocketd: Option<PathBuf>,
}

impl DaemonPaths {
    /// The paths given, for [`Tools::find`] (the other tools `None`).
    pub fn given(&self) -> Tools {
        Tools {
            tcpd: self.tcpd.clone(),
            tlsd: self.tlsd.clone(),
            websocketd: self.websocketd.clone(),
            ..Tools::default()
        }
    }
}

/// The relay programs found on this machine.
#[derive(Debug, Default)]
pub struct Tools {
    pub tcpd: Option<PathBuf>,
    pub tlsd: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    /// nginx's stream module, when it is built as a dynamic module (Debian).
    pub nginx_stream_module: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub socat: Option<PathBuf>,
    pub stunnel: Option<PathBuf>,
    pub websocketd: Option<PathBuf>,
    pub websocat: Option<PathBuf>,
    pub websockify: Option<PathBuf>,
}

impl Tools {
    /// Finds the programs. tcpd is `--tcpd`, tlsd `--tlsd` and websocketd
    /// `--websocketd`, or the release builds next to this executable
    /// (`target/release/tcpd`, ...). websocat is `--websocat`, in $PATH or in
    /// `~/.cargo/bin`; websockify `--websockify`, in `target/bench-venv/bin`
    /// or in $PATH. `given`: the paths the command line names (the others
    /// `None`).
    pub fn find(given: Tools) -> Result<Self> {
        let exe = std::env::current_exe().context("current_exe")?;
        let ours = |given: Option<PathBuf>, name: &str| {
            given
                .or_else(|| exe.parent().map(|d| d.join(name)))
                .filter(|p| p.is_file())
        };
        let nginx = which("nginx");
        let nginx_stream_module = nginx.as_deref().and_then(stream_module);
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
            .map(|d| d.join("bin/websocat"));
        // target/release/ipc-bench -> target/bench-venv/bin/websockify
        let venv = exe
            .parent()
            .and_then(Path::parent)
            .map(|t| t.join("bench-venv/bin/websockify"));
        let file = |p: Option<PathBuf>| p.filter(|p| p.is_file());
        Ok(Tools {
            tcpd: ours(given.tcpd, "tcpd"),
            tlsd: ours(given.tlsd, "tlsd"),
            websocketd: ours(given.websocketd, "websocketd"),
            websocat: file(given.websocat)
                .or_else(|| which("websocat"))
                .or_else(|| file(cargo_bin)),
            websockify: file(given.websockify)
                .or_else(|| file(venv))
                .or_else(|| which("websockify")),
            nginx,
            nginx_stream_module,
            haproxy: which("haproxy"),
            socat: which("socat"),
            stunnel: which("stunnel4").or_else(|| which("stunnel")),
        })
    }

    /// Why `kind` cannot run here, if it cannot.
    pub fn missing(&self, kind: RelayKind) -> Option<&'static str> {
        match kind {
            RelayKind::Direct | RelayKind::DirectTcp => None,
            RelayKind::Tcpd
            | RelayKind::TcpdW1
            | RelayKind::TcpdW2
            | RelayKind::TcpdHandoff
            | RelayKind::NetTcp
            | RelayKind::NetTcpHandoff => self.tcpd.is_none().then_some(
                "no tcpd binary: build it with `cargo build --release -p tcpd` (or pass --tcpd PATH)",
            ),
            RelayKind::Nginx | RelayKind::Nginx256k => self
                .nginx
                .is_none()
                .then_some("nginx not found: apt-get install nginx libnginx-mod-stream"),
            RelayKind::TlsdW1 | RelayKind::TlsdW2 => self.tlsd.is_none().then_some(
                "no tlsd binary: build it with `cargo build --release -p tlsd` (or pass --tlsd PATH)",
            ),
            RelayKind::Haproxy | RelayKind::Haproxy256k | RelayKind::HaproxyTls => self
                .haproxy
                .is_none()
                .then_some("haproxy not found: apt-get install haproxy"),
            RelayKind::Socat => self
                .socat
                .is_none()
                .then_some("socat not found: apt-get install socat"),
            RelayKind::Stunnel => self
                .stunnel
                .is_none()
                .then_some("stunnel not found: apt-get install stunnel4"),
            RelayKind::WebsocketdW1 | RelayKind::WebsocketdW2 | RelayKind::NetWs => self.websocketd.is_none().then_some(
                "no websocketd binary: build it with `cargo build --release -p websocketd` (or pass --websocketd PATH)",
            ),
            RelayKind::Websocat | RelayKind::WebsocatBytes => self
                .websocat
                .is_none()
                .then_some("websocat not found: cargo install websocat --locked"),
            RelayKind::Websockify => self.websockify.is_none().then_some(
                "websockify not found: python3 -m venv target/bench-venv && \
                 target/bench-venv/bin/pip install websockify",
            ),
        }
    }

    /// One line per tool found, with its version.
    pub fn versions(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, path: &Option<PathBuf>, args: &[&str], pick: &str| {
            let Some(p) = path else {
                let _ = writeln!(out, "  {name}: not found");
                return;
            };
            let v = Command::new(p)
                .args(args)
                .output()
                .map(|o| {
                    // nginx prints its version on stderr, the others on stdout.
                    let text = String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr);
                    text.lines()
                        .find(|l| l.contains(pick))
                        .unwrap_or("?")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_else(|e| format!("? ({e})"));
            let _ = writeln!(out, "  {name}: {v} ({})", p.display());
        };
        line("tcpd", &self.tcpd, &["--version"], "tcpd");
        line("tlsd", &self.tlsd, &["--version"], "tlsd");
        line("nginx", &self.nginx, &["-v"], "version");
        line("haproxy", &self.haproxy, &["-v"], "version");
        line("socat", &self.socat, &["-V"], "socat version");
        // stunnel prints its version (and OpenSSL's) on stderr.
        line("stunnel", &self.stunnel, &["-version"], "stunnel ");
        line("websocketd", &self.websocketd, &["--version"], "websocketd");
        line("websocat", &self.websocat, &["--version"], "websocat");
        // websockify has no --version: ask its Python for the package's.
        let python = self
            .websockify
            .as_ref()
            .map(|w| w.with_file_name("python3"));
        let ask = "import importlib.metadata as m; print('websockify', m.version('websockify'))";
        line(
            "websockify",
            &python.filter(|p| p.is_file()),
            &["-c", ask],
            "websockify",
        );
        out
    }
}

/// `name` in $PATH or in the sbin directories a non-root $PATH may lack.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The stream module's file when nginx was built with `--with-stream=dynamic`.
fn stream_module(nginx: &Path) -> Option<PathBuf> {
    let out = Command::new(nginx).arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !text.contains("--with-stream=dynamic") {
        return None;
    }
    let dir = text
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--modules-path="))
        .unwrap_or("/usr/lib/nginx/modules");
    Some(Path::new(dir).join("ngx_stream_module.so"))
}

/// A running relay (or none, for `Direct`), killed on drop.
#[derive(Debug)]
pub struct Relay {
    pub kind: RelayKind,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    /// The client's TLS configuration for a TLS relay (full handshakes).
    tls: Option<Arc<ClientConfig>>,
    service: PathBuf,
    log: PathBuf,
    /// IPC_NETWORK relays: the outbound service's socket and the URI to ask.
    network: Option<(PathBuf, String)>,
}

impl Relay {
    /// Starts `kind` in front of the service `rundir/name`, with its files in
    /// `dir`, and waits until it relays (or `deadline` passes).
    pub fn start(
        kind: RelayKind,
        tools: &Tools,
        rundir: &Path,
        name: &str,
        dir: &Path,
        deadline: Duration,
    ) -> Result<Self> {
        let service = rundir.join(name);
        let log = dir.join("stderr.log");
        let mut relay = Relay {
            kind,
            child: None,
            addr: None,
            tls: kind
                .is_tls()
                .then(|| tls::client_config(false))
                .transpose()?,
            service: service.clone(),
            log: log.clone(),
            network: None,
        };
        if kind == RelayKind::Direct {
            return Ok(relay);
        }
        if let Some(why) = tools.missing(kind) {
            bail!("{why}");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let deadline = Instant::now() + deadline;
        let (mut cmd, port) = command(kind, tools, rundir, name, dir)?;
        // Its own process group: nginx's workers and socat's forks are killed
        // with it (by the group's id, which is the child's pid).
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        let addr = if let Some(port) = port {
            let err = std::fs::File::create(&log)?;
            relay.child = Some(cmd.stderr(err).spawn().context("spawn the relay")?);
            SocketAddr::from(([127, 0, 0, 1], port))
        } else {
            // tcpd, tlsd: the port it picked is in its log line `listening address=...`.
            let (child, addr) = spawn_listening(&mut cmd, &log, deadline, &kind.label())?;
            relay.child = Some(child);
            addr
        };
        relay.addr = Some(addr);
        if let Some(scheme) = kind.network_scheme() {
            let socket = rundir.join(".outbound").join(scheme);
            relay.network = Some((socket, format!("{scheme}://{addr}/{name}")));
        }
        relay.wait_ready(deadline)?;
        Ok(relay)
    }

    /// Where the client connects.
    pub fn target(&self) -> Target<'_> {
        if let Some((socket, uri)) = &self.network {
            return Target::Network(socket, uri);
        }
        if let (Some(a), Some(mode)) = (self.addr, self.kind.ws_mode()) {
            return Target::Ws(a, mode);
        }
        match (self.addr, &self.tls) {
            (Some(a), Some(config)) => Target::Tls(a, config),
            (Some(a), None) => Target::Tcp(a),
            (None, _) => Target::Unix(&self.service),
        }
    }

    /// Its TCP address (`None` for `Direct`).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The relay's first process (`None` for `Direct`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Polls TCP connects until one carries a message to the service and back.
    fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        let addr = self.addr.context("no address")?;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.kind.label(),
                    self.log_tail()
                );
            }
            let probe = match (&self.network, self.kind.ws_mode()) {
                (Some((socket, uri)), _) => crate::stream::network_echo_once(socket, uri),
                (None, Some(mode)) => ws::echo_once(addr, mode, b"probe"),
                (None, None) => tls::echo_once(addr, self.tls.as_ref(), b"probe").map(drop),
            };
            match probe {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            // Polling, not a fixed delay: try again shortly until the deadline.
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!(
            "{} not relaying to the service in time ({last}):\n{}",
            self.kind.label(),
            self.log_tail()
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// The last lines of a relay's log.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Spawns one of our daemons (tcpd, tlsd, websocketd) in a process group of
/// its own, its stderr copied to `log`, and waits until it logs the address it
/// listens on (port 0: it picks one). If it does not by `deadline`, it is
/// killed with its process group.
pub fn spawn_listening(
    cmd: &mut Command,
    log: &Path,
    deadline: Instant,
    what: &str,
) -> Result<(Child, SocketAddr)> {
    let mut child = cmd
        .process_group(0)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {what}"))?;
    let stderr = child.stderr.take().context("its stderr")?;
    let rx = copy_log(stderr, std::fs::File::create(log)?);
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            bail!("{what} logged no listening address:\n{}", log_tail(log))
        }
    }
}

/// Copies tcpd's stderr to `log` on a thread; the first `listening address=`
/// is sent on the returned channel.
fn copy_log(stderr: impl Read + Send + 'static, log: std::fs::File) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = std::io::BufWriter::new(log);
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
                    .and_then(|a| a.parse().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
            let _ = writeln!(log, "{line}");
            // Flushed per line so that a failure report shows the latest lines;
            // tcpd logs per connection, not per message.
            let _ = log.flush();
        }
    });
    rx
}

/// `--max-connections` of our daemons: above any `--idle-conns` (their
/// default, 4,096, would refuse the rest of 10,000 idle connections).
const MAX_CONNECTIONS: &str = "60000";

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The command that runs `kind`, and the port it will listen on (`None`: tcpd
/// picks and logs it).
fn command(
    kind: RelayKind,
    tools: &Tools,
    rundir: &Path,
    name: &str,
    dir: &Path,
) -> Result<(Command, Option<u16>)> {
    let service = rundir.join(name);
    let exe = |p: &Option<PathBuf>| p.clone().context("not installed");
    Ok(match kind {
        RelayKind::Direct => bail!("direct has no relay process"),
        RelayKind::DirectTcp => {
            let port = free_port()?;
            let mut cmd = Command::new(std::env::current_exe().context("current_exe")?);
            cmd.args(["serve", "--kind", "reference-tcp", "--rundir"])
                .arg(rundir)
                .arg("--name")
                .arg(format!("127.0.0.1:{port}"));
            (cmd, Some(port))
        }
        RelayKind::Tcpd
        | RelayKind::TcpdW1
        | RelayKind::TcpdW2
        | RelayKind::TcpdHandoff
        | RelayKind::TlsdW1
        | RelayKind::TlsdW2 => {
            let mut cmd = if kind.is_tls() {
                let (cert, key, _) = cert_files(rundir);
                let mut cmd = Command::new(exe(&tools.tlsd)?);
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
                cmd.args(["--tls-min-version", "1.3"]);
                cmd
            } else {
                Command::new(exe(&tools.tcpd)?)
            };
            cmd.args([
                "--listen",
                "127.0.0.1:0",
                "--service",
                name,
                "--no-outbound",
            ])
            .arg("--rundir")
            .arg(rundir)
            // Info: the listening address is logged at that level.
            .args(["--log-level", "info"])
            .args(["--max-connections", MAX_CONNECTIONS]);
            match kind {
                RelayKind::TcpdW1 | RelayKind::TlsdW1 => cmd.args(["--workers", "1"]),
                RelayKind::TcpdW2 | RelayKind::TlsdW2 => cmd.args(["--workers", "2"]),
                RelayKind::TcpdHandoff => cmd.arg("--handoff"),
                _ => &mut cmd,
            };
            (cmd, None)
        }
        RelayKind::Nginx | RelayKind::Nginx256k => {
            let port = free_port()?;
            let conf = dir.join("nginx.conf");
            let text = nginx_conf(tools, dir, port, &service, kind == RelayKind::Nginx256k);
            std::fs::write(&conf, text)?;
            let mut cmd = Command::new(exe(&tools.nginx)?);
            // -e: the error log before the configuration is read goes there too,
            // not to /var/log/nginx.
            cmd.arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"));
            (cmd, Some(port))
        }
        RelayKind::Haproxy | RelayKind::Haproxy256k | RelayKind::HaproxyTls => {
            let port = free_port()?;
            let conf = dir.join("haproxy.cfg");
            let big = kind == RelayKind::Haproxy256k;
            let crt = (kind == RelayKind::HaproxyTls).then(|| cert_files(rundir).2);
            std::fs::write(&conf, haproxy_conf(port, &service, big, crt.as_deref()))?;
            let mut cmd = Command::new(exe(&tools.haproxy)?);
            // -db: stay in the foreground, no daemon.
            cmd.arg("-f").arg(&conf).arg("-db");
            (cmd, Some(port))
        }
        RelayKind::Socat => {
            let port = free_port()?;
            let mut cmd = Command::new(exe(&tools.socat)?);
            // bind=127.0.0.1: loopback only. backlog=1024: socat's default (5)
            // drops most of 1,000 connections made back to back (each SYN dropped
            // is retried a second later: under 400 connected in 60 s).
            cmd.arg(format!(
                "TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1,backlog=1024"
            ))
            .arg(format!("UNIX-CONNECT:{}", service.display()));
            (cmd, Some(port))
        }
        RelayKind::NetTcp | RelayKind::NetTcpHandoff | RelayKind::NetWs => {
            // Routed (the URI names the service), with the outbound service:
            // the daemon dials its own port.
            let exe = if kind == RelayKind::NetWs {
                exe(&tools.websocketd)?
            } else {
                exe(&tools.tcpd)?
            };
            let mut cmd = Command::new(exe);
            cmd.args(["--listen", "127.0.0.1:0", "--workers", "1"])
                .arg("--rundir")
                .arg(rundir)
                .args(["--log-level", "info"]);
            match kind {
                RelayKind::NetWs => cmd.args(["--message-type", "binary"]),
                RelayKind::NetTcpHandoff => cmd.arg("--handoff"),
                _ => &mut cmd,
            };
            (cmd, None)
        }
        RelayKind::WebsocketdW1 | RelayKind::WebsocketdW2 => {
            let mut cmd = Command::new(exe(&tools.websocketd)?);
            cmd.args(["--listen", "127.0.0.1:0", "--service", name])
                .arg("--rundir")
                .arg(rundir)
                .args(["--max-message-size", "1M", "--message-type", "binary"])
                .args(["--log-level", "info"])
                .args(["--max-connections", MAX_CONNECTIONS])
                .arg("--workers")
                .arg(if kind == RelayKind::WebsocketdW1 {
                    "1"
                } else {
                    "2"
                });
            (cmd, None)
        }
        RelayKind::Websocat | RelayKind::WebsocatBytes => {
            let port = free_port()?;
            let mut cmd = Command::new(exe(&tools.websocat)?);
            cmd.args(websocat_args(port, &service, kind == RelayKind::Websocat));
            (cmd, Some(port))
        }
        RelayKind::Websockify => {
            let port = free_port()?;
            let mut cmd = Command::new(exe(&tools.websockify)?);
            cmd.arg(format!("--unix-target={}", service.display()))
                .arg(format!("127.0.0.1:{port}"));
            (cmd, Some(port))
        }
        RelayKind::Stunnel => {
            let port = free_port()?;
            let conf = dir.join("stunnel.conf");
            std::fs::write(&conf, stunnel_conf(port, &service, rundir))?;
            let mut cmd = Command::new(exe(&tools.stunnel)?);
            cmd.arg(&conf);
            (cmd, Some(port))
        }
    })
}

/// websocat as a server on 127.0.0.1:`port` in binary mode, a connection to
/// `service` per client; with `framed`, through the `lengthprefixed:` overlay
/// (4-byte big-endian length, LibIPC's framing): one WebSocket message = one
/// LibIPC message. `-B 1048576`: its buffer, which is its largest message and
/// must hold a whole length-prefixed frame (the default, 65536, cannot carry a
/// 64 KiB payload), the same 1 MiB as websocketd's --max-message-size.
fn websocat_args(port: u16, service: &Path, framed: bool) -> Vec<String> {
    let overlay = if framed { "lengthprefixed:" } else { "" };
    vec![
        "--binary".into(),
        "-B".into(),
        "1048576".into(),
        format!("ws-l:127.0.0.1:{port}"),
        format!("{overlay}unix:{}", service.display()),
    ]
}

/// The TLS relays' certificate, key, and both in one file (HAProxy's `crt`).
pub fn cert_files(rundir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let f = |name: &str| rundir.join(name);
    (f("server.pem"), f("server.key"), f("server-and-key.pem"))
}

/// Writes [`cert_files`] into `rundir`: a CA and a server certificate signed by
/// it, with an ECDSA P-256 key (all that `libipc_tests::certs` makes).
pub fn write_certs(rundir: &Path) -> Result<()> {
    let pki = libipc_tests::certs::generate(rundir, false);
    let (cert, key, both) = cert_files(rundir);
    if pki.server.cert != cert || pki.server.key != key {
        bail!("certs::generate wrote {:?}, not {cert:?}", pki.server);
    }
    let text = std::fs::read_to_string(&cert)? + &std::fs::read_to_string(&key)?;
    std::fs::write(both, text)?;
    Ok(())
}

/// nginx: defaults except what running it here requires.
fn nginx_conf(tools: &Tools, dir: &Path, port: u16, service: &Path, big: bool) -> String {
    let mut c = String::new();
    if let Some(m) = &tools.nginx_stream_module {
        let _ = writeln!(c, "load_module {};", m.display());
    }
    // As root, nginx's workers would run as nobody, who may not connect to the
    // service's socket.
    if running_as_root() {
        c.push_str("user root;\n");
    }
    let _ = write!(
        c,
        "daemon off;\n\
         master_process on;\n\
         # One worker per core, as tcpd's default and HAProxy's threads.\n\
         worker_processes auto;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{\n\
         \x20   # The default (512) is too few for 1,000 clients: each takes two.\n\
         \x20   worker_connections 4096;\n\
         }}\n\
         stream {{\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       proxy_pass unix:{svc};\n{buf}\
         \x20   }}\n\
         }}\n",
        dir = dir.display(),
        svc = service.display(),
        buf = if big {
            "        proxy_buffer_size 256k;\n"
        } else {
            ""
        },
    );
    c
}

/// Whether this process runs as root (/proc/self belongs to the effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// HAProxy: defaults except timeouts (it warns without them); threads default
/// to one per core. With `crt`, TLS 1.3 only with that certificate and key.
fn haproxy_conf(port: u16, service: &Path, big: bool, crt: Option<&Path>) -> String {
    format!(
        "global\n{buf}\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 5m\n\
         \x20   timeout server 5m\n\
         listen relay\n\
         \x20   bind 127.0.0.1:{port}{ssl}\n\
         \x20   server s unix@{svc}\n",
        svc = service.display(),
        buf = if big { "    tune.bufsize 262144\n" } else { "" },
        ssl = crt.map_or(String::new(), |c| format!(
            " ssl crt {} ssl-min-ver TLSv1.3",
            c.display()
        )),
    )
}

/// stunnel: in the foreground, logging to stderr (its default level, notice:
/// a line per connection, as tlsd at info), TCP_NODELAY on the client side as
/// the other relays have it; TLS 1.3 only; everything else default.
fn stunnel_conf(port: u16, service: &Path, rundir: &Path) -> String {
    let (cert, key, _) = cert_files(rundir);
    format!(
        "foreground = yes\n\
         syslog = no\n\
         pid =\n\
         [relay]\n\
         accept = 127.0.0.1:{port}\n\
         connect = {svc}\n\
         cert = {cert}\n\
         key = {key}\n\
         sslVersionMin = TLSv1.3\n\
         socket = l:TCP_NODELAY=1\n",
        svc = service.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations() {
        let svc = Path::new("/run/x/echo");
        let tools = Tools::default();
        let dir = Path::new("/tmp/d");
        let small = nginx_conf(&tools, dir, 4000, svc, false);
        assert!(small.contains("listen 127.0.0.1:4000;"), "{small}");
        assert!(small.contains("proxy_pass unix:/run/x/echo;"), "{small}");
        assert!(!small.contains("proxy_buffer_size"), "{small}");
        assert!(nginx_conf(&tools, dir, 4000, svc, true).contains("proxy_buffer_size 256k;"));
        let h = haproxy_conf(4000, svc, false, None);
        assert!(h.contains("bind 127.0.0.1:4000\n") && h.contains("server s unix@/run/x/echo"));
        assert!(!h.contains("bufsize"));
        assert!(haproxy_conf(4000, svc, true, None).contains("tune.bufsize 262144"));
        let h = haproxy_conf(4000, svc, false, Some(Path::new("/d/both.pem")));
        assert!(h.contains("bind 127.0.0.1:4000 ssl crt /d/both.pem ssl-min-ver TLSv1.3\n"));
        let st = stunnel_conf(4000, svc, Path::new("/d"));
        assert!(
            st.contains("accept = 127.0.0.1:4000\nconnect = /run/x/echo\n"),
            "{st}"
        );
        assert!(
            st.contains("cert = /d/server.pem\nkey = /d/server.key\n"),
            "{st}"
        );
    }
}
