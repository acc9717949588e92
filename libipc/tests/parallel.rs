//! A service on several event loops: contexts on their own threads sharing
//! one listening socket (`Context::share_service`, `Context::add_service`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use libipc::service::ServiceListener;
use libipc::{Context, Event};

mod common;
use common::*;

/// Starts `n` loops serving `listener`'s clones: each echoes, except that
/// `block` makes it answer `blocking`, then sleep 2 s (a loop busy with
/// one client). Each sends the number of clients it accepted when it stops
/// (after 300 ms without events).
fn workers(listener: &ServiceListener, n: usize) -> Vec<thread::JoinHandle<usize>> {
    (0..n)
        .map(|_| {
            let listener = listener.try_clone().unwrap();
            thread::spawn(move || {
                let mut ctx = Context::new().unwrap();
                ctx.add_service(listener).unwrap();
                ctx.set_timer(Some(Duration::from_millis(300)));
                let mut accepted = 0;
                loop {
                    match ctx.wait_event().unwrap() {
                        Event::Connection { .. } => accepted += 1,
                        Event::Message { id, payload } if payload == b"block" => {
                            ctx.write(id, b"blocking").unwrap();
                            thread::sleep(Duration::from_secs(2));
                        }
                        Event::Message { id, payload } => ctx.schedule(id, &payload).unwrap(),
                        Event::Timer => return accepted,
                        _ => {}
                    }
                }
            })
        })
        .collect()
}

fn connect(dir: &Path) -> UnixStream {
    let s = client(dir, "echo");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

#[test]
fn a_busy_loop_does_not_hold_up_the_clients_of_the_others() {
    let (_tmp, dir) = rundir();
    let listener = ServiceListener::bind(&dir, b"echo").unwrap();
    let loops = workers(&listener, 2);

    let mut first = connect(&dir);
    first.write_all(&frame(b"block")).unwrap();
    assert_eq!(read_frame(&mut first).unwrap(), b"blocking");
    // Its loop sleeps now: the other one serves a new client at once.
    let started = Instant::now();
    let mut second = connect(&dir);
    second.write_all(&frame(b"hello")).unwrap();
    assert_eq!(read_frame(&mut second).unwrap(), b"hello");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "the second client waited {waited:?} for a loop busy with the first"
    );
    drop((first, second));
    let accepted: Vec<usize> = loops.into_iter().map(|l| l.join().unwrap()).collect();
    assert_eq!(accepted.iter().sum::<usize>(), 2, "{accepted:?}");
}

#[test]
fn a_burst_of_clients_spreads_over_the_loops() {
    let (_tmp, dir) = rundir();
    let listener = ServiceListener::bind(&dir, b"echo").unwrap();
    let loops = workers(&listener, 2);
    // All connect, then all talk: the listener has a backlog of 20 at once.
    let mut clients: Vec<UnixStream> = (0..20).map(|_| connect(&dir)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&frame(format!("client {i}").as_bytes()))
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(read_frame(c).unwrap(), format!("client {i}").as_bytes());
    }
    drop(clients);
    let accepted: Vec<usize> = loops.into_iter().map(|l| l.join().unwrap()).collect();
    assert_eq!(accepted.iter().sum::<usize>(), 20, "{accepted:?}");
    println!("20 clients at once, accepted per loop: {accepted:?}");
    assert!(
        accepted.iter().all(|&n| n >= 2),
        "20 clients at once, accepted per loop: {accepted:?}"
    );
}

#[test]
fn the_name_stays_until_the_last_loop_lets_go() {
    let (_tmp, dir) = rundir();
    let path = dir.join("echo");
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(&dir);
    let service = ctx.service_init("echo").unwrap();
    let other = ctx.share_service(service).unwrap();
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let mut ctx = Context::new().unwrap();
        ctx.add_service(other).unwrap();
        ctx.set_timer(Some(Duration::from_millis(20)));
        // Serves until told to stop; the first context is closed by then.
        while rx.try_recv().is_err() {
            if let Event::Message { id, payload } = ctx.wait_event().unwrap() {
                ctx.schedule(id, &payload).unwrap();
            }
        }
    });
    ctx.close(service).unwrap();
    assert!(path.exists(), "removed while another loop still serves it");
    let mut c = connect(&dir);
    c.write_all(&frame(b"still here")).unwrap();
    assert_eq!(read_frame(&mut c).unwrap(), b"still here");
    tx.send(()).unwrap();
    worker.join().unwrap();
    assert!(!path.exists(), "left behind by the last loop");
    // And the name is free again.
    let mut again = Context::new().unwrap();
    again.set_rundir(&dir);
    again.service_init("echo").unwrap();
}
