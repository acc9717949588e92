//! A service whose process is out of descriptors. A test binary of its own:
//! the limit is per process, and would fail whatever ran beside it.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use libipc::{Context, Event};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

#[test]
fn a_service_out_of_descriptors_reports_once_a_second_and_serves_its_backlog_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = Context::new().unwrap();
    ctx.set_rundir(dir.path());
    let service = ctx.service_init("full").unwrap();
    let waiting: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(dir.path().join("full")).unwrap())
        .collect();

    // The lowest free descriptor number is the number in use: as the
    // limit, it leaves none free.
    let in_use = std::fs::File::open("/dev/null").map(|f| {
        use std::os::fd::AsRawFd;
        f.as_raw_fd() as u64
    });
    let in_use = in_use.unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, in_use, hard).unwrap();

    ctx.set_timer(Some(Duration::from_millis(50)));
    let (mut errors, mut connections) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1050) {
        match ctx.wait_event().unwrap() {
            Event::Error { id, .. } => {
                assert_eq!(id, Some(service));
                errors += 1;
            }
            Event::Connection { .. } => connections += 1,
            _ => {}
        }
    }
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    assert_eq!(connections, 0, "accepted with no descriptor free");
    // Retried every 100 ms, reported at most once a second.
    assert!(
        (1..=2).contains(&errors),
        "{errors} ERROR events in 1 s out of descriptors"
    );

    // Descriptors free again: the clients that waited are served, without a
    // new connection to wake the listener.
    let deadline = Instant::now() + Duration::from_secs(5);
    while connections < waiting.len() && Instant::now() < deadline {
        if let Event::Connection { .. } = ctx.wait_event().unwrap() {
            connections += 1;
        }
    }
    assert_eq!(connections, waiting.len(), "the backlog was not served");
}
