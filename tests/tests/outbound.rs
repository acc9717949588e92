//! Who reaches the daemons' outbound services (`tcp`, `tls`: the ones that dial
//! remote daemons for `IPC_NETWORK`), and where those may connect.
//!
//!     cargo test -p libipc-tests --test outbound
//!
//! What a user would check: with default flags, no network client of tcpd, tlsd
//! or websocketd (one RUNDIR shared by all, as the systemd layout has it) can
//! name any outbound service, whatever its name, and nothing is dialed; local
//! programs still reach them through `IPC_NETWORK`; an operator can expose one on
//! purpose (`--expose-outbound`), and bound where they connect
//! (`--outbound-allow`). Dialing is observed where it would land: loopback
//! listeners of this test that count the connections they get. And the remote
//! may be the original tcpd: tcpd dials it the way it reads (a stand-in for it,
//! tests/py/original_tcpd.py, says what it was sent).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use libipc::{Context, Error};
use libipc_tests::clients::{tcp, tls, tls_config, until_closed};
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, Proc, READY_TIMEOUT, Run, World, certs, frame, pongd_clients, python,
    run_cmd, spawn,
};

/// A loopback listener that counts the connections it accepts (and closes
/// them): where a daemon's dial would land.
struct Trap {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accepting: Option<JoinHandle<()>>,
}

impl Trap {
    fn new() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a trap");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("trap address");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let accepting = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(e) => panic!("trap accept: {e}"),
                }
            }
        });
        Trap {
            addr,
            count,
            stop,
            accepting: Some(accepting),
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until the trap has had `n` connections.
    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "the trap at {} had {} connections, not {n}",
                self.addr,
                self.count()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `SCHEME://` URI to this trap.
    fn uri(&self, scheme: &str) -> String {
        format!("{scheme}://{}/x", self.addr)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
    }
}

/// A client connection, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Bytes as text, for failure messages.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What an attacker sends tcpd or tlsd: `name` framed, and at once the request
/// an outbound service would act on, framed too.
fn attack(name: &str, uri: &str) -> Vec<u8> {
    [frame(name.as_bytes()), frame(uri.as_bytes())].concat()
}

/// Connects a local client to `name` through `IPC_NETWORK` (`name URI`): what
/// a libipc program does. Returns the daemon's refusal, if any.
fn local_client(w: &World, name: &str, uri: &str) -> Result<(), Error> {
    let mut ctx = Context::new().expect("a context");
    ctx.set_rundir(&w.rundir);
    ctx.set_network(Some(format!("{name} {uri}")));
    ctx.connect_service(name).map(drop)
}

/// tcpd (its outbound service `tcp`), a second tcpd whose outbound service has
/// a custom name (`gateway`), tlsd (`tls`) and websocketd (`ws`, `wss`), default flags
/// otherwise, in one RUNDIR with an echo service `pong`.
struct Everyone {
    w: World,
    pki: certs::Pki,
    _pongd: Proc,
    tcpd: Daemon,
    gateway: Daemon,
    tlsd: Daemon,
    websocketd: Daemon,
}

/// Outbound service names of [`Everyone`], with the scheme each dials.
const OUTBOUND: [(&str, &str); 5] = [
    ("tcp", "tcp"),
    ("gateway", "tcp"),
    ("tls", "tls"),
    ("ws", "ws"),
    ("wss", "wss"),
];

impl Everyone {
    fn start() -> Everyone {
        let w = World::new();
        let pongd = w.rust_pongd("pong");
        let pki = certs::generate(w.path(), false);
        let mut tcpd = Daemon::start(&w, "tcpd", "tcpd", &[]);
        let mut gateway = Daemon::start(&w, "tcpd", "tcpd-gateway", &["--service-name", "gateway"]);
        let (cert, key) = (
            pki.server.cert.to_str().unwrap(),
            pki.server.key.to_str().unwrap(),
        );
        let mut tlsd = Daemon::start(&w, "tlsd", "tlsd", &["--cert", cert, "--key", key]);
        let mut websocketd = Daemon::start(&w, "websocketd", "websocketd", &[]);
        tcpd.proc.wait_for_socket(&w.outbound_socket("tcp"));
        gateway.proc.wait_for_socket(&w.outbound_socket("gateway"));
        tlsd.proc.wait_for_socket(&w.outbound_socket("tls"));
        websocketd.proc.wait_for_socket(&w.outbound_socket("ws"));
        websocketd.proc.wait_for_socket(&w.outbound_socket("wss"));
        Everyone {
            w,
            pki,
            _pongd: pongd,
            tcpd,
            gateway,
            tlsd,
            websocketd,
        }
    }
}

