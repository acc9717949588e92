//! `--handoff` in process: a client's socket goes to a service that takes
//! handed-off clients, and the daemon steps out; other services are relayed.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::Duration;

mod support;
use support::*;

#[test]
fn a_handed_off_client_keeps_talking_after_the_daemon_is_gone() {
    let mut setup = Setup::routed();
    setup.config.handoff = true;
    let _echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(listener().0);
    // The name and a first message in one write: both reach the service.
    let mut c = d.connect();
    c.write_all(&[&frame(b"echo")[..], &frame(b"early")].concat())
        .unwrap();
    assert_eq!(framed_answer(&mut c), "ok");
    assert_eq!(read_frame(&mut c).unwrap(), b"early");
    let s = d.stats_when(|s| s.open == 0);
    let echo = s.services["echo"];
    assert_eq!(
        (echo.handed_off, echo.connections, echo.open),
        (1, 0, 0),
        "{s:?}"
    );
    // The daemon holds nothing of it: it drains at once, and the client
    // goes on talking to its service.
    d.trigger();
    let took = d.returned_within(PROMPT);
    assert!(took < Duration::from_secs(1), "drained in {took:?}");
    drop(d);
    assert_echoes(&mut c, b"after the daemon");
}

#[test]
fn a_service_that_takes_no_handoff_is_relayed() {
    let mut setup = Setup::routed();
    setup.config.handoff = true;
    std::fs::create_dir_all(setup.rundir()).unwrap();
    let plain = UnixListener::bind(setup.rundir().join("plain")).unwrap();
    let d = setup.start(listener().0);
    let (mut c, answer) = d.ask(b"plain");
    assert_eq!(answer, "ok");
    let (mut svc, _) = plain.accept().unwrap();
    svc.write_all(&frame(b"relayed")).unwrap();
    assert_eq!(read_frame(&mut c).unwrap(), b"relayed");
    let s = d.stats_when(|s| s.services.get("plain").is_some_and(|p| p.open == 1));
    assert_eq!(s.services["plain"].handed_off, 0, "{s:?}");
}

#[test]
fn without_handoff_a_client_of_a_libipc_service_is_relayed() {
    let setup = Setup::routed();
    let _echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(listener().0);
    let mut c = d.echo_client("echo");
    let s = d.stats();
    let echo = s.services["echo"];
    assert_eq!(
        (echo.handed_off, echo.connections, echo.open),
        (0, 1, 1),
        "{s:?}"
    );
    assert_echoes(&mut c, b"still relayed");
}

/// A daemon (`--handoff` or not) with its outbound service `tcp` and an echo
/// service, and a local client that reached the echo through IPC_NETWORK
/// and that daemon's own port.
struct NetworkClient {
    d: Running,
    addr: std::net::SocketAddr,
    _echo: Service,
    ctx: libipc::Context,
    id: libipc::ConnId,
    /// What the client's connection leads to.
    peer: nix::sys::socket::SockaddrStorage,
}

fn ipc_network_client(handoff: bool) -> NetworkClient {
    let (l, addr) = listener();
    let mut setup = Setup::routed();
    setup.config.local_service = Some("tcp".into());
    setup.outbound = true;
    setup.config.handoff = handoff;
    let _echo = Service::start(setup.rundir(), "echo");
    let d = setup.start(l);
    let mut ctx = libipc::Context::new().unwrap();
    ctx.set_rundir(&d.rundir);
    ctx.set_network(Some(format!("pong tcp://{addr}/echo")));
    let id = ctx.connect_service("pong").unwrap();
    let peer = nix::sys::socket::getpeername(ctx.fd(id).unwrap()).unwrap();
    NetworkClient {
        d,
        addr,
        _echo,
        ctx,
        id,
        peer,
    }
}

/// IPC_NETWORK with `--handoff` at both ends: the local daemon gives its
/// client the connection to the remote, whose daemon gave its end to the
/// service: the client and the service talk over one TCP connection, with
/// no daemon in between (here one daemon is both ends).
#[test]
fn with_handoff_at_both_ends_a_local_client_talks_tcp_to_the_service() {
    let NetworkClient {
        d,
        addr,
        _echo,
        mut ctx,
        id,
        peer,
    } = ipc_network_client(true);
    assert_eq!(
        peer.as_sockaddr_in().map(|a| a.port()),
        Some(addr.port()),
        "the client's connection is not the TCP one to the daemon's port: {peer}"
    );
    ctx.write(id, b"direct").unwrap();
    assert_eq!(ctx.read(id).unwrap(), b"direct");
    let s = d.stats_when(|s| s.open == 0);
    assert_eq!(s.services["echo"].handed_off, 1, "{s:?}");
    d.trigger();
    d.returned_within(PROMPT);
    drop(d);
    ctx.write(id, b"no daemon left").unwrap();
    assert_eq!(ctx.read(id).unwrap(), b"no daemon left");
}

/// A daemon without --handoff relays a client that offered to take the
/// connection, as before.
#[test]
fn without_handoff_an_outbound_client_is_relayed() {
    let mut c = ipc_network_client(false);
    let (ctx, id, peer) = (&mut c.ctx, c.id, c.peer);
    assert!(peer.as_unix_addr().is_some(), "{peer}");
    ctx.write(id, b"relayed").unwrap();
    assert_eq!(ctx.read(id).unwrap(), b"relayed");
}
