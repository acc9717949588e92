//! In-process tests of the engine's routing: which service a network client
//! reaches, and what it is answered when it reaches none. Asserted on the
//! answers, on the connections the services saw, and on the daemon's counters.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
};

mod support;
use support::*;

#[test]
fn raw_and_framed_handshakes_reach_the_service_named() {
    let setup = Setup::routed();
    let mut echo = Service::start(setup.rundir(), "echo");
    let mut other = Service::start(setup.rundir(), "other");
    let d = setup.start(listener().0);
    // Framed: a framed `ok`, then frames both ways.
    let framed = d.echo_client("echo");
    // Raw, as typed into nc: the raw bytes `ok`, then frames.
    let mut raw = d.connect();
    raw.write_all(b"echo\n").unwrap();
    let mut ok = [0; 2];
    std::io::Read::read_exact(&mut raw, &mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    assert_echoes(&mut raw, b"typed");
    assert_eq!((echo.connections(), other.connections()), (2, 0));
    let stats = d.stats();
    assert_eq!(stats.accepted, 2);
    assert_eq!(
        (
            stats.services["echo"].connections,
            stats.services["echo"].open
        ),
        (2, 2)
    );
    assert!(stats.refused.is_empty(), "{stats:?}");
    drop((framed, raw));
    d.stats_when(|s| s.open == 0 && s.services["echo"].open == 0);
}

/// Each refusal, in the framed form and with its exact words, closes the
/// connection and reaches no service.
#[test]
fn names_that_reach_no_service_are_refused() {
    let mut setup = Setup::routed();
    setup.config.allow = vec!["echo".into(), "nobody".into(), "down".into()];
    let mut echo = Service::start(setup.rundir(), "echo");
    let mut hidden = Service::start(setup.rundir(), "hidden");
    // A socket nobody listens on any more: the service is down.
    drop(UnixListener::bind(setup.rundir().join("down")).unwrap());
    let d = setup.start(listener().0);
    let cases: [(&[u8], &str); 7] = [
        (b"nobody", "no: unknown service"),
        (b"down", "no: service down"),
        (b"hidden", "no: service not allowed"),
        (b"../x", "no: invalid service name"),
        (b".outbound/tcp", "no: invalid service name"),
        (b"ec\0ho", "no: invalid service name"),
        // Its explanation is for people (README): the prefix is the answer.
        (&[b'e'; 65], "no: bad handshake: "),
    ];
    for (name, want) in cases {
        let (mut s, answer) = d.ask(name);
        let explained = want.ends_with(": ") && answer.len() > want.len();
        assert!(
            answer == want || (explained && answer.starts_with(want)),
            "asking for {:?}: got {answer:?}, want {want:?}",
            String::from_utf8_lossy(name)
        );
        assert_eq!(until_closed(&mut s), b"", "after {want}");
    }
    // No service was reached; the daemon serves on.
    assert_eq!((echo.connections(), hidden.connections()), (0, 0));
    drop(d.echo_client("echo"));
    let stats = d.stats_when(|s| s.open == 0);
    let refused: Vec<(&str, u64)> = stats
        .refused
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        refused,
        [
            ("bad handshake", 1),
            ("invalid service name", 3),
            ("service down", 1),
            ("service not allowed", 1),
            ("unknown service", 1),
        ]
    );
    assert_eq!(stats.accepted, 8);
    assert_eq!(stats.services.keys().collect::<Vec<_>>(), ["echo"]);
}

/// The raw form is refused in the raw form: a line of text.
#[test]
fn a_raw_handshake_is_refused_with_a_line() {
    let setup = Setup::routed();
    let d = setup.start(listener().0);
    let cases: [(&[u8], &[u8]); 3] = [
        (b"nobody\n", b"no: unknown service\n"),
        (b"..\r\n", b"no: invalid service name\n"),
        // Its explanation is for people (README): the prefix, then a line.
        (
            &[[b'e'; 65].as_slice(), b"\n"].concat(),
            b"no: bad handshake: ",
        ),
    ];
    for (hello, want) in cases {
        let mut s = d.connect();
        s.write_all(hello).unwrap();
        let (got, want) = (until_closed(&mut s), String::from_utf8_lossy(want));
        let got = String::from_utf8_lossy(&got);
        let explained = want.ends_with(": ")
            && got.len() > want.len() + 1
            && got.ends_with('\n')
            && got.lines().count() == 1;
        assert!(
            got == want || (explained && got.starts_with(&*want)),
            "got {got:?}, want {want:?}"
        );
    }
}

/// Fixed mode: every client reaches the one service, whatever it sends first
/// (a name is data), and no other.
#[test]
fn fixed_mode_reaches_its_service_and_nothing_else() {
    let mut setup = Setup::routed();
    setup.config.fixed_service = Some("echo".into());
    let mut echo = Service::start(setup.rundir(), "echo");
    let mut other = Service::start(setup.rundir(), "other");
    let d = setup.start(listener().0);
    for _ in 0..2 {
        let mut s = d.connect();
        // No `ok`: the name is echoed as data.
        assert_echoes(&mut s, b"other");
        assert_echoes(&mut s, b"..");
    }
    assert_eq!((echo.connections(), other.connections()), (2, 0));
    let stats = d.stats_when(|s| s.open == 0);
    assert_eq!(stats.services.keys().collect::<Vec<_>>(), ["echo"]);
    assert_eq!(stats.services["echo"].connections, 2);
    assert!(stats.refused.is_empty(), "{stats:?}");
}

