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
use libipc_tests::clients::{routed_echo, tcp, tls, tls_config, until_closed};
use libipc_tests::metrics::{scrape_until, series};
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, READY_TIMEOUT, World, pongd_clients_in_all, run_cmd, spawn,
    spawn_with_stdin,
};

/// Runs the Python client `tests/py/<script>` (a `proxy_*.py`) with `args`;
/// it must exit 0. Returns its stdout.
fn python(w: &World, label: &str, script: &str, args: &[&str]) -> String {
    let mut cmd = libipc_tests::python(script);
    cmd.args(args);
    let run = run_cmd(cmd, w.path(), label, CHILD_TIMEOUT);
    run.assert_success(label);
    run.stdout
}

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
    let out = python(&w, "trusted", "proxy_tcpd_trusted.py", &[&port]);
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
    let script = "proxy_tcpd_untrusted.py";
    let out = python(&w, "untrusted", script, &[&port, "peer-info"]);
    assert!(out.contains("untrusted: ok"), "{out}");
    // No flag at all: the same.
    let plain = Daemon::start(&w, "tcpd", "tcpd-plain", &["--no-outbound"]);
    let port = plain.addr.port().to_string();
    let out = python(&w, "plain", script, &[&port, "-"]);
    assert!(out.contains("untrusted: ok"), "{out}");
}

#[test]
fn health_checks_of_a_balancer_never_reach_a_fixed_service() {
    let w = World::new();
    let pongd = w.rust_pongd("echo");
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
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = tcpd.logged_address("metrics at http://");
    let port = tcpd.addr.port().to_string();
    let out = python(&w, "fixed", "proxy_fixed.py", &[&port]);
    assert!(out.contains("fixed: ok"), "{out}");
    // Logged at debug, as the README says.
    tcpd.proc
        .wait_for_stderr_lines("balancer health check", 2, READY_TIMEOUT);
    // One client reached the service, counted there; the checks are neither
    // connections to it nor failures.
    let body = scrape_until(
        metrics,
        &[
            "ipc_connections_open{daemon=\"tcpd\"} 0",
            "ipc_connections_accepted_total{daemon=\"tcpd\"} 3",
            "ipc_service_connections_total{daemon=\"tcpd\",service=\"echo\"} 1",
        ],
    );
    let failures = series(&body, "ipc_handshake_failures_total");
    assert!(failures.is_empty(), "{body}");
    assert_eq!(pongd_clients_in_all(&w, pongd, "echo"), 1, "{}", tcpd.log());
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

#[test]
fn tlsd_behind_a_balancer_tells_the_service_who_the_client_is() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let client = pki
        .ca
        .client(w.path(), "alice", "alice", &["alice.example"]);
    let pongd = w.rust_pongd("echo");
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
            "proxy_tls.py",
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
            drop(idle);
            // Waited for, so that a connection it made would be counted below.
            tlsd.proc
                .wait_for_stderr_line("closed during the TLS handshake", READY_TIMEOUT);
        }
    }
    // The routed client and the fixed one reached echo; the idle one did not.
    assert_eq!(pongd_clients_in_all(&w, pongd, "echo"), 2);
}

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
    let out = python(&w, "ws", "proxy_ws.py", &[&port]);
    assert!(out.contains("ws: ok"), "{out}");
    ws.assert_running("after the client");
    assert!(ws.log().contains("peer=192.0.2.44:61000"), "{}", ws.log());
}

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

    // Each client prints `first|later PORT ok`, or what went wrong.
    let mut cmd = libipc_tests::python("proxy_balanced.py");
    cmd.args([
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

/// A PROXY v1 header claiming another client's address.
const FORGED: &[u8] = b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 443\r\n";

#[test]
fn websocketd_answers_400_to_a_proxy_header_from_an_untrusted_client() {
    let w = World::new();
    let pongd = w.rust_pongd("echo");
    // Loopback is not in 10.0.0.0/8.
    let args = ["--proxy-protocol", "--proxy-from", "10.0.0.0/8"];
    let mut ws = Daemon::start(&w, "websocketd", "websocketd", &args);
    let mut s = tcp(ws.addr);
    let upgrade = "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(&[FORGED, upgrade.as_bytes()].concat()).unwrap();
    let answer = String::from_utf8_lossy(&until_closed(s)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    // The same request without the header is served.
    let (mut c, _) = tungstenite::client::client(format!("ws://{}/echo", ws.addr), tcp(ws.addr))
        .unwrap_or_else(|e| panic!("a direct client: {e}"));
    c.send(tungstenite::Message::text("direct")).unwrap();
    assert_eq!(c.read().unwrap(), tungstenite::Message::text("direct"));
    drop(c);
    ws.assert_running("after the forged header");
    assert!(!ws.log().contains("203.0.113.7"), "{}", ws.log());
    assert_eq!(pongd_clients_in_all(&w, pongd, "echo"), 1);
}

#[test]
fn tlsd_refuses_a_proxy_header_from_an_untrusted_client() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let pongd = w.rust_pongd("echo");
    let (cert, key) = (pki.server.cert.to_str(), pki.server.key.to_str());
    let args = [
        "--cert",
        cert.unwrap(),
        "--key",
        key.unwrap(),
        "--no-outbound",
        "--proxy-protocol",
        "--proxy-from",
        "10.0.0.0/8",
    ];
    let mut tlsd = Daemon::start(&w, "tlsd", "tlsd", &args);
    let config = tls_config(&pki.ca.cert);
    // Before TLS, the header is not TLS: no handshake.
    let mut s = tcp(tlsd.addr);
    s.write_all(FORGED).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut forged = rustls::StreamOwned::new(conn, s);
    let mut failed = None;
    while forged.conn.is_handshaking() {
        if let Err(e) = forged.conn.complete_io(&mut forged.sock) {
            failed = Some(e);
            break;
        }
    }
    assert!(failed.is_some(), "a TLS handshake after a forged header");
    // Inside TLS, in place of the name: a bad handshake, answered.
    let mut inside = tls(tlsd.addr, &config);
    inside.write_all(&[FORGED, b"echo\n"].concat()).unwrap();
    let answer = String::from_utf8_lossy(&until_closed(inside)).into_owned();
    assert_eq!(
        answer,
        "no: bad handshake: a PROXY protocol header from a client not trusted to send one \
         (see --proxy-protocol and --proxy-from)\n"
    );
    routed_echo(tls(tlsd.addr, &config), "echo", "direct");
    tlsd.assert_running("after the forged headers");
    assert!(!tlsd.log().contains("203.0.113.7"), "{}", tlsd.log());
    assert_eq!(pongd_clients_in_all(&w, pongd, "echo"), 1);
}
