//! Black-box tests of the real `tcpd` binary: TCP clients nobody here wrote
//! (`socat`, Python's `socket` module), the C programs and the Rust examples
//! through one or two tcpd instances, many clients at once, both handshake forms
//! and every refusal, the limits, crashing services and the SIGTERM drain.
//!
//!     cargo test -p libipc-tests --test tcpd
//!
//! Needs `socat`, the Python venv and a C compiler (`tests/run` makes them). tcpd
//! and the Rust examples are built by the test itself
//! ([`libipc_tests::build_binaries`]). Every test has its own temporary RUNDIR,
//! lets tcpd pick its port (`--listen 127.0.0.1:0`, read back from its
//! `listening address=...` log line), and is bounded in time: child processes
//! are killed after [`CHILD_TIMEOUT`], every socket read and write has a timeout.
//! Readiness is observed (the log line, a unix socket that accepts), never
//! assumed after a sleep.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use libipc_tests::metrics::scrape_until;
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, IO_TIMEOUT, Proc, World, assert_pongd_done, echoes, frame, pattern,
    pongd_clients, pongd_clients_in_all, python, run_cmd, spawn_with_stdin,
};
use nix::sys::signal::Signal;

/// A running tcpd and the address it listens on.
type Tcpd = Daemon;

/// Starts tcpd in `world` on `127.0.0.1:0` with `args` and waits until it listens.
fn start_tcpd(world: &World, args: &[&str]) -> Tcpd {
    Daemon::start(world, "tcpd", "tcpd", args)
}

/// [`start_tcpd`], with its output in `<label>.stdout` / `.stderr`.
fn start_tcpd_as(world: &World, label: &str, args: &[&str]) -> Tcpd {
    Daemon::start(world, "tcpd", label, args)
}

/// `tcp://127.0.0.1:PORT/SERVICE`, the IPC_NETWORK target of `service` at `d`.
fn tcp_uri(d: &Tcpd, service: &str) -> String {
    format!("tcp://{}/{service}", d.addr)
}

/// A TCP client of tcpd; every read and write times out after [`IO_TIMEOUT`].
struct Client {
    s: TcpStream,
    what: String,
}

impl Client {
    fn connect(addr: SocketAddr, what: &str) -> Client {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: connect {addr}: {e}"));
        Self::from_stream(s, what, IO_TIMEOUT)
    }

    fn from_stream(s: TcpStream, what: &str, timeout: Duration) -> Client {
        s.set_read_timeout(Some(timeout)).expect("read timeout");
        s.set_write_timeout(Some(timeout)).expect("write timeout");
        s.set_nodelay(true).expect("nodelay");
        Client {
            s,
            what: what.to_string(),
        }
    }

    /// Connects and names `name` raw, with a newline; expects the raw `ok`.
    fn raw(addr: SocketAddr, name: &str) -> Client {
        let mut c = Client::connect(addr, &format!("raw client of {name}"));
        c.send(format!("{name}\n").as_bytes());
        c.expect(b"ok");
        c
    }

    /// Connects and names `name` in a frame; expects the framed `ok`.
    fn framed(addr: SocketAddr, name: &str) -> Client {
        let mut c = Client::connect(addr, &format!("framed client of {name}"));
        c.send(&frame(name.as_bytes()));
        c.expect(&frame(b"ok"));
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("{}: write {} bytes: {e}", self.what, bytes.len()));
    }

    /// Reads exactly `n` bytes; on EOF or an error, says what came so far.
    fn try_read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0; n];
        let mut got = 0;
        while got < n {
            let so_far = |buf: &[u8]| String::from_utf8_lossy(&buf[..got.min(200)]).into_owned();
            match self.s.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed after {got} of {n} bytes: {:?}",
                        so_far(&buf)
                    ));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "read ({got} of {n} bytes so far: {:?}): {e}",
                        so_far(&buf)
                    ));
                }
            }
        }
        Ok(buf)
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        self.try_read_exact(n)
            .unwrap_or_else(|e| panic!("{}: {e}", self.what))
    }

    /// Reads exactly `expected.len()` bytes and checks them.
    fn expect(&mut self, expected: &[u8]) {
        let got = self.read_exact(expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "{}: unexpected answer",
            self.what
        );
    }

    fn recv_frame(&mut self) -> Vec<u8> {
        let hdr = self.read_exact(4);
        let len = u32::from_be_bytes(hdr.try_into().expect("4 bytes")) as usize;
        self.read_exact(len)
    }

    /// Sends `payload` as a frame and checks that the same comes back.
    fn echo(&mut self, payload: &[u8]) {
        self.send(&frame(payload));
        let back = self.recv_frame();
        assert!(
            back == payload,
            "{}: echo of {} bytes came back as {} different bytes",
            self.what,
            payload.len(),
            back.len()
        );
    }

    /// Reads until tcpd closes the connection; returns what came before. A reset
    /// counts as closed (tcpd may close with unread bytes in its buffer).
    fn until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
                Err(e) => panic!(
                    "{}: not closed by tcpd ({e}); got {:?}",
                    self.what,
                    String::from_utf8_lossy(&all)
                ),
            }
        }
    }

    /// Expects exactly `answer`, then the end of the connection.
    fn expect_answer_and_close(&mut self, answer: &[u8]) {
        let got = self.until_closed();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(answer),
            "{}: unexpected refusal",
            self.what
        );
    }
}

