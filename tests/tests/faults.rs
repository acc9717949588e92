//! Faults, black-box: what tcpd, tlsd and websocketd do when something around
//! them fails, as a user would check it.
//!
//! - a service killed (SIGKILL) under load: its clients are closed the way each
//!   protocol says "it ended" (tcpd: an EOF, also for a client still sending:
//!   the daemon lingers; tlsd: a TLS close_notify, not a ragged EOF;
//!   websocketd: close code 1011), while the clients of another
//!   service, busy at the same moment, lose nothing;
//! - a slow service and a fast client: backpressure slows the client down, the
//!   daemon's memory stays bounded, and every message arrives once, in order;
//! - out of file descriptors: the daemon neither spins nor dies, and clients
//!   waiting in the listen backlog are served once descriptors are free again;
//! - SIGTERM while 500 connections are busy: nothing accepted is lost, the
//!   daemon finishes open conversations, then exits 0;
//! - a daemon restarted under a running service, and a service restarted under
//!   running daemons;
//! - SIGHUP (a new certificate) while 500 wss connections of websocketd are
//!   busy: nothing lost, new connections get the new certificate.
//!
//!     cargo nextest run -p libipc-tests --test faults
//!
//! The clients are Python (one process driving many connections with threads):
//! `socket`, `ssl` (with ragged EOFs reported, so that a close_notify can be told
//! from a bare TCP close) and the `websockets` library's own protocol (its
//! Sans-I/O `ClientProtocol`) from the venv `tests/run` makes. Every test is
//! bounded in time: child processes are killed after a limit, and the Python
//! clients stop themselves (failing) after theirs.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use libipc_tests::certs::{self, Pki};
use libipc_tests::clients::tcp;
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, IO_TIMEOUT, Proc, READY_TIMEOUT, Run, World, python, raise_nofile_limit,
    run_cmd, spawn, spawn_with_stdin,
};
use libipc_tests::{frame, rss_kib};
use nix::sys::signal::Signal;

/// Longest a Python load client may run (it stops itself then, failing).
const LOAD_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The daemons.

/// One of the three daemons, and how its clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Tls,
    Ws,
    /// websocketd with TLS.
    Wss,
}

impl Kind {
    /// The binary.
    fn bin(self) -> &'static str {
        match self {
            Kind::Tcp => "tcpd",
            Kind::Tls => "tlsd",
            Kind::Ws | Kind::Wss => "websocketd",
        }
    }

    /// The Python clients' name for the protocol (`argv[1]`).
    fn mode(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }

    /// How a client's connection ends when its service is killed.
    fn killed_end(self) -> &'static str {
        match self {
            // tcpd shuts its side and drains the client's input before it
            // closes (a lingering close): a FIN, never a reset.
            Kind::Tcp => "eof",
            Kind::Tls => "close_notify",
            Kind::Ws | Kind::Wss => "close 1011",
        }
    }
}

/// A world with certificates (used by tlsd only), its services, and daemons.
struct Setup {
    pki: Pki,
    w: World,
}

impl Setup {
    fn new() -> Setup {
        let w = World::new();
        let pki = certs::generate(w.path(), true);
        Setup { pki, w }
    }

