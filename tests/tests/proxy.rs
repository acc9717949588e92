//! The daemons behind a load balancer: the PROXY protocol (`--proxy-protocol`,
//! `--proxy-from`), the client description a service can ask for
//! (`--peer-info`), and a real HAProxy (Debian's package) balancing clients
//! over two tcpd with `send-proxy-v2`, one of which is killed.
//!
//!     cargo test -p libipc-tests --test proxy
//!
//! Clients are Python's `socket` and `ssl` modules and the `websockets`
//! library (in the venv `tests/run` makes); HAProxy comes from `tests/run`
//! too. Everything listens on loopback, on ports the programs picked; clients
//! that play "the real client" behind HAProxy bind 127.0.0.2, so that the
//! address a daemon logs can only have come from the PROXY header.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use libipc_tests::certs;
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, PYTHON_FRAMES, READY_TIMEOUT, World, run_cmd, spawn, spawn_with_stdin,
    venv_bin,
};

/// `python3 <label>.py ARGS`, the script being `PYTHON_FRAMES`, then `body`;
/// it must exit 0. Returns its stdout.
fn python(w: &World, label: &str, body: &str, args: &[&str]) -> String {
    let script = w.path().join(format!("{label}.py"));
    std::fs::write(&script, format!("{PYTHON_FRAMES}{body}")).unwrap();
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(script).args(args);
    let run = run_cmd(cmd, w.path(), label, CHILD_TIMEOUT);
    run.assert_success(label);
    run.stdout
}

/// PROXY headers as balancers write them (v1 text, v2 binary), and a check
/// of the peer info a service receives.
const PYTHON_PROXY: &str = r#"
import ipaddress, json

def v1(src, sport, dst="127.0.0.1", dport=9000):
    fam = "TCP4" if ipaddress.ip_address(src).version == 4 else "TCP6"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

def v2(src, sport, dst="127.0.0.1", dport=9000):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        body = s.packed + d.packed + struct.pack(">HH", sport, dport)
        return SIG + bytes([0x21, 0x11]) + struct.pack(">H", len(body)) + body
    d = ipaddress.IPv6Address(f"::ffff:{d}") if d.version == 4 else d
    body = s.packed + d.packed + struct.pack(">HH", sport, dport)
    return SIG + bytes([0x21, 0x21]) + struct.pack(">H", len(body)) + body

V2_LOCAL = SIG + bytes([0x20, 0x00, 0, 0])