// ---------------------------------------------------------------------------
// Clients nobody here wrote.

#[test]
fn socat_sends_raw_name_and_frames_in_one_write() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tcpd = start_tcpd(&w, &[]);

    let request = [
        &b"pong\n"[..],
        &frame(b"hello from socat"),
        &frame(b""),
        &frame(b"third"),
    ]
    .concat();
    let input = w.path().join("socat.in");
    std::fs::write(&input, &request).unwrap();
    // socat sends its stdin, half-closes, and waits (-t) for tcpd to close.
    let mut cmd = Command::new("socat");
    cmd.args(["-t", "10", "-", &format!("TCP:{}", tcpd.addr)]);
    let stdin = std::fs::File::open(&input).unwrap();
    let run = spawn_with_stdin(cmd, w.path(), "socat", Stdio::from(stdin)).wait(CHILD_TIMEOUT);
    run.assert_success("socat");
    let expected = [
        &b"ok"[..],
        &frame(b"hello from socat"),
        &frame(b""),
        &frame(b"third"),
    ]
    .concat();
    assert_eq!(
        run.stdout.as_bytes(),
        &expected[..],
        "socat got something else\n{}",
        run.report()
    );
}

#[test]
fn socat_pipeline_with_framed_name_and_a_socat_service() {
    let w = World::new();
    // A LibIPC echo service nobody here wrote either: socat running cat. Frames
    // pass through tcpd unchanged, so echoing the byte stream echoes the frames.
    let mut cmd = Command::new("socat");
    cmd.arg(format!(
        "UNIX-LISTEN:{},fork",
        w.rundir.join("cat").display()
    ))
    .arg("EXEC:cat");
    let _cat = w.start_service(cmd, "cat", "socat-cat");
    let tcpd = start_tcpd(&w, &[]);

    // printf's octal escapes make the frames: "\000\000\000\003cat" is the name.
    let script = r#"printf '\000\000\000\003cat\000\000\000\005hello\000\000\000\000' \
        | socat -t 10 - "TCP:$1" | od -An -c | tr -s ' \n' ' '"#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script, "sh", &tcpd.addr.to_string()]);
    let run = run_cmd(cmd, w.path(), "socat-pipeline", CHILD_TIMEOUT);
    run.assert_success("printf | socat | od");
    assert_eq!(
        run.stdout.trim(),
        r"\0 \0 \0 002 o k \0 \0 \0 005 h e l l o \0 \0 \0 \0",
        "{}",
        run.report()
    );
}

#[test]
fn python_socket_client() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut cmd = Command::new("socat");
    cmd.arg(format!(
        "UNIX-LISTEN:{},fork",
        w.rundir.join("cat").display()
    ))
    .arg("EXEC:cat");
    let _cat = w.start_service(cmd, "cat", "socat-cat");
    let tcpd = start_tcpd(&w, &[]);

    // Both handshake forms, big and empty messages, both refusal forms.
    let mut cmd = python("tcpd_client.py");
    cmd.arg(tcpd.addr.port().to_string()).args(["pong", "cat"]);
    let run = run_cmd(cmd, w.path(), "python", CHILD_TIMEOUT);
    run.assert_success("python client");
    run.assert_lines(&["python: ok"]);
}

// ---------------------------------------------------------------------------
// Outbound: libipc clients through IPC_NETWORK, through one tcpd to another.

/// Two worlds: B runs the service and tcpd B; A runs tcpd A (its `tcp` service)
/// and the client, whose IPC_NETWORK sends `service` to B.
struct Chain {
    a: World,
    /// B's world (its services), kept until the end of the test.
    b: World,
    /// Running until the end of the test: its outbound service is the route.
    _tcpd_a: Tcpd,
    tcpd_b: Tcpd,
}

impl Chain {
    /// tcpd B in `b` (whose services are already running), tcpd A in a new world.
    fn new(b: World) -> Chain {
        let tcpd_b = start_tcpd_as(&b, "tcpd-b", &[]);
        let a = World::new();
        let mut tcpd_a = start_tcpd_as(&a, "tcpd-a", &["--service-name", "tcp"]);
        tcpd_a.proc.wait_for_socket(&a.outbound_socket("tcp"));
        Chain {
            a,
            b,
            _tcpd_a: tcpd_a,
            tcpd_b,
        }
    }

    /// `IPC_NETWORK` for A's clients: `service` is B's.
    fn network(&self, service: &str) -> String {
        format!("{service} {}", tcp_uri(&self.tcpd_b, service))
    }

