//! Handed-off clients (`DaemonExt::hand_off`, `libipc::handoff`): a daemon's
//! context gives a routed TCP client's socket to a libipc service and steps
//! out; the service speaks to the client directly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};

use libipc::handoff::{Declined, Handoff};
use libipc::switch::DaemonExt;
use libipc::{Config, ConnId, Context};

mod common;
use common::*;

/// A daemon's context with one routed TCP client that asked for a service
/// (what it sent is `hello`): the context, the client's id, the client.
fn asking_client(dir: &std::path::Path, hello: &[u8]) -> (Context, ConnId, TcpStream) {
    let (mut ctx, id, mut client) = routed_client(dir);
    client.write_all(hello).unwrap();
    assert_eq!(next_request(&mut ctx).0, id);
    (ctx, id, client)
}

#[test]
fn a_handed_off_client_talks_to_its_service_with_no_relay() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default(), 1);
    let hello = [&b"echo\n"[..], &frame(b"first"), &frame(b"")].concat();
    let (mut ctx, id, mut client) = asking_client(&dir, &hello);
    ctx.hand_off(id, "echo", Some(b"peer info"))
        .unwrap()
        .unwrap();
    // The daemon holds nothing of the client any more, and goes away.
    assert!(ctx.is_empty(), "{} connections left", ctx.len());
    drop(ctx);

    let mut ok = [0; 2];
    client.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    // The peer info first, then what the client sent with its name.
    assert_eq!(read_frame(&mut client).unwrap(), b"peer info");
    assert_eq!(read_frame(&mut client).unwrap(), b"first");
    assert_eq!(read_frame(&mut client).unwrap(), b"");
    client.write_all(&frame(b"directly")).unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"directly");
    drop(client);
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert_eq!((seen.connections, seen.messages), (1, 4), "{seen:?}");
}

#[test]
fn a_service_that_takes_no_handoff_is_declined_and_nothing_changes() {
    let (_tmp, dir) = rundir();
    std::fs::create_dir_all(&dir).unwrap();
    // A service not built on this libipc: a bare socket at $RUNDIR/plain.
    let plain = UnixListener::bind(dir.join("plain")).unwrap();
    let (mut ctx, id, mut client) = asking_client(&dir, b"plain\n");
    match ctx.hand_off(id, "plain", None).unwrap() {
        Err(Declined::NotOffered) => {}
        other => panic!("{other:?}"),
    }
    ctx.attach_service(id, "plain").unwrap();
    let (mut svc, _) = plain.accept().unwrap();
    svc.write_all(&frame(b"relayed")).unwrap();
    let mut ok = [0; 2];
    let reader = std::thread::spawn(move || {
        client.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok");
        read_frame(&mut client).unwrap()
    });
    while !reader.is_finished() {
        ctx.set_timer(Some(std::time::Duration::from_millis(20)));
        ctx.wait_event().unwrap();
    }
    assert_eq!(reader.join().unwrap(), b"relayed");
}

/// A local process that connects to a service's handoff endpoint and sends
/// garbage, or a handoff frame with no descriptor or one that is not a
/// socket: each is closed, and the service serves its clients as before.
#[test]
fn hostile_handoffs_are_closed_and_harm_nobody() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default(), 1);
    let endpoint = dir.join(".handoff").join("echo");
    let good = Handoff {
        answer: b"ok".to_vec(),
        first: None,
        rest: Vec::new(),
    }
    .encode()
    .unwrap();
    let pipe = std::fs::File::open("/dev/null").unwrap();
    for (what, bytes, fd) in [
        ("garbage", &b"GET / HTTP/1.1\r\n\r\n"[..], None),
        ("no descriptor", &good[..], None),
        ("a file, not a socket", &good[..], Some(&pipe)),
        ("a huge length", &[0xff, 0xff, 0xff, 0xff, b'I'][..], None),
    ] {
        let s = UnixStream::connect(&endpoint).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        match fd {
            Some(f) => {
                use std::os::fd::AsFd;
                libipc::handoff::send_with_fd(s.as_fd(), bytes, f.as_fd()).unwrap();
            }
            None => (&s).write_all(bytes).unwrap(),
        }
        let mut rest = Vec::new();
        (&s).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{what}: answered {rest:?}");
    }
    let mut c = client(&dir, "echo");
    c.write_all(&frame(b"still fine")).unwrap();
    assert_eq!(read_frame(&mut c).unwrap(), b"still fine");
    drop(c);
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert_eq!((seen.connections, seen.messages), (1, 1), "{seen:?}");
}

/// Handoff connections that send nothing are held for at most 5 s each, and
/// no more than 64 at once: the next are closed at once. The service's own
/// clients are served meanwhile.
#[test]
fn silent_handoff_connections_are_bounded_in_number() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default(), 1);
    let endpoint = dir.join(".handoff").join("echo");
    let held: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(&endpoint).unwrap())
        .collect();
    // Once the service has taken those 64 (its echo of a client's message
    // comes after), the next is closed unread.
    let mut c = client(&dir, "echo");
    c.write_all(&frame(b"served")).unwrap();
    assert_eq!(read_frame(&mut c).unwrap(), b"served");
    let extra = UnixStream::connect(&endpoint).unwrap();
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut byte = [0; 1];
    assert_eq!(
        (&extra).read(&mut byte).unwrap(),
        0,
        "the 65th was not closed"
    );
    drop(held);
    drop(c);
    seen.recv_timeout(LIMIT).unwrap();
}
