//! In-process tests of the engine's drain: after `Shutdown::trigger` no new
//! client gets in, open pairs may finish within the drain timeout, and
//! `Daemon::run` returns. Asserted on what clients see and on when `run`
//! returns.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

/// Waits (within [`PROMPT`]) until new clients are turned away: refused at
/// connect, or closed unanswered. Until the worker has seen the trigger one
/// may still get in; it leaves at once. Returns how many did.
fn assert_turns_new_clients_away(addr: SocketAddr) -> usize {
    let deadline = Instant::now() + PROMPT;
    let mut admitted = 0;
    loop {
        match TcpStream::connect(addr) {
            // Refused, or reset while it connected: it was in the listen
            // queue when the listener closed.
            Err(e) => {
                let away = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                );
                assert!(away, "{e}");
                return admitted;
            }
            Ok(mut s) => {
                s.set_read_timeout(Some(PROMPT)).unwrap();
                // A write may fail too: the connection was reset.
                let _ = s.write_all(&frame(b"echo"));
                match read_frame(&mut s) {
                    Ok(answer) => {
                        assert_eq!(answer, b"ok", "a new client while draining");
                        admitted += 1;
                    }
                    Err(e) => {
                        let closed = matches!(
                            e.kind(),
                            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                        );
                        assert!(closed, "{e}");
                        return admitted;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "still accepting {PROMPT:?} after the trigger"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_drain_lets_open_pairs_finish_and_accepts_no_one() {
    let mut setup = Setup::routed();
    let drain = Duration::from_secs(5);
    setup.config.drain_timeout = drain;
    let mut echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(listener().0);
    let mut open = d.echo_client("echo");
    d.trigger();
    let triggered = Instant::now();
    let admitted = assert_turns_new_clients_away(d.addr);
    // Connect refused, not merely unanswered: the port is closed.
    assert_eq!(
        TcpStream::connect(d.addr).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
    // The open pair carries on, then leaves: run() returns without waiting
    // for the drain timeout.
    assert_echoes(&mut open, b"while draining");
    // Only the pair open before the trigger, and any client that got in
    // before the worker saw it, reached the service.
    assert_eq!(echo.connections(), 1 + admitted);
    drop(open);
    let took = d.returned_within(PROMPT);
    assert!(
        triggered.elapsed() < drain,
        "run() returned {took:?} after the last client left, {:?} after the trigger",
        triggered.elapsed()
    );
    assert_eq!(d.stats().open, 0);
}

#[test]
fn a_pair_still_open_at_the_drain_timeout_is_closed() {
    let mut setup = Setup::routed();
    let drain = Duration::from_millis(300);
    setup.config.drain_timeout = drain;
    let _echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(listener().0);
    let mut open = d.echo_client("echo");
    d.trigger();
    let triggered = Instant::now();
    d.returned_within(PROMPT);
    let took = triggered.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_secs(1),
        "run() returned {took:?} after the trigger"
    );
    // The client was closed, whatever it was sending.
    let _ = open.write_all(&frame(b"too late"));
    assert_eq!(until_closed(&mut open), b"");
}
