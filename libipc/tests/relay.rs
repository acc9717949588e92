//! In-process tests of a switched pair's backpressure on its network side:
//! what reading a peer makes the transport answer it (WebSocket pongs, TLS
//! alerts) is bounded by what that peer reads, and a peer whose input is only
//! data for the service is read whatever waits for it.
//!
//! The network peer is one end of a unix socket pair (small kernel buffers,
//! so that "does not read" shows at once); every loop is bounded by [`LIMIT`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use libipc::switch::{Frames, Relay, Transport};
use libipc::{ConnId, Context};

mod common;
use common::*;

/// A transport that answers every byte its peer sends with the same byte
/// (a stand-in for pongs), and counts what it was given.
#[derive(Debug)]
struct Answerer(Arc<AtomicUsize>);

impl Transport for Answerer {
    fn name(&self) -> &'static str {
        "answerer"
    }
    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> libipc::Result<()> {
        self.0.fetch_add(data.len(), Ordering::Relaxed);
        relay.to_network(data);
        Ok(())
    }
    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> libipc::Result<()> {
        relay.to_network(data);
        Ok(())
    }
}

/// A context relaying `transport` between a network peer and a service peer,
/// both returned (the test's ends of two socket pairs).
fn switched_pair(transport: Box<dyn Transport>) -> (Context, ConnId, UnixStream, UnixStream) {
    let (net_mine, net_peer) = UnixStream::pair().unwrap();
    let (svc_mine, svc_peer) = UnixStream::pair().unwrap();
    let mut ctx = Context::new().unwrap();
    let net = ctx.add_stream(net_mine.into()).unwrap();
    let svc = ctx.add_stream(svc_mine.into()).unwrap();
    ctx.add_switch(net, svc, transport).unwrap();
    ctx.set_timer(Some(Duration::from_millis(20)));
    (ctx, net, net_peer, svc_peer)
}

/// Runs `ctx` until `done`, failing after [`LIMIT`].
fn run_until(ctx: &mut Context, what: &str, mut done: impl FnMut(&Context) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done(ctx) {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        ctx.wait_event().unwrap();
    }
}

/// Runs `ctx` until `count` has not moved for a while; returns its value.
fn run_until_still(ctx: &mut Context, count: &AtomicUsize) -> usize {
    let still_for = Duration::from_millis(300);
    let (mut last, mut since) = (usize::MAX, Instant::now());
    run_until(ctx, "the count to settle", |_| {
        let now = count.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        since.elapsed() >= still_for
    });
    last
}

#[test]
fn a_peer_that_never_reads_its_answers_stops_being_read_until_it_does() {
    const SENT: usize = 32 << 20;
    let given = Arc::new(AtomicUsize::new(0));
    let (mut ctx, _net, mut peer, _svc) = switched_pair(Box::new(Answerer(given.clone())));
    let mut reader = peer.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
        for _ in 0..SENT / chunk.len() {
            peer.write_all(&chunk).unwrap();
        }
    });
    // Without backpressure on answers, all 32 MiB would be taken (and their
    // answers queued); with it, about half the high-water mark plus what the
    // kernel buffers hold.
    let taken = run_until_still(&mut ctx, &given);
    assert!(
        taken < 4 << 20,
        "{taken} bytes taken from a peer that reads nothing"
    );
    assert!(!writer.is_finished(), "the peer could send everything");
    // Once it reads, it is read again, and every answer arrives in order.
    let answers = thread::spawn(move || {
        let mut got = vec![0; SENT];
        reader.read_exact(&mut got).unwrap();
        got.iter()
            .enumerate()
            .all(|(i, &b)| b == ((i % (64 << 10)) % 251) as u8)
    });
    run_until(&mut ctx, "all answers", |_| answers.is_finished());
    assert!(answers.join().unwrap(), "answers differ from what was sent");
    writer.join().unwrap();
    assert_eq!(given.load(Ordering::Relaxed), SENT);
}

#[test]
fn a_peer_that_only_sends_data_is_read_while_it_does_not_read() {
    // The service sends 8 MiB the network peer never reads, while the peer
    // uploads 8 MiB of frames: answers are not involved (plain frames), so
    // the upload is taken whole (a single-threaded client writing before it
    // reads would deadlock otherwise).
    const EACH: usize = 8 << 20;
    let (mut ctx, net, mut peer, svc) = switched_pair(Box::new(Frames::new(1 << 20)));
    let mut svc_writer = svc.try_clone().unwrap();
    let _download = thread::spawn(move || {
        let f = frame(&vec![7; (1 << 20) - 4]);
        for _ in 0..EACH >> 20 {
            if svc_writer.write_all(&f).is_err() {
                return;
            }
        }
    });
    // The upload starts once the download is backed up: half the high-water
    // mark waits for the peer, so the service is no longer read. (Not once
    // the service has written some amount: how much the context takes before
    // it stops reading depends on the sizes of its reads.)
    let pause_at = libipc::Config::default().high_water / 2;
    run_until(&mut ctx, "the download to back up", |ctx| {
        ctx.queued(net).unwrap() >= pause_at
    });
    let upload = thread::spawn(move || {
        let f = frame(&vec![9; (64 << 10) - 4]);
        for _ in 0..EACH >> 16 {
            peer.write_all(&f).unwrap();
        }
        // Still open: closing it would end the pair.
        peer
    });
    let mut svc = svc;
    svc.set_read_timeout(Some(LIMIT)).unwrap();
    let received = thread::spawn(move || {
        let mut n = 0;
        while n < EACH {
            n += read_frame(&mut svc).unwrap().len() + 4;
        }
        n
    });
    run_until(&mut ctx, "the whole upload", |_| received.is_finished());
    assert_eq!(received.join().unwrap(), EACH);
    drop(upload.join().unwrap());
}
