//! Floods of what a client can make a daemon answer, against the real
//! `websocketd`: a client that sends pings (125-byte payloads, the most a
//! control frame may carry) as fast as it can for 10 s and never reads the
//! pongs, over ws and over wss; and 300 clients that ask for an 8 MiB static
//! file and read it slowly, or one that never reads it.
//!
//!     cargo test -p libipc-tests --test flood
//!
//! What a user would check: websocketd's memory stays under [`RSS_LIMIT_KIB`]
//! during the flood and after the flooder leaves, and an ordinary client of
//! the same daemon is served afterwards. The flooder is raw Python
//! (`socket`, `ssl` for wss: no WebSocket library floods pings), after a
//! proper upgrade; the ordinary client is Python's `websockets`. The flood is
//! bounded in time ([`FLOOD`]) and bytes ([`FLOOD_CAP`]); RSS is sampled
//! while it runs, and the test fails at the first sample over the limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread::sleep;
use std::time::{Duration, Instant};

use libipc_tests::metrics::scrape_within;
use libipc_tests::{CHILD_TIMEOUT, Daemon, Proc, World, certs, python, run_cmd, spawn};

/// How long the flooder sends pings.
const FLOOD: Duration = Duration::from_secs(10);

/// Most bytes of pings the flooder sends (far more than 10 s on loopback
/// would, unless nothing stops them).
const FLOOD_CAP: u64 = 64 << 30;

/// websocketd's resident memory must stay under this (an idle one: ~5 MiB).
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// How often the daemon's memory is sampled during the flood.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Floods websocketd (wss when `tls`) with pings for [`FLOOD`], checking its
/// memory all along and after, then that it still echoes.
fn ping_flood(tls: bool) {
    let w = World::new();
    let _pongd = w.rust_pongd("echo");
    let pki = tls.then(|| certs::generate(w.path(), false));
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_owned();
    let (mut daemon_args, mut client_args) = (Vec::new(), Vec::new());
    if let Some(pki) = &pki {
        daemon_args = vec![
            "--cert".to_owned(),
            path(&pki.server.cert),
            "--key".to_owned(),
            path(&pki.server.key),
        ];
        client_args.push(path(&pki.ca.cert));
    }
    let daemon_args: Vec<&str> = daemon_args.iter().map(String::as_str).collect();
    let mut ws = Daemon::start(&w, "websocketd", "websocketd", &daemon_args);
    let port = ws.addr.port().to_string();
    let (seconds, cap) = (FLOOD.as_secs().to_string(), FLOOD_CAP.to_string());
    let mut flood = python("ws_ping_flood.py");
    flood.args([&port, &seconds, &cap]).args(&client_args);
    let mut flooder = spawn(flood, w.path(), "flood");
    flooder.wait_for_stdout("flooding", CHILD_TIMEOUT, |out| {
        out.ends_with(b"flooding\n")
    });
    let started = Instant::now();
    let mut peak = 0;
    while flooder.running() && started.elapsed() < CHILD_TIMEOUT {
        let rss = ws.rss_kib();
        peak = peak.max(rss);
        if rss >= RSS_LIMIT_KIB {
            let took = started.elapsed();
            ws.proc.fail(&format!(
                "websocketd's RSS reached {rss} KiB after {took:.1?} of ping flood (limit {RSS_LIMIT_KIB} KiB)"
            ));
        }
        sleep(SAMPLE_EVERY);
    }
    let run = flooder.wait(CHILD_TIMEOUT);
    run.assert_success("the ping flooder");
    let after = ws.rss_kib();
    let sent = run
        .stdout
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or("");
    println!("ping flood: {sent}; websocketd RSS peak {peak} KiB, after {after} KiB");
    assert!(
        after < RSS_LIMIT_KIB,
        "websocketd's RSS is {after} KiB after the flooder left (limit {RSS_LIMIT_KIB} KiB)"
    );
    ws.assert_running("after the ping flood");
    let mut echo = python("ws_echo.py");
    echo.arg(&port).args(&client_args);
    let run = run_cmd(echo, w.path(), "echo", CHILD_TIMEOUT);
    if !run.status.is_some_and(|s| s.success()) {
        // websocketd's log with the client's: why it was not served.
        let why = format!(
            "an ordinary client after the flood: failed\n{}",
            run.report()
        );
        ws.proc.fail(&why);
    }
}