/// Names a network client might try for an outbound service, and the framed
/// answer each gets from routed tcpd and tlsd.
fn names_and_answers() -> Vec<(String, &'static str)> {
    let mut cases: Vec<(String, &str)> = OUTBOUND
        .iter()
        .map(|(name, _)| (name.to_string(), "no: unknown service"))
        .collect();
    for (name, _) in OUTBOUND {
        for path in [
            format!(".outbound/{name}"),
            format!("../run/.outbound/{name}"),
        ] {
            cases.push((path, "no: invalid service name"));
        }
    }
    cases
}

#[test]
fn network_clients_of_every_daemon_cannot_reach_an_outbound_service() {
    let e = Everyone::start();
    let trap = Trap::new();
    let config = tls_config(&e.pki.ca.cert);
    for (name, answer) in names_and_answers() {
        for (_, scheme) in OUTBOUND {
            let sent = attack(&name, &trap.uri(scheme));
            let clients: [(&str, Box<dyn ReadWrite>); 3] = [
                ("tcpd", Box::new(tcp(e.tcpd.addr))),
                ("tcpd-gateway", Box::new(tcp(e.gateway.addr))),
                ("tlsd", Box::new(tls(e.tlsd.addr, &config))),
            ];
            for (daemon, mut s) in clients {
                s.write_all(&sent).unwrap();
                let got = until_closed(&mut s);
                let want = frame(answer.as_bytes());
                assert_eq!(text(&got), text(&want), "{daemon}, {name:?}");
            }
        }
        // websocketd takes the name from the path: a 404, never a 101.
        let url = format!("ws://{}/{name}", e.websocketd.addr);
        match tungstenite::client::client(&url, tcp(e.websocketd.addr)) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                assert_eq!(r.status(), 404, "{url}")
            }
            Err(other) => panic!("{url}: {other}"),
            Ok(_) => panic!("{url}: upgraded"),
        }
    }
    assert_eq!(trap.count(), 0, "a daemon dialed for a network client");

    // The same daemons route network clients to ordinary services...
    let mut s = tcp(e.tcpd.addr);
    s.write_all(&[frame(b"pong"), frame(b"hi")].concat())
        .unwrap();
    let mut got = vec![0; 2 * 4 + 2 + 2];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, [frame(b"ok"), frame(b"hi")].concat());
    // ... and dial for local clients, through IPC_NETWORK (the trap closes
    // without an answer: the dial is what counts here).
    // The URI's scheme names the outbound service (`gateway://` for tcpd's
    // custom one).
    for (i, (name, _)) in OUTBOUND.iter().enumerate() {
        let err = local_client(&e.w, "x", &trap.uri(name)).expect_err("the trap never answers");
        assert!(matches!(err, Error::Refused { .. }), "{name}: {err}");
        trap.wait_for(i + 1);
    }
    for d in [&e.tcpd, &e.gateway, &e.tlsd, &e.websocketd] {
        assert!(!d.log().contains("panic"), "{}", d.log());
    }
}

