//! Black-box test of websocketd's SIGHUP reload with `--cert`/`--key` (wss):
//! a reload that fails keeps serving with the old certificate and says why;
//! a good one is taken. (tlsd's reloads are tested in `tlsd.rs` and
//! `mtls.rs`.)
//!
//!     cargo test -p libipc-tests --test wss_reload
//!
//! The client is Python's `websockets` over `ssl` (`tests/py/ws_wss.py`): an
//! echo over wss trusting one CA, and no connection for a client trusting
//! the other.

use std::path::Path;

use libipc_tests::certs::{self, ServerPair};
use libipc_tests::{CHILD_TIMEOUT, Daemon, World, python, replace_file, run_cmd, sighup};

/// ws_wss.py against `ws`: served to a client trusting `ca`, refused to one
/// trusting `other`.
fn assert_served_by(w: &World, label: &str, ws: &Daemon, ca: &Path, other: &Path) {
    let mut cmd = python("ws_wss.py");
    cmd.arg(ws.addr.port().to_string()).arg(ca).arg(other);
    let run = run_cmd(cmd, w.path(), label, CHILD_TIMEOUT);
    run.assert_success(label);
    assert_eq!(run.stdout.lines().last(), Some("ok"), "{}", run.report());
}

#[test]
fn a_failed_reload_keeps_the_old_certificate_and_says_why() {
    let w = World::new();
    let pki = certs::generate(w.path(), true);
    let ca2 = pki.second_ca.as_ref().expect("CA 2");
    let pair2 = ca2.server(w.path(), "server2");
    let live = ServerPair {
        cert: w.path().join("live.pem"),
        key: w.path().join("live.key"),
    };
    replace_file(&pki.server.cert, &live.cert);
    replace_file(&pki.server.key, &live.key);
    let _pongd = w.rust_pongd("echo");
    let (cert, key) = (live.cert.to_str().unwrap(), live.key.to_str().unwrap());
    let mut ws = Daemon::start(
        &w,
        "websocketd",
        "websocketd",
        &["--cert", cert, "--key", key],
    );
    let (ca1, ca2) = (&pki.ca.cert, &ca2.cert);
    assert_served_by(&w, "before", &ws, ca1, ca2);

    std::fs::write(&live.key, "not a key\n").unwrap();
    let line = sighup(&mut ws, 1);
    assert!(
        line.contains("reload failed") && line.contains(key),
        "a broken key file: {line}"
    );
    ws.assert_running("after a failed reload");
    assert_served_by(&w, "after-failure", &ws, ca1, ca2);

    replace_file(&pair2.cert, &live.cert);
    replace_file(&pair2.key, &live.key);
    let line = sighup(&mut ws, 2);
    assert!(
        line.contains("reloaded"),
        "a good pair: {line}\n{}",
        ws.log()
    );
    assert_served_by(&w, "after-reload", &ws, ca2, ca1);
}
