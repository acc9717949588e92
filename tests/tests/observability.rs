//! Black-box tests of what the daemons tell an operator: `--log-format json`
//! (one JSON object a line, the documented fields), `RUST_LOG` winning over
//! `--log-level`, and the Prometheus metrics of tlsd and websocketd (tcpd's
//! are in `tcpd.rs`), failed PROXY headers included.
//!
//!     cargo test -p libipc-tests --test observability
//!
//! The JSON is read by Python's `json` module (`tests/py/json_log.py`, which
//! is also the client); the clients are rustls and tungstenite; the service
//! is the Rust pongd. Metrics are scraped until they show what the clients
//! did (open connections are counted once a second), within 5 s.

use std::io::Write;

use libipc_tests::certs::{self, Pki};
use libipc_tests::clients::{routed_echo, tcp, tls, tls_config, until_closed};
use libipc_tests::metrics::scrape_until;
use libipc_tests::{CHILD_TIMEOUT, Daemon, World, frame, python, run_cmd};
use nix::sys::signal::Signal;
use tungstenite::{HandshakeError, Message};

#[test]
fn log_format_json_writes_one_object_a_line_with_the_documented_fields() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let cmd = Daemon::command(&w, "tcpd", &["--no-outbound", "--log-format", "json"]);
    let needle = r#""message":"listening","address":""#;
    let tcpd = Daemon::start_command(&w, "tcpd", "tcpd", cmd, needle);
    let mut client = python("json_log.py");
    client
        .arg(tcpd.addr.port().to_string())
        .arg(w.path().join("tcpd.stderr"));
    let run = run_cmd(client, w.path(), "json-log", CHILD_TIMEOUT);
    run.assert_success("the JSON log's reader");
    run.assert_lines(&["json log: ok"]);
}

/// tcpd with `--log-level warn,daemon::cli=info` (its startup lines, not its
/// clients'), and `RUST_LOG` if given; one client has an echo, then tcpd is
/// stopped (its last line, "tcpd stopped", comes after every client's).
/// Returns its log.
fn log_of_a_client(w: &World, label: &str, rust_log: Option<&str>) -> String {
    let args = ["--no-outbound", "--log-level", "warn,daemon::cli=info"];
    let mut cmd = Daemon::command(w, "tcpd", &args);
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let tcpd = Daemon::start_command(w, "tcpd", label, cmd, "listening address=");
    routed_echo(tcp(tcpd.addr), "pong", label);
    tcpd.proc.signal(Signal::SIGTERM);
    let run = tcpd.proc.wait(CHILD_TIMEOUT);
    run.assert_success(label);
    assert!(run.stderr.contains("tcpd stopped"), "{}", run.report());
    run.stderr
}

#[test]
fn rust_log_wins_over_log_level() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let quiet = log_of_a_client(&w, "log-level", None);
    assert!(
        !quiet.contains("daemon::engine"),
        "--log-level warn,daemon::cli=info let the engine's lines through:\n{quiet}"
    );
    let verbose = log_of_a_client(&w, "rust-log", Some("info"));
    assert!(
        verbose.contains("connection closed"),
        "RUST_LOG=info did not win over --log-level warn,...:\n{verbose}"
    );
}

