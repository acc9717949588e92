//! Outbound over WebSocket and through HTTP proxies: libipc programs (the Rust
//! and C `pong`) reach pongd with `IPC_NETWORK` set to `ws://` or `wss://`,
//! through a local websocketd (its outbound services `ws` and `wss`) and a
//! remote one; the refusals of the remote (unknown service, service down,
//! a certificate of another CA) reach them as what they are; a WebSocket
//! server nobody here wrote (Python's `websockets`) is reached the same way;
//! and every scheme goes through a real HTTP CONNECT proxy (Debian's
//! tinyproxy), with and without proxy authentication.
//!
//!     cargo test -p libipc-tests --test ws_outbound
//!
//! Needs a C compiler, the Python venv and `tinyproxy` (`tests/run` installs
//! them). Daemons pick their ports (port 0, read back from their logs);
//! tinyproxy gets a port found free just before. Readiness is observed (a
//! log line, a socket that accepts, a line printed), never slept for.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use libipc_tests::certs::{self, Pki};
use libipc_tests::process::spawn;
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, Proc, Run, World, echoes, pongd_clients_in_all, python, run_cmd,
};

/// The remote side: pongd, and websocketd over ws and over wss in front of it.
struct Remote {
    world: World,
    pki: Pki,
    pongd: Proc,
    ws: Daemon,
    wss: Daemon,
}

impl Remote {
    fn start(second_ca: bool) -> Remote {
        let world = World::new();
        let pki = certs::generate(world.path(), second_ca);
        let pongd = world.rust_pongd("pong");
        let ws = Daemon::start(&world, "websocketd", "ws-b", &["--no-outbound"]);
        let (cert, key) = (path(&pki.server.cert), path(&pki.server.key));
        let wss = Daemon::start(
            &world,
            "websocketd",
            "wss-b",
            &["--no-outbound", "--cert", cert, "--key", key],
        );
        Remote {
            world,
            pki,
            pongd,
            ws,
            wss,
        }
    }

    fn ws_uri(&self, service: &str) -> String {
        format!("ws://127.0.0.1:{}/{service}", self.ws.addr.port())
    }

    fn wss_uri(&self, service: &str) -> String {
        format!("wss://localhost:{}/{service}", self.wss.addr.port())
    }

