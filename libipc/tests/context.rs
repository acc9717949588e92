//! In-process tests of the event loop: real unix and TCP sockets, temporary run
//! directories, services in threads, clients speaking raw frames with std sockets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use libipc::switch::{DaemonExt, Frames};
use libipc::{Config, Context, Error, Event};

mod common;
use common::*;

#[test]
fn many_clients_get_every_message_back_in_order() {
    let (_tmp, dir) = rundir();
    let clients = 24;
    let seen = echo_service(&dir, "echo", Config::default(), clients);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let mut s = client(&dir, "echo");
            thread::spawn(move || {
                let sizes = [0usize, 1, 63, 4096, 70_000, 5];
                let msgs: Vec<Vec<u8>> = (0..120)
                    .map(|i| {
                        let n = sizes[i % sizes.len()];
                        (0..n).map(|j| (c * 31 + i * 7 + j) as u8).collect()
                    })
                    .collect();
                // Pipelined: everything written in one go, coalesced by the kernel.
                let all: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
                let mut w = s.try_clone().unwrap();
                let writer = thread::spawn(move || w.write_all(&all).unwrap());
                for m in &msgs {
                    assert_eq!(&read_frame(&mut s).unwrap(), m);
                }
                writer.join().unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert_eq!(seen.connections, clients);
    assert_eq!(seen.messages, clients * 120);
    assert!(
        seen.disconnections.iter().all(|(_, r)| r.is_none()),
        "{seen:?}"
    );
}

#[test]
fn a_busy_polling_loop_serves_every_message_and_sleeps_when_idle() {
    let (_tmp, dir) = rundir();
    let spin = Some(Duration::from_micros(200));
    let seen = echo_service(&dir, "echo", Config::default().busy_poll(spin), 1);
    let mut s = client(&dir, "echo");
    // One at a time: each answer comes while the loop polls or after it slept.
    for i in 0..2000u32 {
        s.write_all(&frame(&i.to_be_bytes())).unwrap();
        assert_eq!(read_frame(&mut s).unwrap(), i.to_be_bytes());
    }
    drop(s);
    assert_eq!(seen.recv_timeout(LIMIT).unwrap().messages, 2000);

    // Idle, with a timer: it fires on time, and the thread slept through most
    // of the wait (it polls for 200 µs, then sleeps).
    let mut ctx = Context::with_config(Config::default().busy_poll(spin)).unwrap();
    ctx.set_rundir(&dir);
    ctx.service_init("idle").unwrap();
    ctx.set_timer(Some(Duration::from_millis(300)));
    let cpu = || {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
        Duration::from(t)
    };
    let (wall, used) = (Instant::now(), cpu());
    assert!(matches!(ctx.wait_event().unwrap(), Event::Timer));
    let (wall, used) = (wall.elapsed(), cpu() - used);
    assert!(wall >= Duration::from_millis(300), "{wall:?}");
    assert!(
        used < Duration::from_millis(100),
        "{used:?} of CPU in {wall:?} of idle waiting"
    );

    // A timer shorter than the busy poll fires when due, not a spin later.
    let mut ctx =
        Context::with_config(Config::default().busy_poll(Some(Duration::from_secs(2)))).unwrap();
    ctx.set_timer(Some(Duration::from_millis(200)));
    let wall = Instant::now();
    assert!(matches!(ctx.wait_event().unwrap(), Event::Timer));
    let wall = wall.elapsed();
    assert!(
        wall >= Duration::from_millis(200) && wall < Duration::from_millis(380),
        "a 200 ms timer fired after {wall:?}"
    );
}

#[test]
fn zero_length_messages_are_messages() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default(), 1);
    let mut s = client(&dir, "echo");
    s.write_all(&[frame(b""), frame(b"x"), frame(b"")].concat())
        .unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), b"");
    assert_eq!(read_frame(&mut s).unwrap(), b"x");
    assert_eq!(read_frame(&mut s).unwrap(), b"");
    drop(s);
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert_eq!(seen.messages, 3);
}