#[test]
fn an_operator_can_chain_daemons_on_purpose_and_is_warned() {
    // B: the remote end, an ordinary routed tcpd in front of pong.
    let b = World::new();
    let pongd = b.rust_pongd("pong");
    let tcpd_b = Daemon::start(&b, "tcpd", "tcpd-b", &[]);
    // A: a tcpd that lets its network clients use its outbound service.
    let a = World::new();
    let mut tcpd_a = Daemon::start(&a, "tcpd", "tcpd-a", &["--expose-outbound", "tcp"]);
    let warning = tcpd_a
        .proc
        .wait_for_stderr_line("--expose-outbound", READY_TIMEOUT);
    assert!(
        warning.contains("WARN") && warning.contains("\"tcp\""),
        "{warning}"
    );
    tcpd_a.proc.wait_for_socket(&a.outbound_socket("tcp"));

    // A network client of A names `tcp`, then asks it for pong at B (and,
    // as IPC_NETWORK clients do, waits for the answer before it sends more).
    let mut s = tcp(tcpd_a.addr);
    let uri = format!("tcp://{}/pong", tcpd_b.addr);
    s.write_all(&[frame(b"tcp"), frame(uri.as_bytes())].concat())
        .unwrap();
    let mut got = vec![0; 2 * frame(b"ok").len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(text(&got), text(&[frame(b"ok"), frame(b"ok")].concat()));
    s.write_all(&frame(b"hi")).unwrap();
    let mut got = vec![0; frame(b"hi").len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(text(&got), text(&frame(b"hi")));
    // B's pong was reached, once: the echo came from there.
    assert_eq!(pongd_clients(&pongd), 1, "{}", tcpd_b.log());
}

#[test]
fn outbound_allow_bounds_where_local_clients_are_dialed() {
    let w = World::new();
    let (allowed, other) = (Trap::new(), Trap::new());
    let allow = format!("127.0.0.0/8:{},db.invalid", allowed.addr.port());
    let mut tcpd = Daemon::start(&w, "tcpd", "tcpd", &["--outbound-allow", &allow]);
    let line = tcpd
        .proc
        .wait_for_stderr_line("outbound: allowed destinations", READY_TIMEOUT);
    assert!(
        line.contains(&format!("[127.0.0.0/8]:{},db.invalid", allowed.addr.port())),
        "{line}"
    );
    tcpd.proc.wait_for_socket(&w.outbound_socket("tcp"));

    // In the list: dialed (the trap closes without answering).
    let err = local_client(&w, "x", &allowed.uri("tcp")).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    allowed.wait_for(1);
    // Another port of the same host, and an address outside: refused, not dialed.
    let outside = format!("tcp://127.0.0.1:{}/x", other.addr.port());
    for uri in [outside, "tcp://[::1]:9/x".to_owned()] {
        let err = local_client(&w, "x", &uri).unwrap_err();
        assert!(
            err.to_string().contains("no: destination not allowed"),
            "{uri}: {err}"
        );
    }
    assert_eq!(
        other.count(),
        0,
        "a destination outside the list was dialed"
    );
    assert_eq!(allowed.count(), 1);
    let log = tcpd.log();
    assert_eq!(log.matches("outbound refused").count(), 2, "{log}");

    // The flag makes no sense where there is no outbound service.
    for name in ["tcpd", "websocketd"] {
        let args = ["--outbound-allow", "127.0.0.1", "--no-outbound"];
        let cmd = Daemon::command(&w, name, &args);
        let run = libipc_tests::run_cmd(cmd, w.path(), &format!("{name}-bad"), READY_TIMEOUT);
        assert!(!run.status.unwrap().success(), "{}", run.report());
        assert!(run.stderr.contains("--outbound-allow"), "{}", run.report());
    }
}

/// The Python stand-in for the original tcpd, in front of its greeting echo
/// service `pong`, answering as `mode` says (`ok`, `refuse`), and its address.
fn original_tcpd(w: &World, mode: &str) -> (Proc, SocketAddr) {
    let mut cmd = python("original_tcpd.py");
    cmd.args(["pong", mode]);
    let mut p = spawn(cmd, w.path(), &format!("original-tcpd-{mode}"));
    let out = p.wait_for_stdout("listening PORT", READY_TIMEOUT, |o| o.contains(&b'\n'));
    let port = text(&out)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("listening "))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| p.fail("no port"));
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// What the stand-in printed after its `listening` line: the first read of
/// each connection.
fn first_reads(original: &Proc) -> String {
    let out = original.output(None).stdout;
    out.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

/// tcpd's outbound service running in `w`, and the stand-in for the
/// original tcpd answering as `mode` says.
fn tcpd_and_original(w: &World, mode: &str) -> (Daemon, Proc, SocketAddr) {
    let mut tcpd = Daemon::start(w, "tcpd", "tcpd", &[]);
    tcpd.proc.wait_for_socket(&w.outbound_socket("tcp"));
    let (original, addr) = original_tcpd(w, mode);
    (tcpd, original, addr)
}

/// The pong example sending `messages` to `service` at `addr`, through tcpd
/// (`IPC_NETWORK`).
fn pong_at(w: &World, addr: SocketAddr, service: &str, messages: &[&str]) -> Run {
    let mut pong = w.example("pong");
    pong.env("IPC_NETWORK", format!("{service} tcp://{addr}/{service}"))
        .args(["-s", service])
        .args(messages);
    run_cmd(pong, w.path(), &format!("pong-{service}"), CHILD_TIMEOUT)
}

#[test]
fn an_original_tcpd_is_sent_the_bare_name_and_its_raw_ok_understood() {
    let w = World::new();
    let (tcpd, original, addr) = tcpd_and_original(&w, "ok");
    let run = pong_at(&w, addr, "pong", &["hi", "there"]);
    // Its one read was the name, as the original takes it: no frame, no
    // newline, nothing after it.
    assert_eq!(first_reads(&original), "name: b'pong'\n", "{}", tcpd.log());
    run.assert_success("pong through tcpd to the original tcpd");
    // The service's greeting came in the read of the raw `ok`: it is the
    // client's first message, then the echo of its own first.
    assert_eq!(
        run.stdout,
        "greetings from the original\nhi\n",
        "{}",
        run.report()
    );
}

#[test]
fn a_raw_refusal_from_the_remote_reaches_the_local_client() {
    let w = World::new();
    let (_tcpd, original, addr) = tcpd_and_original(&w, "refuse");
    let run = pong_at(&w, addr, "nope", &["anyone?"]);
    assert!(
        run.status.is_some_and(|s| !s.success()) && run.stderr.contains("no: no such service"),
        "the remote's refusal, word for word\n{}",
        run.report()
    );
    assert_eq!(first_reads(&original), "name: b'nope'\n");
}
