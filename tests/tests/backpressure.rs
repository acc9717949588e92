//! Black-box test of backpressure from a slow client to its service (the
//! other direction, a slow service, is in `faults.rs`): a service that sends
//! far more than its client reads makes tcpd hold at most about its
//! high-water mark, not what the service sent; everything arrives, in order,
//! once the client reads.
//!
//!     cargo test -p libipc-tests --test backpressure
//!
//! The service is socat sending a file of LibIPC frames as fast as its
//! socket takes them; the client is std's TCP socket. tcpd's memory is read
//! from /proc while the client does not read.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use libipc_tests::clients::tcp;
use libipc_tests::{Daemon, World, frame, pattern};

/// What the service sends: 128 messages of 512 KiB, 64 MiB in all.
const MESSAGES: usize = 128;
const SIZE: usize = 512 * 1024;
/// How much more than at the start tcpd may hold while its client does not
/// read: its queue's high-water mark (1 MiB) for the client, half of it
/// read ahead from the service, and the allocator's slack; far below what
/// the service would have it hold without backpressure (64 MiB).
const MAX_GROWTH_KIB: u64 = 16 * 1024;
/// How long the client does not read while tcpd's memory is watched.
const STALL: Duration = Duration::from_secs(2);

#[test]
fn a_service_sending_more_than_its_slow_client_reads_is_held_back() {
    let w = World::new();
    let sent: Vec<u8> = (0..MESSAGES)
        .flat_map(|i| frame(&pattern(i, SIZE)))
        .collect();
    let file = w.path().join("frames");
    std::fs::write(&file, &sent).unwrap();
    let _firehose = w.socat_service("firehose", &format!("cat {}", file.display()));
    let tcpd = Daemon::start(&w, "tcpd", "tcpd", &["--no-outbound", "--workers", "1"]);
    let base = tcpd.rss_kib();

    let mut s = tcp(tcpd.addr);
    s.write_all(b"firehose\n").unwrap();
    let mut ok = [0; 2];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    // The client reads nothing for a while; the service writes all it can.
    let stalled = Instant::now();
    let mut peak = base;
    while stalled.elapsed() < STALL {
        peak = peak.max(tcpd.rss_kib());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("tcpd: {base} KiB at the start, {peak} KiB at most while the client did not read");
    assert!(
        peak - base < MAX_GROWTH_KIB,
        "tcpd grew by {} KiB while its client did not read (at most {MAX_GROWTH_KIB})",
        peak - base
    );

    // Then it reads: everything, in order, and the end once the service is done.
    let mut got = Vec::with_capacity(sent.len());
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), sent.len(), "bytes received");
    assert!(
        got == sent,
        "the service's messages came altered or out of order"
    );
}
