//! In-process tests of the engine's limits: connections at most, time to name
//! a service, time a pair may stay quiet. Asserted on what clients are
//! answered and when, on the services' side and on the daemon's counters.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(200);
const IDLE_TIMEOUT: Duration = Duration::from_millis(200);

#[test]
fn clients_past_max_connections_are_refused_in_their_own_form() {
    let mut setup = Setup::routed();
    setup.config.max_connections = 2;
    let mut echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(listener().0);
    let mut first = d.echo_client("echo");
    let mut second = d.echo_client("echo");
    // Past the limit: each is read until it names its service, then refused
    // in the form it used.
    let (mut framed, answer) = d.ask(b"echo");
    assert_eq!(answer, "no: too many connections");
    assert_eq!(until_closed(&mut framed), b"");
    let mut raw = d.connect();
    raw.write_all(b"echo\n").unwrap();
    assert_eq!(until_closed(&mut raw), b"no: too many connections\n");
    // The ones admitted keep working; nobody else reached the service.
    assert_echoes(&mut first, b"still here");
    assert_echoes(&mut second, b"me too");
    assert_eq!(echo.connections(), 2);
    let stats = d.stats();
    assert_eq!(stats.refused["too many connections"], 2);
    assert_eq!((stats.open, stats.accepted), (2, 4));
    // A place frees: the next client gets in once the worker has seen the
    // close (until then it is refused like the others).
    drop(first);
    let deadline = Instant::now() + PROMPT;
    let mut refused = 0;
    let mut third = loop {
        match d.ask(b"echo") {
            (s, answer) if answer == "ok" => break s,
            (_, answer) => assert_eq!(answer, "no: too many connections"),
        }
        refused += 1;
        assert!(Instant::now() < deadline, "no place freed in {PROMPT:?}");
        thread::sleep(Duration::from_millis(5));
    };
    assert_echoes(&mut third, b"in");
    assert_eq!(echo.connections(), 3);
    let stats = d.stats();
    assert_eq!(stats.refused["too many connections"], 2 + refused);
    assert_eq!(stats.services["echo"].connections, 3);
}

/// A client that does not name its service in time is answered (in the form
/// it started, if any) and closed, no earlier than the timeout.
#[test]
fn a_client_that_names_no_service_in_time_is_refused() {
    let mut setup = Setup::routed();
    setup.config.handshake_timeout = HANDSHAKE_TIMEOUT;
    let mut echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(listener().0);
    let started = Instant::now();
    let mut silent = d.connect();
    // Half a frame header: a framed client, answered in frames.
    let mut halfway = d.connect();
    halfway.write_all(&[0, 0]).unwrap();
    // One that names its service meanwhile is not affected.
    let mut prompt = d.echo_client("echo");
    assert_eq!(until_closed(&mut silent), b"no: handshake timeout\n");
    assert_eq!(framed_answer(&mut halfway), "no: handshake timeout");
    assert_eq!(until_closed(&mut halfway), b"");
    let waited = started.elapsed();
    assert!(waited >= HANDSHAKE_TIMEOUT, "answered after {waited:?}");
    assert!(
        waited < HANDSHAKE_TIMEOUT + PROMPT,
        "answered after {waited:?}"
    );
    thread::sleep(HANDSHAKE_TIMEOUT);
    assert_echoes(&mut prompt, b"past the handshake timeout");
    assert_eq!(echo.connections(), 1);
    assert_eq!(d.stats().refused["handshake timeout"], 2);
}

/// A pair quiet for the idle timeout is closed, on both sides; one that keeps
/// talking is not.
#[test]
fn the_idle_timeout_closes_a_quiet_pair() {
    let mut setup = Setup::routed();
    setup.config.idle_timeout = Some(IDLE_TIMEOUT);
    let _echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(listener().0);
    let mut quiet = d.echo_client("echo");
    let quiet_since = Instant::now();
    // Its close, watched meanwhile: at the timeout, not long after either.
    let quiet = thread::spawn(move || {
        assert_eq!(until_closed(&mut quiet), b"");
        quiet_since.elapsed()
    });
    let mut talking = d.echo_client("echo");
    // Talks every quarter of the idle timeout, for twice its length.
    while quiet_since.elapsed() < 2 * IDLE_TIMEOUT {
        assert_echoes(&mut talking, b"still talking");
        thread::sleep(IDLE_TIMEOUT / 4);
    }
    let waited = quiet.join().expect("the quiet client");
    assert!(waited >= IDLE_TIMEOUT, "closed after {waited:?}");
    // A second more than the timeout, for a loaded machine.
    assert!(
        waited < IDLE_TIMEOUT + Duration::from_secs(1),
        "closed after {waited:?}"
    );
    assert_echoes(&mut talking, b"not idle");
    // The service side of the quiet pair was closed too.
    let stats = d.stats_when(|s| s.open == 1);
    assert_eq!(stats.services["echo"].open, 1);
}