#[test]
fn oversized_length_prefix_closes_only_that_connection() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default().max_message_size(1000), 2);
    let mut good = client(&dir, "echo");
    good.write_all(&frame(b"before")).unwrap();
    assert_eq!(read_frame(&mut good).unwrap(), b"before");

    let mut bad = client(&dir, "echo");
    // A valid message, then a header announcing 4 GiB.
    bad.write_all(&[frame(b"ok"), vec![0xff; 4], vec![1; 100]].concat())
        .unwrap();
    assert_eq!(
        read_frame(&mut bad).unwrap(),
        b"ok",
        "accepted message answered"
    );
    let mut rest = Vec::new();
    bad.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed without echoing the bad frame");

    // Exactly the limit still passes; the good client is unaffected.
    let max = vec![7u8; 1000];
    good.write_all(&frame(&max)).unwrap();
    assert_eq!(read_frame(&mut good).unwrap(), max);
    drop(good);
    let seen = seen.recv_timeout(LIMIT).unwrap();
    let reasons = seen.reasons();
    assert_eq!(reasons.len(), 1, "{seen:?}");
    assert!(
        reasons[0].contains("4294967295 bytes exceeds the maximum of 1000"),
        "{reasons:?}"
    );
}

#[test]
fn truncated_frame_then_eof_and_silent_clients_harm_nobody() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default(), 3);
    let silent = client(&dir, "echo");
    let mut cut = client(&dir, "echo");
    cut.write_all(&[0, 0, 0, 10, b'a', b'b']).unwrap();
    drop(cut);
    let mut good = client(&dir, "echo");
    for i in 0..100u32 {
        good.write_all(&frame(&i.to_be_bytes())).unwrap();
        assert_eq!(read_frame(&mut good).unwrap(), i.to_be_bytes());
    }
    drop(good);
    drop(silent);
    let seen = seen.recv_timeout(LIMIT).unwrap();
    let reasons = seen.reasons();
    assert_eq!(
        reasons,
        vec!["connection closed in the middle of a message (8 bytes missing)".to_string()]
    );
}

#[test]
fn connect_errors_name_the_path_and_the_rule() {
    let (_tmp, dir) = rundir();
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(&dir);
    let err = ctx.connect_service("nothere").unwrap_err();
    assert!(matches!(err, Error::Connect { .. }));
    assert!(
        err.to_string()
            .contains(&dir.join("nothere").display().to_string()),
        "{err}"
    );

    for name in ["../x", "/abs", "", "a\0b"] {
        let err = ctx.connect_service(name).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{name:?}: {err}");
        let err = ctx.service_init(name).unwrap_err();
        assert!(err.to_string().starts_with("invalid service name"), "{err}");
    }
}

#[test]
fn unwritable_rundir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let mut ctx = Context::new().unwrap();
    // A run directory that cannot be created, even by root.
    ctx.set_rundir(file.join("run"));
    let err = ctx.service_init("svc").unwrap_err();
    assert!(matches!(err, Error::RunDir { .. }), "{err}");
    assert!(err.to_string().contains("run directory"), "{err}");
}

#[test]
fn ids_are_stable_and_stale_ids_refused() {
    let (_tmp, dir) = rundir();
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(&dir);
    ctx.set_timer(Some(LIMIT));
    let listener = ctx.service_init("svc").unwrap();
    let c1 = client(&dir, "svc");
    let first = match ctx.wait_event().unwrap() {
        Event::Connection { id, listener: l } => {
            assert_eq!(l, listener);
            id
        }
        e => panic!("{e:?}"),
    };
    drop(c1);
    match ctx.wait_event().unwrap() {
        Event::Disconnection { id, reason: None } => assert_eq!(id, first),
        e => panic!("{e:?}"),
    }
    let _c2 = client(&dir, "svc");
    let second = match ctx.wait_event().unwrap() {
        Event::Connection { id, .. } => id,
        e => panic!("{e:?}"),
    };
    assert_ne!(first, second);
    assert!(matches!(
        ctx.schedule(first, b"x"),
        Err(Error::NoSuchConnection(_))
    ));
    ctx.schedule(second, b"x").unwrap();
}

