//! Floods of what a client can make a daemon answer, against the real
//! `websocketd`: a client that sends pings (125-byte payloads, the most a
//! control frame may carry) as fast as it can for 10 s and never reads the
//! pongs, over ws and over wss.
//!
//!     cargo test -p libipc-tests --test flood
//!
//! What a user would check: websocketd's memory stays under [`RSS_LIMIT_KIB`]
//! during the flood and after the flooder leaves, and an ordinary client of
//! the same daemon is served afterwards. The flooder is raw Python
//! (`socket`, `ssl` for wss: no WebSocket library floods pings), after a
//! proper upgrade; the ordinary client is Python's `websockets`. The flood is
//! bounded in time ([`FLOOD`]) and bytes ([`FLOOD_CAP`]); RSS is sampled
//! while it runs, and the test fails at the first sample over the limit.

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use libipc_tests::{CHILD_TIMEOUT, Daemon, PYTHON_FRAMES, World, certs, run_cmd, spawn, venv_bin};

/// How long the flooder sends pings.
const FLOOD: Duration = Duration::from_secs(10);

/// Most bytes of pings the flooder sends (far more than 10 s on loopback
/// would, unless nothing stops them).
const FLOOD_CAP: u64 = 64 << 30;

/// websocketd's resident memory must stay under this (an idle one: ~5 MiB).
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// How often the daemon's memory is sampled during the flood.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// argv: port, seconds, byte cap, then the CA file for wss (none: ws).
/// Upgrades on `/echo`, prints `flooding`, then writes masked pings with
/// 125-byte payloads until the time or the cap is reached, never reading;
/// prints what it sent, and `ok`.
const PYTHON_PING_FLOOD: &str = r#"
import base64, os, socket, ssl, time

port, seconds, cap = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
ca = sys.argv[4] if len(sys.argv) > 4 else None
host = "localhost" if ca else "127.0.0.1"
s = socket.create_connection(("127.0.0.1", port), timeout=10)
if ca:
    s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f"GET /echo HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
          f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(f"closed during the upgrade: {head!r}")
    head += chunk
check("upgrade answer", head[:13], b"HTTP/1.1 101 ")

mask = os.urandom(4)
ping = bytes([0x89, 0x80 | 125]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"p" * 125))
batch = ping * 512
print("flooding", flush=True)
# Short timeouts so that a flood that cannot get through still ends on time;
# a write that timed out is retried with the same bytes (whole frames only,
# and what OpenSSL wants for a retried write).
s.settimeout(0.2)
sent, off, end = 0, 0, time.monotonic() + seconds
while time.monotonic() < end and sent < cap:
    try:
        n = s.send(batch[off:])
    except (socket.timeout, ssl.SSLWantWriteError):
        continue
    except OSError as e:
        print(f"closed by websocketd: {e!r}")
        break
    sent += n
    off = (off + n) % len(batch)
print(f"sent {sent} bytes of pings ({sent // len(ping)} pings)")
print("ok")
"#;

/// argv: port, then the CA file for wss (none: ws). One echo on `/echo` with
/// Python's `websockets`.
const PYTHON_ECHO: &str = r#"
import ssl
from websockets.sync.client import connect

port = int(sys.argv[1])
ca = sys.argv[2] if len(sys.argv) > 2 else None
url = f"wss://localhost:{port}/echo" if ca else f"ws://127.0.0.1:{port}/echo"
ctx = ssl.create_default_context(cafile=ca) if ca else None
with connect(url, ssl=ctx, open_timeout=10, close_timeout=10) as c:
    c.send("still served after the flood")
    check("echo", c.recv(timeout=10), "still served after the flood")
print("ok")
"#;

/// Runs `body` (after [`PYTHON_FRAMES`]) with the venv's Python and `args`.
fn python(w: &World, label: &str, body: &str, args: &[&str]) -> Command {
    let script = w.path().join(format!("client-{label}.py"));
    std::fs::write(&script, format!("{PYTHON_FRAMES}{body}")).expect("write the script");
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg("-u").arg(script).args(args);
    cmd
}

/// Floods websocketd (wss when `tls`) with pings for [`FLOOD`], checking its
/// memory all along and after, then that it still echoes.
fn ping_flood(tls: bool) {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    let pki = tls.then(|| certs::generate(w.path(), false));
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_owned();
    let (mut daemon_args, mut client_args) = (Vec::new(), Vec::new());
    if let Some(pki) = &pki {
        daemon_args = vec![
            "--cert".to_owned(),
            path(&pki.server.cert),
            "--key".to_owned(),
            path(&pki.server.key),
        ];
        client_args.push(path(&pki.ca.cert));
    }
    let daemon_args: Vec<&str> = daemon_args.iter().map(String::as_str).collect();
    let mut ws = Daemon::start(&w, "websocketd", "websocketd", &daemon_args);
    let port = ws.addr.port().to_string();
    let (seconds, cap) = (FLOOD.as_secs().to_string(), FLOOD_CAP.to_string());
    let mut flood_args = vec![port.as_str(), seconds.as_str(), cap.as_str()];
    flood_args.extend(client_args.iter().map(String::as_str));
    let mut flooder = spawn(
        python(&w, "flood", PYTHON_PING_FLOOD, &flood_args),
        w.path(),
        "flood",
    );
    flooder.wait_for_stdout("flooding", CHILD_TIMEOUT, |out| {
        out.ends_with(b"flooding\n")
    });
    let started = Instant::now();
    let mut peak = 0;
    while flooder.running() && started.elapsed() < CHILD_TIMEOUT {
        let rss = ws.rss_kib();
        peak = peak.max(rss);
        if rss >= RSS_LIMIT_KIB {
            let took = started.elapsed();
            ws.proc.fail(&format!(
                "websocketd's RSS reached {rss} KiB after {took:.1?} of ping flood (limit {RSS_LIMIT_KIB} KiB)"
            ));
        }
        sleep(SAMPLE_EVERY);
    }
    let run = flooder.wait(CHILD_TIMEOUT);
    run.assert_success("the ping flooder");
    let after = ws.rss_kib();
    let sent = run
        .stdout
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or("");
    println!("ping flood: {sent}; websocketd RSS peak {peak} KiB, after {after} KiB");
    assert!(
        after < RSS_LIMIT_KIB,
        "websocketd's RSS is {after} KiB after the flooder left (limit {RSS_LIMIT_KIB} KiB)"
    );
    ws.assert_running("after the ping flood");
    let mut echo_args = vec![port.as_str()];
    echo_args.extend(client_args.iter().map(String::as_str));
    run_cmd(
        python(&w, "echo", PYTHON_ECHO, &echo_args),
        w.path(),
        "echo",
        CHILD_TIMEOUT,
    )
    .assert_success("an ordinary client after the flood");
}

#[test]
fn ping_flood_over_ws_keeps_websocketd_memory_bounded() {
    ping_flood(false);
}

#[test]
fn ping_flood_over_wss_keeps_websocketd_memory_bounded() {
    ping_flood(true);
}
