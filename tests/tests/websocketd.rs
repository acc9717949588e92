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
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use libipc_tests::certs;
use libipc_tests::clients::{tcp, until_closed};
use libipc_tests::metrics::{scrape_until, series};
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, Proc, READY_TIMEOUT, Run, World, frame, pattern, pongd_clients_in_all,
    run_cmd, spawn, venv_bin,
};
use nix::sys::signal::Signal;

/// Longest the whole Autobahn run may take (5 to 15 s with a debug build; under
/// nextest's 120 s limit, so that the test fails with kosoku's output).
const KOSOKU_TIMEOUT: Duration = Duration::from_secs(90);

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
    /// The echo service, which counts its clients.
    pongd: Proc,
    w: World,
}

/// [`EchoSetup`] with one websocketd, started with `args`.
fn echo_setup(args: &[&str]) -> EchoSetup {
    echo_setups(&[("websocketd", args)])
}

/// [`EchoSetup`] with a websocketd for each `(label, args)`.
fn echo_setups(daemons: &[(&str, &[&str])]) -> EchoSetup {
    let w = World::new();
    let pongd = w.rust_pongd("echo");
    let mut more: Vec<Daemon> = daemons
        .iter()
        .map(|(label, args)| websocketd(&w, label, args))
        .collect();
    let ws = more.remove(0);
    EchoSetup { ws, more, pongd, w }
}

impl EchoSetup {
    /// [`run_python`] with the ports of all the daemons as arguments, the first
    /// one's first.
    fn run_python_on_all(&self, label: &str, script: &str) -> Run {
        let ports: Vec<String> = std::iter::once(&self.ws)
            .chain(&self.more)
            .map(|d| d.addr.port().to_string())
            .collect();
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        run_python(&self.w, label, script, &self.ws, &ports)
    }
}

// ---------------------------------------------------------------------------
// Python clients.

/// Starts the Python client `tests/py/<script>` (a `ws_*.py`) with the port
/// of `d` and `args`.
fn python(w: &World, label: &str, script: &str, d: &Daemon, args: &[&str]) -> Proc {
    let mut cmd = libipc_tests::python(script);
    cmd.arg(d.addr.port().to_string()).args(args);
    spawn(cmd, w.path(), label)
}

/// [`python`], to the end: it must exit 0, its last line `ok`.
fn run_python(w: &World, label: &str, script: &str, d: &Daemon, args: &[&str]) -> Run {
    finish_python(python(w, label, script, d, args), label)
}

