//! In-process tests of network connections in their handshake phase: deadlines,
//! service requests, attaching and refusing, with real TCP sockets on port 0.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use libipc::switch::{DaemonExt, Frames, Relay, Routed, Transport};
use libipc::{Config, ConnId, Context, Error, Event};

mod common;
use common::*;

#[test]
fn a_named_service_is_attached_and_the_first_message_arrives() {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default(), 1);
    let (mut ctx, id, mut client) = routed_client(&dir);
    client
        .write_all(&[&b"echo\n"[..], &frame(b"first"), &frame(b"")].concat())
        .unwrap();
    let (req, name) = next_request(&mut ctx);
    assert_eq!((req, name.as_slice()), (id, &b"echo"[..]));
    ctx.attach_service(id, "echo").unwrap();
    let reader = std::thread::spawn(move || {
        let mut ok = [0; 2];
        client.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok");
        assert_eq!(read_frame(&mut client).unwrap(), b"first");
        assert_eq!(read_frame(&mut client).unwrap(), b"");
    });
    let deadline = Instant::now() + LIMIT;
    while !reader.is_finished() && Instant::now() < deadline {
        ctx.set_timer(Some(Duration::from_millis(20)));
        ctx.wait_event().unwrap();
    }
    reader.join().unwrap();
    // The client has gone once its reader returns: the loop may have seen
    // its close, and ended the pair, already.
    match ctx.close(id) {
        Ok(()) | Err(Error::NoSuchConnection(_)) => {}
        Err(e) => panic!("{e}"),
    }
    while !ctx.is_empty() {
        ctx.wait_event().unwrap();
    }
    assert_eq!(seen.recv_timeout(LIMIT).unwrap().messages, 2);
}

/// A pair relaying without pause, its context's timer at `period`: what
/// `wait_event` returns until the client has had `echoes` echoes back.
fn events_while_relaying(config: Config, period: Duration, echoes: usize) -> Vec<Event> {
    let (_tmp, dir) = rundir();
    let seen = echo_service(&dir, "echo", Config::default(), 1);
    let (mut ctx, id, mut client) = routed_client_with(&dir, config);
    client.write_all(b"echo\n").unwrap();
    let (req, _) = next_request(&mut ctx);
    ctx.attach_service(req, "echo").unwrap();
    // Frames of 16 KiB, 8 of them in flight: the pair always has work.
    let payload = vec![7u8; 16 << 10];
    let mut writer = client.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..echoes {
            if writer.write_all(&frame(&payload)).is_err() {
                break;
            }
        }
    });
    let reader = std::thread::spawn(move || {
        let mut ok = [0; 2];
        client.read_exact(&mut ok).unwrap();
        for _ in 0..echoes {
            assert_eq!(read_frame(&mut client).unwrap().len(), 16 << 10);
        }
    });
    ctx.set_timer(Some(period));
    let deadline = Instant::now() + LIMIT;
    let mut events = Vec::new();
    while !reader.is_finished() && Instant::now() < deadline {
        events.push(ctx.wait_event().unwrap());
    }
    reader.join().unwrap();
    sender.join().unwrap();
    ctx.close(id).unwrap();
    while !ctx.is_empty() {
        ctx.wait_event().unwrap();
    }
    assert!(seen.recv_timeout(LIMIT).is_ok());
    events
}

#[test]
fn without_switch_events_relaying_is_silent_and_the_timer_keeps_its_schedule() {
    let period = Duration::from_millis(20);
    let started = Instant::now();
    // Small reads: the client's socket always has more, so the loop never
    // runs out of work while the client sends.
    let mut config = Config::default().switch_events(false);
    config.read_chunk = 4096;
    let events = events_while_relaying(config, period, 20_000);
    let took = started.elapsed();
    let switch = events
        .iter()
        .filter(|e| matches!(e, Event::SwitchRx { .. } | Event::SwitchTx { .. }))
        .count();
    assert_eq!(switch, 0, "switch events, though turned off");
    let timers = events.iter().filter(|e| matches!(e, Event::Timer)).count();
    // 320 MB through the pair: at least a few timer periods of relaying, during
    // which the timer fires about once per period (half of them allowed for,
    // since a busy loop's turns take time too).
    let periods = (took.as_millis() / period.as_millis()) as usize;
    assert!(
        timers >= periods / 2,
        "{timers} timer events in {took:?} of relaying ({periods} periods)"
    );
}

#[test]
fn switch_events_report_relaying_by_default() {
    let events = events_while_relaying(Config::default(), Duration::from_secs(5), 100);
    let rx = events
        .iter()
        .filter(|e| matches!(e, Event::SwitchRx { .. }))
        .count();
    let tx = events
        .iter()
        .filter(|e| matches!(e, Event::SwitchTx { .. }))
        .count();
    assert!(rx > 0 && tx > 0, "SwitchRx {rx}, SwitchTx {tx}");
}