    /// How many clients reached B's pongd, once it is stopped.
    fn clients(self) -> usize {
        pongd_clients_in_all(&self.world, self.pongd, "pong")
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The local websocketd (in a world of its own, with its `ws` and `wss`
/// outbound services ready), trusting `ca`, with `args`.
fn local(ca: &Path, args: &[&str]) -> (World, Daemon) {
    let a = World::new();
    let mut d = Daemon::start(
        &a,
        "websocketd",
        "ws-a",
        &[&["--ca", path(ca)], args].concat(),
    );
    d.proc.wait_for_socket(&a.outbound_socket("ws"));
    d.proc.wait_for_socket(&a.outbound_socket("wss"));
    (a, d)
}

/// The Rust pong in `a` with `IPC_NETWORK="SERVICE URI"`, sending `messages`.
fn rust_pong(a: &World, service: &str, uri: &str, messages: &[&str], label: &str) -> Run {
    let mut cmd = a.example("pong");
    cmd.env("IPC_NETWORK", format!("{service} {uri}"))
        .args(["-s", service])
        .args(messages);
    run_cmd(cmd, a.path(), label, CHILD_TIMEOUT)
}

fn refused_with(run: &Run, answer: &str) {
    assert!(
        run.status.is_some_and(|s| !s.success()) && run.stderr.contains(answer),
        "expected a refusal with {answer:?}\n{}",
        run.report()
    );
}

#[test]
fn rust_and_c_pong_through_two_websocketd_over_ws_and_wss() {
    let b = Remote::start(false);
    let (a, mut ws_a) = local(&b.pki.ca.cert, &[]);

    let run = rust_pong(
        &a,
        "pong",
        &b.ws_uri("pong"),
        &["over ws", "", "bye"],
        "rust-ws",
    );
    run.assert_success("Rust pong over ws://");
    assert_eq!(run.stdout, "over ws\n\nbye\n", "{}", run.report());

    let pong = a.compile("pong");
    for (uri, label) in [(b.ws_uri("pong"), "c-ws"), (b.wss_uri("pong"), "c-wss")] {
        let mut cmd = a.command(&pong);
        cmd.env("IPC_NETWORK", format!("pong {uri}"))
            .args(["pong", "C through websocketd", "10"]);
        let run = run_cmd(cmd, a.path(), label, CHILD_TIMEOUT);
        run.assert_success(label);
        assert_eq!(
            run.stdout,
            echoes("C through websocketd", 10),
            "{}",
            run.report()
        );
    }
    let run = rust_pong(&a, "pong", &b.wss_uri("pong"), &["over wss"], "rust-wss");
    run.assert_success("Rust pong over wss://");
    assert_eq!(run.stdout, "over wss\n", "{}", run.report());

    // The remote's refusals, as what they are.
    let run = rust_pong(&a, "nope", &b.ws_uri("nope"), &["anyone?"], "rust-nope");
    refused_with(&run, "no: unknown service");
    let run = rust_pong(
        &a,
        "nope",
        &b.wss_uri("nope"),
        &["anyone?"],
        "rust-nope-tls",
    );
    refused_with(&run, "no: unknown service");
    ws_a.assert_running("after refusals");
    let log_a = ws_a.log();
    assert!(log_a.contains("outbound connected"), "{log_a}");

    // Every client reached B's pong over the network (A has none).
    assert!(!a.rundir.join("pong").exists());
    assert_eq!(b.clients(), 4);
}

#[test]
fn a_dead_remote_service_and_a_server_of_another_ca_are_refused() {
    let b = Remote::start(true);
    let wrong = b.pki.second_ca.as_ref().expect("second CA").cert.clone();
    let (a, mut ws_a) = local(&wrong, &[]);

    // A certificate that does not chain to --ca: refused, saying why.
    let run = rust_pong(
        &a,
        "pong",
        &b.wss_uri("pong"),
        &["should not arrive"],
        "wrong-ca",
    );
    refused_with(&run, "certificate");
    assert!(
        !run.stdout.contains("should not arrive"),
        "{}",
        run.report()
    );
    let log_a = ws_a
        .proc
        .wait_for_stderr_line("outbound failed", CHILD_TIMEOUT);
    assert!(log_a.contains("certificate"), "{log_a}");

    // The remote service dies: its socket is left, nobody accepts.
    let uri = b.ws_uri("pong");
    b.pongd.kill();
    let run = rust_pong(&a, "pong", &uri, &["anyone?"], "dead");
    refused_with(&run, "no: service down");
    ws_a.assert_running("after refusals");
}

#[test]
fn a_websocket_server_that_is_not_ours_is_reached_too() {
    let a = World::new();
    let mut server = spawn(python("ws_echo_server.py"), a.path(), "py-echo-server");
    let out = server.wait_for_stdout("its port", CHILD_TIMEOUT, |o| o.ends_with(b"\n"));
    let port: u16 = String::from_utf8_lossy(&out)
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("port N");
    let mut ws_a = Daemon::start(&a, "websocketd", "ws-a", &[]);
    ws_a.proc.wait_for_socket(&a.outbound_socket("ws"));
    let uri = format!("ws://127.0.0.1:{port}/echo");
    let run = rust_pong(&a, "echo", &uri, &["to python", "", "and back"], "rust-py");
    run.assert_success("Rust pong to Python's websockets echo");
    assert_eq!(run.stdout, "to python\n\nand back\n", "{}", run.report());
}

// ---------------------------------------------------------------------------
// Through an HTTP CONNECT proxy.

/// tinyproxy on 127.0.0.1 at a port found free, optionally with basic
/// authentication (`user`, `password`); ready once it says it accepts.
struct Tinyproxy {
    proc: Proc,
    addr: SocketAddr,
}

impl Tinyproxy {
    fn start(world: &World, auth: Option<(&str, &str)>) -> Tinyproxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Connect\nMaxClients 50\nAllow 127.0.0.1\n"
        );
        if let Some((user, password)) = auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let file = world.path().join("tinyproxy.conf");
        std::fs::write(&file, conf).expect("tinyproxy.conf");
        let mut cmd = std::process::Command::new("tinyproxy");
        cmd.arg("-d").arg("-c").arg(&file);
        let proc = spawn(cmd, world.path(), "tinyproxy");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tinyproxy { proc, addr }
    }

    /// The CONNECT requests tinyproxy logged.
    fn connects(&self) -> usize {
        let out = self.proc.output(None);
        format!("{}{}", out.stdout, out.stderr)
            .lines()
            .filter(|l| l.contains("Request (") && l.contains(": CONNECT "))
            .count()
    }
}

#[test]
fn every_scheme_goes_through_an_http_proxy() {
    let b = Remote::start(false);
    let tcpd_b = Daemon::start(&b.world, "tcpd", "tcpd-b", &["--no-outbound"]);
    let a = World::new();
    let proxy = Tinyproxy::start(&a, None);
    let url = format!("http://{}", proxy.addr);

    // websocketd by --proxy, tcpd by HTTPS_PROXY (as curl reads it).
    let mut ws_a = Daemon::start(
        &a,
        "websocketd",
        "ws-a",
        &["--ca", path(&b.pki.ca.cert), "--proxy", &url],
    );
    let mut cmd = Daemon::command(&a, "tcpd", &[]);
    cmd.env("HTTPS_PROXY", &url);
    let mut tcpd_a = Daemon::start_command(&a, "tcpd", "tcpd-a", cmd, "listening address=");
    for name in ["ws", "wss"] {
        ws_a.proc.wait_for_socket(&a.outbound_socket(name));
    }
    tcpd_a.proc.wait_for_socket(&a.outbound_socket("tcp"));

    let tcp_uri = format!("tcp://127.0.0.1:{}/pong", tcpd_b.addr.port());
    for (uri, label) in [
        (b.ws_uri("pong"), "ws"),
        (b.wss_uri("pong"), "wss"),
        (tcp_uri, "tcp"),
    ] {
        let run = rust_pong(&a, "pong", &uri, &["via the proxy"], label);
        run.assert_success(label);
        assert_eq!(run.stdout, "via the proxy\n", "{}", run.report());
    }
    assert_eq!(proxy.connects(), 3, "{}", proxy.proc.output(None).report());
    // NO_PROXY sends a host direct.
    let mut cmd = Daemon::command(&a, "tcpd", &["--service-name", "direct"]);
    cmd.env("HTTPS_PROXY", &url)
        .env("NO_PROXY", "localhost,127.0.0.0/8");
    let mut direct = Daemon::start_command(&a, "tcpd", "tcpd-direct", cmd, "listening address=");
    direct.proc.wait_for_socket(&a.outbound_socket("direct"));
    let uri = format!("direct://127.0.0.1:{}/pong", tcpd_b.addr.port());
    rust_pong(&a, "pong", &uri, &["direct"], "direct").assert_success("NO_PROXY");
    assert_eq!(proxy.connects(), 3, "NO_PROXY went through the proxy");

    // --outbound-allow judges the target, not the proxy: an address outside
    // it, and a name only a network entry could allow (the proxy, not the
    // daemon, would resolve it), are refused before the proxy hears of them.
    let mut cmd = Daemon::command(
        &a,
        "tcpd",
        &[
            "--service-name",
            "fenced",
            "--outbound-allow",
            "127.0.0.0/8:1",
        ],
    );
    cmd.env("HTTPS_PROXY", &url);
    let mut fenced = Daemon::start_command(&a, "tcpd", "tcpd-fenced", cmd, "listening address=");
    fenced.proc.wait_for_socket(&a.outbound_socket("fenced"));
    for host in ["127.0.0.1", "localhost"] {
        let uri = format!("fenced://{host}:{}/pong", tcpd_b.addr.port());
        let run = rust_pong(&a, "pong", &uri, &["x"], &format!("fenced-{host}"));
        refused_with(&run, "destination not allowed");
    }
    let uri = "fenced://localhost:1/pong";
    let run = rust_pong(&a, "pong", uri, &["x"], "fenced-name");
    refused_with(&run, "destination not allowed");
    assert_eq!(
        proxy.connects(),
        3,
        "a refused destination reached the proxy"
    );
    assert_eq!(b.clients(), 4);
}

#[test]
fn proxy_authentication_and_proxy_failures_are_clear_refusals() {
    let b = Remote::start(false);
    let a = World::new();
    let proxy = Tinyproxy::start(&a, Some(("alice", "s3cret")));
    let with = |creds: &str, label: &str| {
        let url = format!("http://{creds}{}", proxy.addr);
        let mut d = Daemon::start(
            &a,
            "websocketd",
            label,
            &["--proxy", &url, "--service-name", label],
        );
        d.proc.wait_for_socket(&a.outbound_socket(label));
        d
    };
    let uri = |name: &str| format!("{name}://127.0.0.1:{}/pong", b.ws.addr.port());

    let mut good = with("alice:s3cret@", "good");
    let run = rust_pong(&a, "pong", &uri("good"), &["authenticated"], "good");
    run.assert_success("through the proxy with its credentials");
    assert_eq!(run.stdout, "authenticated\n", "{}", run.report());

    let _none = with("", "none");
    let run = rust_pong(&a, "pong", &uri("none"), &["x"], "none");
    refused_with(&run, "the proxy requires authentication");
    let mut bad = with("alice:wrong@", "bad");
    let run = rust_pong(&a, "pong", &uri("bad"), &["x"], "bad");
    refused_with(&run, "the proxy refused its credentials");

    // The password is never logged, not even when it is refused.
    for log in [good.log(), bad.log()] {
        assert!(!log.contains("s3cret") && !log.contains("wrong"), "{log}");
    }
    bad.assert_running("after a refused proxy login");
    good.assert_running("after proxied connections");

    // A proxy nobody listens on.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{gone}");
    let mut d = Daemon::start(
        &a,
        "websocketd",
        "gone",
        &["--proxy", &url, "--service-name", "gone"],
    );
    d.proc.wait_for_socket(&a.outbound_socket("gone"));
    let run = rust_pong(&a, "pong", &uri("gone"), &["x"], "gone-run");
    refused_with(&run, "unreachable");
    assert_eq!(b.clients(), 1);
}