def addr(a):
    host, port = a[0], a[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def peer_info(what, payload, **want):
    info = json.loads(payload)
    for k, v in want.items():
        got = info
        for part in k.split("__"):
            got = got.get(part) if isinstance(got, dict) else None
        if got != v:
            sys.exit(f"{what}: peer info {k} = {got!r}, want {v!r} (all: {info})")
    return info
"#;

/// tcpd clients: v1 and v2 headers (whole, and v2 byte by byte), a health
/// check (v2 LOCAL), a trusted balancer that sends no header or a broken one.
const TCPD_TRUSTED: &str = r#"
port = int(sys.argv[1])

# v1 and the raw name in one write: the service hears about 203.0.113.7 first.
s = connect(port)
s.sendall(v1("203.0.113.7", 40001) + b"echo\n" + frame(b"hello"))
check("v1 answer", recv_exact(s, 2), b"ok")
peer_info("v1", recv_frame(s), address="203.0.113.7:40001", via=addr(s.getsockname()))
check("v1 echo", recv_frame(s), b"hello")
s.close()

# v2 with IPv6 addresses, one byte per write, then a framed name.
s = connect(port)
for b in v2("2001:db8::7", 40002):
    s.sendall(bytes([b]))
s.sendall(frame(b"echo"))
check("v2 answer", recv_frame(s), b"ok")
s.sendall(frame(b"x" * 70000))
peer_info("v2", recv_frame(s), address="[2001:db8::7]:40002")
check("v2 echo", recv_frame(s), b"x" * 70000)
s.close()

# A health check (v2 LOCAL) is the balancer itself.
s = connect(port)
s.sendall(V2_LOCAL + b"echo\n")
check("LOCAL answer", recv_exact(s, 2), b"ok")
peer_info("LOCAL", recv_frame(s), address=addr(s.getsockname()), via=addr(s.getsockname()))
s.close()

# A trusted peer must send a header: no answer, the connection closed.
for what, data in [("no header", b"echo\n"), ("broken v1", b"PROXY TCP4 1.2.3.4\r\necho\n"),
                   ("v2 for UDP", SIG + bytes([0x21, 0x12, 0, 12]) + bytes(12) + b"echo\n")]:
    s = connect(port)
    s.sendall(data)
    check(what, recv_all(s), b"")
    s.close()
print("trusted: ok")
"#;

/// tcpd clients from outside --proxy-from (or with no --proxy-protocol at
/// all): served as they are; a PROXY header is a bad handshake.
const TCPD_UNTRUSTED: &str = r#"
port, peer_info_on = int(sys.argv[1]), sys.argv[2] == "peer-info"

s = connect(port)
s.sendall(v1("203.0.113.7", 40001) + b"echo\n")
answer = recv_all(s)
want = b"no: bad handshake: a PROXY protocol header from a client not trusted to send one"
if not answer.startswith(want):
    sys.exit(f"untrusted PROXY header: got {answer!r}")
s.close()

s = connect(port)
s.sendall(b"echo\n" + frame(b"direct"))
check("direct answer", recv_exact(s, 2), b"ok")
if peer_info_on:
    info = peer_info("direct", recv_frame(s), address=addr(s.getsockname()))
    if "via" in info:
        sys.exit(f"a direct client has no balancer: {info}")
check("direct echo", recv_frame(s), b"direct")
s.close()
print("untrusted: ok")
"#;

#[test]
fn tcpd_believes_proxy_headers_only_from_trusted_balancers() {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    let mut trusted = Daemon::start(
        &w,
        "tcpd",
        "tcpd-trusted",
        &[
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1/32",
            "--proxy-from",
            "::1",
            "--peer-info",
        ],
    );
    let port = trusted.addr.port().to_string();
    let out = python(
        &w,
        "trusted",
        &format!("{PYTHON_PROXY}{TCPD_TRUSTED}"),
        &[&port],
    );
    assert!(out.contains("trusted: ok"), "{out}");
    trusted.assert_running("after the trusted clients");
    let log = trusted.log();
    // The connection's log lines name the client the header gave, and the
    // balancer it came through.
    let connected = log
        .lines()
        .find(|l| l.contains("daemon::engine: connected") && l.contains("peer=203.0.113.7:40001"))
        .unwrap_or_else(|| panic!("no connected line for the v1 client\n{log}"));
    assert!(connected.contains("via=127.0.0.1:"), "{connected}");
    assert!(log.contains("peer=[2001:db8::7]:40002"), "{log}");
    for why in [
        "expected a PROXY header first",
        "v1 header too short",
        "v2 header for a datagram connection",
    ] {
        assert!(log.contains(why), "no log line says {why:?}\n{log}");
    }

    // Loopback is not in 10.0.0.0/8: its clients are served as they are.
    let untrusted = Daemon::start(
        &w,
        "tcpd",
        "tcpd-untrusted",
        &[
            "--no-outbound",
            "--proxy-protocol",
            "--proxy-from",
            "10.0.0.0/8",
            "--peer-info",
        ],
    );
    let port = untrusted.addr.port().to_string();
    let body = format!("{PYTHON_PROXY}{TCPD_UNTRUSTED}");
    let out = python(&w, "untrusted", &body, &[&port, "peer-info"]);
    assert!(out.contains("untrusted: ok"), "{out}");
    // No flag at all: the same.
    let plain = Daemon::start(&w, "tcpd", "tcpd-plain", &["--no-outbound"]);
    let port = plain.addr.port().to_string();
    let out = python(&w, "plain", &body, &[&port, "-"]);
    assert!(out.contains("untrusted: ok"), "{out}");
}

/// Fixed mode behind a balancer: its health checks (v2 LOCAL, then a close
/// or a reset) never reach the service; a client does, described.
const FIXED_CLIENTS: &str = r#"
port = int(sys.argv[1])
for how in ["close", "reset"]:
    s = connect(port)
    s.sendall(V2_LOCAL)
    if how == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
s = connect(port)
s.sendall(v1("192.0.2.99", 4242) + frame(b"fixed"))
peer_info("fixed", recv_frame(s), address="192.0.2.99:4242")
check("fixed echo", recv_frame(s), b"fixed")
s.close()
print("fixed: ok")
"#;

#[test]
fn health_checks_of_a_balancer_never_reach_a_fixed_service() {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    let mut tcpd = Daemon::start(
        &w,
        "tcpd",
        "tcpd-fixed",
        &[
            "--service",
            "echo",
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1",
            "--peer-info",
            "--log-level",
            "info,daemon::engine=debug",
        ],
    );
    let port = tcpd.addr.port().to_string();
    let out = python(
        &w,
        "fixed",
        &format!("{PYTHON_PROXY}{FIXED_CLIENTS}"),
        &[&port],
    );
    assert!(out.contains("fixed: ok"), "{out}");
    tcpd.proc
        .wait_for_stderr_lines("balancer health check", 2, READY_TIMEOUT);
    tcpd.proc
        .wait_for_stderr_line("connection closed", READY_TIMEOUT);
    // One client reached the service; the checks are neither connections to
    // it nor failures.
    assert_eq!(tcpd.connected(Some("echo")), 1, "{}", tcpd.log());
    let log = tcpd.log();
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn proxy_flags_are_checked_at_startup() {
    let w = World::new();
    for (args, says) in [
        (&["--proxy-protocol"][..], "--proxy-from <CIDR>"),
        (&["--proxy-from", "10.0.0.0/8"][..], "--proxy-protocol"),
        (
            &["--proxy-protocol", "--proxy-from", "10.0.0.0/33"][..],
            "prefix length must be 0 to 32",
        ),
        (
            &["--proxy-protocol", "--proxy-from", "balancer.example"][..],
            "not an IP address or network",
        ),
    ] {
        let run = run_cmd(
            Daemon::command(&w, "tcpd", args),
            w.path(),
            "tcpd-bad-flags",
            CHILD_TIMEOUT,
        );
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(2),
            "{args:?}\n{}",
            run.report()
        );
        assert!(
            run.stderr.contains(says),
            "{args:?}: want {says:?}\n{}",
            run.report()
        );
    }
}

/// A TLS client behind a balancer, with a client certificate; `fixed`: tlsd
/// in fixed mode (no name to send).
const TLS_CLIENT: &str = r#"
import ssl
port, ca, cert, key, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["ipc"])
raw = connect(int(port))
raw.sendall(v2("198.51.100.9", 50123))
s = ctx.wrap_socket(raw, server_hostname="localhost")
if mode == "routed":
    s.sendall(b"echo\n")
    check("answer", recv_exact(s, 2), b"ok")