#[test]
fn ping_flood_over_ws_keeps_websocketd_memory_bounded() {
    ping_flood(false);
}

#[test]
fn ping_flood_over_wss_keeps_websocketd_memory_bounded() {
    ping_flood(true);
}

/// Clients asking for the big static file at once.
const FILE_READERS: usize = 300;

/// The big static file's size: the largest websocketd used to serve.
const BIG_FILE: usize = 8 << 20;

/// What the file readers may cost websocketd, during and after (the issue:
/// 300 of them took it from 4 MiB to 1 GiB).
const FILE_READERS_COST_KIB: u64 = 64 * 1024;

/// How long the file readers read slowly once all have their answer's head.
const SLOW_READING: Duration = Duration::from_secs(3);

/// Bytes each slow reader reads per [`SAMPLE_EVERY`] (5 KiB/s).
const SLOW_READ: usize = 512;

/// The receive buffer of the test's file readers: a small window, so that
/// what websocketd sends waits in websocketd rather than in the kernel.
const READER_RCVBUF: usize = 16 << 10;

/// Longest a single read or write of the file readers may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest websocketd may leave a client that reads nothing of its answer
/// open, with a margin (websocketd: 30 s without progress).
const STALLED_CLOSE_WITHIN: Duration = Duration::from_secs(45);

/// `len` bytes nobody could mistake for a shifted or repeated copy.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A world with the echo service and websocketd serving `www/` with
/// `big.bin` ([`BIG_FILE`] bytes of [`noise`]).
fn big_file_site() -> (World, Daemon, Proc, Vec<u8>) {
    let w = World::new();
    let pongd = w.rust_pongd("echo");
    let www = w.path().join("www");
    std::fs::create_dir_all(&www).expect("mkdir www");
    let big = noise(BIG_FILE);
    std::fs::write(www.join("big.bin"), &big).expect("write big.bin");
    let ws = Daemon::start(
        &w,
        "websocketd",
        "websocketd",
        &[
            "--static-dir",
            www.to_str().expect("UTF-8 path"),
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    (w, ws, pongd, big)
}

/// A client with a [`READER_RCVBUF`] window that has sent `GET /big.bin`
/// (`nonblocking` or not).
fn file_reader(addr: SocketAddr, nonblocking: bool) -> TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, connect, setsockopt, socket, sockopt,
    };
    let SocketAddr::V4(v4) = addr else {
        panic!("websocketd listens on IPv4 here: {addr}")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    // Before connect: the window scale is agreed in the handshake.
    setsockopt(&fd, sockopt::RcvBuf, &READER_RCVBUF).expect("SO_RCVBUF");
    connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("connect to websocketd");
    let mut s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let request = format!("GET /big.bin HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).expect("send the request");
    s.set_nonblocking(nonblocking).expect("nonblocking");
    s
}

/// One file reader: what it has read so far.
struct Reader {
    stream: TcpStream,
    got: Vec<u8>,
    /// Where its answer's head ends, once it has.
    head_end: Option<usize>,
}

impl Reader {
    /// At most `max` more bytes, without blocking; false at EOF.
    fn read_some(&mut self, max: usize) -> bool {
        let mut buf = vec![0; max];
        match self.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => self.got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("a file reader's read failed: {e}"),
        }
        if self.head_end.is_none() {
            self.head_end = self
                .got
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4);
        }
        true
    }

    /// Reads (blocking) up to EOF, within [`CHILD_TIMEOUT`].
    fn read_to_end(&mut self) {
        self.stream.set_nonblocking(false).expect("blocking");
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while Instant::now() < deadline {
            let before = self.got.len();
            if !self.read_some(64 << 10) {
                return;
            }
            assert!(self.got.len() > before, "no byte for {IO_TIMEOUT:?}");
        }
        panic!(
            "no EOF after {CHILD_TIMEOUT:?}: {} bytes read",
            self.got.len()
        );
    }

    /// Checks that everything read is a 200 for all of `file`.
    fn assert_whole(&self, file: &[u8]) {
        let end = self.head_end.expect("the answer has a head");
        let head = String::from_utf8_lossy(&self.got[..end]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let length = format!("\r\nContent-Length: {}\r\n", file.len());
        assert!(head.contains(&length), "{head}");
        let body = &self.got[end..];
        assert_eq!(body.len(), file.len(), "body length");
        let first_difference = body.iter().zip(file).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "the body differs from the file");
    }
}