    /// A has no local `service`, and B's counted `reached` clients: one, the
    /// client of A, so the messages went over TCP.
    fn assert_went_through(&self, service: &str, reached: usize) {
        assert!(
            !self.a.rundir.join(service).exists(),
            "A's RUNDIR has a {service} socket"
        );
        assert_eq!(
            reached,
            1,
            "clients of B's {service}\n{}",
            self.tcpd_b.log()
        );
    }
}

#[test]
fn rust_pong_through_two_chained_tcpd() {
    let b = World::new();
    let pongd = b.rust_pongd("pong");
    let chain = Chain::new(b);

    let mut cmd = chain.a.example("pong");
    cmd.env("IPC_NETWORK", chain.network("pong")).args([
        "-s",
        "pong",
        "hello through two tcpd",
        "",
        "third",
    ]);
    let run = run_cmd(cmd, chain.a.path(), "rust-pong", CHILD_TIMEOUT);
    run.assert_success("Rust pong through tcpd A and B");
    assert_eq!(
        run.stdout,
        "hello through two tcpd\n\nthird\n",
        "{}",
        run.report()
    );

    // A refusal from B reaches the client through A.
    let mut cmd = chain.a.example("pong");
    cmd.env("IPC_NETWORK", chain.network("nope"))
        .args(["-s", "nope", "anyone?"]);
    let run = run_cmd(cmd, chain.a.path(), "rust-pong-nope", CHILD_TIMEOUT);
    assert!(
        run.status.is_some_and(|s| !s.success()) && run.stderr.contains("no: unknown service"),
        "pong to an unknown remote service should fail with B's answer\n{}",
        run.report()
    );
    chain.assert_went_through("pong", pongd_clients_in_all(&chain.b, pongd, "pong"));
}

#[test]
fn a_host_name_in_ipc_network_is_resolved_by_the_system_resolver() {
    // `localhost` as the remote: looked up off tcpd A's loop by the system
    // resolver. B listens on 127.0.0.1 only; where localhost is ::1 first,
    // that address refuses and A tries the next one.
    let b = World::new();
    let pongd = b.rust_pongd("pong");
    let chain = Chain::new(b);
    let network = format!("pong tcp://localhost:{}/pong", chain.tcpd_b.addr.port());
    let mut cmd = chain.a.example("pong");
    cmd.env("IPC_NETWORK", &network)
        .args(["-s", "pong", "by name"]);
    let run = run_cmd(cmd, chain.a.path(), "rust-pong-localhost", CHILD_TIMEOUT);
    run.assert_success("Rust pong to localhost through tcpd A and B");
    assert_eq!(run.stdout, "by name\n", "{}", run.report());
    chain.assert_went_through("pong", pongd_clients_in_all(&chain.b, pongd, "pong"));

    // A name that does not resolve: the client hears why, from A.
    let mut cmd = chain.a.example("pong");
    cmd.env("IPC_NETWORK", "pong tcp://no-such-host.invalid:9/pong")
        .args(["-s", "pong", "anyone?"]);
    let run = run_cmd(cmd, chain.a.path(), "rust-pong-unresolved", CHILD_TIMEOUT);
    assert!(
        run.status.is_some_and(|s| !s.success())
            && run
                .stderr
                .contains("no: cannot resolve no-such-host.invalid"),
        "{}",
        run.report()
    );
}

#[test]
fn c_pong_through_two_chained_tcpd_to_c_pongd() {
    let b = World::new();
    let (pongd, pong) = (b.compile("pongd"), b.compile("pong"));
    let service = b.c_pongd(&pongd, "pong", 1);
    let chain = Chain::new(b);

    let msg = "C through two tcpd";
    let mut cmd = chain.a.command(&pong);
    cmd.env("IPC_NETWORK", chain.network("pong"))
        .args(["pong", msg, "20"]);
    let run = run_cmd(cmd, chain.a.path(), "c-pong", CHILD_TIMEOUT);
    run.assert_success("C pong through tcpd A and B");
    assert_eq!(run.stdout, echoes(msg, 20), "{}", run.report());
    // C pongd saw exactly one client (tcpd B's connection for the C pong) come
    // and go, besides the readiness probe.
    assert_pongd_done(service, 1);
    chain.assert_went_through("pong", 1);
}

#[test]
fn c_pong_through_a_local_tcpd_to_a_remote_tcpd() {
    // The remote side is a Rust pongd; the client is C, through ipc_connect_service.
    let b = World::new();
    let pongd = b.rust_pongd("rpong");
    let chain = Chain::new(b);
    let pong = chain.a.compile("pong");

    let msg = "C pong, Rust pongd";
    let mut cmd = chain.a.command(&pong);
    cmd.env("IPC_NETWORK", chain.network("rpong"))
        .args(["rpong", msg, "5"]);
    let run = run_cmd(cmd, chain.a.path(), "c-pong", CHILD_TIMEOUT);
    run.assert_success("C pong through tcpd");
    assert_eq!(run.stdout, echoes(msg, 5), "{}", run.report());
    chain.assert_went_through("rpong", pongd_clients_in_all(&chain.b, pongd, "rpong"));
}