s.sendall(frame(b"over tls"))
peer_info("tls", recv_frame(s), address="198.51.100.9:50123", via=addr(s.getsockname()),
          tls__version="TLSv1_3", tls__server_name="localhost", tls__alpn="ipc",
          tls__identity='CN=["alice"] SAN=["dns:alice.example"]')
check("echo", recv_frame(s), b"over tls")
s.close()
print("tls: ok")
"#;

#[test]
fn tlsd_behind_a_balancer_tells_the_service_who_the_client_is() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let client = pki
        .ca
        .client(w.path(), "alice", "alice", &["alice.example"]);
    let _pongd = w.rust_pongd("echo");
    let ca = pki.ca.cert.to_str().unwrap();
    let tls_args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--cert",
            pki.server.cert.to_str().unwrap(),
            "--key",
            pki.server.key.to_str().unwrap(),
            "--client-ca",
            ca,
            "--allow-san",
            "alice.example",
            "--alpn",
            "ipc",
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.0/8",
            "--peer-info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let body = format!("{PYTHON_PROXY}{TLS_CLIENT}");
    for (label, extra, mode) in [
        ("routed", &[][..], "routed"),
        ("fixed", &["--service", "echo"][..], "fixed"),
    ] {
        let args = tls_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut tlsd = Daemon::start(&w, "tlsd", &format!("tlsd-{label}"), &args);
        let port = tlsd.addr.port().to_string();
        let out = python(
            &w,
            &format!("tls-{label}"),
            &body,
            &[
                &port,
                ca,
                client.cert.to_str().unwrap(),
                client.key.to_str().unwrap(),
                mode,
            ],
        );
        assert!(out.contains("tls: ok"), "{out}");
        tlsd.assert_running("after the client");
        if label == "fixed" {
            // In fixed mode the service is connected once the TLS handshake is
            // done: a client that sends its PROXY header and then nothing, and
            // one that stops halfway through its handshake, never reach it.
            let mut idle = std::net::TcpStream::connect(tlsd.addr).unwrap();
            idle.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n\x16\x03\x01")
                .unwrap();
            let connected_before = tlsd.connected(Some("echo"));
            drop(idle);
            tlsd.proc
                .wait_for_stderr_line("closed during the TLS handshake", READY_TIMEOUT);
            assert_eq!(
                tlsd.connected(Some("echo")),
                connected_before,
                "{}",
                tlsd.log()
            );
            assert_eq!(connected_before, 1, "{}", tlsd.log());
        }
    }
}