/// websocketd's memory less what it had at `base`, failing over
/// [`FILE_READERS_COST_KIB`] (`when`: for the message).
fn assert_cost(ws: &mut Daemon, base: u64, when: &str) -> u64 {
    let cost = ws.rss_kib().saturating_sub(base);
    if cost >= FILE_READERS_COST_KIB {
        ws.proc.fail(&format!(
            "{FILE_READERS} slow readers of an 8 MiB file cost websocketd {cost} KiB {when} \
             (limit {FILE_READERS_COST_KIB} KiB)"
        ));
    }
    cost
}

/// 300 clients ask for an 8 MiB file and read it at 5 KiB/s: websocketd's
/// memory grows by less than 64 MiB while they read and after they leave,
/// a WebSocket client is echoed meanwhile, and the one reader that then reads
/// to the end gets exactly the file.
#[test]
fn slow_readers_of_a_big_static_file_keep_websocketd_memory_bounded() {
    let (w, mut ws, _pongd, big) = big_file_site();
    let metrics = ws.logged_address("metrics at http://");
    let base = ws.rss_kib();
    let mut readers: Vec<Reader> = (0..FILE_READERS)
        .map(|_| Reader {
            stream: file_reader(ws.addr, true),
            got: Vec::new(),
            head_end: None,
        })
        .collect();
    let started = Instant::now();
    let mut peak = 0;
    let mut echo = None;
    let mut all_answered = None;
    loop {
        for r in &mut readers {
            assert!(r.read_some(SLOW_READ), "websocketd closed a slow reader");
        }
        peak = peak.max(assert_cost(&mut ws, base, "while they read"));
        if all_answered.is_none() && readers.iter().all(|r| r.head_end.is_some()) {
            all_answered = Some(Instant::now());
            // An ordinary WebSocket client, while they read.
            let port = ws.addr.port().to_string();
            let mut cmd = python("ws_echo.py");
            cmd.arg(&port);
            echo = Some(spawn(cmd, w.path(), "echo"));
        }
        if let Some(t) = all_answered
            && t.elapsed() >= SLOW_READING
            && !echo.as_mut().is_some_and(|e| e.running())
        {
            break;
        }
        assert!(
            started.elapsed() < CHILD_TIMEOUT,
            "not all {FILE_READERS} readers got their answer's head in {CHILD_TIMEOUT:?}"
        );
        sleep(SAMPLE_EVERY);
    }
    if let Some(e) = echo {
        e.wait(CHILD_TIMEOUT)
            .assert_success("an ordinary client beside the file readers");
    }
    // All but one leave, and websocketd has closed their connections.
    let mut last = readers.swap_remove(0);
    drop(readers);
    let open_one = "ipc_connections_open{daemon=\"websocketd\"} 1";
    scrape_within(metrics, &[open_one], CHILD_TIMEOUT);
    let after = assert_cost(&mut ws, base, "after they left");
    println!(
        "{FILE_READERS} slow readers of {BIG_FILE} bytes: websocketd RSS {base} KiB, \
         peak +{peak} KiB, after they left +{after} KiB"
    );
    last.read_to_end();
    last.assert_whole(&big);
    ws.assert_running("after the file readers");
}

/// A client that asks for the big file and never reads is closed once
/// websocketd has made no progress sending to it for 30 s, its answer cut
/// short.
#[test]
fn a_client_that_never_reads_its_static_file_is_closed() {
    let (_w, mut ws, _pongd, big) = big_file_site();
    let metrics = ws.logged_address("metrics at http://");
    let stream = file_reader(ws.addr, false);
    // websocketd's own count: the connection is gone, the client having read
    // nothing.
    let closed = [
        "ipc_connections_accepted_total{daemon=\"websocketd\"} 1",
        "ipc_connections_open{daemon=\"websocketd\"} 0",
    ];
    scrape_within(metrics, &closed, STALLED_CLOSE_WITHIN);
    let mut r = Reader {
        stream,
        got: Vec::new(),
        head_end: None,
    };
    r.read_to_end();
    let end = r.head_end.expect("the answer has a head");
    assert!(
        r.got.len() - end < big.len(),
        "the whole file arrived: {} bytes",
        r.got.len() - end
    );
}