// ---------------------------------------------------------------------------
// Many clients at once.

const CLIENTS: usize = 200;
const MESSAGES: usize = 50;

/// Message `i` of client `c`: sizes from 0 to about 100 KB.
fn message(c: usize, i: usize) -> Vec<u8> {
    let len = match i {
        1 => 0,
        10 => 100_000,
        20 => 65_536,
        30 => 1,
        40 => 100_003,
        _ => (c * 7919 + i * 104_729) % 3000,
    };
    let mut p = pattern(c * MESSAGES + i, len);
    // Whose and which, readable in a failure message.
    let tag = format!("{c}:{i}:");
    let n = tag.len().min(p.len());
    p[..n].copy_from_slice(&tag.as_bytes()[..n]);
    p
}

/// Client `c`: names `service` in one of four ways, sends every message from a
/// writer thread while reading the echoes, and checks each, in order.
fn busy_client(addr: SocketAddr, service: &str, c: usize) {
    let what = format!("client {c} of {service}");
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    let mut reader = Client::from_stream(s, &what, Duration::from_secs(30));
    let mut writer = Client::from_stream(
        reader.s.try_clone().expect("clone"),
        &what,
        Duration::from_secs(30),
    );
    let msgs: Vec<Vec<u8>> = (0..MESSAGES).map(|i| message(c, i)).collect();
    // The handshake; some carry the first message in the same write.
    let (hello, answer, first_sent) = match c % 4 {
        0 => (format!("{service}\n").into_bytes(), b"ok".to_vec(), false),
        1 => (
            [format!("{service}\n").as_bytes(), &frame(&msgs[0])].concat(),
            b"ok".to_vec(),
            true,
        ),
        2 => (frame(service.as_bytes()), frame(b"ok"), false),
        _ => (
            [frame(service.as_bytes()), frame(&msgs[0])].concat(),
            frame(b"ok"),
            true,
        ),
    };
    writer.send(&hello);
    reader.expect(&answer);
    thread::scope(|s| {
        let rest = &msgs[usize::from(first_sent)..];
        thread::Builder::new()
            .stack_size(256 << 10)
            .spawn_scoped(s, move || {
                // Several frames per write at times, one at others.
                for chunk in rest.chunks(1 + c % 3) {
                    let bytes: Vec<u8> = chunk.iter().flat_map(|m| frame(m)).collect();
                    writer.send(&bytes);
                }
            })
            .expect("writer thread");
        for (i, m) in msgs.iter().enumerate() {
            let back = reader.recv_frame();
            if back != *m {
                let head = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(12)]).into_owned();
                panic!(
                    "{what}: echo {i}: got {} bytes {:?}..., sent {} bytes {:?}...",
                    back.len(),
                    head(&back),
                    m.len(),
                    head(m)
                );
            }
        }
    });
    reader.s.shutdown(Shutdown::Write).expect("shutdown");
    assert!(
        reader.until_closed().is_empty(),
        "{what}: extra bytes after the echoes"
    );
}

#[test]
fn two_hundred_concurrent_clients_over_three_services() {
    let w = World::new();
    let services = ["alpha", "beta", "gamma"];
    let mut pongds: Vec<Proc> = services.iter().map(|s| w.rust_pongd(s)).collect();
    let mut tcpd = start_tcpd(&w, &[]);
    let addr = tcpd.addr;

    let started = Instant::now();
    let failures: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(s, move || busy_client(addr, services[c % 3], c))
                    .expect("client thread")
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .filter_map(|(c, h)| {
                h.join().err().map(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("client {c}: {msg}")
                })
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed (after {:?}):\n{}",
        failures.len(),
        started.elapsed(),
        failures[..failures.len().min(10)].join("\n")
    );
    tcpd.assert_running("after serving the clients");
    // Each client was its own connection to a service, counted there.
    let connected: usize = pongds.iter().map(pongd_clients).sum();
    assert_eq!(connected, CLIENTS, "{}", tcpd.log());
    for p in &mut pongds {
        assert!(p.running(), "{}", p.output(None).report());
    }
}

// ---------------------------------------------------------------------------
// Routed and fixed modes.

#[test]
fn raw_and_framed_handshakes() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tcpd = start_tcpd(&w, &[]);

    // Raw, each terminator the original's clients use, and none.
    for hello in [&b"pong"[..], b"pong\n", b"pong\r\n"] {
        let mut c = Client::connect(tcpd.addr, &format!("raw {hello:?}"));
        c.send(hello);
        c.expect(b"ok");
        c.echo(b"after a raw name");
        c.echo(b"");
    }
    let mut c = Client::framed(tcpd.addr, "pong");
    c.echo(b"after a framed name");
    c.echo(&pattern(1, 100_000));
}

