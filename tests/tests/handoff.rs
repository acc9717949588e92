//! tcpd `--handoff` with real processes: a client's socket goes to a service
//! built on this libipc (the Rust pongd, the C pongd on 1 or 2 loops), which
//! then talks to the client directly; tcpd can be killed meanwhile. A service
//! that takes no handed-off clients (socat) is relayed as before.

use std::io::{Read, Write};
use std::net::TcpStream;

use libipc_tests::clients::routed_echo;
use libipc_tests::metrics::scrape_until;
use libipc_tests::{Daemon, IO_TIMEOUT, World, frame};

fn client(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// tcpd with --handoff, metrics and `more`, and where its metrics are.
fn tcpd_handing_off(w: &World, more: &[&str]) -> (Daemon, std::net::SocketAddr) {
    let args = [&["--handoff", "--metrics", "127.0.0.1:0"][..], more].concat();
    let mut tcpd = Daemon::start(w, "tcpd", "tcpd", &args);
    let metrics = tcpd.logged_address("metrics at http://");
    (tcpd, metrics)
}

fn echoes(s: &mut TcpStream, message: &[u8]) {
    s.write_all(&frame(message)).unwrap();
    let mut got = vec![0; message.len() + 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, frame(message));
}

/// Rust and C services get tcpd's clients handed off: they keep talking to
/// them after tcpd is killed (SIGKILL: nothing of tcpd's is left to drain),
/// and a new tcpd serves new clients beside them.
#[test]
fn handed_off_clients_outlive_a_killed_tcpd() {
    let w = World::new();
    let _rust = w.rust_pongd("rpong");
    let cpongd = w.compile("pongd");
    let mut cmd = w.command(&cpongd);
    cmd.args(["cpong", "0", "2"]);
    let _c = w.start_service(cmd, "cpong", "pongd-c");
    let (tcpd, metrics) = tcpd_handing_off(&w, &[]);

    let mut clients = Vec::new();
    for service in ["rpong", "cpong", "cpong", "cpong"] {
        let mut s = client(&tcpd);
        routed_echo(&mut s, service, "before");
        clients.push(s);
    }
    scrape_until(
        metrics,
        &[
            "ipc_service_handoffs_total{daemon=\"tcpd\",service=\"rpong\"} 1",
            "ipc_service_handoffs_total{daemon=\"tcpd\",service=\"cpong\"} 3",
            "ipc_connections_open{daemon=\"tcpd\"} 0",
        ],
    );
    drop(tcpd.proc.kill());
    for s in &mut clients {
        echoes(s, b"after tcpd was killed");
    }
    let again = Daemon::start(&w, "tcpd", "tcpd-again", &["--handoff"]);
    let mut s = client(&again);
    routed_echo(&mut s, "rpong", "a new client");
    for s in &mut clients {
        echoes(s, b"still");
    }
}

/// socat takes no handed-off clients: relayed, as without --handoff, and
/// counted as relayed.
#[test]
fn a_service_that_takes_no_handoff_is_relayed() {
    let w = World::new();
    let _socat = w.socat_service("cat", "cat");
    let (tcpd, metrics) = tcpd_handing_off(&w, &[]);
    let mut s = client(&tcpd);
    routed_echo(&mut s, "cat", "relayed");
    let body = scrape_until(
        metrics,
        &["ipc_service_connections_open{daemon=\"tcpd\",service=\"cat\"} 1"],
    );
    assert!(!body.contains("ipc_service_handoffs_total{"), "{body}");
    echoes(&mut s, b"again");
}

/// With --peer-info the service gets what tcpd knows first, as when
/// relayed; in fixed mode the client is handed off at once.
#[test]
fn peer_info_and_fixed_mode_travel_with_the_socket() {
    let w = World::new();
    let _rust = w.rust_pongd("rpong");
    let (tcpd, metrics) = tcpd_handing_off(&w, &["--peer-info", "--service", "rpong"]);
    let mut s = client(&tcpd);
    // No handshake in fixed mode: the peer info's echo comes first.
    let mut len = [0; 4];
    s.read_exact(&mut len).unwrap();
    let mut info = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut info).unwrap();
    let info = String::from_utf8(info).unwrap();
    let local = s.local_addr().unwrap().to_string();
    assert!(info.contains(&format!("\"address\":\"{local}\"")), "{info}");
    echoes(&mut s, b"fixed");
    scrape_until(metrics, &[HANDED_OFF_RPONG]);
}

