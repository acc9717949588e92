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
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, PYTHON_FRAMES, Proc, READY_TIMEOUT, Run, World, run_cmd, spawn,
    spawn_with_stdin, venv_bin,
};
use libipc_tests::{frame, rss_kib};
use nix::sys::signal::Signal;

/// Longest any single socket read or write of the test itself may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// A Python client: [`PYTHON_FRAMES`], [`PYTHON_CONNS`], then `body`, run by
    /// the venv's Python with the protocol of `kind`, `port`, the CA, `limit`
    /// (seconds) and `args`.
    fn python(&self, kind: Kind, port: u16, label: &str, body: &str, args: &[&str]) -> Proc {
        self.python_trusting(&self.pki.ca.cert, kind, port, label, body, args)
    }

    /// [`Setup::python`], verifying TLS daemons against `ca`.
    fn python_trusting(
        &self,
        ca: &std::path::Path,
        kind: Kind,
        port: u16,
        label: &str,
        body: &str,
        args: &[&str],
    ) -> Proc {
        let script = self.w.path().join(format!("client-{label}.py"));
        std::fs::write(&script, format!("{PYTHON_FRAMES}{PYTHON_CONNS}{body}")).unwrap();
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg("-u")
            .arg(&script)
            .arg(kind.mode())
            .arg(port.to_string())
            .arg(ca)
            .arg(LOAD_LIMIT.as_secs().to_string())
            .args(args);
        spawn_with_stdin(cmd, self.w.path(), label, Stdio::piped())
    }

    /// Starts [`PYTHON_LOAD`] on daemon `kind` at `port`: `groups` are
    /// `service:connections:role`, comma-separated; steady connections have
    /// `after` more echoes once told to go; connections the daemon ends must
    /// end with `end`.
    fn load(&self, kind: Kind, port: u16, groups: &str, after: usize, end: &str) -> Proc {
        let label = format!("load-{}", kind.bin());
        let after = after.to_string();
        self.python(kind, port, &label, PYTHON_LOAD, &[groups, &after, end])
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

/// Raises this process's soft limit on open descriptors to `want` (at most
/// the hard limit), for the daemons and clients it starts.
fn raise_nofile_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).expect("setrlimit");
    }
}

// ---------------------------------------------------------------------------
// Python clients.

/// What every Python client starts with, after [`PYTHON_FRAMES`]: the protocol
/// (`argv[1]`: tcp, tls or ws), the daemon's port, the CA of tlsd's
/// certificate, a time limit in seconds, the rest in `args`; and a connection
/// class for each protocol, all alike: `connect(service)`, `send([payloads])`,
/// `recv()` (a payload, or the exception `Ended` saying how the daemon ended
/// the connection) and `close()` (ends it from this side; returns how the
/// daemon answered).
///
/// - tcp: routed, the framed name answered with a framed `ok`; the daemon's
///   end is `eof` (`reset` if it closed with the client's input unread).
/// - tls: the same inside TLS, with ragged EOFs reported rather than taken for
///   an end: `close_notify` is a clean end, `ragged eof` a TCP close without it.
/// - ws: the `websockets` library's protocol on a plain socket, the service in
///   the URL's path; an end is `close CODE` (or `eof` with no close frame).
const PYTHON_CONNS: &str = r#"
import os, select, socket, ssl, threading, time
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

mode, port, ca, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
args = sys.argv[5:]
deadline = time.monotonic() + limit

def left():
    return deadline - time.monotonic()

class Ended(Exception):
    """The daemon ended the connection; `how`: eof, reset, close_notify, ragged eof, close CODE."""
    def __init__(self, how, detail=""):
        super().__init__(how + detail)
        self.how = how

def tcp_connection():
    s = socket.create_connection(("127.0.0.1", port), timeout=max(left(), 1))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