#[test]
fn name_and_first_messages_in_one_write() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tcpd = start_tcpd(&w, &[]);
    let first = [frame(b"first"), frame(b""), frame(&pattern(2, 5000))].concat();
    let cases: [(&str, Vec<u8>, Vec<u8>); 3] = [
        (
            "raw, newline",
            [&b"pong\n"[..], &first].concat(),
            b"ok".to_vec(),
        ),
        (
            "raw, no newline",
            [&b"pong"[..], &first].concat(),
            b"ok".to_vec(),
        ),
        (
            "framed",
            [frame(b"pong"), first.clone()].concat(),
            frame(b"ok"),
        ),
    ];
    for (what, hello, answer) in cases {
        let mut c = Client::connect(tcpd.addr, what);
        c.send(&hello);
        c.expect(&answer);
        c.expect(&first);
        c.echo(b"and then more");
    }
}

#[test]
fn unknown_service_is_refused_in_the_clients_form() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(&w, &[]);

    let mut c = Client::connect(tcpd.addr, "raw nope");
    c.send(b"nope\n");
    c.expect_answer_and_close(b"no: unknown service\n");

    let mut c = Client::connect(tcpd.addr, "framed nope");
    c.send(&frame(b"nope"));
    c.expect_answer_and_close(&frame(b"no: unknown service"));

    tcpd.assert_running("after refusals");
    Client::raw(tcpd.addr, "pong").echo(b"still serving");
}

#[test]
fn allow_list_refuses_other_services() {
    let w = World::new();
    let _pong = w.rust_pongd("pong");
    let _other = w.rust_pongd("other");
    let tcpd = start_tcpd(&w, &["--allow-service", "pong"]);

    let mut c = Client::connect(tcpd.addr, "raw other");
    c.send(b"other\n");
    c.expect_answer_and_close(b"no: service not allowed\n");
    let mut c = Client::connect(tcpd.addr, "framed other");
    c.send(&frame(b"other"));
    c.expect_answer_and_close(&frame(b"no: service not allowed"));

    Client::raw(tcpd.addr, "pong").echo(b"allowed");
    Client::framed(tcpd.addr, "pong").echo(b"allowed");
}

#[test]
fn dotdot_name_is_refused_and_nothing_outside_rundir_is_reached() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    // `$RUNDIR/../x` and `$RUNDIR/..x`: sockets a path built from the name would reach.
    let outside = UnixListener::bind(w.path().join("x")).unwrap();
    outside.set_nonblocking(true).unwrap();
    let mut tcpd = start_tcpd(&w, &[]);

    let mut c = Client::connect(tcpd.addr, "raw ../x");
    c.send(b"../x");
    c.expect_answer_and_close(b"no: invalid service name\n");
    let mut c = Client::connect(tcpd.addr, "raw ../x with newline");
    c.send(b"../x\n");
    c.expect_answer_and_close(b"no: invalid service name\n");
    let mut c = Client::connect(tcpd.addr, "framed ../x");
    c.send(&frame(b"../x"));
    c.expect_answer_and_close(&frame(b"no: invalid service name"));

    match outside.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(_) => panic!("tcpd connected to a socket outside RUNDIR"),
        Err(e) => panic!("accept: {e}"),
    }
    tcpd.assert_running("after ../x");
    Client::raw(tcpd.addr, "pong").echo(b"still serving");
}

/// What follows a raw name never decides the answer: `../pong` is the
/// invalid name `../pong`, not `..` then a frame of 795,897,710 bytes.
#[test]
fn the_answer_is_the_names_whatever_follows_it() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(&w, &[]);
    let mut cmd = python("routed_refusals.py");
    cmd.arg(tcpd.addr.port().to_string());
    let run = run_cmd(cmd, w.path(), "python", CHILD_TIMEOUT);
    run.assert_success("python client");
    run.assert_lines(&["routed-refusals: ok"]);
    tcpd.assert_running("after the refusals");
}

#[test]
fn silent_client_gets_handshake_timeout() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tcpd = start_tcpd(&w, &["--handshake-timeout", "1s"]);

    let started = Instant::now();
    let mut silent = Client::connect(tcpd.addr, "silent client");
    // Meanwhile another client is served at once.
    Client::raw(tcpd.addr, "pong").echo(b"not silent");
    silent.expect_answer_and_close(b"no: handshake timeout\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "handshake timeout of 1s came after {took:?}"
    );
}

#[test]
fn fixed_mode_needs_no_handshake() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tcpd = start_tcpd(&w, &["--service", "pong"]);

    let mut c = Client::connect(tcpd.addr, "fixed-mode client");
    // A name would be data here: a frame whose payload is "pong\n" comes back.
    c.echo(b"pong\n");
    c.echo(b"");
    c.echo(&pattern(3, 100_000));
    // Several frames in one write, echoed in order.
    let batch: Vec<Vec<u8>> = (0..20).map(|i| pattern(i, i * 37)).collect();
    c.send(&batch.iter().flat_map(|m| frame(m)).collect::<Vec<u8>>());
    for m in &batch {
        assert_eq!(&c.recv_frame(), m);
    }
}