/// The server pair of `pki` as tlsd's `--cert` and `--key`, then `args`.
fn tlsd_args<'a>(pki: &'a Pki, args: &[&'a str]) -> Vec<&'a str> {
    let cert = pki.server.cert.to_str().expect("UTF-8 path");
    let key = pki.server.key.to_str().expect("UTF-8 path");
    [&["--cert", cert, "--key", key][..], args].concat()
}

/// The lines of metrics that say one client of `daemon` is connected to
/// `pong`, after one echo of `len` bytes, and one was refused as `reason`.
fn one_open_one_refused(daemon: &str, reason: &str, len: usize) -> Vec<String> {
    let bytes = 4 + len;
    vec![
        format!("ipc_connections_open{{daemon=\"{daemon}\"}} 1"),
        format!("ipc_connections_accepted_total{{daemon=\"{daemon}\"}} 2"),
        format!("ipc_handshake_failures_total{{daemon=\"{daemon}\",reason=\"{reason}\"}} 1"),
        format!("ipc_service_connections_open{{daemon=\"{daemon}\",service=\"pong\"}} 1"),
        format!(
            "ipc_service_messages_total{{daemon=\"{daemon}\",service=\"pong\",direction=\"in\"}} 1"
        ),
        format!(
            "ipc_service_messages_total{{daemon=\"{daemon}\",service=\"pong\",direction=\"out\"}} 1"
        ),
        format!(
            "ipc_service_bytes_total{{daemon=\"{daemon}\",service=\"pong\",direction=\"in\"}} {bytes}"
        ),
        format!(
            "ipc_service_bytes_total{{daemon=\"{daemon}\",service=\"pong\",direction=\"out\"}} {bytes}"
        ),
    ]
}

/// The lines of metrics that say the one client of `daemon` left `pong`.
fn all_closed(daemon: &str) -> Vec<String> {
    vec![
        format!("ipc_connections_open{{daemon=\"{daemon}\"}} 0"),
        format!("ipc_service_connections_open{{daemon=\"{daemon}\",service=\"pong\"}} 0"),
        format!("ipc_service_connections_total{{daemon=\"{daemon}\",service=\"pong\"}} 1"),
    ]
}

fn as_str(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

#[test]
fn tlsd_metrics_count_clients_refusals_and_traffic() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let pki = certs::generate(w.path(), false);
    let args = tlsd_args(&pki, &["--no-outbound", "--metrics", "127.0.0.1:0"]);
    let mut tlsd = Daemon::start(&w, "tlsd", "tlsd", &args);
    let metrics = tlsd.logged_address("metrics at http://");
    let config = tls_config(&pki.ca.cert);

    let mut client = tls(tlsd.addr, &config);
    routed_echo(&mut client, "pong", "over TLS");
    let mut refused = tls(tlsd.addr, &config);
    refused.write_all(&frame(b"nope")).unwrap();
    assert_eq!(until_closed(refused), frame(b"no: unknown service"));
    scrape_until(
        metrics,
        &as_str(&one_open_one_refused("tlsd", "unknown service", 8)),
    );
    drop(client);
    scrape_until(metrics, &as_str(&all_closed("tlsd")));
}

#[test]
fn websocketd_metrics_count_clients_refusals_and_traffic() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut ws = Daemon::start(
        &w,
        "websocketd",
        "websocketd",
        &["--metrics", "127.0.0.1:0"],
    );
    let metrics = ws.logged_address("metrics at http://");
    let addr = ws.addr;

    let (mut client, _) = tungstenite::client::client(format!("ws://{addr}/pong"), tcp(addr))
        .unwrap_or_else(|e| panic!("/pong: {e}"));
    client.send(Message::text("over WebSocket")).unwrap();
    assert_eq!(client.read().unwrap(), Message::text("over WebSocket"));
    match tungstenite::client::client(format!("ws://{addr}/nope"), tcp(addr)) {
        Err(HandshakeError::Failure(tungstenite::Error::Http(r))) => assert_eq!(r.status(), 404),
        Err(e) => panic!("/nope: want 404, got {e}"),
        Ok(_) => panic!("/nope: connected, want 404"),
    }
    scrape_until(
        metrics,
        &as_str(&one_open_one_refused("websocketd", "unknown service", 14)),
    );
    client.close(None).unwrap();
    // Read until the daemon's answer to the close, and its end.
    while client.read().is_ok() {}
    scrape_until(metrics, &as_str(&all_closed("websocketd")));
}

#[test]
fn tlsd_and_websocketd_count_a_balancer_without_a_proxy_header() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let proxy = [
        "--metrics",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1",
    ];
    let tlsd_args = tlsd_args(&pki, &[&["--no-outbound"][..], &proxy].concat());
    for (name, args) in [("tlsd", tlsd_args), ("websocketd", proxy.to_vec())] {
        let mut d = Daemon::start(&w, name, name, &args);
        let metrics = d.logged_address("metrics at http://");
        // What a client sends first, from a balancer that must send a
        // PROXY header before it.
        let mut balancer = tcp(d.addr);
        balancer
            .write_all(b"GET /pong HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        until_closed(balancer);
        let failed = format!(
            "ipc_handshake_failures_total{{daemon=\"{name}\",reason=\"bad PROXY header\"}} 1"
        );
        scrape_until(metrics, &[&failed]);
        d.assert_running("after a bad PROXY header");
    }
}