/// [`python`], once it has printed its last line so far `ready`: for the test
/// to act on what its connections are to see (then [`finish_python`]).
fn python_until_ready(w: &World, label: &str, script: &str, d: &Daemon, args: &[&str]) -> Proc {
    let mut client = python(w, label, script, d, args);
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

/// Runs `tests/py/kosoku_report.py` on the report in `out`, with `details`:
/// one line per case, `id behavior behaviorClose` (tab-separated), or what the
/// cases in `details` did.
fn kosoku_report(w: &World, out: &Path, details: &[&str]) -> String {
    let mut cmd = libipc_tests::python("kosoku_report.py");
    cmd.arg(out).args(details);
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

#[test]
fn two_hundred_concurrent_clients_over_two_services_routed_by_path() {
    const CLIENTS: usize = 200;
    let w = World::new();
    let pongds = [
        (w.rust_pongd("alpha"), "alpha"),
        (w.rust_pongd("beta"), "beta"),
    ];
    let mut ws = websocketd(&w, "websocketd", &[]);
    run_python(&w, "many", "ws_many.py", &ws, &[&CLIENTS.to_string(), "20"]);

    // Each service counted its half of the clients.
    for (pongd, service) in pongds {
        let n = pongd_clients_in_all(&w, pongd, service);
        assert_eq!(n, CLIENTS / 2, "connections to {service}\n{}", ws.log());
    }
    ws.assert_running("after 200 clients");
}

#[test]
fn message_types_mirror_auto_text_and_binary() {
    let s = echo_setups(&[
        ("websocketd-mirror", &["--message-type", "mirror"]),
        ("websocketd-auto", &["--message-type", "auto"]),
        ("websocketd-text", &["--message-type", "text"]),
        ("websocketd-binary", &["--message-type", "binary"]),
    ]);
    s.run_python_on_all("types", "ws_types.py");
}

#[test]
fn fragmented_messages_reach_the_service_as_one_message() {
    let mut s = echo_setup(&[]);
    run_python(&s.w, "fragments", "ws_fragments.py", &s.ws, &[]);
    s.ws.assert_running("after fragmented messages");
}

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
    let run = run_python(&w, "limit", "ws_limit.py", &ws, &[&LIMIT.to_string()]);
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

#[test]
fn origins_same_listed_and_any_refused_with_403_and_logged() {
    let mut s = echo_setups(&[
        ("websocketd-same", &[]),
        ("websocketd-listed", &["--origin", "http://app.example"]),
        ("websocketd-any", &["--allow-any-origin"]),
    ]);
    s.run_python_on_all("origins", "ws_origins.py");
    wait_for_log(
        &mut s.ws,
        &[
            "HTTP request refused",
            "status=403",
            r#"origin "http://evil.example" not allowed"#,
        ],
    );
}

/// A pongd serving `echo` (it counts its clients), and a websocketd in front
/// of it with `args`.
fn counted_echo(w: &World, args: &[&str]) -> (Proc, Daemon) {
    (w.rust_pongd("echo"), websocketd(w, "websocketd", args))
}

#[test]
fn dns_rebinding_is_refused_421_before_the_service_is_connected() {
    let w = World::new();
    let www = w.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<h1>home</h1>\n").unwrap();
    let (pongd, ws) = counted_echo(&w, &["--static-dir", www.to_str().unwrap()]);
    let run = run_python(&w, "rebinding", "ws_rebinding.py", &ws, &[]);
    assert!(
        run.stdout
            .contains(r#"rebinding: 421 421 Misdirected Request: host "evil.example:"#),
        "{}",
        run.report()
    );
    // The refused clients never reached the service: 5 did, as it counts them.
    assert_eq!(pongd_clients_in_all(&w, pongd, "echo"), 5, "{}", ws.log());
}

#[test]
fn public_host_names_the_daemon_and_its_origins() {
    let w = World::new();
    let (pongd, ws) = counted_echo(&w, &["--public-host", "ws.test"]);
    run_python(&w, "public-host", "ws_public_host.py", &ws, &[]);
    assert_eq!(pongd_clients_in_all(&w, pongd, "echo"), 3, "{}", ws.log());
}

#[test]
fn unknown_services_are_answered_404() {
    let s = echo_setup(&[]);
    run_python(&s.w, "not-found", "ws_not_found.py", &s.ws, &[]);
    // Only the last client, of /echo, reached a service.
    assert_eq!(
        pongd_clients_in_all(&s.w, s.pongd, "echo"),
        1,
        "{}",
        s.ws.log()
    );
}

#[test]
fn max_connections_answers_503() {
    let s = echo_setup(&["--max-connections", "3"]);
    run_python(
        &s.w,
        "max-connections",
        "ws_max_connections.py",
        &s.ws,
        &["3"],
    );
    // The three, and the one let in once a place was free: no refused
    // client reached the service.
    assert_eq!(
        pongd_clients_in_all(&s.w, s.pongd, "echo"),
        4,
        "{}",
        s.ws.log()
    );
}

/// Connects, sends `sent`, and reads until websocketd closes; returns what came
/// and how long that took.
fn send_and_wait_for_close(addr: std::net::SocketAddr, sent: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = tcp(addr);
    let started = Instant::now();
    s.write_all(sent).unwrap();
    let got = until_closed(&mut s);
    (got, started.elapsed())
}

#[test]
fn client_that_never_finishes_its_request_is_closed_at_header_timeout() {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    for (label, fixed) in [("routed", &[][..]), ("fixed", &["--service", "echo"][..])] {
        let args = [
            &["--header-timeout", "1s", "--metrics", "127.0.0.1:0"][..],
            fixed,
        ]
        .concat();
        let mut ws = websocketd(&w, &format!("websocketd-{label}"), &args);
        let metrics = ws.logged_address("metrics at http://");
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
        // Counted as the clients' timeouts, and nothing reached the service.
        let body = scrape_until(
            metrics,
            &[
                "ipc_handshake_failures_total{daemon=\"websocketd\",reason=\"HTTP request timeout\"} 2",
                "ipc_connections_accepted_total{daemon=\"websocketd\"} 2",
            ],
        );
        let reached = series(&body, "ipc_service_connections_total");
        assert!(reached.is_empty(), "{body}");
        ws.assert_running("after slow clients");
    }
}

// ---------------------------------------------------------------------------
// Subprotocols, pings, static files, wss.

#[test]
fn subprotocol_is_negotiated_in_the_servers_order() {
    let s = echo_setup(&["--subprotocol", "chat.v2", "--subprotocol", "chat"]);
    run_python(&s.w, "subprotocols", "ws_subprotocols.py", &s.ws, &[]);
}

#[test]
fn pings_keep_answering_clients_and_close_silent_ones() {
    let mut s = echo_setup(&["--ping-interval", "1s", "--idle-timeout", "2s"]);
    run_python(&s.w, "pings", "ws_pings.py", &s.ws, &[]);
    wait_for_log(&mut s.ws, &["keepalive failed", "no answer to 2 pings"]);
}

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
    run_python(&w, "static", "ws_static.py", &ws, &[]);
}

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
        "ws_wss.py",
        &ws,
        &[pki.ca.cert.to_str().unwrap(), wrong],
    );
    ws.assert_running("after wss clients");
}