// ---------------------------------------------------------------------------
// Failures of clients and services.

#[test]
fn client_vanishing_mid_frame_does_not_disturb_another() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(&w, &[]);

    let mut steady = Client::raw(tcpd.addr, "pong");
    steady.echo(b"before");

    // Gone in the middle of a message: a header for 1000 bytes, then 10.
    let mut c = Client::raw(tcpd.addr, "pong");
    c.send(&1000u32.to_be_bytes());
    c.send(&[7; 10]);
    drop(c);
    // Gone in the middle of a framed name.
    let mut c = Client::connect(tcpd.addr, "half a framed name");
    c.send(&[0, 0, 0, 4, b'p', b'o']);
    drop(c);
    // Gone with a reset (SO_LINGER 0) in the middle of a big message.
    let mut c = Client::framed(tcpd.addr, "pong");
    c.send(&frame(&pattern(4, 200_000))[..100_000]);
    nix::sys::socket::setsockopt(
        &c.s,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(c);

    for i in 0..20 {
        steady.echo(&pattern(i, i * 5000));
    }
    tcpd.assert_running("after clients vanished");
    Client::framed(tcpd.addr, "pong").echo(b"a new client");
}

#[test]
fn crashed_service_closes_its_clients_and_can_restart() {
    let w = World::new();
    let alpha = w.rust_pongd("alpha");
    let _beta = w.rust_pongd("beta");
    let mut tcpd = start_tcpd(&w, &[]);

    let mut a = Client::raw(tcpd.addr, "alpha");
    let mut b = Client::framed(tcpd.addr, "beta");
    a.echo(b"alpha before");
    b.echo(b"beta before");
    // Mid-stream: a big message on its way when the service dies.
    a.send(&frame(&pattern(5, 500_000)));
    alpha.kill();

    // alpha's client is closed (whatever part of the echo made it first).
    let started = Instant::now();
    a.until_closed();
    assert!(started.elapsed() < Duration::from_secs(5));
    // The other service's client is not disturbed, and tcpd still serves.
    b.echo(b"beta after");
    tcpd.assert_running("after a service crashed");
    // The socket of the dead service is still there: the service is down.
    let mut c = Client::connect(tcpd.addr, "client of the dead alpha");
    c.send(b"alpha\n");
    c.expect_answer_and_close(b"no: service down\n");

    // A new pongd on the same name replaces the dead one's socket.
    let _alpha = w.rust_pongd("alpha");
    let mut a = Client::raw(tcpd.addr, "alpha");
    a.echo(b"alpha restarted");
    a.echo(&pattern(6, 100_000));
    b.echo(b"beta still");
}

// ---------------------------------------------------------------------------
// Limits.

#[test]
fn max_connections_refuses_the_third_client() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tcpd = start_tcpd(&w, &["--max-connections", "2"]);

    let mut one = Client::raw(tcpd.addr, "pong");
    let mut two = Client::framed(tcpd.addr, "pong");
    // Refused once it has named its service, in the form it used.
    let mut three = Client::connect(tcpd.addr, "third client");
    three.send(b"pong\n");
    three.expect_answer_and_close(b"no: too many connections\n");
    let mut four = Client::connect(tcpd.addr, "fourth client, framed");
    four.send(&frame(b"pong"));
    four.expect_answer_and_close(&frame(b"no: too many connections"));
    one.echo(b"one still works");
    two.echo(b"two still works");

    // A closed connection frees its place (tcpd notices it soon, not at once).
    drop(one);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        let mut c = Client::connect(tcpd.addr, "client after one left");
        c.send(b"pong\n");
        // Refused ("no: ..."), or reset: tcpd closed with our name unread.
        if c.try_read_exact(2).is_ok_and(|answer| answer == b"ok") {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "still refused 5 s after a client left"
        );
        thread::sleep(Duration::from_millis(20));
    };
    again.echo(b"admitted");
    two.echo(b"two still works");
}

#[test]
fn idle_timeout_closes_only_silent_connections() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tcpd = start_tcpd(&w, &["--idle-timeout", "1s"]);

    let mut silent = Client::raw(tcpd.addr, "pong");
    silent.echo(b"then nothing");
    let started = Instant::now();
    let mut busy = Client::raw(tcpd.addr, "pong");
    // Traffic every 200 ms for 2 s keeps a connection open.
    while started.elapsed() < Duration::from_secs(2) {
        busy.echo(b"still here");
        thread::sleep(Duration::from_millis(200));
    }
    silent.expect_answer_and_close(b"");
    busy.echo(b"still here after 2 s");
}