class Framed:
    """tcpd: LibIPC frames on TCP, routed by a framed name."""
    def __init__(self, service):
        self.s = self.wrap(tcp_connection())
        self.buf = bytearray()
        self.s.sendall(frame(service.encode()))
        answer = self.recv()
        if answer != b"ok":
            raise AssertionError(f"{service}: answered {answer!r}")

    def wrap(self, raw):
        return raw

    def send(self, msgs):
        self.s.sendall(b"".join(frame(m) for m in msgs))

    def partial(self):
        return f" ({len(self.buf)} bytes of a frame before it)" if self.buf else ""

    def read(self):
        try:
            chunk = self.s.recv(65536)
        except ConnectionResetError:
            raise Ended("reset", self.partial())
        if not chunk:
            raise Ended("eof", self.partial())
        return chunk

    def recv(self):
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack_from(">I", self.buf)
                if len(self.buf) >= 4 + n:
                    m = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return m
            self.buf += self.read()

    def close(self):
        self.s.shutdown(socket.SHUT_WR)
        return self.after_close()

    def after_close(self):
        try:
            m = self.recv()
        except Ended as e:
            return e.how
        raise AssertionError(f"a message after closing: {m[:60]!r}")

class Tls(Framed):
    """tlsd: the same inside TLS, verifying tlsd against the CA."""
    def wrap(self, raw):
        ctx = ssl.create_default_context(cafile=ca)
        # Report a TCP close without close_notify (SSLEOFError) instead of
        # taking it for the end: the two must be told apart.
        return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)

    def read(self):
        try:
            chunk = self.s.recv(65536)
        except ssl.SSLEOFError:
            raise Ended("ragged eof", self.partial())
        except ssl.SSLZeroReturnError:
            # tlsd's close_notify, after ours (see close)
            raise Ended("close_notify", self.partial())
        except ConnectionResetError:
            raise Ended("reset", self.partial())
        # b"": the peer's close_notify (a ragged EOF raised above).
        if not chunk:
            raise Ended("close_notify", self.partial())
        return chunk

    def close(self):
        # Our close_notify, then the TCP half-close (SSLSocket.shutdown would
        # drop the TLS layer), then tlsd's answer.
        self.s.setblocking(False)
        try:
            self.s.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; tlsd's close_notify is read below
        self.s.settimeout(max(left(), 1))
        socket.socket.shutdown(self.s, socket.SHUT_WR)
        return self.after_close()

class Ws:
    """websocketd: the websockets library's client protocol on a plain socket
    (wss: on TLS, verifying websocketd against the CA)."""
    def __init__(self, service):
        self.s = tcp_connection()
        if mode == "wss":
            ctx = ssl.create_default_context(cafile=ca)
            self.s = ctx.wrap_socket(self.s, server_hostname="localhost")
        self.p = ClientProtocol(parse_uri(f"{mode}://localhost:{port}/{service}"), max_size=None)
        self.p.send_request(self.p.connect())
        self.flush()
        self.events, self.parts, self.eof = [], [], False
        while self.p.state is State.CONNECTING:
            if not self.feed():
                raise AssertionError(f"{service}: closed during the handshake")
        if self.p.handshake_exc is not None:
            raise self.p.handshake_exc
        self.events = self.events[1:]  # the HTTP response

    def flush(self):
        for data in self.p.data_to_send():
            if data:
                self.s.sendall(data)
            else:
                self.s.shutdown(socket.SHUT_WR)

    def feed(self):
        """Reads once; False at the end of the stream."""
        try:
            data = self.s.recv(65536)
        except ConnectionResetError:
            data = b""
        if data:
            self.p.receive_data(data)
        else:
            self.eof = True
            self.p.receive_eof()
        try:
            self.flush()  # pongs, the reply to a close
        except OSError:
            pass
        self.events += self.p.events_received()
        return bool(data)

    def send(self, msgs):
        for m in msgs:
            self.p.send_binary(m)
        self.flush()

    def recv(self):
        while True:
            while self.events:
                ev = self.events.pop(0)
                if ev.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                    self.parts.append(ev.data)
                    if ev.fin:
                        m = b"".join(self.parts)
                        self.parts = []
                        return m
                elif ev.opcode is Opcode.CLOSE:
                    rcvd = self.p.close_rcvd
                    code = rcvd.code if rcvd else "without a code"
                    raise Ended(f"close {code}", f" {rcvd.reason!r}" if rcvd else "")
            if self.eof:
                raise Ended("eof")
            self.feed()

    def close(self):
        self.p.send_close(1000)
        self.flush()
        return self.after_close()

    after_close = Framed.after_close

connect = {"tcp": Framed, "tls": Tls, "ws": Ws, "wss": Ws}[mode]