#[test]
fn backpressure_bounds_the_queue_and_loses_nothing() {
    let (_tmp, dir) = rundir();
    let mut ctx = Context::with_config(Config::default().water_marks(256 << 10, 64 << 10)).unwrap();
    ctx.set_rundir(&dir);
    ctx.set_timer(Some(Duration::from_millis(50)));
    ctx.service_init("svc").unwrap();
    let mut s = client(&dir, "svc");
    let id = loop {
        if let Event::Connection { id, .. } = ctx.wait_event().unwrap() {
            break id;
        }
    };
    // The client reads nothing: queue until refused.
    let msg = vec![3u8; 10_000];
    let mut sent = 0u32;
    let refused = loop {
        let mut m = msg.clone();
        m[..4].copy_from_slice(&sent.to_be_bytes());
        match ctx.schedule(id, &m) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        // Let the loop write what the socket takes.
        while !matches!(ctx.wait_event().unwrap(), Event::Timer) {}
    };
    assert!(matches!(refused, Error::Backpressure { .. }), "{refused}");
    let queued = ctx.queued(id).unwrap();
    assert!(
        queued <= (256 << 10) + 10_004,
        "queue bounded, got {queued}"
    );
    // Now the client reads: everything arrives, in order, once.
    let reader = thread::spawn(move || {
        (0..sent)
            .map(|i| {
                let p = read_frame(&mut s).unwrap();
                assert_eq!(p[..4], i.to_be_bytes());
                p.len()
            })
            .count()
    });
    let deadline = Instant::now() + LIMIT;
    while ctx.queued(id).unwrap() > 0 && Instant::now() < deadline {
        ctx.wait_event().unwrap();
    }
    assert_eq!(reader.join().unwrap(), sent as usize);
    ctx.schedule(id, b"again").unwrap();
}

/// A client that keeps its queue to a service full (scheduling again after
/// each MESSAGE_TX) and an echo service that pauses a client piling up
/// replies: the client still reads, so neither waits for the other forever.
/// Both ends in one context, each with its own role.
#[test]
fn a_client_with_a_full_queue_still_reads_its_service() {
    let (_tmp, dir) = rundir();
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(&dir);
    ctx.set_timer(Some(Duration::from_secs(5)));
    ctx.service_init("echo").unwrap();
    let client = ctx.connect_service("echo").unwrap();
    let count = 45;
    let message = |i: usize| vec![i as u8; 300_000];
    let (mut sent, mut echoed) = (0, 0);
    while echoed < count {
        while sent < count {
            match ctx.schedule(client, &message(sent)) {
                Ok(()) => sent += 1,
                Err(Error::Backpressure { .. }) => break,
                Err(e) => panic!("schedule: {e}"),
            }
        }
        match ctx.wait_event().unwrap() {
            Event::Message { id, payload } if id == client => {
                assert_eq!(payload, message(echoed), "echo {echoed}");
                echoed += 1;
            }
            Event::Message { id, payload } => match ctx.schedule_vec(id, payload) {
                Ok(()) => {}
                Err(e) => panic!("the service could not echo: {e}"),
            },
            Event::Timer => panic!("stuck: {sent} sent, {echoed} echoed"),
            Event::Disconnection { id, reason } => panic!("{id} gone: {reason:?}"),
            _ => {}
        }
    }
}

