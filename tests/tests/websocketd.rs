//! Black-box tests of the real `websocketd` binary, with WebSocket clients nobody
//! here wrote: the Autobahn conformance cases (`kosoku`, a fuzzing client) and
//! Python's `websockets` library (text and binary, fragments, the size limit,
//! 200 clients at once, origins, subprotocols, pings, wss), plus Python's
//! `http.client` for the static files and raw sockets where a client must
//! misbehave (never finish its request, never answer a ping).
//!
//!     cargo test -p libipc-tests --test websocketd
//!
//! Needs `socat` and the Python venv `target/test-venv` with `websockets` and
//! `kosoku` (`tests/run` makes it; [`venv_bin`] finds it). The services are the
//! Rust example `pongd` (an echo, messages up to 1 MiB) and `socat` running
//! `cat` (an echo of any size). Every test has its own temporary RUNDIR, lets
//! websocketd pick its port (`--listen 127.0.0.1:0`, read back from its log), and
//! is bounded in time: child processes are killed after [`CHILD_TIMEOUT`] (the
//! conformance run after [`KOSOKU_TIMEOUT`]), every socket operation has a
//! timeout. Readiness is observed (a log line, a unix socket that accepts, a
//! client's output), never assumed after a sleep.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use libipc_tests::certs;
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, PYTHON_FRAMES, Proc, READY_TIMEOUT, Run, World, assert_pongd_done,
    run_cmd, spawn, venv_bin,
};
use nix::sys::signal::Signal;

/// Longest the whole Autobahn run may take (5 to 15 s with a debug build; under
/// nextest's 120 s limit, so that the test fails with kosoku's output).
const KOSOKU_TIMEOUT: Duration = Duration::from_secs(90);

/// Longest any single socket read or write of the test itself may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts websocketd in `world` on `127.0.0.1:0` with `args` and waits until it
/// listens; its output is in `<label>.stdout` / `.stderr`.
fn websocketd(world: &World, label: &str, args: &[&str]) -> Daemon {
    Daemon::start(world, "websocketd", label, args)
}

/// A world with pongd serving `echo`, and websocketd in front of it (or more
/// than one). Dropped in field order: the daemons, pongd, then the world's
/// directory.
struct EchoSetup {
    /// The (first) websocketd.
    ws: Daemon,
    /// The others, if any.
    more: Vec<Daemon>,
    _pongd: Proc,
    w: World,
}

/// [`EchoSetup`] with one websocketd, started with `args`.
fn echo_setup(args: &[&str]) -> EchoSetup {
    echo_setups(&[("websocketd", args)])
}

/// [`EchoSetup`] with a websocketd for each `(label, args)`.
fn echo_setups(daemons: &[(&str, &[&str])]) -> EchoSetup {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    let mut more: Vec<Daemon> = daemons
        .iter()
        .map(|(label, args)| websocketd(&w, label, args))
        .collect();
    let ws = more.remove(0);
    EchoSetup {
        ws,
        more,
        _pongd,
        w,
    }
}

impl EchoSetup {
    /// [`run_python`] with the ports of all the daemons as arguments, the first
    /// one's first.
    fn run_python_on_all(&self, label: &str, body: &str) -> Run {
        let ports: Vec<String> = std::iter::once(&self.ws)
            .chain(&self.more)
            .map(|d| d.addr.port().to_string())
            .collect();
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        run_python(&self.w, label, body, &self.ws, &ports)
    }
}

// ---------------------------------------------------------------------------
// Python clients.

/// What every Python client starts with, after [`PYTHON_FRAMES`]: `port`
/// (argv[1]) and `args` (the rest), the `websockets` sync client with test
/// defaults (`ws`), and checks that exit non-zero saying what went wrong.
const PYTHON_WS: &str = r#"
import asyncio, base64, os, ssl, time
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

port = int(sys.argv[1])
args = sys.argv[2:]

def url(path, port=port, scheme="ws", host="127.0.0.1"):
    return f"{scheme}://{host}:{port}{path}"

def ws(path, port=port, scheme="ws", host="127.0.0.1", **kw):
    """A connection to websocketd: no size limit of the client's own, no pings
    of its own (so that a quiet client is quiet), and returned directly
    (`legacy`), not as a context manager."""
    for k, v in [("open_timeout", 10), ("close_timeout", 10), ("max_size", None),
                 ("ping_interval", None), ("legacy", True)]:
        kw.setdefault(k, v)
    return connect(url(path, port, scheme, host), **kw)

def short(v):
    if isinstance(v, (bytes, str)):
        return f"{type(v).__name__} of length {len(v)} {v[:60]!r}"
    return repr(v)

def expect(what, got, want):
    """got must equal want, and be of the same type (a str is not bytes)."""
    if type(got) is not type(want) or got != want:
        sys.exit(f"{what}: got {short(got)}, want {short(want)}")

def echo(c, m, what):
    c.send(m)
    expect(what, c.recv(timeout=10), m)

def closed_with(c, code, what):
    """The next thing from websocketd is a close frame with `code`; returns its reason."""
    try:
        m = c.recv(timeout=10)
    except ConnectionClosed as e:
        if e.rcvd is None or e.rcvd.code != code:
            sys.exit(f"{what}: closed, received close frame {e.rcvd} (sent {e.sent}), "
                     f"want close code {code}")
        return e.rcvd.reason
    sys.exit(f"{what}: got a message, {short(m)}, want close code {code}")