# A descriptor a connection, and then some: raise the soft limit if need be.
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != resource.RLIM_INFINITY and soft < 2048:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
"#;

/// Many busy connections at once, a thread each: `args[0]` lists groups as
/// `service:connections:role`, comma-separated. Each connection sends numbered
/// messages (30 bytes to 28 KiB), four in a write, and checks every echo, in
/// order. Once every connection has had a few echoes it prints `busy: ...`, and
/// waits for a line on its stdin (the test acts meanwhile: kills a service,
/// sends SIGTERM); then
///
/// - a `steady` connection has `args[1]` more echoes, then closes; the daemon
///   must answer its close cleanly (tcp: EOF, tls: close_notify, ws: close
///   1000), and nothing may go wrong before;
/// - an `ended` connection goes on until the daemon ends it, which must be as
///   `args[2]` says (`eof`, `close_notify`, `close 1011`, ...);
/// - a `drained` one too; it prints `drained PORT ECHOES` (its local port,
///   the echoes it got before the end) so that the test can check them
///   against what the daemon took from it: every message that reached the
///   service must have been echoed before the end. (Messages still in
///   flight when the goodbye comes were not taken: a client that pipelines
///   cannot tell them apart, the daemon's count can.)
///
/// Bounded: the time limit, and a cap on echoes before the word to go.
const PYTHON_LOAD: &str = r#"
groups, after, end = args[0], int(args[1]), args[2]
WINDOW = 4
MAX_BEFORE = 100_000
CLEAN = {"tcp": "eof", "tls": "close_notify", "ws": "close 1000", "wss": "close 1000"}[mode]

plan = []
for g in groups.split(","):
    service, count, role = g.split(":")
    plan += [(service, role)] * int(count)
threading.stack_size(256 * 1024)

go = threading.Event()
failures = []
done = [0] * len(plan)          # echoes checked, in order
ends = [None] * len(plan)       # how each connection ended
unanswered = [0] * len(plan)    # messages sent, not echoed, when it ended
ports = [None] * len(plan)      # local ports, for the daemon's log lines

def message(c, n):
    times = 1000 if (c + n) % 50 == 0 else 1 + (c + n) % 40
    return f"connection {c} message {n};".encode() * times

def client(c, service, role):
    try:
        conn = connect(service)
        ports[c] = conn.s.getsockname()[1]
        n, at_go = 0, None
        while True:
            if go.is_set() and role == "steady":
                at_go = n if at_go is None else at_go
                if n >= at_go + after:
                    break
            if left() < 0:
                raise TimeoutError(f"time ran out after {n} echoes")
            if n >= MAX_BEFORE and not go.is_set():
                raise RuntimeError(f"no word to go after {n} echoes")
            first = n
            batch = [message(c, first + k) for k in range(WINDOW)]
            try:
                conn.send(batch)
                send_error = None
            except Exception as e:  # the end is read below
                send_error = e
            try:
                for m in batch:
                    back = conn.recv()
                    if back != m:
                        raise AssertionError(f"echo {n}: got {back[:60]!r} ({len(back)} bytes), "
                                             f"sent {m[:60]!r} ({len(m)} bytes)")
                    n += 1
                    done[c] = n
            except Ended as e:
                if role == "steady":
                    raise
                ends[c] = e
                # A batch that could not be sent was not sent (the end came first).
                unanswered[c] = 0 if send_error else first + WINDOW - n
                return
            if send_error is not None:
                raise AssertionError(f"sending failed ({send_error!r}), yet the echoes came")
        ends[c] = Ended(conn.close())
    except BaseException as e:
        failures.append(f"connection {c} ({service}, {role}): {e!r}")

def fail(why):
    sys.exit(f"{why}; {len(failures)} connections failed: " + "; ".join(failures[:10]))

started = time.monotonic()
threads = [threading.Thread(target=client, args=(c, s, r), daemon=True)
           for c, (s, r) in enumerate(plan)]
for t in threads:
    t.start()
while min(done) < 2 * WINDOW and not failures and left() > 0:
    time.sleep(0.01)
if failures or min(done) < 2 * WINDOW:
    fail(f"{sum(1 for d in done if d >= 2 * WINDOW)} of {len(plan)} connections busy in time")