#[test]
fn oversized_message_closes_only_its_connection() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(&w, &["--max-message-size", "1K"]);

    let mut fine = Client::raw(tcpd.addr, "pong");
    fine.echo(&pattern(7, 1024));
    let mut big = Client::raw(tcpd.addr, "pong");
    big.echo(b"small first");
    big.send(&1025u32.to_be_bytes());
    big.send(&[1; 1025]);
    assert!(
        big.until_closed().is_empty(),
        "part of an oversized message came back"
    );
    fine.echo(&pattern(8, 1024));
    tcpd.assert_running("after an oversized message");
}

// ---------------------------------------------------------------------------
// SIGTERM.

/// Sends SIGTERM and waits until each of tcpd's `workers` is draining.
fn sigterm_and_wait_for_drain(tcpd: &mut Tcpd, workers: usize) {
    tcpd.proc.signal(Signal::SIGTERM);
    for n in 0..workers {
        tcpd.proc
            .wait_for_stderr_line(&format!("draining worker={n} "), Duration::from_secs(5));
    }
}

#[test]
fn sigterm_lets_open_conversations_finish_then_exits_0() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(&w, &["--workers", "2", "--drain-timeout", "30s"]);

    let mut talking = Client::raw(tcpd.addr, "pong");
    talking.echo(b"before SIGTERM");
    sigterm_and_wait_for_drain(&mut tcpd, 2);

    for i in 0..10 {
        talking.echo(&pattern(i, i * 20_000));
    }
    tcpd.assert_running("while a client was still talking");
    talking.echo(b"last words");
    // The client ends the conversation; tcpd has nothing left and exits 0.
    talking.s.shutdown(Shutdown::Write).unwrap();
    assert!(talking.until_closed().is_empty());
    let closed = Instant::now();
    let run = tcpd.proc.wait(CHILD_TIMEOUT);
    run.assert_success("tcpd after SIGTERM");
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "tcpd took {:?} to exit after its last client left (drain timeout 30s)",
        closed.elapsed()
    );
    assert!(run.stderr.contains("tcpd stopped"), "{}", run.report());
}

#[test]
fn sigterm_refuses_new_connections() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(&w, &["--workers", "2", "--drain-timeout", "30s"]);

    // An open conversation keeps tcpd draining (and running) meanwhile.
    let mut talking = Client::raw(tcpd.addr, "pong");
    talking.echo(b"before SIGTERM");
    sigterm_and_wait_for_drain(&mut tcpd, 2);

    match TcpStream::connect_timeout(&tcpd.addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect after SIGTERM: {e}"
        ),
        Ok(s) => {
            // Show what becomes of it: nobody ever answers.
            let mut c = Client::from_stream(s, "client after SIGTERM", Duration::from_secs(1));
            c.send(b"pong\n");
            let mut buf = [0; 16];
            let got = c.s.read(&mut buf);
            panic!(
                "a new connection succeeded after SIGTERM, while tcpd drains; \
                 naming pong then reading for 1 s gave {got:?} (nobody accepts it)"
            );
        }
    }
    talking.echo(b"still talking");
    drop(talking);
    tcpd.proc
        .wait(CHILD_TIMEOUT)
        .assert_success("tcpd after SIGTERM");
}

#[test]
fn metrics_count_connections_traffic_and_refusals() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(&w, &["--metrics", "127.0.0.1:0"]);
    let metrics = tcpd.logged_address("metrics at http://");

    let mut c = Client::raw(tcpd.addr, "pong");
    for i in 0..3 {
        c.echo(format!("message {i}").as_bytes()); // 9 bytes each, 13 framed
    }
    Client::connect(tcpd.addr, "refused client").send(b"nope\n");
    let open = scrape_until(
        metrics,
        &[
            "ipc_connections_open{daemon=\"tcpd\"} 1",
            "ipc_connections_accepted_total{daemon=\"tcpd\"} 2",
            "ipc_handshake_failures_total{daemon=\"tcpd\",reason=\"unknown service\"} 1",
            "ipc_service_connections_open{daemon=\"tcpd\",service=\"pong\"} 1",
            "ipc_service_messages_total{daemon=\"tcpd\",service=\"pong\",direction=\"in\"} 3",
            "ipc_service_messages_total{daemon=\"tcpd\",service=\"pong\",direction=\"out\"} 3",
            "ipc_service_bytes_total{daemon=\"tcpd\",service=\"pong\",direction=\"in\"} 39",
            "ipc_service_bytes_total{daemon=\"tcpd\",service=\"pong\",direction=\"out\"} 39",
        ],
    );
    println!("metrics while a client is connected:\n{open}");

    c.echo(b"one more");
    drop(c);
    scrape_until(
        metrics,
        &[
            "ipc_connections_open{daemon=\"tcpd\"} 0",
            "ipc_service_connections_open{daemon=\"tcpd\",service=\"pong\"} 0",
            "ipc_service_connections_total{daemon=\"tcpd\",service=\"pong\"} 1",
            "ipc_service_messages_total{daemon=\"tcpd\",service=\"pong\",direction=\"in\"} 4",
            "ipc_service_bytes_total{daemon=\"tcpd\",service=\"pong\",direction=\"out\"} 51",
        ],
    );
    // The close line carries the same figures.
    let log = tcpd.log();
    assert!(
        log.lines().any(|l| l.contains("connection closed")
            && l.contains("service=pong}")
            && l.contains("bytes_in=51 bytes_out=51 messages_in=4 messages_out=4")),
        "no close line with the traffic in:\n{log}"
    );
    tcpd.assert_running("after the scrapes");
}