def refused(path, status, what, **kw):
    """Opening `path` is answered with HTTP `status`; returns the response."""
    try:
        c = ws(path, **kw)
    except InvalidStatus as e:
        expect(f"{what}: HTTP status", e.response.status_code, status)
        return e.response
    c.close()
    sys.exit(f"{what}: connected, want HTTP {status}")
"#;

/// Writes a Python client ([`PYTHON_FRAMES`], [`PYTHON_WS`], then `body`) and
/// starts it with the venv's Python, the port of `d` and `args`.
fn python(w: &World, label: &str, body: &str, d: &Daemon, args: &[&str]) -> Proc {
    // Not `<label>.py`: a script named like a module of the standard library
    // (`types.py`) would shadow it.
    let script = w.path().join(format!("client-{label}.py"));
    std::fs::write(&script, format!("{PYTHON_FRAMES}{PYTHON_WS}{body}")).unwrap();
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg("-u")
        .arg(&script)
        .arg(d.addr.port().to_string())
        .args(args);
    spawn(cmd, w.path(), label)
}

/// [`python`], to the end: it must exit 0, its last line `ok`.
fn run_python(w: &World, label: &str, body: &str, d: &Daemon, args: &[&str]) -> Run {
    finish_python(python(w, label, body, d, args), label)
}

/// [`python`], once it has printed its last line so far `ready`: for the test
/// to act on what its connections are to see (then [`finish_python`]).
fn python_until_ready(w: &World, label: &str, body: &str, d: &Daemon, args: &[&str]) -> Proc {
    let mut client = python(w, label, body, d, args);
    client.wait_for_stdout("ready", CHILD_TIMEOUT, |out| out.ends_with(b"ready\n"));
    client
}

/// Waits for a Python client to end: it must exit 0, its last line `ok`.
fn finish_python(client: Proc, label: &str) -> Run {
    let run = client.wait(CHILD_TIMEOUT);
    run.assert_success(&format!("python client {label}"));
    assert_eq!(
        run.stdout.lines().last(),
        Some("ok"),
        "{label}: did not finish\n{}",
        run.report()
    );
    run
}