    /// `args` for daemon `kind`, with the certificate and key first (TLS).
    fn args(&self, kind: Kind, args: &[&str]) -> Vec<String> {
        let mut all = Vec::new();
        if matches!(kind, Kind::Tls | Kind::Wss) {
            for (flag, path) in [
                ("--cert", &self.pki.server.cert),
                ("--key", &self.pki.server.key),
            ] {
                all.push(flag.to_owned());
                all.push(path.to_str().expect("UTF-8 path").to_owned());
            }
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// Starts daemon `kind` on a port of its choosing, ready.
    fn daemon(&self, kind: Kind, label: &str, args: &[&str]) -> Daemon {
        let args = self.args(kind, args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::start(&self.w, kind.bin(), label, &args)
    }

    /// Starts daemon `kind` on `addr` (a port used before: a restart), ready.
    fn daemon_at(&self, kind: Kind, label: &str, addr: SocketAddr) -> Proc {
        let mut cmd = self.w.bin(kind.bin());
        cmd.arg("--listen")
            .arg(addr.to_string())
            .args(self.args(kind, &[]))
            .env_remove("ADDRESS")
            .env_remove("IPC_SERVICE_NAME");
        let mut proc = spawn(cmd, self.w.path(), label);
        proc.wait_for_stderr_line(&format!("listening address={addr}"), READY_TIMEOUT);
        proc
    }

    /// The Python client `tests/py/<script>` (one that imports
    /// `daemon_conns.py`), with the protocol of `kind`, `port`, the CA,
    /// [`LOAD_LIMIT`] (seconds) and `args`; its stdin a pipe.
    fn python(&self, kind: Kind, port: u16, label: &str, script: &str, args: &[&str]) -> Proc {
        self.python_trusting(&self.pki.ca.cert, kind, port, label, script, args)
    }

    /// [`Setup::python`], verifying TLS daemons against `ca`.
    fn python_trusting(
        &self,
        ca: &std::path::Path,
        kind: Kind,
        port: u16,
        label: &str,
        script: &str,
        args: &[&str],
    ) -> Proc {
        let mut cmd = python(script);
        cmd.arg(kind.mode())
            .arg(port.to_string())
            .arg(ca)
            .arg(LOAD_LIMIT.as_secs().to_string())
            .args(args);
        spawn_with_stdin(cmd, self.w.path(), label, Stdio::piped())
    }

    /// Starts `tests/py/faults_load.py` (many busy connections, a thread each)
    /// on daemon `kind` at `port`: `groups` are `service:connections:role`,
    /// comma-separated; steady connections have `after` more echoes once told
    /// to go; connections the daemon ends must end with `end`.
    fn load(&self, kind: Kind, port: u16, groups: &str, after: usize, end: &str) -> Proc {
        let label = format!("load-{}", kind.bin());
        let after = after.to_string();
        self.python(kind, port, &label, "faults_load.py", &[groups, &after, end])
    }
}

/// Waits until the load client says every connection is busy.
fn wait_busy(load: &mut Proc) {
    load.wait_for_stdout("busy", LOAD_LIMIT, |out| {
        String::from_utf8_lossy(out).contains("busy: ")
    });
}

/// Tells the load client to go on (a line on its stdin), then waits for it: it
/// must exit 0, its last line `ok`.
fn go_and_finish(mut load: Proc, label: &str) -> Run {
    let mut stdin = load.take_stdin().expect("piped stdin");
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    finish(load, label)
}

/// Waits for a Python client to end: exit 0, having printed `ok`.
fn finish(client: Proc, label: &str) -> Run {
    // A margin over the client's own limit, for it to say why it stopped.
    let run = client.wait(LOAD_LIMIT + Duration::from_secs(15));
    run.assert_success(&format!("python client {label}"));
    // Its last word, once every check passed.
    run.assert_lines(&["ok"]);
    println!("{label}:\n{}", run.stdout);
    run
}

// ---------------------------------------------------------------------------
// Services written for these tests.

/// Starts the Python service `tests/py/<script>` as service `name`, with
/// `args` after its socket's path, ready; its output in `<label>.stdout`.
fn python_service(w: &World, name: &str, label: &str, script: &str, args: &[&str]) -> Proc {
    let mut cmd = python(script);
    cmd.arg(w.rundir.join(name)).args(args);
    w.start_service(cmd, name, label)
}

// ---------------------------------------------------------------------------
// A service killed under load.

/// Kills service `alpha` (SIGKILL) while 20 clients of it and 20 of `beta`
/// are exchanging messages through daemon `kind`: alpha's clients must be
/// closed the way `kind` says the service ended ([`Kind::killed_end`]), with
/// every echo they got before that right and in order; beta's carry on with
/// every message echoed, in order, and close cleanly.
fn killed_service_under_load(kind: Kind) {
    let s = Setup::new();
    let alpha = s.w.rust_pongd("alpha");
    let _beta = s.w.rust_pongd("beta");
    let mut d = s.daemon(kind, kind.bin(), &[]);
    let mut load = s.load(
        kind,
        d.addr.port(),
        "alpha:20:ended,beta:20:steady",
        40,
        kind.killed_end(),
    );
    wait_busy(&mut load);
    alpha.kill();
    go_and_finish(load, &format!("load-{}", kind.bin()));
    d.assert_running("after a service was killed under load");
    // The daemon says why alpha's connections ended.
    let log = d.log();
    let closed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("service=alpha") && l.contains("connection closed"))
        .collect();
    assert_eq!(
        closed.len(),
        20,
        "{}: alpha's close lines:\n{}",
        kind.bin(),
        closed.join("\n")
    );
    println!("{}: {}", kind.bin(), closed[0]);
}

#[test]
fn killed_service_closes_its_tcpd_clients_and_another_service_loses_nothing() {
    killed_service_under_load(Kind::Tcp);
}

#[test]
fn killed_service_closes_its_tlsd_clients_with_close_notify_and_another_loses_nothing() {
    killed_service_under_load(Kind::Tls);
}

#[test]
fn killed_service_closes_its_websocketd_clients_with_1011_and_another_loses_nothing() {
    killed_service_under_load(Kind::Ws);
}

// ---------------------------------------------------------------------------
// SIGTERM under load.

/// Connections busy when the daemon gets SIGTERM.
const DRAIN_CONNECTIONS: usize = 500;

/// The drain timeout of the SIGTERM tests: far longer than their drain takes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after SIGTERM the daemon must have exited: its clients' last
/// echoes and closes (a second or so), with room for a loaded machine, and
/// far from the drain timeout (nor half of it, when websocketd says goodbye
/// at the latest).
const DRAIN_EXIT: Duration = Duration::from_secs(15);
/// How long after its last client has gone the daemon must have exited.
const EXIT_AFTER_LAST: Duration = Duration::from_secs(2);

/// SIGTERM while [`DRAIN_CONNECTIONS`] connections through daemon `kind` are
/// exchanging messages: tcpd and tlsd let each finish its conversation (20
/// more echoes, all checked, then the client's close, answered cleanly);
/// websocketd asks each client to leave (close 1001) once every message the
/// client sent before has been echoed. Then the daemon exits 0, without
/// waiting for its drain timeout: within [`DRAIN_EXIT`] of SIGTERM, and
/// [`EXIT_AFTER_LAST`] of its last client's close.
fn sigterm_under_load(kind: Kind) {
    raise_nofile_limit(4096);
    let s = Setup::new();
    let _pongd = s.w.rust_pongd("pong");
    let drain = format!("{}s", DRAIN_TIMEOUT.as_secs());
    let args = ["--workers", "2", "--drain-timeout", &drain];
    let mut d = s.daemon(kind, kind.bin(), &args);
    let (role, end) = match kind {
        Kind::Ws | Kind::Wss => ("drained", "close 1001"),
        Kind::Tcp | Kind::Tls => ("steady", "-"),
    };
    let groups = format!("pong:{DRAIN_CONNECTIONS}:{role}");
    let mut load = s.load(kind, d.addr.port(), &groups, 20, end);
    wait_busy(&mut load);
    d.proc.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    for n in 0..2 {
        d.proc
            .wait_for_stderr_line(&format!("draining worker={n} "), READY_TIMEOUT);
    }
    let clients = go_and_finish(load, &format!("load-{}", kind.bin()));
    let clients_gone = Instant::now();
    let deadline = (signalled + DRAIN_EXIT).min(clients_gone + EXIT_AFTER_LAST);
    while d.proc.running() {
        if Instant::now() > deadline {
            d.proc.fail(&format!(
                "still running {:?} after SIGTERM, {:?} after its last client had gone \
                 (drain timeout {DRAIN_TIMEOUT:?}; it must exit within {DRAIN_EXIT:?} of \
                 SIGTERM and {EXIT_AFTER_LAST:?} of its last client)",
                signalled.elapsed(),
                clients_gone.elapsed()
            ));
        }
        sleep(Duration::from_millis(10));
    }
    let (exited, after_last) = (signalled.elapsed(), clients_gone.elapsed());
    let run = d.proc.wait(CHILD_TIMEOUT);
    run.assert_success(&format!("{} after SIGTERM", kind.bin()));
    if role == "drained" {
        assert_every_taken_message_echoed(&clients.stdout, &run.stderr);
    }
    assert!(
        run.stderr.contains(&format!("{} stopped", kind.bin())),
        "{}",
        run.report()
    );
    // No connection was cut at the drain timeout: the daemon exited within
    // DRAIN_EXIT of SIGTERM, a quarter of DRAIN_TIMEOUT (asserted above), and
    // the clients checked every echo and their clean close.
    println!(
        "{} exited {exited:?} after SIGTERM, at most {after_last:?} after its last client",
        kind.bin()
    );
}

/// Every `drained PORT ECHOES` line of the clients' report against the
/// daemon's close line for the client at that port: the messages it took
/// from the client (`messages_in`, what reached the service) are the
/// messages the client got back, and so are those the service sent.
fn assert_every_taken_message_echoed(report: &str, log: &str) {
    let closed: std::collections::HashMap<u16, &str> = log
        .lines()
        .filter(|l| l.contains("connection closed"))
        .filter_map(|l| {
            let port = l.split("peer=127.0.0.1:").nth(1)?;
            let port = port.split(|c: char| !c.is_ascii_digit()).next()?;
            Some((port.parse().ok()?, l))
        })
        .collect();
    let field = |line: &str, name: &str| -> u64 {
        line.split(&format!(" {name}="))
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let mut checked = 0;
    for line in report.lines().filter_map(|l| l.strip_prefix("drained ")) {
        let mut f = line.split(' ');
        let port: u16 = f.next().unwrap().parse().unwrap();
        let echoes: u64 = f.next().unwrap().parse().unwrap();
        let close = closed.get(&port).unwrap_or_else(|| {
            panic!(
                "no close line for the client at port {port}
{log}"
            )
        });
        assert_eq!(
            (field(close, "messages_in"), field(close, "messages_out")),
            (echoes, echoes),
            "client at port {port} got {echoes} echoes: {close}"
        );
        checked += 1;
    }
    assert_eq!(checked, DRAIN_CONNECTIONS, "{report}");
}

#[test]
fn sigterm_under_load_of_500_connections_tcpd_loses_no_message() {
    sigterm_under_load(Kind::Tcp);
}

#[test]
fn sigterm_under_load_of_500_connections_tlsd_loses_no_message() {
    sigterm_under_load(Kind::Tls);
}

#[test]
fn sigterm_under_load_of_500_connections_websocketd_sends_1001_after_every_echo() {
    sigterm_under_load(Kind::Ws);
}

// ---------------------------------------------------------------------------
// Restarts.

/// Daemon `kind` killed (SIGKILL) and started again on the same address while
/// its service keeps running: clients that reconnect are served again.
fn daemon_restart(kind: Kind) {
    let s = Setup::new();
    let mut pongd = s.w.rust_pongd("pong");
    let d = s.daemon(kind, &format!("{}-first", kind.bin()), &[]);
    let addr = d.addr;
    let run_load = |label: &str| {
        let mut load = s.load(kind, addr.port(), "pong:5:steady", 10, "-");
        wait_busy(&mut load);
        go_and_finish(load, label);
    };
    run_load("before the restart");
    d.proc.kill();
    let mut again = s.daemon_at(kind, &format!("{}-again", kind.bin()), addr);
    run_load("after the restart");
    assert!(pongd.running(), "pongd stopped while the daemon restarted");
    assert!(again.running(), "{} stopped", kind.bin());
}

#[test]
fn tcpd_restarted_under_a_running_service_serves_reconnecting_clients() {
    daemon_restart(Kind::Tcp);
}

#[test]
fn tlsd_restarted_under_a_running_service_serves_reconnecting_clients() {
    daemon_restart(Kind::Tls);
}

#[test]
fn websocketd_restarted_under_a_running_service_serves_reconnecting_clients() {
    daemon_restart(Kind::Ws);
}

#[test]
fn service_restarted_under_running_daemons_is_reached_by_new_clients() {
    let s = Setup::new();
    let first = python_service(&s.w, "who", "who-first", "label_service.py", &["first"]);
    let kinds = [Kind::Tcp, Kind::Tls, Kind::Ws];
    let mut daemons: Vec<Daemon> = kinds.iter().map(|&k| s.daemon(k, k.bin(), &[])).collect();
    let pids: Vec<_> = daemons.iter().map(|d| d.proc.pid()).collect();
    let ask = |daemons: &[Daemon], instance: &str| {
        for (&kind, d) in kinds.iter().zip(daemons) {
            let label = format!("once-{}-{instance}", kind.bin());
            let client = s.python(
                kind,
                d.addr.port(),
                &label,
                "faults_once.py",
                &["who", "hello"],
            );
            let run = finish(client, &label);
            run.assert_lines(&[&format!("{instance}:hello")]);
        }
    };
    ask(&daemons, "first");
    first.kill();
    let _second = python_service(&s.w, "who", "who-second", "label_service.py", &["second"]);
    ask(&daemons, "second");
    for (d, pid) in daemons.iter_mut().zip(pids) {
        assert_eq!(d.proc.pid(), pid);
        d.assert_running("after its service restarted");
    }
}

// ---------------------------------------------------------------------------
// A slow service and a fast client.

/// The slow service's messages: 64 KiB each, 200 MiB in all.
const SLOW_MESSAGE: usize = 64 << 10;
const SLOW_MESSAGES: usize = 3200;
/// How long the client pushes while the service is slow.
const PUSH_FOR: Duration = Duration::from_secs(3);
/// What tcpd may queue for a connection that does not read (the default
/// `Config::high_water`; it stops reading the other side at half of it).
const HIGH_WATER: usize = 1 << 20;
/// How much tcpd's resident memory may grow for the slow pair: the high-water
/// mark for each side, and as much again for the allocator and the read
/// buffer (measured: 1.3 to 1.8 MiB of growth, 0.8 MiB taken by tcpd).
const RSS_GROWTH_KIB: u64 = 3 * (HIGH_WATER as u64 >> 10);

/// The bytes in the kernel's buffers of the TCP connection from `local` to
/// `remote`, seen from `local` (/proc/net/tcp): written and not yet
/// acknowledged by the peer, received and not yet read.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let line = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| port(f[1]) == Some(local.port()) && port(f[2]) == Some(remote.port()))
        .unwrap_or_else(|| panic!("no {local} -> {remote} in /proc/net/tcp"));
    let (tx, rx) = line[4].split_once(':').expect("tx_queue:rx_queue");
    let hex = |q| usize::from_str_radix(q, 16).expect("a queue length");
    (hex(tx), hex(rx))
}

/// A number in /proc/sys.
fn sysctl(name: &str) -> usize {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Message `n` of the client of the slow service, framed.
fn numbered(n: usize) -> Vec<u8> {
    let mut payload = (n as u64).to_be_bytes().to_vec();
    payload.resize(SLOW_MESSAGE, (n % 251) as u8);
    frame(&payload)
}

/// A TCP client of a tcpd at `addr` that named `service` (raw) and got `ok`.
fn tcp_client(addr: SocketAddr, service: &str) -> TcpStream {
    let mut s = tcp(addr);
    s.write_all(format!("{service}\n").as_bytes()).unwrap();
    let mut ok = [0; 2];
    s.read_exact(&mut ok).expect("tcpd's answer");
    assert_eq!(&ok, b"ok", "tcpd's answer to {service}");
    s
}

/// Sends `payload` in a frame on `s` and checks that it comes back.
fn echo(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(&frame(payload)).expect("write");
    let mut back = vec![0; 4 + payload.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(&back[4..], payload, "echo");
}

/// The client of the slow service: sends [`numbered`] messages, as much of
/// them as each write takes.
struct Pusher {
    s: TcpStream,
    /// The message being sent, and how much of it went.
    n: usize,
    msg: Vec<u8>,
    off: usize,
    /// Bytes sent in all.
    sent: usize,
}

impl Pusher {
    /// One write; false if it would block (non-blocking socket).
    fn write_some(&mut self) -> bool {
        match self.s.write(&self.msg[self.off..]) {
            Ok(k) => {
                self.off += k;
                self.sent += k;
                if self.off == self.msg.len() && self.n + 1 < SLOW_MESSAGES {
                    self.n += 1;
                    self.msg = numbered(self.n);
                    self.off = 0;
                }
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("write after {} bytes: {e}", self.sent),
        }
    }

    /// Everything sent.
    fn done(&self) -> bool {
        self.off == self.msg.len()
    }
}

#[test]
fn slow_service_holds_back_a_fast_client_through_tcpd_with_bounded_memory() {
    let w = World::new();
    let fast = w.path().join("fast");
    let total = SLOW_MESSAGES.to_string();
    let size = SLOW_MESSAGE.to_string();
    let fast_arg = fast.to_str().expect("UTF-8 path");
    let service = python_service(
        &w,
        "slow",
        "slow",
        "slow_service.py",
        &[&total, &size, fast_arg],
    );
    let mut tcpd = Daemon::start(&w, "tcpd", "tcpd", &["--workers", "1"]);
    let pid = tcpd.proc.pid();
    let mut p = Pusher {
        s: tcp_client(tcpd.addr, "slow"),
        n: 0,
        msg: numbered(0),
        off: 0,
        sent: 0,
    };
    let rss_before = rss_kib(pid);
    let mut rss_peak = rss_before;

    // As fast as tcpd takes it, for PUSH_FOR, while the service reads one a second.
    p.s.set_nonblocking(true).unwrap();
    let started = Instant::now();
    while started.elapsed() < PUSH_FOR {
        if !p.write_some() {
            rss_peak = rss_peak.max(rss_kib(pid));
            sleep(Duration::from_millis(5));
        }
    }
    // tcpd stopped taking more: a burst of writes soon blocks.
    let mut burst = 0;
    while p.write_some() {
        burst += 1;
        assert!(burst < 1000, "1000 writes in a row did not block");
    }
    // Where the bytes sent are: in the kernel's TCP buffers (the client's
    // and tcpd's, up to megabytes as the kernel tunes them), and what tcpd
    // took from them. Of those, tcpd holds at most its high-water mark; the
    // rest is in the unix socket's buffer (tcpd's send buffer, the default
    // size) or read by the service (a message a second, and the next one's
    // header).
    let client = p.s.local_addr().expect("the client's address");
    let (unacked, _) = tcp_queues(client, tcpd.addr);
    let (_, unread) = tcp_queues(tcpd.addr, client);
    let taken = p.sent - unacked.min(p.sent) - unread.min(p.sent);
    let unix_buffer = sysctl("net.core.wmem_default");
    let service_read = (started.elapsed().as_secs() as usize + 2) * (SLOW_MESSAGE + 4);
    let most = HIGH_WATER + unix_buffer + service_read;
    println!(
        "after {PUSH_FOR:?}: {} bytes sent (message {}): {unacked} not acknowledged, {unread} \
         in tcpd's receive buffer, {taken} taken by tcpd (at most {most}: high water \
         {HIGH_WATER}, unix socket buffer {unix_buffer}, read by the service {service_read}); \
         tcpd's RSS {rss_before} KiB, at most {rss_peak} KiB",
        p.sent, p.n
    );
    assert!(
        taken <= most,
        "tcpd took {taken} bytes from the client while the service read one message a \
         second: more than its high-water mark {HIGH_WATER}, the unix socket's buffer \
         {unix_buffer} and the {service_read} bytes the service may have read"
    );
    let all = SLOW_MESSAGES * (SLOW_MESSAGE + 4);

    // The service speeds up: the rest goes, every message once, in order.
    std::fs::write(&fast, b"").unwrap();
    p.s.set_nonblocking(false).unwrap();
    let fast_since = Instant::now();
    while !p.done() {
        assert!(
            p.write_some() || fast_since.elapsed() < LOAD_LIMIT,
            "message {} still not sent after {LOAD_LIMIT:?}",
            p.n
        );
        if p.off == 0 && p.n.is_multiple_of(64) {
            rss_peak = rss_peak.max(rss_kib(pid));
        }
    }
    assert_eq!(p.sent, all);
    p.s.shutdown(Shutdown::Write).unwrap();
    let run = service.wait(CHILD_TIMEOUT);
    run.assert_success("the slow service");
    run.assert_lines(&[&format!(
        "received {SLOW_MESSAGES} messages, in order, each once"
    )]);
    assert!(
        rss_peak < rss_before + RSS_GROWTH_KIB,
        "tcpd's RSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
    println!("tcpd's RSS: {rss_before} KiB, at most {rss_peak} KiB");
    tcpd.assert_running("after the slow service");
}

// ---------------------------------------------------------------------------
// Out of file descriptors.

/// The descriptors process `pid` has open.
fn open_fds(pid: nix::unistd::Pid) -> Vec<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect()
}

/// The RLIMIT_NOFILE that leaves process `pid` exactly `free` more
/// descriptors: the limit is on descriptor numbers (a new one is the lowest
/// free number, and must be below the limit), not on how many are open.
fn nofile_limit_for(pid: nix::unistd::Pid, free: usize) -> usize {
    let open = open_fds(pid);
    (0..)
        .find(|&limit| limit - open.iter().filter(|&&fd| fd < limit).count() == free)
        .expect("a limit")
}

/// CPU time process `pid` used so far (user and system), in clock ticks.
fn cpu_ticks(pid: nix::unistd::Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after "PID (COMM)": state is the first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks a second in /proc (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

#[test]
fn out_of_descriptors_tcpd_neither_spins_nor_dies_and_serves_the_backlog_later() {
    /// Clients tcpd has descriptors for; more wait in the listen backlog.
    const SERVED: usize = 6;
    const WAITING: usize = 3;
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = Daemon::start(&w, "tcpd", "tcpd", &["--workers", "1"]);
    let pid = tcpd.proc.pid();
    // It logs its address before its workers are set up (their descriptors
    // open); "ready" comes after.
    tcpd.proc.wait_for_stderr_line("tcpd ready", READY_TIMEOUT);
    // A first client, so that whatever tcpd opens once is open; then what it
    // had open before, once that client's descriptors are closed.
    let idle = open_fds(pid).len();
    echo(&mut tcp_client(tcpd.addr, "pong"), b"first");
    let deadline = Instant::now() + READY_TIMEOUT;
    while open_fds(pid).len() > idle {
        assert!(
            Instant::now() < deadline,
            "tcpd kept a closed client's descriptors"
        );
        sleep(Duration::from_millis(10));
    }

    // Room for SERVED clients (a descriptor each, and one for its service).
    let limit = nofile_limit_for(pid, 2 * SERVED);
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"));
    run_cmd(cmd, w.path(), "prlimit", CHILD_TIMEOUT).assert_success("prlimit");
    let mut served: Vec<TcpStream> = (0..SERVED)
        .map(|i| {
            let mut c = tcp_client(tcpd.addr, "pong");
            echo(&mut c, format!("served {i}").as_bytes());
            c
        })
        .collect();
    let mut waiting: Vec<TcpStream> = (0..WAITING)
        .map(|_| {
            let mut c = TcpStream::connect_timeout(&tcpd.addr, IO_TIMEOUT).expect("connect");
            c.write_all(b"pong\n").unwrap();
            c
        })
        .collect();
    tcpd.proc
        .wait_for_stderr_line("accept failed", READY_TIMEOUT);

    // Saturated: for 2 s, tcpd must not burn CPU retrying (nor log it).
    let count = |log: &str| log.matches("accept failed").count();
    let (ticks, failures) = (cpu_ticks(pid), count(&tcpd.log()));
    sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - ticks;
    let logged = count(&tcpd.log()) - failures;
    tcpd.assert_running("out of descriptors");
    assert!(
        used < TICKS_PER_SECOND / 4,
        "tcpd used {used} ticks of CPU in 2 s while out of descriptors ({logged} \
         more `accept failed` lines)"
    );
    assert!(
        logged < 100,
        "{logged} `accept failed` lines in 2 s while out of descriptors"
    );
    println!("out of descriptors for 2 s: {used} ticks of CPU, {logged} `accept failed` lines");
    // The waiting clients were not refused: they wait.
    for c in &waiting {
        c.set_nonblocking(true).unwrap();
        let got = c.peek(&mut [0; 16]);
        assert!(
            got.as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::WouldBlock),
            "a client past the descriptor limit got {got:?}"
        );
        c.set_nonblocking(false).unwrap();
    }
    for (i, c) in served.iter_mut().enumerate() {
        echo(c, format!("served {i}, still").as_bytes());
    }

    // Descriptors free again: the waiting clients are served, with no new
    // connection to wake tcpd up.
    drop(served);
    for (i, c) in waiting.iter_mut().enumerate() {
        let mut ok = [0; 2];
        c.read_exact(&mut ok).expect("answer to a waiting client");
        assert_eq!(&ok, b"ok");
        echo(c, format!("waited {i}").as_bytes());
    }
    echo(&mut tcp_client(tcpd.addr, "pong"), b"a new client");
    tcpd.assert_running("after running out of descriptors");
}

// ---------------------------------------------------------------------------
// SIGHUP under load, websocketd with TLS.

#[test]
fn sighup_under_load_of_500_wss_connections_loses_no_message() {
    raise_nofile_limit(4096);
    let s = Setup::new();
    let _pongd = s.w.rust_pongd("pong");
    let mut d = s.daemon(Kind::Wss, "websocketd", &["--workers", "2"]);
    let groups = format!("pong:{DRAIN_CONNECTIONS}:steady");
    let mut load = s.load(Kind::Wss, d.addr.port(), &groups, 20, "-");
    wait_busy(&mut load);

    // While every connection is busy: a certificate of another CA.
    let ca2 = s.pki.second_ca.as_ref().expect("CA 2");
    let pair2 = ca2.server(s.w.path(), "server2");
    for (from, to) in [
        (&pair2.cert, &s.pki.server.cert),
        (&pair2.key, &s.pki.server.key),
    ] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    d.proc.signal(Signal::SIGHUP);
    let line = d.proc.wait_for_stderr_line("SIGHUP: ", READY_TIMEOUT);
    assert!(line.contains("reloaded"), "{line}\n{}", d.log());
    go_and_finish(load, "load-wss");

    // A new connection gets the new certificate.
    let once = s.python_trusting(
        &ca2.cert,
        Kind::Wss,
        d.addr.port(),
        "once-wss",
        "faults_once.py",
        &["pong", "hello"],
    );
    finish(once, "once-wss").assert_lines(&["hello", "closed: close 1000"]);
    d.assert_running("after the reload under load");
}
