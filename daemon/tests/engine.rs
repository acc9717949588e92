//! In-process tests of a daemon's outbound service (what `IPC_NETWORK` clients
//! use): host names are looked up off the worker's loop, within a timeout and
//! a bound, and a local client's answer never makes the worker wait.
//!
//! One daemon with one worker, on 127.0.0.1:0, in front of an echo service;
//! its outbound service dials the daemon itself. The name lookup is the
//! test's own, held at a gate the test opens. Every wait is bounded by
//! [`LIMIT`] or a socket timeout. Last, `Context::close_after_flush`, which
//! those answers rely on.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use daemon::engine::{LookupFn, Resolver};
use libipc::{Context, Event};

mod support;
use support::*;

/// Name lookups that wait until the test opens the gate, and say which names
/// they were asked (as they start).
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            open: Mutex::new(false),
            opened: Condvar::new(),
        })
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// A lookup of any name giving `addrs`, once the gate is open (at most
    /// [`LIMIT`]); `asked` hears each name as its lookup starts.
    fn lookup(self: &Arc<Gate>, addrs: Vec<SocketAddr>) -> (LookupFn, Receiver<String>) {
        let (tx, asked) = mpsc::channel();
        let gate = self.clone();
        let tx = Mutex::new(tx);
        let f: LookupFn = Arc::new(move |host: &str, _port: u16| {
            let _ = tx.lock().unwrap().send(host.to_owned());
            let open = gate.open.lock().unwrap();
            let _ = gate
                .opened
                .wait_timeout_while(open, LIMIT, |o| !*o)
                .unwrap();
            Ok(addrs.clone())
        });
        (f, asked)
    }
}

/// A tcpd-like daemon (one worker, outbound service `tcp`) on `listener`,
/// with an echo service, resolving names with `resolver`.
fn start(listener: std::net::TcpListener, resolver: Resolver) -> Running {
    let mut setup = Setup::routed();
    setup.config.local_service = Some("tcp".into());
    setup.outbound = true;
    setup.resolver = resolver;
    Service::start(setup.rundir(), "echo");
    setup.start(listener)
}

/// A local client of the outbound service that sent `uri`.
fn ask(d: &Running, uri: &str) -> UnixStream {
    let mut s = UnixStream::connect(d.rundir.join(".outbound/tcp")).unwrap();
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.write_all(&frame(uri.as_bytes())).unwrap();
    s
}

/// A local client connected through the daemon to its echo service.
fn assert_echoes(s: &mut UnixStream) {
    assert_eq!(framed_answer(s), "ok");
    s.write_all(&frame(b"through")).unwrap();
    assert_eq!(framed_answer(s), "through");
}

#[test]
fn a_slow_name_lookup_does_not_stop_the_worker() {
    let (l, addr) = listener();
    let gate = Gate::new();
    let (lookup, asked) = gate.lookup(vec![addr]);
    let d = start(l, Resolver::new(lookup));
    let mut local = ask(&d, &format!("tcp://slow.test:{}/echo", addr.port()));
    assert_eq!(asked.recv_timeout(LIMIT).unwrap(), "slow.test");
    // The lookup hangs; the worker serves network clients meanwhile.
    for _ in 0..3 {
        d.echo_client("echo");
    }
    gate.open();
    assert_echoes(&mut local);
}

#[test]
fn name_lookups_are_bounded_in_time_and_number() {
    let (l, addr) = listener();
    let gate = Gate::new();
    let (lookup, asked) = gate.lookup(vec![addr]);
    let timeout = Duration::from_millis(300);
    let d = start(l, Resolver::new(lookup).timeout(timeout).max_pending(1));
    let uri = |host: &str| format!("tcp://{host}:{}/echo", addr.port());
    let started = Instant::now();
    let mut slow = ask(&d, &uri("slow.test"));
    assert_eq!(asked.recv_timeout(LIMIT).unwrap(), "slow.test");
    // One lookup outstanding: the next is refused at once, not queued.
    let mut second = ask(&d, &uri("other.test"));
    assert_eq!(
        framed_answer(&mut second),
        "no: too many name lookups in progress"
    );
    assert_eq!(
        framed_answer(&mut slow),
        "no: cannot resolve slow.test: timed out"
    );
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    // Answered means closed.
    assert_eq!(slow.read(&mut [0; 1]).unwrap(), 0);
    // The timed-out lookup still holds its thread: still counted.
    let mut third = ask(&d, &uri("third.test"));
    assert_eq!(
        framed_answer(&mut third),
        "no: too many name lookups in progress"
    );
    // Its late answer is dropped; the next lookup goes through.
    gate.open();
    let deadline = Instant::now() + LIMIT;
    let mut fast = loop {
        let mut s = ask(&d, &uri("fast.test"));
        match framed_answer(&mut s).as_str() {
            "ok" => break s,
            "no: too many name lookups in progress" => {}
            other => panic!("{other}"),
        }
        assert!(Instant::now() < deadline, "the late answer never came back");
        thread::sleep(Duration::from_millis(10));
    };
    fast.write_all(&frame(b"through")).unwrap();
    assert_eq!(framed_answer(&mut fast), "through");
    d.echo_client("echo");
}