/// A WebSocket client (the `websockets` library) on a socket that has sent
/// a PROXY header first, as a balancer in front of websocketd would.
const WS_CLIENT: &str = r#"
from websockets.sync.client import connect as ws_connect
port = int(sys.argv[1])
raw = connect(port)
raw.sendall(v1("192.0.2.44", 61000))
with ws_connect(f"ws://127.0.0.1:{port}/echo?room=7", sock=raw,
                origin="https://app.example.org", subprotocols=["chat"]) as ws:
    ws.send("hello")
    peer_info("ws", ws.recv(timeout=10), address="192.0.2.44:61000",
              websocket__path="/echo?room=7", websocket__origin="https://app.example.org",
              websocket__subprotocol="chat")
    check("echo", ws.recv(timeout=10), "hello")
print("ws: ok")
"#;

#[test]
fn websocketd_behind_a_balancer_tells_the_service_the_request() {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    let mut ws = Daemon::start(
        &w,
        "websocketd",
        "websocketd",
        &[
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1",
            "--peer-info",
            "--origin",
            "https://app.example.org",
            "--subprotocol",
            "chat",
        ],
    );
    let port = ws.addr.port().to_string();
    let out = python(&w, "ws", &format!("{PYTHON_PROXY}{WS_CLIENT}"), &[&port]);
    assert!(out.contains("ws: ok"), "{out}");
    ws.assert_running("after the client");
    assert!(ws.log().contains("peer=192.0.2.44:61000"), "{}", ws.log());
}

/// Clients of HAProxy, from 127.0.0.2: `first` of them connect and exchange
/// numbered messages; once all are connected they print their local ports
/// (the test then kills one tcpd) and go on for `rounds` more messages each;
/// then `later` new clients connect. Prints one line per client:
/// `first|later PORT ok`, or what went wrong.
const BALANCED_CLIENTS: &str = r#"
import threading
port, first, later, rounds = (int(a) for a in sys.argv[1:5])

def client():
    s = socket.socket()
    s.settimeout(10)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"echo\n")
    if recv_exact(s, 2) != b"ok":
        sys.exit("no ok")
    return s

def recv_frame_or_none(s):
    head = b""
    while len(head) < 4:
        c = s.recv(4 - len(head))
        if not c:
            return None
        head += c
    (n,) = struct.unpack(">I", head)
    return recv_exact(s, n)

def talk(s, start, n, result):
    # Numbered messages in lock step, each checked.
    try:
        for i in range(start, start + n):
            m = f"{s.getsockname()[1]}:{i}:".encode() * (1 + i % 50)
            s.sendall(frame(m))
            got = recv_frame_or_none(s)
            if got is None:
                result.append(f"closed after {i} messages")
                return
            if got != m:
                result.append(f"wrong echo of message {i}: {got[:60]!r}")
                return
    except OSError as e:
        result.append(f"error at message {i}: {e!r}")

socks = [client() for _ in range(first)]
results = [[] for _ in socks]
for s, r in zip(socks, results):
    talk(s, 0, 10, r)
print("ports " + " ".join(str(s.getsockname()[1]) for s in socks), flush=True)
threads = [threading.Thread(target=talk, args=(s, 10, rounds, r)) for s, r in zip(socks, results) if not r]
for t in threads: t.start()
for t in threads: t.join()
for s, r in zip(socks, results):
    print(f"first {s.getsockname()[1]} {r[0] if r else 'ok'}")
for _ in range(later):
    s, r = client(), []
    talk(s, 0, 20, r)
    print(f"later {s.getsockname()[1]} {r[0] if r else 'ok'}")
    s.close()
print("done", flush=True)
"#;