// ---------------------------------------------------------------------------
// Ends: the service's, the daemon's.

#[test]
fn service_that_closes_gives_1000_and_one_killed_gives_1011() {
    let w = World::new();
    let alpha = w.rust_pongd("alpha");
    let _beta = w.rust_pongd("beta");
    // "hello" in a LibIPC frame is 9 bytes.
    let _once = w.socat_service("once", "head -c 9");
    let mut ws = websocketd(&w, "websocketd", &[]);
    let client = python_until_ready(&w, "service-ends", "ws_service_ends.py", &ws, &[]);
    alpha.kill();
    finish_python(client, "service-ends");
    ws.assert_running("after a service died");
}

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    let s = echo_setup(&["--workers", "2", "--drain-timeout", "30s"]);
    let client = python_until_ready(&s.w, "drain", "ws_drain.py", &s.ws, &["4"]);
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

#[test]
fn a_client_that_sends_and_closes_at_once_has_everything_delivered() {
    let w = World::new();
    // A service nobody here wrote that keeps what it is sent: socat, each
    // connection appended to a file.
    let got = w.path().join("got");
    let mut sink = Command::new("socat");
    sink.arg(format!(
        "UNIX-LISTEN:{},fork,backlog=128",
        w.rundir.join("sink").display()
    ))
    .arg(format!("SYSTEM:cat >> {}", got.display()));
    let _sink = w.start_service(sink, "sink", "socat-sink");
    let ws = websocketd(&w, "websocketd", &[]);

    // The upgrade, 20 messages of up to 95 KB and the close, in one write,
    // then the end of the client's side: all before the 101 comes.
    let messages: Vec<Vec<u8>> = (0..20).map(|i| pattern(i, i * 5000)).collect();
    let mut sent = Vec::new();
    for m in &messages {
        sent.extend(client_frame(0x2, m.len() as u64, m));
    }
    sent.extend(client_frame(0x8, 2, &1000u16.to_be_bytes()));
    let mut s = tcp(ws.addr);
    s.write_all(&upgrade_then(ws.addr, "/sink", &sent)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = until_closed(&mut s);
    assert!(answer.starts_with(b"HTTP/1.1 101 "), "{answer:?}");

    let want: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let have = std::fs::read(&got).unwrap_or_default();
        if have.len() >= want.len() || Instant::now() > deadline {
            assert!(
                have == want,
                "the service got {} bytes, want {} (the 20 messages, framed)\n{}",
                have.len(),
                want.len(),
                ws.log()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