#[test]
fn scheduled_messages_leave_in_order_with_one_tx_event_each() {
    let (_tmp, dir) = rundir();
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(&dir);
    ctx.set_timer(Some(LIMIT));
    ctx.service_init("svc").unwrap();
    let mut s = client(&dir, "svc");
    let id = loop {
        if let Event::Connection { id, .. } = ctx.wait_event().unwrap() {
            break id;
        }
    };
    for i in 0..500u32 {
        ctx.schedule(id, &i.to_be_bytes()).unwrap();
    }
    let mut tx = 0;
    while tx < 500 {
        match ctx.wait_event().unwrap() {
            Event::MessageTx { id: t } => {
                assert_eq!(t, id);
                tx += 1
            }
            e => panic!("{e:?}"),
        }
    }
    for i in 0..500u32 {
        assert_eq!(read_frame(&mut s).unwrap(), i.to_be_bytes());
    }
}

/// As in the original, the timer restarts with every call: events coming more
/// often than the timer keep TIMER away for as long as they come (here three
/// times the timer), and TIMER comes once a whole timer passed with none.
#[test]
fn timer_is_an_inactivity_timeout() {
    const TIMER: Duration = Duration::from_millis(500);
    // A byte every fifth of the timer: a writer held up by a loaded machine
    // still writes well within one timer.
    const WRITES: usize = 15;
    let (r, mut w) = std::io::pipe().unwrap();
    let mut reader = r.try_clone().unwrap();
    let mut ctx = Context::new().unwrap();
    ctx.set_timer(Some(TIMER));
    let ext = ctx.add_external(r.into()).unwrap();
    let started = Instant::now();
    let writer = thread::spawn(move || {
        for _ in 0..WRITES {
            thread::sleep(TIMER / 5);
            w.write_all(b"x").unwrap();
        }
        // Kept open: an EOF would be readable forever.
        w
    });
    let (mut got, mut last) = (0, started);
    let (quiet, at) = loop {
        let call = Instant::now();
        match ctx.wait_event().unwrap() {
            Event::External { id } => {
                assert_eq!(id, ext);
                got += reader.read(&mut [0; 16]).unwrap();
                last = Instant::now();
            }
            Event::Timer => break (call.elapsed(), started.elapsed()),
            e => panic!("{e:?}"),
        }
    };
    let _w = writer.join().unwrap();
    assert_eq!(
        got,
        WRITES,
        "TIMER after {at:?}, while a byte came every {:?}",
        TIMER / 5
    );
    assert!(quiet >= TIMER, "TIMER after {quiet:?} of that call");
    let since = last.elapsed();
    assert!(since >= TIMER, "TIMER {since:?} after the last event");
    assert!(
        since < TIMER + Duration::from_secs(1),
        "TIMER {since:?} after the last event"
    );
    ctx.set_timer(Some(Duration::ZERO));
    assert!(matches!(ctx.wait_event().unwrap(), Event::Timer));
}

#[test]
fn external_fds_are_reported_while_readable() {
    let (r, mut w) = std::io::pipe().unwrap();
    let mut reader = r.try_clone().unwrap();
    let mut ctx = Context::new().unwrap();
    ctx.set_timer(Some(Duration::from_millis(100)));
    let ext = ctx.add_external(r.into()).unwrap();
    assert!(matches!(ctx.wait_event().unwrap(), Event::Timer));
    w.write_all(b"abc").unwrap();
    // Not drained: reported again, as poll(2) would.
    for _ in 0..3 {
        match ctx.wait_event().unwrap() {
            Event::External { id } => assert_eq!(id, ext),
            e => panic!("{e:?}"),
        }
    }
    let mut buf = [0; 16];
    let n = reader.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"abc");
    assert!(matches!(ctx.wait_event().unwrap(), Event::Timer));
    ctx.close(ext).unwrap();
    assert!(ctx.is_empty());
}

