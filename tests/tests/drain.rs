//! Black-box test of `--drain-timeout` running out: on SIGTERM a daemon
//! lets an open client carry on, and closes it when the drain timeout
//! expires, then exits 0.
//!
//!     cargo test -p libipc-tests --test drain
//!
//! The client is std's TCP socket speaking tcpd's raw handshake; the service
//! is the Rust pongd. The engine's own drain is tested in-process in
//! `daemon/tests/drain.rs`; here the flag, the signal and the exit status are
//! the real binary's.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use libipc_tests::clients::{tcp, until_closed};
use libipc_tests::{CHILD_TIMEOUT, Daemon, READY_TIMEOUT, World, frame};
use nix::sys::signal::Signal;

/// The drain timeout of the test: short, and long enough for a few echoes.
const DRAIN: Duration = Duration::from_secs(2);
/// How late after the drain timeout the client may be closed and the
/// daemon gone (a loaded 2-core machine; the daemon checks its deadline on
/// its loop's wake-ups).
const MARGIN: Duration = Duration::from_secs(2);

/// Sends `payload` in a frame on `s` and checks that it comes back.
fn echo(s: &mut std::net::TcpStream, payload: &[u8]) {
    s.write_all(&frame(payload)).expect("write");
    let mut got = vec![0; 4 + payload.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("echo of {payload:?}: {e}"));
    assert_eq!(got, frame(payload));
}

#[test]
fn a_client_still_open_at_the_drain_timeout_is_closed_then_tcpd_exits_0() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let drain = format!("{}s", DRAIN.as_secs());
    let mut tcpd = Daemon::start(
        &w,
        "tcpd",
        "tcpd",
        &["--workers", "1", "--drain-timeout", &drain],
    );
    let mut s = tcp(tcpd.addr);
    s.write_all(b"pong\n").unwrap();
    let mut ok = [0; 2];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    echo(&mut s, b"before SIGTERM");

    tcpd.proc.signal(Signal::SIGTERM);
    let sent = Instant::now();
    tcpd.proc.wait_for_stderr_line("draining", READY_TIMEOUT);
    // Until the timeout the client is served as before.
    let mut echoed = 0;
    while sent.elapsed() < DRAIN / 2 {
        echo(&mut s, format!("draining {echoed}").as_bytes());
        echoed += 1;
    }
    tcpd.assert_running("before the drain timeout, with a client open");

    // Then it sends nothing and keeps its end open: the daemon closes it.
    s.set_read_timeout(Some(DRAIN + MARGIN + MARGIN)).unwrap();
    assert_eq!(until_closed(&mut s), b"", "after {echoed} echoes");
    let closed = sent.elapsed();
    assert!(
        closed >= DRAIN - Duration::from_millis(100) && closed < DRAIN + MARGIN,
        "the client was closed {closed:?} after SIGTERM (drain timeout {DRAIN:?})"
    );
    let run = tcpd.proc.wait(CHILD_TIMEOUT);
    let exited = sent.elapsed();
    run.assert_success("tcpd after its drain timeout");
    assert!(
        exited < DRAIN + MARGIN,
        "tcpd exited {exited:?} after SIGTERM (drain timeout {DRAIN:?})\n{}",
        run.report()
    );
}