print(f"busy: {len(plan)} connections, {sum(done)} echoes, "
      f"{time.monotonic() - started:.1f} s", flush=True)

if not select.select([sys.stdin], [], [], max(left(), 0))[0]:
    sys.exit("no word to go in time")
sys.stdin.readline()
before = sum(done)
go.set()
for t in threads:
    t.join(max(left(), 0))
if failures:
    fail("connections failed")
late = [c for c, t in enumerate(threads) if t.is_alive()]
if late:
    sys.exit(f"{len(late)} connections not done in time, e.g. {late[:10]}")

wrong = []
for c, (service, role) in enumerate(plan):
    want = CLEAN if role == "steady" else end
    if ends[c].how not in want.split("|"):
        wrong.append(f"connection {c} ({service}, {role}) ended with {ends[c]}, want {want}")
    elif role == "drained":
        print(f"drained {ports[c]} {done[c]} (and {unanswered[c]} in flight)")
if wrong:
    sys.exit(f"{len(wrong)} connections ended wrong:\n" + "\n".join(wrong[:20]))
for service, role in sorted(set(plan)):
    cs = [c for c, p in enumerate(plan) if p == (service, role)]
    hows = sorted(set(str(ends[c]) for c in cs))
    print(f"{service} ({role}): {len(cs)} connections, {sum(done[c] for c in cs)} echoes "
          f"(at least {min(done[c] for c in cs)} each), ended: {'; '.join(hows[:5])}")
print(f"{sum(done)} echoes in all, {sum(done) - before} after the word to go; "
      f"{time.monotonic() - started:.1f} s", flush=True)
print("ok")
"#;

/// One exchange: connects to service `args[0]`, sends `args[1]`, prints the
/// answer, then closes and prints how the daemon answered the close.
const PYTHON_ONCE: &str = r#"
conn = connect(args[0])
conn.send([args[1].encode()])
print(conn.recv().decode())
print(f"closed: {conn.close()}")
print("ok")
"#;

// ---------------------------------------------------------------------------
// Services written for these tests.

/// A LibIPC service (`argv[1]`: its socket) answering each message with
/// `argv[2]`, a colon and the message: the answer tells which instance it is.
/// A stale socket left by a killed instance is replaced.
const LABEL_SERVICE: &str = r#"
import os, threading

path, label = sys.argv[1], sys.argv[2].encode()

def serve(s):
    with s:
        while True:
            hdr = s.recv(4, socket.MSG_WAITALL)
            if len(hdr) < 4:
                return
            (n,) = struct.unpack(">I", hdr)
            m = s.recv(n, socket.MSG_WAITALL) if n else b""
            if len(m) < n:
                return
            s.sendall(frame(label + b":" + m))

if os.path.exists(path):
    os.unlink(path)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(64)
while True:
    s, _ = srv.accept()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
"#;

/// A slow LibIPC service (`argv[1]`: its socket): it expects `argv[2]`
/// messages of `argv[3]` bytes each, numbered (8 bytes, big-endian, then the
/// number modulo 251 in every other byte), reads one a second until the file
/// `argv[4]` exists, then as fast as they come; every message must be the next
/// one, whole. At the client's end it says how many it got.
const SLOW_SERVICE: &str = r#"
import os, time

path, total, size, fast = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
count = 0

def read_exact(s, n, end_ok=False):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            if end_ok and not buf:
                return None
            sys.exit(f"EOF after {len(buf)} of {n} bytes of message {count}")
        buf += chunk
    return bytes(buf)

srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(8)
while True:
    conn, _ = srv.accept()
    hdr = read_exact(conn, 4, end_ok=True)
    if hdr is not None:
        break
    conn.close()  # the test's readiness probe
while hdr is not None:
    (n,) = struct.unpack(">I", hdr)
    if n != size:
        sys.exit(f"message {count}: {n} bytes, want {size}")
    body = read_exact(conn, n)
    number = int.from_bytes(body[:8], "big")
    if number != count:
        sys.exit(f"message {count}: got number {number}")
    if body[8:] != bytes([number % 251]) * (size - 8):
        sys.exit(f"message {count}: corrupted")
    count += 1
    slow_until = time.monotonic() + 1
    while not os.path.exists(fast) and time.monotonic() < slow_until:
        time.sleep(0.02)
    hdr = read_exact(conn, 4, end_ok=True)