/// An external the application cannot serve now (a listener out of
/// descriptors) is held back for the delay asked, then reported again while
/// still readable: no spinning meanwhile.
#[test]
fn external_held_back_is_reported_again_after_the_delay() {
    let (r, mut w) = std::io::pipe().unwrap();
    let mut ctx = Context::new().unwrap();
    let ext = ctx.add_external(r.into()).unwrap();
    w.write_all(b"abc").unwrap();
    ctx.set_timer(Some(Duration::from_millis(20)));
    assert!(matches!(ctx.wait_event().unwrap(), Event::External { id } if id == ext));
    let held = Instant::now();
    ctx.retry_external_in(ext, Duration::from_millis(150))
        .unwrap();
    // Still readable, yet only timers until the delay has passed.
    let again = loop {
        match ctx.wait_event().unwrap() {
            Event::Timer => assert!(held.elapsed() < Duration::from_secs(5)),
            Event::External { id } if id == ext => break held.elapsed(),
            e => panic!("{e:?}"),
        }
    };
    assert!(
        again >= Duration::from_millis(150),
        "reported after {again:?}"
    );
    // Not drained: level-triggered again from then on.
    assert!(matches!(ctx.wait_event().unwrap(), Event::External { id } if id == ext));
    ctx.close(ext).unwrap();
}

/// A TCP client reaches a unix service through a switched pair with the plain
/// frames transport, as tcpd does.
#[test]
fn switch_relays_between_tcp_and_a_unix_service() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default().max_message_size(100_000), 2);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let relay_dir = dir.clone();
    thread::spawn(move || {
        let mut ctx = Context::with_config(Config::default().max_message_size(100_000)).unwrap();
        ctx.set_rundir(&relay_dir);
        ctx.set_timer(Some(LIMIT));
        let mut disconnections = Vec::new();
        for _ in 0..2 {
            let (stream, _) = tcp.accept().unwrap();
            let net = ctx.add_stream(stream.into()).unwrap();
            let svc = ctx.connect_service("echo").unwrap();
            ctx.add_switch(net, svc, Box::new(Frames::new(100_000)))
                .unwrap();
        }
        while disconnections.len() < 4 {
            match ctx.wait_event().unwrap() {
                Event::Disconnection { id, reason } => {
                    disconnections.push((id, reason.map(|e| e.to_string())))
                }
                Event::Timer => panic!("relay idle"),
                _ => {}
            }
        }
        done_tx.send((disconnections, ctx.len())).unwrap();
    });

    let mut a = TcpStream::connect(addr).unwrap();
    a.set_read_timeout(Some(LIMIT)).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    b.set_read_timeout(Some(LIMIT)).unwrap();
    // Frames cut at odd places still arrive whole and in order.
    let msgs: Vec<Vec<u8>> = (0..200u32)
        .map(|i| vec![i as u8; (i as usize * 397) % 90_000])
        .collect();
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
    let mut w = a.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for piece in bytes.chunks(7919) {
            w.write_all(piece).unwrap();
        }
    });
    for m in &msgs {
        assert_eq!(&read_frame(&mut a).unwrap(), m);
    }
    writer.join().unwrap();
    b.write_all(&frame(b"from b")).unwrap();
    assert_eq!(read_frame(&mut b).unwrap(), b"from b");

    // b sends an oversized frame: the relay closes b, a carries on.
    b.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut rest = Vec::new();
    let _ = b.read_to_end(&mut rest);
    assert!(rest.is_empty());
    a.write_all(&frame(b"still here")).unwrap();
    assert_eq!(read_frame(&mut a).unwrap(), b"still here");
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    let (disc, left) = done_rx.recv_timeout(LIMIT).unwrap();
    assert_eq!(left, 0, "every relayed connection closed: {disc:?}");
    let errors: Vec<_> = disc.iter().filter_map(|(_, r)| r.clone()).collect();
    assert!(
        errors.iter().any(|e| e.contains("exceeds the maximum")),
        "{disc:?}"
    );
    let seen = seen.recv_timeout(LIMIT).unwrap();
    assert_eq!(seen.messages, 200 + 1 + 1);
}