/// Waits until a line of `d`'s log contains every one of `needles`; returns it.
fn wait_for_log(d: &mut Daemon, needles: &[&str]) -> String {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let log = d.log();
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_owned();
        }
        if Instant::now() > deadline {
            d.proc.fail(&format!(
                "no log line with all of {needles:?} in {READY_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Conformance: the Autobahn cases, by kosoku.

/// Reads kosoku's report (argv[1]: its directory) with the venv's Python (the
/// tests have no JSON parser): one line per case, `id behavior behaviorClose`
/// (tab-separated), from `index.json`; then, for each case id in argv[2:], what
/// its own report says happened.
const KOSOKU_REPORT: &str = r#"
import json, os, sys
out, details = sys.argv[1], sys.argv[2:]
for agent, cases in json.load(open(os.path.join(out, "index.json"))).items():
    for case, r in cases.items():
        if not details:
            print(case, r["behavior"], r["behaviorClose"], sep="\t")
        elif case in details:
            d = json.load(open(os.path.join(out, r["reportfile"])))
            short = lambda v: json.dumps(v)[:300]
            print(f"{case}: {d['description'][:200]}\n  {d['result']} / {d['resultClose']}"
                  f"\n  expected {short(d['expected'])}\n  received {short(d['received'])}"
                  f"\n  remote close {d['remoteCloseCode']} {d['remoteCloseReason']!r}, "
                  f"clean {d['wasClean']} ({d['wasNotCleanReason']})")
"#;

/// Runs [`KOSOKU_REPORT`] on the report in `out`, with `details`.
fn kosoku_report(w: &World, out: &Path, details: &[&str]) -> String {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(["-c", KOSOKU_REPORT]).arg(out).args(details);
    let run = run_cmd(cmd, w.path(), "kosoku-report", CHILD_TIMEOUT);
    run.assert_success("reading kosoku's report");
    run.stdout
}

/// The outcome of each case: id, behavior, behaviorClose.
fn kosoku_outcomes(w: &World, out: &Path) -> Vec<(String, String, String)> {
    kosoku_report(w, out, &[])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "index line {l:?}");
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

/// Autobahn's verdicts that count as a pass; FAILED, UNIMPLEMENTED, WRONG CODE,
/// UNCLEAN and the rest are failures.
fn passes(behavior: &str) -> bool {
    matches!(behavior, "OK" | "NON-STRICT" | "INFORMATIONAL")
}

#[test]
fn autobahn_cases_pass_under_kosoku() {
    let w = World::new();
    let _echo = w.socat_service("echo", "cat");
    let mut ws = websocketd(
        &w,
        "websocketd",
        &["--service", "echo", "--max-message-size", "16M"],
    );
    let out = w.path().join("kosoku-report");
    // 12.* and 13.* need permessage-deflate, which websocketd does not offer.
    let mut cmd = Command::new(venv_bin("kosoku"));
    cmd.args(["-m", "fuzzingclient", "-x", "12.*", "-x", "13.*", "-p", "4"])
        .arg(ws.addr.to_string())
        .arg("-o")
        .arg(&out);
    let started = Instant::now();
    let run = run_cmd(cmd, w.path(), "kosoku", KOSOKU_TIMEOUT);
    let took = started.elapsed();
    assert!(
        out.join("index.json").is_file(),
        "kosoku wrote no index.json\n{}",
        run.report()
    );
    let outcomes = kosoku_outcomes(&w, &out);

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, behavior, close) in &outcomes {
        *counts.entry(format!("behavior {behavior}")).or_default() += 1;
        *counts.entry(format!("behaviorClose {close}")).or_default() += 1;
    }
    let failing: Vec<&str> = outcomes
        .iter()
        .filter(|(_, b, c)| !passes(b) || !passes(c))
        .map(|(case, _, _)| case.as_str())
        .collect();
    let summary = format!(
        "kosoku: {} cases in {took:.1?}, {} passed; {}",
        outcomes.len(),
        outcomes.len() - failing.len(),
        counts
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{summary}");
    if !failing.is_empty() {
        ws.proc.fail(&format!(
            "{summary}\nfailing cases:\n{}\n{}",
            kosoku_report(&w, &out, &failing),
            run.report()
        ));
    }
    // Every case of sections 1 to 10 ran: 301 with kosoku 0.1.0.
    assert!(outcomes.len() >= 300, "{summary}\n{}", run.report());
    run.assert_success("kosoku");
    ws.assert_running("after the Autobahn cases");
}

// ---------------------------------------------------------------------------
// Messages.

/// Each client (half to `alpha`, half to `beta`) connects, waits until all are
/// connected, then exchanges `argv[3]` messages, text and binary in turn,
/// checking each echo and its type.
const PYTHON_MANY: &str = r#"
from websockets.asyncio.client import connect as aconnect

n, m = int(args[0]), int(args[1])
everyone_in = asyncio.Event()
connected = 0

async def client(i):
    global connected
    service = ("alpha", "beta")[i % 2]
    async with aconnect(url(f"/{service}"), open_timeout=15, max_size=None,
                        ping_interval=None) as c:
        connected += 1
        if connected == n:
            everyone_in.set()
        await everyone_in.wait()
        for k in range(m):
            msg = f"{service} client {i} message {k}. ".encode() * (1 + (i * 7 + k) % 60)
            if k % 2 == 0:
                msg = msg.decode()
            await c.send(msg)
            got = await asyncio.wait_for(c.recv(), 10)
            expect(f"client {i} ({service}), message {k}", got, msg)

async def main():
    async with asyncio.timeout(15):
        await asyncio.gather(*(client(i) for i in range(n)))

asyncio.run(main())
print(f"{n} clients connected at once, {m} echoes each")
print("ok")
"#;

#[test]
fn two_hundred_concurrent_clients_over_two_services_routed_by_path() {
    const CLIENTS: usize = 200;
    let w = World::new();
    let mut alpha = w.rust_pongd("alpha");
    let mut beta = w.rust_pongd("beta");
    let mut ws = websocketd(&w, "websocketd", &[]);
    run_python(&w, "many", PYTHON_MANY, &ws, &[&CLIENTS.to_string(), "20"]);

    // Each service saw its half of the clients (and the readiness probe).
    for pongd in [&mut alpha, &mut beta] {
        pongd.wait_for_stderr_lines("client connected", CLIENTS / 2 + 1, READY_TIMEOUT);
    }
    for service in ["alpha", "beta"] {
        let n = ws.connected(Some(service));
        assert_eq!(n, CLIENTS / 2, "connections to {service}\n{}", ws.log());
    }
    ws.assert_running("after 200 clients");
}

/// One client on each of four websocketd (argv: their ports), one for each
/// --message-type: what comes back is text or binary as the flag says.
const PYTHON_TYPES: &str = r#"
mirror, auto, text, binary = (int(a) for a in args)
utf8 = "naïve ☃".encode()
not_utf8 = bytes(range(256))

c = ws("/echo", port=mirror)
for sent in ["héllo ☃", not_utf8, utf8, "", b"", "text again", b"binary again"]:
    echo(c, sent, f"mirror: {short(sent)}")
c.close()

for port, name, cases in [
    (auto, "auto", [("text", "text"), (utf8, utf8.decode()), (not_utf8, not_utf8)]),
    (text, "text", [("text", "text"), (utf8, utf8.decode()), (not_utf8, not_utf8)]),
    (binary, "binary", [("héllo", "héllo".encode()), (not_utf8, not_utf8), (utf8, utf8)]),
]:
    c = ws("/echo", port=port)
    for sent, want in cases:
        c.send(sent)
        expect(f"{name}: {short(sent)}", c.recv(timeout=10), want)
    c.close()
print("ok")
"#;

#[test]
fn message_types_mirror_auto_text_and_binary() {
    let s = echo_setups(&[
        ("websocketd-mirror", &["--message-type", "mirror"]),
        ("websocketd-auto", &["--message-type", "auto"]),
        ("websocketd-text", &["--message-type", "text"]),
        ("websocketd-binary", &["--message-type", "binary"]),
    ]);
    s.run_python_on_all("types", PYTHON_TYPES);
}

/// Fragmented messages (text and binary, and a big one in 16 frames) come back
/// whole: the service got one message for each, not one per fragment.
const PYTHON_FRAGMENTS: &str = r#"
c = ws("/echo")
parts = ["first fragment, ", "", "second, ", "ünïcödé third ☃"]
c.send(parts)
expect("fragmented text", c.recv(timeout=10), "".join(parts))
parts = [bytes(range(256)) * 100, b"", b"\x00\xff" * 5000]
c.send(parts)
expect("fragmented binary", c.recv(timeout=10), b"".join(parts))
parts = [bytes([k]) * 60000 for k in range(16)]
c.send(parts)
expect("960000 bytes in 16 fragments", c.recv(timeout=10), b"".join(parts))
# Nothing else came back: the next message is the echo of the next message.
echo(c, "after the fragments", "next message")
c.close()
print("ok")
"#;

#[test]
fn fragmented_messages_reach_the_service_as_one_message() {
    let mut s = echo_setup(&[]);
    run_python(&s.w, "fragments", PYTHON_FRAGMENTS, &s.ws, &[]);
    s.ws.assert_running("after fragmented messages");
}

/// Messages of the usual boundary sizes up to exactly the limit (`argv[2]`)
/// come back; one byte more, in one frame or in two fragments, is closed with
/// 1009. Each of those clients first sends a marker, so that the test can find
/// what its service connection received.
const PYTHON_LIMIT: &str = r#"
limit = int(args[0])

def payload(n, text):
    m = ("0123456789abcdef" * (n // 16 + 1))[:n]
    return m if text else (bytes(range(256)) * (n // 256 + 1))[:n]

c = ws("/big")
for i, n in enumerate([0, 125, 126, 65535, 65536, limit - 1, limit, limit]):
    echo(c, payload(n, i % 2 == 1), f"{n} bytes")
c.close()

def over(marker, message):
    c = ws("/big")
    echo(c, marker, "marker")
    try:
        c.send(message)
    except ConnectionClosed:
        pass  # websocketd may close before the client has sent it all
    reason = closed_with(c, 1009, f"{short(marker)}: a message of {limit + 1} bytes")
    print(f"{marker!r}: close 1009 {reason!r}")

over(b"marker: one frame", payload(limit + 1, False))
over(b"marker: two fragments", [payload(limit // 2, False), payload(limit - limit // 2 + 1, False)])
over(b"marker: text", payload(limit + 1, True))
echo(ws("/big"), "after", "a new client")
print("ok")
"#;

/// The service `big` records each connection: an echo (`tee`) that keeps a copy
/// of what it received in `<dir>/conn-<pid>`, renamed from `.part` once the
/// connection has ended.
const RECORDING_ECHO: &str =
    "#!/bin/sh\nf=\"$1/conn-$$\"\ntee \"$f.part\" && mv \"$f.part\" \"$f\"\n";

#[test]
fn messages_up_to_max_message_size_pass_and_one_byte_more_is_closed_1009() {
    const LIMIT: usize = 1 << 20;
    let w = World::new();
    let conns = w.path().join("received");
    std::fs::create_dir(&conns).unwrap();
    let script = w.path().join("record.sh");
    std::fs::write(&script, RECORDING_ECHO).unwrap();
    let _big = w.socat_service(
        "big",
        &format!("/bin/sh {} {}", script.display(), conns.display()),
    );
    let mut ws = websocketd(&w, "websocketd", &["--max-message-size", "1M"]);
    let run = run_python(&w, "limit", PYTHON_LIMIT, &ws, &[&LIMIT.to_string()]);
    ws.assert_running("after oversized messages");

    // The readiness probe, the client of the sizes, three over the limit and the
    // last one: six service connections, each recorded once it has ended.
    let deadline = Instant::now() + READY_TIMEOUT;
    let recorded = loop {
        let done: Vec<Vec<u8>> = std::fs::read_dir(&conns)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none())
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        if done.len() == 6 {
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 6 service connections ended\n{}",
            done.len(),
            ws.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    for marker in ["one frame", "two fragments", "text"] {
        let marker = format!("marker: {marker}");
        let framed = [&(marker.len() as u32).to_be_bytes()[..], marker.as_bytes()].concat();
        let got = recorded
            .iter()
            .find(|r| r.starts_with(&framed))
            .unwrap_or_else(|| panic!("no service connection began with {marker:?}"));
        assert!(
            *got == framed,
            "{marker:?}: the service received {} bytes after the marker (the \
             oversized message must not reach it)\n{}",
            got.len() - framed.len(),
            run.report()
        );
    }
    let sizes = [0, 125, 126, 65535, 65536, LIMIT - 1, LIMIT, LIMIT];
    let all: usize = sizes.iter().map(|n| 4 + n).sum();
    assert!(
        recorded.iter().any(|r| r.len() == all),
        "no service connection received the {all} bytes of the sized messages: {:?}",
        recorded.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Refusals: origins, unknown services, too many connections, slow requests.

/// Against three websocketd (argv: ports): the default same-origin policy,
/// `--origin http://app.example`, `--allow-any-origin`.
const PYTHON_ORIGINS: &str = r#"
same, listed, anyone = (int(a) for a in args)

echo(ws("/echo", port=same, origin=f"http://127.0.0.1:{same}"), "same origin", "same origin")
echo(ws("/echo", port=same), "no Origin: not a browser", "no Origin")
refused("/echo", 403, "another site", port=same, origin="http://evil.example")
refused("/echo", 403, "same host, other port", port=same, origin=f"http://127.0.0.1:{listed}")
refused("/echo", 403, "https page for a ws listener", port=same, origin=f"https://127.0.0.1:{same}")

echo(ws("/echo", port=listed, origin="http://app.example"), "listed", "listed origin")
refused("/echo", 403, "own origin, not listed", port=listed, origin=f"http://127.0.0.1:{listed}")
refused("/echo", 403, "another site", port=listed, origin="http://evil.example")

echo(ws("/echo", port=anyone, origin="http://evil.example"), "any", "any origin")
print("ok")
"#;

#[test]
fn origins_same_listed_and_any_refused_with_403_and_logged() {
    let mut s = echo_setups(&[
        ("websocketd-same", &[]),
        ("websocketd-listed", &["--origin", "http://app.example"]),
        ("websocketd-any", &["--allow-any-origin"]),
    ]);
    s.run_python_on_all("origins", PYTHON_ORIGINS);
    wait_for_log(
        &mut s.ws,
        &[
            "HTTP request refused",
            "status=403",
            r#"origin "http://evil.example" not allowed"#,
        ],
    );
}

/// What the DNS rebinding clients share. Each request is dialled to 127.0.0.1
/// whatever host its URL names (`sock=`), as by a browser whose DNS answered
/// that name with 127.0.0.1; the `websockets` client then sends that name as
/// Host, and the page's Origin.
const PYTHON_DIAL: &str = r#"
def dial(p=port):
    return socket.create_connection(("127.0.0.1", p), timeout=10)

def served(host, what, p=port, **kw):
    c = ws("/echo", port=p, host=host, sock=dial(p), **kw)
    echo(c, what, what)
    c.close()
"#;

/// The default websocketd, with a static directory: a rebinding page gets 421,
/// for a WebSocket or a file; the daemon's own names and origins work.
const PYTHON_REBINDING: &str = r#"
import http.client

# The attack: a page of evil.example, whose name now resolves to 127.0.0.1.
r = refused("/echo", 421, "rebinding", host="evil.example", sock=dial(),
            origin=f"http://evil.example:{port}")
print(f"rebinding: {r.status_code} {r.body.decode().strip()}")
refused("/echo", 421, "unknown Host, no Origin", host="evil.example", sock=dial())
refused("/echo", 421, "a name not given with --public-host", host="ws.test", sock=dial(),
        origin=f"http://ws.test:{port}")
# The daemon's own names, and its own origins.
served("127.0.0.1", "by address", origin=f"http://127.0.0.1:{port}")
served("localhost", "by localhost", origin=f"http://localhost:{port}")
served("127.0.0.1", "page from localhost", origin=f"http://localhost:{port}")
served("127.0.0.1", "no Origin: not a browser")
served("localhost", "no Origin, localhost")
refused("/echo", 403, "own Host, other origin", sock=dial(), origin=f"http://evil.example:{port}")

# Static files: the same Host check.
def get(host):
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h.request("GET", "/", headers={"Host": host})
    r = h.getresponse()
    body = r.read()
    h.close()
    return r.status, body
expect("static file, rebinding: status", get(f"evil.example:{port}")[0], 421)
expect("static file, own host", get(f"127.0.0.1:{port}"), (200, b"<h1>home</h1>\n"))
print("ok")
"#;

/// A C pongd serving `echo` that counts its clients (`clients` of them, plus
/// its readiness probe), and a websocketd in front of it with `args`.
fn counted_echo(w: &World, clients: usize, args: &[&str]) -> (Proc, Daemon) {
    let pongd = w.compile("pongd");
    let pongd = w.c_pongd(&pongd, "echo", clients);
    (pongd, websocketd(w, "websocketd", args))
}

#[test]
fn dns_rebinding_is_refused_421_before_the_service_is_connected() {
    let w = World::new();
    let www = w.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<h1>home</h1>\n").unwrap();
    let (pongd, mut ws) = counted_echo(&w, 5, &["--static-dir", www.to_str().unwrap()]);
    let body = format!("{PYTHON_DIAL}{PYTHON_REBINDING}");
    let run = run_python(&w, "rebinding", &body, &ws, &[]);
    assert!(
        run.stdout
            .contains(r#"rebinding: 421 421 Misdirected Request: host "evil.example:"#),
        "{}",
        run.report()
    );
    wait_for_log(
        &mut ws,
        &["HTTP request refused", "status=421", "evil.example"],
    );
    // The refused clients never reached the service: 5 did, as the daemon
    // and the service count them.
    assert_eq!(ws.connected(None), 5, "{}", ws.log());
    drop(ws);
    assert_pongd_done(pongd, 5);
}

/// `--public-host ws.test`: that name and its origins work, http or https
/// (behind a TLS terminator); other names and origins do not.
const PYTHON_PUBLIC_HOST: &str = r#"
served("ws.test", "public host", origin=f"http://ws.test:{port}")
served("WS.test.", "public host, as written otherwise")
served("127.0.0.1", "page behind a TLS terminator", origin="https://ws.test")
refused("/echo", 403, "public host, other origin", host="ws.test", sock=dial(),
        origin=f"http://evil.example:{port}")
refused("/echo", 403, "public host, other port", host="ws.test", sock=dial(),
        origin=f"http://ws.test:{port + 1}")
refused("/echo", 421, "rebinding", host="evil.example", sock=dial(),
        origin=f"http://evil.example:{port}")
print("ok")
"#;

#[test]
fn public_host_names_the_daemon_and_its_origins() {
    let w = World::new();
    let (pongd, ws) = counted_echo(&w, 3, &["--public-host", "ws.test"]);
    let body = format!("{PYTHON_DIAL}{PYTHON_PUBLIC_HOST}");
    run_python(&w, "public-host", &body, &ws, &[]);
    assert_eq!(ws.connected(None), 3, "{}", ws.log());
    drop(ws);
    assert_pongd_done(pongd, 3);
}

/// Paths that name no service (or an invalid name) are answered 404.
const PYTHON_NOT_FOUND: &str = r#"
for path in ["/nope", "/", "/..", "/echo/../nope"]:
    refused(path, 404, path)
echo(ws("/echo"), "still there", "/echo")
print("ok")
"#;

#[test]
fn unknown_services_are_answered_404() {
    let mut s = echo_setup(&[]);
    run_python(&s.w, "not-found", PYTHON_NOT_FOUND, &s.ws, &[]);
    wait_for_log(&mut s.ws, &["refused", "service=nope", "unknown service"]);
}

/// `argv[2]` clients at most: the next is answered 503 (Retry-After: 1); once
/// one leaves, a new one gets in.
const PYTHON_MAX_CONNECTIONS: &str = r#"
limit = int(args[0])
cs = [ws("/echo") for _ in range(limit)]
for i, c in enumerate(cs):
    echo(c, f"client {i}", f"client {i}")
r = refused("/echo", 503, "one client too many")
expect("Retry-After", r.headers.get("Retry-After"), "1")
cs.pop().close()
deadline = time.monotonic() + 5
while True:
    try:
        c = ws("/echo")
        break
    except InvalidStatus as e:
        expect("status while the place is being freed", e.response.status_code, 503)
        if time.monotonic() > deadline:
            sys.exit("still refused 5 s after a client left")
        time.sleep(0.02)
echo(c, "admitted", "the new client")
for i, c in enumerate(cs):
    echo(c, f"client {i} still here", f"client {i}")
print("ok")
"#;

#[test]
fn max_connections_answers_503() {
    let mut s = echo_setup(&["--max-connections", "3"]);
    run_python(
        &s.w,
        "max-connections",
        PYTHON_MAX_CONNECTIONS,
        &s.ws,
        &["3"],
    );
    wait_for_log(&mut s.ws, &["refused reason=\"too many connections\""]);
}

/// Connects, sends `sent`, and reads until websocketd closes; returns what came
/// and how long that took.
fn send_and_wait_for_close(addr: std::net::SocketAddr, sent: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let started = Instant::now();
    s.write_all(sent).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "not closed by websocketd ({e}) after {:?}; got {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (got, started.elapsed())
}

#[test]
fn client_that_never_finishes_its_request_is_closed_at_header_timeout() {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    for (label, fixed) in [("routed", &[][..]), ("fixed", &["--service", "echo"][..])] {
        let args = [&["--header-timeout", "1s"][..], fixed].concat();
        let mut ws = websocketd(&w, &format!("websocketd-{label}"), &args);
        let half = format!(
            "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n",
            ws.addr
        );
        for (what, sent) in [("silent", &b""[..]), ("half a request", half.as_bytes())] {
            let (got, took) = send_and_wait_for_close(ws.addr, sent);
            let got = String::from_utf8_lossy(&got);
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_secs(4),
                "{label}, {what} client: closed after {took:?}, want about 1 s; got {got:?}"
            );
            assert!(
                got.starts_with("HTTP/1.1 408 "),
                "{label}, {what} client: closed without a 408 answer: {got:?}\n{}",
                ws.log()
            );
        }
        wait_for_log(&mut ws, &["HTTP request timeout"]);
        ws.assert_running("after slow clients");
    }
}

// ---------------------------------------------------------------------------
// Subprotocols, pings, static files, wss.

/// websocketd prefers `chat.v2`, then `chat` (--subprotocol, in that order).
const PYTHON_SUBPROTOCOLS: &str = r#"
for offered, chosen in [(["chat", "chat.v2"], "chat.v2"), (["chat"], "chat"),
                        (["other", "chat"], "chat"), (["other"], None), (None, None)]:
    c = ws("/echo", subprotocols=offered)
    expect(f"offered {offered}: chosen", c.subprotocol, chosen)
    echo(c, f"with {chosen}", f"offered {offered}")
    c.close()
print("ok")
"#;

#[test]
fn subprotocol_is_negotiated_in_the_servers_order() {
    let s = echo_setup(&["--subprotocol", "chat.v2", "--subprotocol", "chat"]);
    run_python(&s.w, "subprotocols", PYTHON_SUBPROTOCOLS, &s.ws, &[]);
}

/// With --ping-interval 1s --idle-timeout 2s: a `websockets` client that sends
/// nothing but answers pings stays; a raw client that completed the upgrade
/// but never answers is closed after a few pings.
const PYTHON_PINGS: &str = r#"
good = ws("/echo")
echo(good, "before the silence", "good client")

key = base64.b64encode(os.urandom(16)).decode()
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
raw.sendall((f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += recv_exact(raw, 1)
expect("raw client's upgrade", head.split(b"\r\n")[0], b"HTTP/1.1 101 Switching Protocols")
upgraded = time.monotonic()
# It reads (so that its buffer never fills) but never answers.
frames = b""
while True:
    try:
        chunk = raw.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    frames += chunk
took = time.monotonic() - upgraded
# Server frames are unmasked; pings and a close are short (length < 126).
opcodes, close = [], None
i = 0
while i + 1 < len(frames):
    n = frames[i + 1] & 0x7F
    opcodes.append(frames[i] & 0x0F)
    if opcodes[-1] == 0x8 and n >= 2:
        close = (struct.unpack(">H", frames[i + 2:i + 4])[0], frames[i + 4:i + 2 + n])
    i += 2 + n
pings = opcodes.count(0x9)
print(f"raw client closed after {took:.2f} s, opcodes {opcodes}, close {close}")
if not 2 <= took < 6:
    sys.exit(f"the raw client was closed after {took:.2f} s, want 2 to 6 s")
if pings < 2:
    sys.exit(f"the raw client got {pings} pings before it was closed")
# Closed as a client that stopped answering (1011, as the websockets library
# does too), not as one whose service went away.
if close is None or close[0] != 1011 or b"ping" not in close[1]:
    sys.exit(f"the raw client was closed with {close}, want 1011 saying it answered no ping")

# The good client was just as quiet, for longer than --idle-timeout: still there.
echo(good, "after the silence", "good client")
good.close()
print("ok")
"#;

#[test]
fn pings_keep_answering_clients_and_close_silent_ones() {
    let mut s = echo_setup(&["--ping-interval", "1s", "--idle-timeout", "2s"]);
    run_python(&s.w, "pings", PYTHON_PINGS, &s.ws, &[]);
    wait_for_log(&mut s.ws, &["keepalive failed", "no answer to 2 pings"]);
}

/// Python's `http.client` against --static-dir: files with their content
/// types, HEAD, nothing outside the directory; and a WebSocket from the
/// page's origin on the same port.
const PYTHON_STATIC: &str = r#"
import http.client

def get(method, path):
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h.request(method, path)
    r = h.getresponse()
    body = r.read()
    h.close()
    return r, body

for path, ctype, body in [
    ("/", "text/html; charset=utf-8", b"<h1>home</h1>\n"),
    ("/index.html", "text/html; charset=utf-8", b"<h1>home</h1>\n"),
    ("/js/app.js", "text/javascript; charset=utf-8", b"new WebSocket('/echo');\n"),
    ("/style.css", "text/css; charset=utf-8", b"h1 { color: red }\n"),
    ("/logo.png", "image/png", b"\x89PNG\r\n\x1a\n"),
]:
    r, got = get("GET", path)
    expect(f"GET {path}: status", r.status, 200)
    expect(f"GET {path}: Content-Type", r.getheader("Content-Type"), ctype)
    expect(f"GET {path}: body", got, body)
r, got = get("HEAD", "/js/app.js")
expect("HEAD: status", r.status, 200)
expect("HEAD: Content-Length", r.getheader("Content-Length"), "24")
expect("HEAD: body", got, b"")

for path in ["/../secret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt",
             "/%2E%2E%2Fsecret.txt", "/..%2fsecret.txt", "/missing.html", "/.hidden"]:
    r, got = get("GET", path)
    expect(f"GET {path}: status", r.status, 404)
    if b"secret" in got:
        sys.exit(f"GET {path}: {got!r}")
r, _ = get("POST", "/")
expect("POST: status", r.status, 405)

echo(ws("/echo", origin=f"http://127.0.0.1:{port}"), "from the page", "page's WebSocket")
print("ok")
"#;

#[test]
fn static_files_with_content_types_and_nothing_outside() {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    let www = w.path().join("www");
    std::fs::create_dir_all(www.join("js")).unwrap();
    for (file, contents) in [
        ("index.html", &b"<h1>home</h1>\n"[..]),
        ("js/app.js", b"new WebSocket('/echo');\n"),
        ("style.css", b"h1 { color: red }\n"),
        ("logo.png", b"\x89PNG\r\n\x1a\n"),
        (".hidden", b"secret"),
    ] {
        std::fs::write(www.join(file), contents).unwrap();
    }
    std::fs::write(w.path().join("secret.txt"), "secret").unwrap();
    let ws = websocketd(
        &w,
        "websocketd",
        &["--static-dir", www.to_str().expect("UTF-8 path")],
    );
    run_python(&w, "static", PYTHON_STATIC, &ws, &[]);
}

/// wss with a certificate of the test CA (`argv[2]`): echoes, the https
/// origin, and a client trusting another CA (`argv[3]`) or speaking plain ws
/// gets no connection.
const PYTHON_WSS: &str = r#"
ca, wrong_ca = args
ctx = ssl.create_default_context(cafile=ca)
c = ws("/echo", scheme="wss", host="localhost", ssl=ctx, origin=f"https://localhost:{port}")
for m in ["over TLS ☃", bytes(range(256)), b"\x00" * 200_000]:
    echo(c, m, f"wss: {short(m)}")
c.close()
refused("/echo", 403, "http origin on wss", scheme="wss", host="localhost", ssl=ctx,
        origin=f"http://localhost:{port}")
try:
    ws("/echo", scheme="wss", host="localhost", ssl=ssl.create_default_context(cafile=wrong_ca))
    sys.exit("a client trusting another CA connected")
except ssl.SSLCertVerificationError as e:
    print(f"other CA: {e.verify_message}")
try:
    ws("/echo")
    sys.exit("plain ws to the wss port connected")
except Exception as e:  # no connection, whatever the error
    print(f"plain ws: {e!r}")
print("ok")
"#;

#[test]
fn wss_with_a_generated_certificate() {
    let w = World::new();
    let pki = certs::generate(w.path(), true);
    let _pongd = w.rust_pongd("echo");
    let cert = pki.server.cert.to_str().expect("UTF-8 path");
    let key = pki.server.key.to_str().expect("UTF-8 path");
    let mut ws = websocketd(&w, "websocketd", &["--cert", cert, "--key", key]);
    let wrong = pki.second_ca.as_ref().unwrap().cert.to_str().unwrap();
    run_python(
        &w,
        "wss",
        PYTHON_WSS,
        &ws,
        &[pki.ca.cert.to_str().unwrap(), wrong],
    );
    ws.assert_running("after wss clients");
}

// ---------------------------------------------------------------------------
// Ends: the service's, the daemon's.

/// A service that closes (`once`: echoes one 5-byte message, then exits) gives
/// its client close 1000; a service killed (`alpha`, after `ready`) gives 1011,
/// and its path is then answered 503; the other service (`beta`) carries on.
const PYTHON_SERVICE_ENDS: &str = r#"
o = ws("/once")
echo(o, "hello", "once")
reason = closed_with(o, 1000, "client of a service that closed")
print(f"service closed: 1000 {reason!r}")

a, b = ws("/alpha"), ws("/beta")
echo(a, "alpha before", "alpha")
echo(b, "beta before", "beta")
print("ready", flush=True)
reason = closed_with(a, 1011, "client of the killed service")
print(f"service killed: 1011 {reason!r}")
echo(b, "beta after", "beta, after alpha died")
refused("/alpha", 503, "the killed service")
print("ok")
"#;

#[test]
fn service_that_closes_gives_1000_and_one_killed_gives_1011() {
    let w = World::new();
    let alpha = w.rust_pongd("alpha");
    let _beta = w.rust_pongd("beta");
    // "hello" in a LibIPC frame is 9 bytes.
    let _once = w.socat_service("once", "head -c 9");
    let mut ws = websocketd(&w, "websocketd", &[]);
    let client = python_until_ready(&w, "service-ends", PYTHON_SERVICE_ENDS, &ws, &[]);
    alpha.kill();
    finish_python(client, "service-ends");
    ws.assert_running("after a service died");
}

/// Clients connected when websocketd gets SIGTERM (after `ready`) get 1001.
const PYTHON_DRAIN: &str = r#"
cs = [ws(f"/echo") for _ in range(int(args[0]))]
for i, c in enumerate(cs):
    echo(c, f"client {i}", f"client {i}")
print("ready", flush=True)
for i, c in enumerate(cs):
    reason = closed_with(c, 1001, f"client {i}")
print(f"going away: 1001 {reason!r}")
print("ok")
"#;

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    let s = echo_setup(&["--workers", "2", "--drain-timeout", "30s"]);
    let client = python_until_ready(&s.w, "drain", PYTHON_DRAIN, &s.ws, &["4"]);
    let signalled = Instant::now();
    s.ws.proc.signal(Signal::SIGTERM);
    finish_python(client, "drain");
    let run = s.ws.proc.wait(CHILD_TIMEOUT);
    run.assert_success("websocketd after SIGTERM");
    // Its clients left when asked: no waiting for the 30 s drain timeout.
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "websocketd took {:?} to exit after SIGTERM\n{}",
        signalled.elapsed(),
        run.report()
    );
    assert!(
        run.stderr.contains("websocketd stopped"),
        "{}",
        run.report()
    );
}

// ---------------------------------------------------------------------------
// Hostile input: each gets its documented answer, and memory stays flat.

/// A client frame (masked, as RFC 6455 wants) with `opcode` and a declared
/// payload length `len` (`payload` may be shorter: the rest never comes).
fn client_frame(opcode: u8, len: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match len {
        0..=125 => f.push(0x80 | len as u8),
        126..=0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// An upgrade request for `path`, then `after` in the same write.
fn upgrade_then(addr: std::net::SocketAddr, path: &str, after: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(after);
    req
}

/// The close code of the close frame at the end of `got` (after the 101).
fn close_code_in(got: &[u8]) -> Option<u16> {
    let body = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &got[i + 4..])?;
    (body.len() >= 4 && body[0] == 0x88).then(|| u16::from_be_bytes([body[2], body[3]]))
}

#[test]
fn hostile_inputs_get_their_answers_and_memory_stays_flat() {
    let s = echo_setup(&[]);
    let addr = s.ws.addr;
    let huge_header = [
        &b"GET /echo HTTP/1.1\r\nX-Filler: "[..],
        &vec![b'a'; 1 << 20],
        b"\r\n\r\n",
    ]
    .concat();
    let long_name = format!("/{}", "n".repeat(10 * 1024));
    // (what, bytes sent, what the answer must start with, close code after a 101)
    let cases: Vec<(&str, Vec<u8>, &str, Option<u16>)> = vec![
        (
            "a frame declaring 2^63 - 1 bytes",
            upgrade_then(addr, "/echo", &client_frame(2, u64::MAX >> 1, b"abc")),
            "HTTP/1.1 101 ",
            Some(1009),
        ),
        (
            "a text frame that is not UTF-8",
            upgrade_then(addr, "/echo", &client_frame(1, 4, b"\xff\xfe\xfd\xfc")),
            "HTTP/1.1 101 ",
            Some(1007),
        ),
        ("1 MiB of headers", huge_header, "HTTP/1.1 431 ", None),
        (
            "a name with ../",
            upgrade_then(addr, "/../etc/passwd", b""),
            "HTTP/1.1 404 ",
            None,
        ),
        (
            "a name with %00",
            upgrade_then(addr, "/echo%00x", b""),
            "HTTP/1.1 404 ",
            None,
        ),
        (
            "a 10 KiB name",
            upgrade_then(addr, &long_name, b""),
            "HTTP/1.1 404 ",
            None,
        ),
    ];
    let mut first_rss = None;
    for round in 0..30 {
        for (what, sent, answer, code) in &cases {
            let (got, _) = send_and_wait_for_close(addr, sent);
            let text = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
            assert!(text.starts_with(answer), "{what}: got {text:?}");
            if code.is_some() {
                assert_eq!(close_code_in(&got), *code, "{what}: got {got:?}");
            }
        }
        if round == 4 {
            // After the allocator has seen every case a few times.
            first_rss = Some(s.ws.rss_kib());
        }
    }
    let (before, after) = (first_rss.expect("measured"), s.ws.rss_kib());
    println!("websocketd RSS after 5 rounds of hostile input: {before} KiB, after 30: {after} KiB");
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 25 rounds of hostile input"
    );
    // Still serving.
    let (got, _) = send_and_wait_for_close(
        addr,
        &upgrade_then(addr, "/echo", &client_frame(8, 2, &1000u16.to_be_bytes())),
    );
    assert_eq!(
        close_code_in(&got),
        Some(1000),
        "a clean close after all that"
    );
}
