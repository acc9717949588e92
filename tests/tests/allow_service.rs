//! Black-box tests of `--allow-service` on tlsd and websocketd (tcpd's is in
//! `tcpd.rs`): a service left off the list is refused in the protocol's own
//! form, and never sees the client; a listed one is served.
//!
//!     cargo test -p libipc-tests --test allow_service
//!
//! The clients are rustls (tlsd) and tungstenite (websocketd); the services
//! are two Rust pongd, which count their clients.

use libipc_tests::certs;
use libipc_tests::clients::{routed_echo, tcp, tls, tls_config, until_closed};
use libipc_tests::{Daemon, World, frame, pongd_clients_in_all};
use tungstenite::{HandshakeError, Message};

/// The world of a test: `open` (listed) and `secret` (not listed) echo
/// services.
fn two_services() -> (World, libipc_tests::Proc, libipc_tests::Proc) {
    let w = World::new();
    let open = w.rust_pongd("open");
    let secret = w.rust_pongd("secret");
    (w, open, secret)
}

#[test]
fn tlsd_refuses_a_service_off_the_allow_list_and_it_sees_nothing() {
    let (w, open, secret) = two_services();
    let pki = certs::generate(w.path(), false);
    let (cert, key) = (&pki.server.cert, &pki.server.key);
    let mut tlsd = Daemon::start(
        &w,
        "tlsd",
        "tlsd",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--allow-service",
            "open",
        ],
    );
    let config = tls_config(&pki.ca.cert);
    routed_echo(tls(tlsd.addr, &config), "open", "listed");

    let mut refused = tls(tlsd.addr, &config);
    std::io::Write::write_all(&mut refused, &frame(b"secret")).unwrap();
    let answer = until_closed(refused);
    assert_eq!(
        answer,
        frame(b"no: service not allowed"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tlsd.assert_running("after the refusal");
    assert_eq!(pongd_clients_in_all(&w, secret, "secret"), 0);
    assert_eq!(pongd_clients_in_all(&w, open, "open"), 1);
}

#[test]
fn websocketd_answers_403_for_a_service_off_the_allow_list_and_it_sees_nothing() {
    let (w, open, secret) = two_services();
    let mut ws = Daemon::start(&w, "websocketd", "websocketd", &["--allow-service", "open"]);
    let addr = ws.addr;
    let (mut c, _) = tungstenite::client::client(format!("ws://{addr}/open"), tcp(addr))
        .unwrap_or_else(|e| panic!("/open: {e}"));
    c.send(Message::text("listed")).unwrap();
    assert_eq!(c.read().unwrap(), Message::text("listed"));
    c.close(None).unwrap();

    match tungstenite::client::client(format!("ws://{addr}/secret"), tcp(addr)) {
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 403, "{response:?}");
        }
        Err(e) => panic!("/secret: want 403, got {e}"),
        Ok(_) => panic!("/secret: connected, want 403"),
    }
    ws.assert_running("after the refusal");
    assert_eq!(pongd_clients_in_all(&w, secret, "secret"), 0);
    assert_eq!(pongd_clients_in_all(&w, open, "open"), 1);
}