/// A name in --expose-outbound reaches `$RUNDIR/.outbound/NAME`, never a
/// service of that name in `$RUNDIR`; a name not exposed cannot reach it.
#[test]
fn exposed_outbound_names_reach_the_outbound_directory() {
    let mut setup = Setup::routed();
    setup.config.expose_outbound = vec!["relay".into()];
    let mut lookalike = Service::start(setup.rundir(), "relay");
    let outbound = setup.rundir().join(".outbound");
    std::fs::create_dir_all(&outbound).unwrap();
    let relay = UnixListener::bind(outbound.join("relay")).unwrap();
    let _hidden = UnixListener::bind(outbound.join("hidden")).unwrap();
    let d = setup.start(listener().0);
    let (mut s, answer) = d.ask(b"relay");
    assert_eq!(answer, "ok");
    assert_eq!(lookalike.connections(), 0);
    s.write_all(&frame(b"to the outbound side")).unwrap();
    // Connected before the `ok`: waiting in the backlog now, if anywhere.
    relay.set_nonblocking(true).unwrap();
    let (mut served, _) = relay.accept().expect("a connection on the outbound side");
    served.set_nonblocking(false).unwrap();
    served.set_read_timeout(Some(PROMPT)).unwrap();
    assert_eq!(read_frame(&mut served).unwrap(), b"to the outbound side");
    // Not exposed: as if it did not exist.
    assert_eq!(d.ask(b"hidden").1, "no: unknown service");
    assert_eq!(d.ask(b".outbound/relay").1, "no: invalid service name");
    assert_eq!(d.stats().services["relay"].connections, 1);
}

/// A service at `path` that does not accept: a listen backlog of 1, filled
/// by connections of the test (returned, to keep it full).
fn busy_service(path: &Path) -> (UnixListener, Vec<OwnedFd>) {
    let unix = |flags| socket(AddressFamily::Unix, SockType::Stream, flags, None).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let fd = unix(SockFlag::SOCK_CLOEXEC);
    let addr = UnixAddr::new(path).unwrap();
    bind(fd.as_raw_fd(), &addr).unwrap();
    listen(&fd, Backlog::new(1).unwrap()).unwrap();
    let mut fillers = Vec::new();
    // Bounded: Linux queues backlog + 1 connections.
    for _ in 0..16 {
        let c = unix(SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK);
        match connect(c.as_raw_fd(), &addr) {
            Ok(()) => fillers.push(c),
            Err(nix::errno::Errno::EAGAIN) => {
                let listener = UnixListener::from(fd);
                listener.set_nonblocking(true).unwrap();
                return (listener, fillers);
            }
            Err(e) => panic!("filling the backlog: {e}"),
        }
    }
    panic!("the backlog never filled");
}

/// The next connection to `listener`, within [`PROMPT`].
fn accept_within(listener: &UnixListener) -> UnixStream {
    let deadline = Instant::now() + PROMPT;
    loop {
        match listener.accept() {
            Ok((s, _)) => return s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection within {PROMPT:?}");
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A service whose backlog is full for a moment (a burst its accept loop
/// has not caught up with) is tried again for a while (`busy_wait`), without
/// the worker waiting: the client reaches it.
#[test]
fn a_service_busy_for_a_moment_is_reached() {
    let mut setup = Setup::routed();
    // Longer than the daemons' 100 ms, so that a slow test thread cannot
    // use it up before it frees the backlog.
    setup.config.busy_wait = Duration::from_secs(10);
    let (busy, _fillers) = busy_service(&setup.rundir().join("busy"));
    let d = setup.start(listener().0);
    let mut s = d.connect();
    s.write_all(&frame(b"busy")).unwrap();
    // Busy for 30 ms: no answer meanwhile.
    s.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    match s.read(&mut [0; 64]) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("answered at once while the service was busy: {other:?}"),
    }
    // The service catches up with its backlog: the client gets through.
    while busy.accept().is_ok() {}
    s.set_read_timeout(Some(PROMPT)).unwrap();
    assert_eq!(framed_answer(&mut s), "ok");
    let mut served = accept_within(&busy);
    served.set_read_timeout(Some(PROMPT)).unwrap();
    s.write_all(&frame(b"made it")).unwrap();
    assert_eq!(read_frame(&mut served).unwrap(), b"made it");
    let stats = d.stats();
    assert!(stats.refused.is_empty(), "{stats:?}");
    assert_eq!(stats.services["busy"].connections, 1);
}

/// Still busy after 100 ms: `service busy`.
#[test]
fn a_service_busy_throughout_is_refused_after_the_retries() {
    let setup = Setup::routed();
    let (_busy, _fillers) = busy_service(&setup.rundir().join("busy"));
    let d = setup.start(listener().0);
    let started = Instant::now();
    let (mut s, answer) = d.ask(b"busy");
    let waited = started.elapsed();
    assert_eq!(answer, "no: service busy");
    assert!(
        waited >= Duration::from_millis(90),
        "refused after {waited:?}: not tried again"
    );
    assert!(until_closed(&mut s).is_empty());
    assert_eq!(d.stats().refused.get("service busy"), Some(&1));
}