#[test]
fn metrics_count_bad_proxy_headers_apart_from_bad_handshakes() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut tcpd = start_tcpd(
        &w,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1/32",
        ],
    );
    let metrics = tcpd.logged_address("metrics at http://");

    // A trusted balancer that sends a name instead of a header: nobody to
    // answer (it is not a client), closed.
    let mut balancer = Client::connect(tcpd.addr, "balancer without a PROXY header");
    balancer.send(b"pong\n");
    assert_eq!(balancer.until_closed(), b"");
    // A good header, then a bad name: the client's handshake, not the header.
    let mut client = Client::connect(tcpd.addr, "proxied client with a bad name");
    client.send(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 9000\r\n/pong\n");
    let answer = String::from_utf8(client.until_closed()).unwrap();
    assert!(answer.starts_with("no: bad handshake: "), "{answer:?}");
    scrape_until(
        metrics,
        &[
            "ipc_handshake_failures_total{daemon=\"tcpd\",reason=\"bad PROXY header\"} 1",
            "ipc_handshake_failures_total{daemon=\"tcpd\",reason=\"bad handshake\"} 1",
        ],
    );
    // The close line says why, once.
    let log = tcpd.log();
    let closed = log
        .lines()
        .find(|l| l.contains("expected a PROXY header first"))
        .unwrap_or_else(|| panic!("no line says why the balancer was closed\n{log}"));
    assert_eq!(
        closed.matches("bad PROXY protocol header").count(),
        1,
        "{closed}"
    );
    tcpd.assert_running("after the bad headers");
}

/// tcpd that cannot start says so on one line, `tcpd: WHAT: WHY`, each cause
/// once (the line is also logged at ERROR level).
#[test]
fn startup_errors_say_each_cause_once() {
    let w = World::new();
    let file = w.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let used = taken.local_addr().unwrap().to_string();
    let under_file = file.join("rundir");
    let cases = [
        (
            "rundir-is-a-file",
            vec![],
            Some(&file),
            format!(
                "run directory {}: exists and is not a directory",
                file.display()
            ),
        ),
        (
            "rundir-under-a-file",
            vec![],
            Some(&under_file),
            format!(
                "run directory {}: Not a directory (os error 20)",
                under_file.display()
            ),
        ),
        (
            "port-in-use",
            vec!["--listen", used.as_str()],
            None,
            format!("--listen {used}: bind {used}: Address already in use (os error 98)"),
        ),
    ];
    for (label, args, rundir, says) in cases {
        let mut cmd = Daemon::command(&w, "tcpd", &args);
        if let Some(dir) = rundir {
            cmd.env("RUNDIR", dir);
        }
        let run = run_cmd(cmd, w.path(), label, CHILD_TIMEOUT);
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(1),
            "{label}\n{}",
            run.report()
        );
        let printed: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("tcpd: "))
            .collect();
        assert_eq!(
            printed,
            [format!("tcpd: {says}")],
            "{label}\n{}",
            run.report()
        );
        let logged = run
            .stderr
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .collect::<Vec<_>>();
        assert!(
            logged.len() == 1 && logged[0].ends_with(&says),
            "{label}: logged {logged:?}\n{}",
            run.report()
        );
    }
}

/// Flags that name a service are checked as they are parsed: a bad name is a
/// usage error (status 2) naming the flag and the rule, before anything starts.
#[test]
fn service_name_flags_are_checked_as_they_are_parsed() {
    let w = World::new();
    for (daemon, args, says) in [
        ("tcpd", &["--service", "../x"][..], "'--service <SERVICE>'"),
        (
            "tcpd",
            &["--allow-service", "a/b"][..],
            "'--allow-service <NAME>'",
        ),
        (
            "tcpd",
            &["--expose-outbound", ".outbound"][..],
            "'--expose-outbound <NAME>'",
        ),
        ("tcpd", &["--service-name", ""][..], "must not be empty"),
        (
            "websocketd",
            &["--service", "../x"][..],
            "must not start with '.'",
        ),
    ] {
        let run = run_cmd(
            Daemon::command(&w, daemon, args),
            w.path(),
            "bad-name-flag",
            CHILD_TIMEOUT,
        );
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(2),
            "{daemon} {args:?}\n{}",
            run.report()
        );
        assert!(
            run.stderr.contains(says) && run.stderr.contains("invalid service name"),
            "{daemon} {args:?}: want {says:?}\n{}",
            run.report()
        );
    }
}
