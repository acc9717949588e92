//! Several daemons on one RUNDIR, as the systemd layout has them (every daemon
//! in `/run/libipc`): two tcpd, two tlsd with their own certificates, tcpd,
//! tlsd and two websocketd together.
//!
//!     cargo test -p libipc-tests --test rundir
//!
//! What a user would check: every instance starts and serves its network
//! clients without extra flags; the outbound service (`tcp`, `tls`) belongs to
//! the instance that took its name first, which local clients still reach
//! through `IPC_NETWORK`, and every other instance says once, at startup, which
//! process has it. A name the operator asked for (`--service-name`), or one
//! given an `--outbound-allow` policy, is not given up: a second instance that
//! cannot have it stops with an error naming the process that has it.

use std::io::{Read, Write};

use libipc_tests::clients::{routed_echo, tcp, tls, tls_config};
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, READY_TIMEOUT, World, certs, frame, pongd_clients_in_all, python,
    run_cmd,
};

/// The line every instance but the first logs about the outbound service.
const NOT_OURS: &str = "serving inbound clients only";

/// Waits until `d` is ready (its outbound service bound, or given up), and
/// returns what it logged.
fn ready_log(d: &mut Daemon, name: &str) -> String {
    d.proc
        .wait_for_stderr_line(&format!("{name} ready"), READY_TIMEOUT);
    d.log()
}

/// `later`, started after `first` had bound outbound service `service`, said
/// once that `first` has it, naming its pid.
fn assert_says_who_has_it(later: &str, log: &str, service: &str, first: &Daemon) {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(NOT_OURS)).collect();
    assert_eq!(lines.len(), 1, "{later}: want one line {NOT_OURS:?}\n{log}");
    let want = [
        format!("outbound service {service:?}"),
        format!("pid {}", first.proc.pid()),
    ];
    assert!(
        want.iter().all(|w| lines[0].contains(w.as_str())),
        "{later}: want {want:?} in {:?}",
        lines[0]
    );
}

/// The Rust pong client, through `IPC_NETWORK` (`pong URI`): the outbound
/// service of whichever daemon has the URI's scheme answers it.
fn pong_through(w: &World, uri: &str, message: &str) {
    let mut cmd = w.example("pong");
    cmd.env("IPC_NETWORK", format!("pong {uri}"))
        .args(["-s", "pong", message]);
    let run = run_cmd(cmd, w.path(), "pong-outbound", CHILD_TIMEOUT);
    run.assert_success("pong through the outbound service");
    assert_eq!(run.stdout, format!("{message}\n"), "{}", run.report());
}

#[test]
fn two_tcpd_serve_one_rundir_and_the_first_keeps_the_outbound_service() {
    let w = World::new();
    let pongd = w.rust_pongd("pong");
    let mut first = Daemon::start(&w, "tcpd", "tcpd-1", &[]);
    first.proc.wait_for_socket(&w.outbound_socket("tcp"));
    let mut second = Daemon::start(&w, "tcpd", "tcpd-2", &[]);
    let log = ready_log(&mut second, "tcpd");
    assert_says_who_has_it("the second tcpd", &log, "tcp", &first);
    // A fixed-mode instance for one service, beside the routed ones.
    let mut fixed = Daemon::start(&w, "tcpd", "tcpd-fixed", &["--service", "pong"]);
    let log = ready_log(&mut fixed, "tcpd");
    assert_says_who_has_it("the fixed-mode tcpd", &log, "tcp", &first);

    routed_echo(tcp(first.addr), "pong", "to the first");
    routed_echo(tcp(second.addr), "pong", "to the second");
    let mut s = tcp(fixed.addr);
    s.write_all(&frame(b"to the fixed one")).unwrap();
    let mut got = vec![0; frame(b"to the fixed one").len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, frame(b"to the fixed one"));
    drop(s);
    // The first's outbound service, to the second's inbound side.
    pong_through(&w, &format!("tcp://{}/pong", second.addr), "outbound");
    for d in [&mut first, &mut second, &mut fixed] {
        d.assert_running("after serving");
    }
    assert_eq!(pongd_clients_in_all(&w, pongd, "pong"), 4);
}

#[test]
fn two_tlsd_with_their_own_certificates_serve_one_rundir() {
    let w = World::new();
    let pongd = w.rust_pongd("pong");
    let pki = certs::generate(w.path(), false);
    let other = pki.ca.server(w.path(), "other");
    let ca = pki.ca.cert.to_str().unwrap();
    let tlsd = |label: &str, pair: &certs::ServerPair| {
        let (cert, key) = (pair.cert.to_str().unwrap(), pair.key.to_str().unwrap());
        Daemon::start(
            &w,
            "tlsd",
            label,
            &["--cert", cert, "--key", key, "--ca", ca],
        )
    };
    let mut first = tlsd("tlsd-1", &pki.server);
    first.proc.wait_for_socket(&w.outbound_socket("tls"));
    let mut second = tlsd("tlsd-2", &other);
    let log = ready_log(&mut second, "tlsd");
    assert_says_who_has_it("the second tlsd", &log, "tls", &first);

    let config = tls_config(&pki.ca.cert);
    routed_echo(tls(first.addr, &config), "pong", "to the first");
    routed_echo(tls(second.addr, &config), "pong", "to the second");
    let uri = format!("tls://localhost:{}/pong", second.addr.port());
    pong_through(&w, &uri, "outbound");
    first.assert_running("after serving");
    second.assert_running("after serving");
    assert_eq!(pongd_clients_in_all(&w, pongd, "pong"), 3);
}