#[test]
fn a_refused_client_gets_the_reason_then_eof() {
    let (_tmp, dir) = rundir();
    let (mut ctx, id, mut client) = routed_client(&dir);
    client.write_all(&frame(b"nothere")).unwrap();
    let (_, name) = next_request(&mut ctx);
    let err = ctx
        .attach_service(id, std::str::from_utf8(&name).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    ctx.refuse(id, libipc::switch::Refusal::UnknownService)
        .unwrap();
    let reason = loop {
        if let Event::Disconnection { id: gone, reason } = ctx.wait_event().unwrap() {
            assert_eq!(gone, id);
            break reason;
        }
    };
    assert_eq!(reason.unwrap().to_string(), "denied: unknown service");
    assert_eq!(read_frame(&mut client).unwrap(), b"no: unknown service");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn deadlines_fire_once_and_idle_timeouts_follow_activity() {
    let (_tmp, dir) = rundir();
    let (mut ctx, id, client) = routed_client(&dir);
    ctx.set_deadline(id, Some(Instant::now() + Duration::from_millis(50)))
        .unwrap();
    let t = Instant::now();
    loop {
        match ctx.wait_event().unwrap() {
            Event::Timeout { id: late } => {
                assert_eq!(late, id);
                break;
            }
            Event::Timer => panic!("deadline never fired"),
            _ => {}
        }
    }
    assert!(t.elapsed() >= Duration::from_millis(50));
    // Once only: nothing more within a while.
    ctx.set_timer(Some(Duration::from_millis(200)));
    assert!(matches!(ctx.wait_event().unwrap(), Event::Timer));

    drop(client);

    // An idle timeout of 1 s is not reached while messages keep arriving.
    let (mine, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let id = ctx.add_stream(mine.into()).unwrap();
    ctx.set_idle_timeout(id, Some(Duration::from_secs(1)))
        .unwrap();
    ctx.set_timer(Some(Duration::from_millis(100)));
    let busy_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < busy_until {
        peer.write_all(&frame(b"x")).unwrap();
        if let Event::Timeout { .. } = ctx.wait_event().unwrap() {
            panic!("idle timeout despite traffic");
        }
    }
    ctx.set_timer(Some(LIMIT));
    loop {
        match ctx.wait_event().unwrap() {
            Event::Timeout { id: idle } => {
                assert_eq!(idle, id);
                break;
            }
            Event::Timer => panic!("idle timeout never fired"),
            _ => {}
        }
    }
}

#[test]
fn a_client_leaving_before_naming_a_service_is_reported() {
    let (_tmp, dir) = rundir();
    let (mut ctx, id, client) = routed_client(&dir);
    drop(client);
    loop {
        if let Event::Disconnection { id: gone, reason } = ctx.wait_event().unwrap() {
            assert_eq!(gone, id);
            let reason = reason.unwrap().to_string();
            assert!(reason.contains("before naming a service"), "{reason}");
            break;
        }
    }
}

/// Routed frames, except that input containing `boom` panics: a stand-in for
/// a transport bug that some input triggers.
#[derive(Debug)]
struct Fragile(Routed<Frames>);

impl Transport for Fragile {
    fn name(&self) -> &'static str {
        "fragile"
    }
    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> libipc::Result<()> {
        assert!(
            !data.windows(4).any(|w| w == b"boom"),
            "boom in the transport"
        );
        self.0.on_network_data(data, relay)
    }
    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> libipc::Result<()> {
        self.0.on_service_data(data, relay)
    }
    fn accepted(&mut self, relay: &mut Relay<'_>) {
        self.0.accepted(relay)
    }
}

/// Waits for the DISCONNECTION of `id`; returns its reason.
fn disconnection(ctx: &mut Context, id: ConnId) -> String {
    loop {
        match ctx.wait_event().unwrap() {
            Event::Disconnection { id: gone, reason } if gone == id => {
                return reason.map(|e| e.to_string()).unwrap_or_default();
            }
            Event::Timer => panic!("{id} still open after {LIMIT:?}"),
            _ => {}
        }
    }
}

#[test]
fn a_transport_panic_closes_only_its_connection_at_once() {
    let (_tmp, dir) = rundir();
    let _seen = echo_service(&dir, "echo", Config::default(), 2);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(&dir);
    let add = |ctx: &mut Context| {
        let client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let (stream, _) = tcp.accept().unwrap();
        let transport = Fragile(Routed::new(Frames::new(1 << 20)));
        (
            ctx.add_network(stream.into(), Box::new(transport)).unwrap(),
            client,
        )
    };
    let (calm, mut calm_client) = add(&mut ctx);
    let (switched, mut switched_client) = add(&mut ctx);
    let (pending, mut pending_client) = add(&mut ctx);
    ctx.set_timer(Some(LIMIT));
    for (id, client) in [(calm, &mut calm_client), (switched, &mut switched_client)] {
        client.write_all(b"echo\n").unwrap();
        assert_eq!(next_request(&mut ctx).0, id);
        ctx.attach_service(id, "echo").unwrap();
    }
    // Mid-handshake, and in the middle of a relayed conversation. Each client
    // sees its connection closed at once (it then closes its own side).
    let until_eof = |mut client: TcpStream| {
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = client.read_to_end(&mut rest);
        })
    };
    pending_client.write_all(b"boom\n").unwrap();
    let pending_eof = until_eof(pending_client);
    let reason = disconnection(&mut ctx, pending);
    assert_eq!(
        reason,
        "transport: internal error (a bug): boom in the transport"
    );
    switched_client.write_all(&frame(b"boom")).unwrap();
    let switched_eof = until_eof(switched_client);
    let reason = disconnection(&mut ctx, switched);
    assert!(reason.contains("internal error (a bug)"), "{reason}");
    pending_eof.join().unwrap();
    switched_eof.join().unwrap();
    // The other client goes on as if nothing happened.
    let reader = std::thread::spawn(move || {
        let mut ok = [0; 2];
        calm_client.read_exact(&mut ok).unwrap();
        calm_client.write_all(&frame(b"still here")).unwrap();
        assert_eq!(read_frame(&mut calm_client).unwrap(), b"still here");
    });
    let deadline = Instant::now() + LIMIT;
    while !reader.is_finished() && Instant::now() < deadline {
        ctx.set_timer(Some(Duration::from_millis(20)));
        ctx.wait_event().unwrap();
    }
    reader.join().unwrap();
}