/// The metric line of one client handed to `rpong`.
const HANDED_OFF_RPONG: &str = "ipc_service_handoffs_total{daemon=\"tcpd\",service=\"rpong\"} 1";

/// Behind a balancer (PROXY protocol): the header is tcpd's to read; the
/// service gets the client address it gave (with --peer-info) and then the
/// client, handed off.
#[test]
fn a_client_behind_a_balancer_is_handed_off_after_its_proxy_header() {
    let w = World::new();
    let _rust = w.rust_pongd("rpong");
    let args = [
        "--peer-info",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1/32",
    ];
    let (tcpd, metrics) = tcpd_handing_off(&w, &args);
    let mut s = client(&tcpd);
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 9000\r\n")
        .unwrap();
    s.write_all(&[frame(b"rpong"), frame(b"behind")].concat())
        .unwrap();
    let mut ok = [0; 6];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"\0\0\0\x02ok");
    let mut len = [0; 4];
    s.read_exact(&mut len).unwrap();
    let mut info = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut info).unwrap();
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains("\"address\":\"192.0.2.7:40001\""), "{info}");
    let mut echo = vec![0; 10];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(echo, frame(b"behind"));
    echoes(&mut s, b"handed off");
    scrape_until(metrics, &[HANDED_OFF_RPONG]);
}

/// IPC_NETWORK with --handoff at both ends: the local tcpd gives the Rust
/// and C clients its connection to the remote tcpd, which gave its end to
/// the service: each client talks to the remote service over TCP, and
/// neither tcpd holds a connection while they do.
#[test]
fn ipc_network_clients_take_the_connection_with_handoff_at_both_ends() {
    let a = World::new();
    let b = World::new();
    let _rust = b.rust_pongd("rpong");
    let (remote, metrics) = tcpd_handing_off(&b, &[]);
    let (mut local, local_metrics) = tcpd_handing_off(&a, &[]);
    local
        .proc
        .wait_for_socket(&a.rundir.join(".outbound").join("tcp"));
    let network = format!("rpong tcp://{}/rpong", remote.addr);

    let mut cmd = a.example("pong");
    cmd.env("IPC_NETWORK", &network)
        .args(["-s", "rpong", "from Rust", "", "again"]);
    let run = libipc_tests::run_cmd(cmd, a.path(), "rust-pong", libipc_tests::CHILD_TIMEOUT);
    run.assert_success("Rust pong with handoff at both ends");
    assert_eq!(run.stdout, "from Rust\n\nagain\n", "{}", run.report());

    let pong = a.compile("pong");
    let mut cmd = a.command(&pong);
    cmd.env("IPC_NETWORK", &network)
        .args(["rpong", "from C", "3"]);
    let run = libipc_tests::run_cmd(cmd, a.path(), "c-pong", libipc_tests::CHILD_TIMEOUT);
    run.assert_success("C pong with handoff at both ends");
    assert_eq!(run.stdout, "from C\nfrom C\nfrom C\n", "{}", run.report());

    scrape_until(
        metrics,
        &["ipc_service_handoffs_total{daemon=\"tcpd\",service=\"rpong\"} 2"],
    );
    scrape_until(
        local_metrics,
        &[
            "ipc_outbound_handoffs_total{daemon=\"tcpd\"} 2",
            "ipc_connections_open{daemon=\"tcpd\"} 0",
        ],
    );
}
