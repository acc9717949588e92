//! Floods of what a client can make a daemon answer, against the real
//! `websocketd`: a client that sends pings (125-byte payloads, the most a
//! control frame may carry) as fast as it can for 10 s and never reads the
//! pongs, over ws and over wss.
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

use std::thread::sleep;
use std::time::{Duration, Instant};

use libipc_tests::{CHILD_TIMEOUT, Daemon, World, certs, python, run_cmd, spawn};

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
    run_cmd(echo, w.path(), "echo", CHILD_TIMEOUT)
        .assert_success("an ordinary client after the flood");
}

#[test]
fn ping_flood_over_ws_keeps_websocketd_memory_bounded() {
    ping_flood(false);
}

#[test]
fn ping_flood_over_wss_keeps_websocketd_memory_bounded() {
    ping_flood(true);
}