/// When the service behind a switch goes away, the network client gets everything
/// already sent to it, then EOF; the relay closes both sides.
#[test]
fn switch_closes_the_client_after_delivering_when_the_service_ends() {
    let (_tmp, dir) = rundir();
    let mut svc_ctx = Context::new().unwrap();
    svc_ctx.set_rundir(&dir);
    svc_ctx.set_timer(Some(LIMIT));
    svc_ctx.service_init("bye").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let relay_dir = dir.clone();
    let relay = thread::spawn(move || {
        let mut ctx = Context::new().unwrap();
        ctx.set_rundir(&relay_dir);
        ctx.set_timer(Some(LIMIT));
        let (stream, _) = tcp.accept().unwrap();
        let net = ctx.add_stream(stream.into()).unwrap();
        let svc = ctx.connect_service("bye").unwrap();
        ctx.add_switch(net, svc, Box::new(Frames::new(1 << 20)))
            .unwrap();
        while !ctx.is_empty() {
            assert!(!matches!(ctx.wait_event().unwrap(), Event::Timer));
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let id = loop {
        if let Event::Connection { id, .. } = svc_ctx.wait_event().unwrap() {
            break id;
        }
    };
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got
    });
    let msgs: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; 100_000]).collect();
    for m in &msgs {
        svc_ctx.write(id, m).unwrap();
    }
    // The service goes away with data still in flight in the relay.
    drop(svc_ctx);
    relay.join().unwrap();
    let got = reader.join().unwrap();
    let expected: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}

/// A stand-in protocol daemon: the service `tcp`, answering each URI as tcpd does.
fn fake_daemon(dir: &Path) -> thread::JoinHandle<Vec<String>> {
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(dir);
    ctx.set_timer(Some(LIMIT));
    ctx.outbound_service_init("tcp").unwrap();
    thread::spawn(move || {
        let mut asked = Vec::new();
        let mut routed = Vec::new();
        while asked.len() < 2 || !routed.is_empty() {
            match ctx.wait_event().unwrap() {
                Event::Message { id, payload } if routed.contains(&id) => ctx
                    .schedule(id, &[b"remote:", &payload[..]].concat())
                    .unwrap(),
                Event::Message { id, payload } => {
                    // The URI, then the offer to take the connection (this
                    // daemon relays, as one without --handoff does).
                    let request = String::from_utf8(payload).unwrap();
                    let (uri, options) = request.split_once('\n').unwrap();
                    assert_eq!(options, libipc::network::HANDOFF_OPTION);
                    let uri = uri.to_owned();
                    if uri == "tcp://127.0.0.1:1/pong" {
                        // The answer and the remote's first message arrive together.
                        ctx.schedule(id, b"ok").unwrap();
                        ctx.schedule(id, b"greeting").unwrap();
                        routed.push(id);
                    } else {
                        ctx.schedule(id, b"no: unknown service").unwrap();
                    }
                    asked.push(uri);
                }
                Event::Disconnection { id, .. } => routed.retain(|&r| r != id),
                Event::Timer => panic!("daemon idle"),
                _ => {}
            }
        }
        asked
    })
}

#[test]
fn ipc_network_routes_through_a_protocol_daemon() {
    let (_tmp, dir) = rundir();
    let daemon = fake_daemon(&dir);
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(&dir);
    ctx.set_timer(Some(LIMIT));
    ctx.set_network(Some(
        "pong tcp://127.0.0.1:1/pong;bad tcp://127.0.0.1:1/nothere;gone tls://h:1/x".into(),
    ));
    let id = ctx.connect_service("pong").unwrap();
    ctx.schedule(id, b"hi").unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Event::Message { payload, .. } = ctx.wait_event().unwrap() {
            got.push(String::from_utf8(payload).unwrap());
        }
    }
    assert_eq!(got, ["greeting", "remote:hi"]);

    let err = ctx.connect_service("bad").unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("no: unknown service"), "{err}");
    let err = ctx.connect_service("gone").unwrap_err();
    assert!(
        err.to_string()
            .contains(&dir.join(".outbound/tls").display().to_string()),
        "{err}"
    );
    ctx.close_all();
    let asked = daemon.join().unwrap();
    assert_eq!(
        asked,
        ["tcp://127.0.0.1:1/pong", "tcp://127.0.0.1:1/nothere"]
    );
}