#[test]
fn tcpd_tlsd_and_two_websocketd_serve_one_rundir() {
    let w = World::new();
    let pongd = w.rust_pongd("pong");
    let echo = w.rust_pongd("echo");
    let pki = certs::generate(w.path(), false);
    let (cert, key) = (
        pki.server.cert.to_str().unwrap(),
        pki.server.key.to_str().unwrap(),
    );
    let mut tcpd = Daemon::start(&w, "tcpd", "tcpd", &[]);
    let mut tlsd = Daemon::start(&w, "tlsd", "tlsd", &["--cert", cert, "--key", key]);
    let mut ws = [
        Daemon::start(&w, "websocketd", "websocketd-1", &[]),
        Daemon::start(&w, "websocketd", "websocketd-2", &[]),
    ];
    let mut logs = vec![ready_log(&mut tcpd, "tcpd"), ready_log(&mut tlsd, "tlsd")];
    for d in &mut ws {
        logs.push(ready_log(d, "websocketd"));
    }
    // Each outbound name once: tcpd's, tlsd's, and the first websocketd's
    // `ws` and `wss`; the second websocketd says, once per name, who has it.
    for log in &logs[..3] {
        assert!(!log.contains(NOT_OURS), "no outbound name is shared\n{log}");
    }
    let second: Vec<&str> = logs[3].lines().filter(|l| l.contains(NOT_OURS)).collect();
    let first_pid = format!("pid {}", ws[0].proc.pid());
    assert_eq!(second.len(), 2, "{}", logs[3]);
    for (line, name) in second.iter().zip(["\"ws\"", "\"wss\""]) {
        assert!(line.contains(name) && line.contains(&first_pid), "{line}");
    }
    let mut held: Vec<String> = std::fs::read_dir(w.rundir.join(".outbound"))
        .expect("the outbound directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    held.sort();
    assert_eq!(
        held,
        [
            "tcp", "tcp.lock", "tls", "tls.lock", "ws", "ws.lock", "wss", "wss.lock"
        ]
    );

    routed_echo(tcp(tcpd.addr), "pong", "through tcpd");
    routed_echo(
        tls(tlsd.addr, &tls_config(&pki.ca.cert)),
        "pong",
        "through tlsd",
    );
    for (i, d) in ws.iter_mut().enumerate() {
        let mut cmd = python("ws_echo.py");
        cmd.arg(d.addr.port().to_string());
        let run = run_cmd(cmd, w.path(), &format!("ws-echo-{i}"), CHILD_TIMEOUT);
        run.assert_success("a websockets client");
        run.assert_lines(&["ok"]);
        d.assert_running("after serving");
    }
    assert_eq!(pongd_clients_in_all(&w, pongd, "pong"), 2);
    assert_eq!(pongd_clients_in_all(&w, echo, "echo"), 2);
}

#[test]
fn an_outbound_name_the_operator_asked_for_is_not_given_up() {
    let w = World::new();
    let mut first = Daemon::start(&w, "tcpd", "tcpd-gw", &["--service-name", "gw"]);
    first.proc.wait_for_socket(&w.outbound_socket("gw"));
    let cases: [(&str, &[&str]); 3] = [
        ("flag", &["--service-name", "gw"]),
        ("env", &[]),
        ("policy", &["--outbound-allow", "127.0.0.1"]),
    ];
    let mut default_taken = Daemon::start(&w, "tcpd", "tcpd-tcp", &[]);
    default_taken
        .proc
        .wait_for_socket(&w.outbound_socket("tcp"));
    for (label, args) in cases {
        let mut cmd = Daemon::command(&w, "tcpd", args);
        let (name, holder) = if label == "policy" {
            ("tcp", &default_taken)
        } else {
            ("gw", &first)
        };
        if label == "env" {
            cmd.env("IPC_SERVICE_NAME", "gw");
        }
        let run = run_cmd(cmd, w.path(), &format!("tcpd-{label}"), READY_TIMEOUT);
        assert!(
            run.status.is_some_and(|s| !s.success()),
            "{label}: a second tcpd took {name:?}\n{}",
            run.report()
        );
        let want = [
            format!("service {name:?} is already running"),
            format!("held by pid {}", holder.proc.pid()),
        ];
        assert!(
            want.iter().all(|w| run.stderr.contains(w.as_str())),
            "{label}: want {want:?}\n{}",
            run.report()
        );
    }
    first.assert_running("after the others failed");
    default_taken.assert_running("after the others failed");
}