#[test]
fn haproxy_balances_two_tcpd_and_the_survivor_loses_nothing() {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    // Two tcpd on one RUNDIR: only one may offer the outbound service. Health
    // checks are logged at debug level.
    let args = [
        "--no-outbound",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1",
        "--log-level",
        "info,daemon::engine=debug",
    ];
    let mut a = Daemon::start(&w, "tcpd", "tcpd-a", &args);
    let mut b = Daemon::start(&w, "tcpd", "tcpd-b", &args);
    // Health checks every 200 ms (with a PROXY header, so tcpd takes them for
    // what they are); a dead server is out after one failed check, and a
    // connection that fails meanwhile is sent to the other.
    // HAProxy serves a listener the test made (port 0, picked by the kernel),
    // handed over as its stdin: `bind fd@0`.
    let config = format!(
        "global\n  maxconn 1000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch\n\
         frontend front\n  bind fd@0\n  default_backend tcpds\n\
         backend tcpds\n  balance roundrobin\n  \
           server a {} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1\n  \
           server b {} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1\n",
        a.addr, b.addr
    );
    let cfg = w.path().join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg);
    let listener = Stdio::from(OwnedFd::from(front));
    let mut haproxy = spawn_with_stdin(cmd, w.path(), "haproxy", listener);
    // Ready once HAProxy checked both servers (a PROXY header saying LOCAL,
    // then a close).
    for d in [&mut a, &mut b] {
        d.proc
            .wait_for_stderr_line("balancer health check", READY_TIMEOUT);
    }
    assert!(haproxy.running(), "HAProxy exited");

    let script = w.path().join("balanced.py");
    std::fs::write(&script, format!("{PYTHON_FRAMES}{BALANCED_CLIENTS}")).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args([
        front_port.to_string(),
        "40".into(),
        "10".into(),
        "300".into(),
    ]);
    let mut clients = spawn(cmd, w.path(), "clients");
    let out = clients.wait_for_stdout("the clients' ports", CHILD_TIMEOUT, |o| {
        o.starts_with(b"ports ") && o.contains(&b'\n')
    });
    // Kill one while every client is busy; the survivor's must not notice.
    let killed = a.proc.kill();
    let ports: BTreeSet<u16> = String::from_utf8_lossy(&out).lines().next().unwrap()
        ["ports ".len()..]
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let run = clients.wait(CHILD_TIMEOUT);
    run.assert_success("the clients");

    // Each tcpd logged the clients it served under their real address.
    let served_by = |log: &str| -> BTreeSet<u16> {
        log.lines()
            .filter(|l| l.contains("daemon::engine: connected") && l.contains("via=127.0.0.1:"))
            .filter_map(|l| l.split("peer=127.0.0.2:").nth(1))
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let on_a = served_by(&killed.stderr);
    let on_b = served_by(&b.log());
    assert_eq!(
        &on_a | &on_b,
        ports
            .iter()
            .copied()
            .chain(later_ports(&run.stdout))
            .collect(),
        "every client is logged under its own address by one tcpd\n--- a ---\n{}\n--- b ---\n{}",
        killed.stderr,
        b.log()
    );
    assert!(
        ports.iter().any(|p| on_a.contains(p)) && ports.iter().any(|p| on_b.contains(p)),
        "not balanced: {on_a:?} {on_b:?}"
    );
    for line in run.stdout.lines() {
        let mut f = line.splitn(3, ' ');
        let (kind, port, outcome) = match (f.next(), f.next(), f.next()) {
            (Some(k @ ("first" | "later")), Some(p), Some(o)) => (k, p.parse::<u16>().unwrap(), o),
            _ => continue,
        };
        if kind == "later" || on_b.contains(&port) {
            // New clients (all on the survivor), and the survivor's old ones.
            assert_eq!(outcome, "ok", "{kind} client {port}\n{}", run.report());
            assert!(
                on_b.contains(&port),
                "{kind} client {port} not on b\n{}",
                b.log()
            );
        } else {
            assert_ne!(
                outcome,
                "ok",
                "client {port} of the killed tcpd went on?\n{}",
                run.report()
            );
            assert!(!outcome.starts_with("wrong"), "client {port}: {outcome}");
        }
    }
    assert_eq!(later_ports(&run.stdout).len(), 10, "{}", run.report());
    b.assert_running("after the balancer test");
    assert!(haproxy.running(), "HAProxy exited");
}

/// The ports of the `later` clients in the clients' report.
fn later_ports(out: &str) -> Vec<u16> {
    out.lines()
        .filter_map(|l| l.strip_prefix("later "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}