#[test]
fn the_allowed_addresses_are_tried_in_order() {
    let (l, addr) = listener();
    // A port nobody listens on (bound, then let go): the connection is refused.
    let refused = listener().1;
    let gate = Gate::new();
    gate.open();
    let (lookup, _asked) = gate.lookup(vec![refused, addr]);
    let d = start(l, Resolver::new(lookup));
    let mut local = ask(&d, &format!("tcp://two.test:{}/echo", addr.port()));
    assert_echoes(&mut local);
    // Every address refused: the client hears so.
    let (lookup, _asked) = gate.lookup(vec![refused]);
    let (l, _) = listener();
    let d = start(l, Resolver::new(lookup));
    let mut local = ask(&d, "tcp://none.test:1/echo");
    let got = framed_answer(&mut local);
    assert!(got.starts_with("no: ") && got.contains("refused"), "{got}");
}

#[test]
fn a_local_client_that_never_reads_does_not_stall_the_worker() {
    let (l, _) = listener();
    let d = start(l, Resolver::default());
    // A request whose refusal would quote it whole: half a megabyte, more
    // than the socket holds. The client never reads.
    let scheme = "x".repeat(512 << 10);
    let mut silent = ask(&d, &format!("{scheme}://127.0.0.1:1/echo"));
    for _ in 0..3 {
        d.echo_client("echo");
    }
    // What it is answered is short, and ends the connection.
    let mut got = Vec::new();
    silent.read_to_end(&mut got).unwrap();
    assert!(got.len() < 200, "{} bytes", got.len());
    assert!(String::from_utf8_lossy(&got).contains("this daemon speaks tcp://"));
}

/// `Context::close_after_flush`: the last answer is written to a peer that
/// reads, then the connection closes; a peer that does not read is closed
/// after the given time, and the loop serves others meanwhile.
#[test]
fn close_after_flush_writes_what_it_can_and_never_waits() {
    let mut ctx = Context::new().unwrap();
    let big = vec![7; 4 << 20];
    let (mut reader, mut silent, mut other) = (pair(&mut ctx), pair(&mut ctx), pair(&mut ctx));
    for id in [reader.1, silent.1] {
        ctx.schedule(id, &big[..big.len() / 4]).unwrap();
        ctx.close_after_flush(id, Duration::from_millis(300))
            .unwrap();
        assert!(
            ctx.schedule(id, b"more").is_err(),
            "let go: no longer valid"
        );
    }
    let reading = thread::spawn(move || {
        let mut got = Vec::new();
        reader.0.read_to_end(&mut got).map(|_| got.len())
    });
    // The loop goes on: another connection is served while `silent` reads nothing.
    let started = Instant::now();
    other.0.write_all(&frame(b"ping")).unwrap();
    let mut served = false;
    while !served || started.elapsed() < Duration::from_millis(400) {
        ctx.set_timer(Some(Duration::from_millis(50)));
        match ctx.wait_event().unwrap() {
            Event::Message { id, payload } if id == other.1 => {
                ctx.schedule_vec(id, payload).unwrap();
                served = true;
            }
            Event::MessageTx { id } if id == other.1 => {}
            Event::Timer => {}
            e => panic!("unexpected {e:?}"),
        }
        assert!(started.elapsed() < LIMIT);
    }
    assert!(served);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(read_frame(&mut other.0).unwrap(), b"ping");
    assert_eq!(reading.join().unwrap().unwrap(), big.len() / 4 + 4);
    // The silent one was closed past its time: whatever it reads now ends.
    silent.0.set_read_timeout(Some(LIMIT)).unwrap();
    let mut rest = Vec::new();
    silent.0.read_to_end(&mut rest).unwrap();
    assert!(rest.len() < big.len() / 4 + 4, "{}", rest.len());
    // Both ids are gone.
    assert!(ctx.queued(silent.1).is_err() && ctx.queued(other.1).is_ok());
}

/// A unix socket pair, one end added to `ctx` as a plain connection.
fn pair(ctx: &mut Context) -> (UnixStream, libipc::ConnId) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(LIMIT)).unwrap();
    let id = ctx.add_stream(theirs.into()).unwrap();
    (ours, id)
}