if count != total:
    sys.exit(f"{count} messages, want {total}")
print(f"received {count} messages, in order, each once", flush=True)
"#;

/// Starts a Python service `name` ([`PYTHON_FRAMES`], then `script`) with
/// `args` after its socket's path, ready; its output in `<label>.stdout`.
fn python_service(w: &World, name: &str, label: &str, script: &str, args: &[&str]) -> Proc {
    let path = w.path().join(format!("{label}.py"));
    std::fs::write(&path, format!("{PYTHON_FRAMES}{script}")).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg("-u").arg(path).arg(w.rundir.join(name)).args(args);
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

/// SIGTERM while [`DRAIN_CONNECTIONS`] connections through daemon `kind` are
/// exchanging messages: tcpd and tlsd let each finish its conversation (20
/// more echoes, all checked, then the client's close, answered cleanly);
/// websocketd asks each client to leave (close 1001) once every message the
/// client sent before has been echoed. Then the daemon exits 0, without
/// waiting for its drain timeout.
fn sigterm_under_load(kind: Kind) {
    raise_nofile_limit(4096);
    let s = Setup::new();
    let _pongd = s.w.rust_pongd("pong");
    let args = ["--workers", "2", "--drain-timeout", "60s"];
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
    // Counted from the daemon's start: the load's time, then the drain.
    let run = d.proc.wait(LOAD_LIMIT + CHILD_TIMEOUT);
    run.assert_success(&format!("{} after SIGTERM", kind.bin()));
    if role == "drained" {
        assert_every_taken_message_echoed(&clients.stdout, &run.stderr);
    }
    assert!(
        run.stderr.contains(&format!("{} stopped", kind.bin())),
        "{}",
        run.report()
    );
    assert!(
        !run.stderr.contains("drain timeout"),
        "connections were cut at the drain timeout\n{}",
        run.report()
    );
    println!(
        "{} exited {:?} after SIGTERM",
        kind.bin(),
        signalled.elapsed()
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
    let first = python_service(&s.w, "who", "who-first", LABEL_SERVICE, &["first"]);
    let kinds = [Kind::Tcp, Kind::Tls, Kind::Ws];
    let mut daemons: Vec<Daemon> = kinds.iter().map(|&k| s.daemon(k, k.bin(), &[])).collect();
    let pids: Vec<_> = daemons.iter().map(|d| d.proc.pid()).collect();
    let ask = |daemons: &[Daemon], instance: &str| {
        for (&kind, d) in kinds.iter().zip(daemons) {
            let label = format!("once-{}-{instance}", kind.bin());
            let client = s.python(kind, d.addr.port(), &label, PYTHON_ONCE, &["who", "hello"]);
            let run = finish(client, &label);
            run.assert_lines(&[&format!("{instance}:hello")]);
        }
    };
    ask(&daemons, "first");
    first.kill();
    let _second = python_service(&s.w, "who", "who-second", LABEL_SERVICE, &["second"]);
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
/// How much tcpd's resident memory may grow meanwhile.
const RSS_GROWTH_KIB: u64 = 32 << 10;

/// Message `n` of the client of the slow service, framed.
fn numbered(n: usize) -> Vec<u8> {
    let mut payload = (n as u64).to_be_bytes().to_vec();
    payload.resize(SLOW_MESSAGE, (n % 251) as u8);
    frame(&payload)
}

/// A TCP client of a tcpd at `addr` that named `service` (raw) and got `ok`.
fn tcp_client(addr: SocketAddr, service: &str) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
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
    let service = python_service(&w, "slow", "slow", SLOW_SERVICE, &[&total, &size, fast_arg]);
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
    let all = SLOW_MESSAGES * (SLOW_MESSAGE + 4);
    assert!(
        p.sent < all / 4,
        "{} of {all} bytes sent while the service read one message a second",
        p.sent
    );
    println!(
        "after {PUSH_FOR:?}: {} bytes sent (message {}), tcpd's RSS {rss_before} KiB, \
         at most {rss_peak} KiB",
        p.sent, p.n
    );

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
        PYTHON_ONCE,
        &["pong", "hello"],
    );
    finish(once, "once-wss").assert_lines(&["hello", "closed: close 1000"]);
    d.assert_running("after the reload under load");
}
