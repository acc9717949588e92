//! Black-box tests of the real `tlsd` binary: TLS clients nobody here wrote
//! (`openssl s_client`, Python's `ssl` module), the Rust and C `pong` clients
//! through two chained tlsd, the refusals (old TLS versions, plain TCP, silent
//! clients, the wrong CA), startup errors, key formats, SIGHUP reloads (one
//! of them while 500 connections are busy), session resumption, and a scan by
//! testssl.sh.
//!
//!     cargo test -p libipc-tests --test tlsd
//!
//! Needs `openssl`, the Python venv, a C compiler and `testssl` (Debian's
//! testssl.sh): `tests/run` installs them. tlsd and the Rust examples are built
//! by the test itself ([`libipc_tests::build_binaries`]). Certificates and keys
//! are generated for each test ([`libipc_tests::certs`], with rcgen; the PKCS#1
//! and SEC1 keys are converted by `openssl`). Every test has its own temporary
//! RUNDIR, lets tlsd pick its port (`--listen 127.0.0.1:0`, read back from its
//! `listening address=...` log line), and is bounded in time: child processes
//! are killed after [`CHILD_TIMEOUT`] (the load client and the scanner after
//! limits of their own), every socket read and write of the test itself has a
//! timeout. Readiness is observed (a log line, a unix socket that accepts, a
//! client's output), never assumed after a sleep.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use libipc_tests::certs::{self, Ca, ServerPair};
use libipc_tests::clients::{tcp, until_closed};
use libipc_tests::metrics::{scrape_until, series};
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, Proc, READY_TIMEOUT, Run, World, echoes, frame, pattern, pongd_clients,
    pongd_clients_in_all, python, raise_nofile_limit, replace_file, run_cmd, sighup,
    spawn_with_stdin,
};

/// A running tlsd and the address it listens on.
type Tlsd = Daemon;

/// The arguments giving tlsd the certificate and key of `pair`, then `args`.
fn tlsd_args<'a>(pair: &'a ServerPair, args: &[&'a str]) -> Vec<&'a str> {
    let cert = pair.cert.to_str().expect("UTF-8 path");
    let key = pair.key.to_str().expect("UTF-8 path");
    [&["--cert", cert, "--key", key][..], args].concat()
}

/// Starts tlsd in `world` (its RUNDIR) on `127.0.0.1:0` with the certificate
/// and key of `pair` and `args`, and waits until it listens. Its output is in
/// `<label>.stdout` / `.stderr`.
fn start_tlsd(world: &World, label: &str, pair: &ServerPair, args: &[&str]) -> Tlsd {
    Daemon::start(world, "tlsd", label, &tlsd_args(pair, args))
}

/// `tls://localhost:PORT/SERVICE`, the IPC_NETWORK target of `service` at `d`.
fn tls_uri(d: &Tlsd, service: &str) -> String {
    format!("tls://localhost:{}/{service}", d.addr.port())
}

// ---------------------------------------------------------------------------
// openssl s_client.

/// An `openssl s_client` connected to tlsd (verifying its certificate against
/// `ca`, for the name `localhost`), with its stdin a pipe the test writes to.
///
/// Not `-quiet`: it implies `-ign_eof`, and s_client would then never leave
/// while tlsd and the service keep the connection open. With `-brief` instead,
/// stdout carries only the data (the summary goes to stderr) and closing stdin
/// ends the session cleanly (close_notify, exit 0), once the test has seen the
/// answer it waits for: no sleep, and nothing lost to an early EOF.
struct SClient {
    proc: Proc,
    stdin: Option<ChildStdin>,
}

/// The s_client command line, with `extra` flags (`-brief`, a TLS version...);
/// no command letters (data starting with `Q`, `R` or `k` is data).
fn s_client_cmd(addr: SocketAddr, ca: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(ca)
        .args(["-verify_return_error", "-nocommands"])
        .args(extra);
    cmd
}

impl SClient {
    fn start(world: &World, label: &str, addr: SocketAddr, ca: &Path, extra: &[&str]) -> SClient {
        let cmd = s_client_cmd(addr, ca, extra);
        let mut proc = spawn_with_stdin(cmd, world.path(), label, Stdio::piped());
        let stdin = proc.take_stdin();
        SClient { proc, stdin }
    }

    /// Writes `bytes` to s_client's stdin in one write (s_client sends what one
    /// read of its stdin gets in one TLS record).
    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            self.proc
                .fail(&format!("writing {} bytes to s_client: {e}", bytes.len()));
        }
    }

    /// Waits until s_client's stdout holds `expected` (anywhere in it).
    fn wait_for(&mut self, expected: &[u8]) -> Vec<u8> {
        self.proc.wait_for_stdout(
            &format!("{} expected bytes", expected.len()),
            CHILD_TIMEOUT,
            |out| out.windows(expected.len()).any(|w| w == expected),
        )
    }

    /// Closes its stdin (s_client then sends close_notify and exits) and waits
    /// for it to exit.
    fn finish(mut self) -> Run {
        drop(self.stdin.take());
        self.proc.wait(CHILD_TIMEOUT)
    }
}

/// Through s_client with `extra` flags: the raw name `pong` and frames in the
/// same write come back as `ok` and the same frames, byte for byte, and nothing
/// else. Returns s_client's run (its `-brief` summary on stderr).
fn s_client_echo(world: &World, label: &str, addr: SocketAddr, ca: &Path, extra: &[&str]) -> Run {
    let messages = [b"hello from s_client".to_vec(), Vec::new(), pattern(1, 256)];
    let frames: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
    let mut c = SClient::start(world, label, addr, ca, &[&["-brief"], extra].concat());
    c.send(&[&b"pong\n"[..], &frames].concat());
    let expected = [&b"ok"[..], &frames].concat();
    c.wait_for(&expected);
    let run = c.finish();
    run.assert_success("s_client");
    let out = &run.stdout_bytes;
    assert!(
        *out == expected,
        "s_client got {} bytes instead of the {} expected: {:?}\n{}",
        out.len(),
        expected.len(),
        run.stdout,
        run.report()
    );
    assert!(
        run.stderr.contains("Verification: OK"),
        "s_client did not verify tlsd's certificate\n{}",
        run.report()
    );
    run
}

/// s_client with `extra` flags and no input: the handshake must fail. Returns
/// its run (exit status non-zero, checked here).
fn s_client_refused(
    world: &World,
    label: &str,
    addr: SocketAddr,
    ca: &Path,
    extra: &[&str],
) -> Run {
    let cmd = s_client_cmd(addr, ca, &[&["-brief"], extra].concat());
    // stdin is /dev/null: a handshake that succeeded would end at once, with 0.
    let run = run_cmd(cmd, world.path(), label, CHILD_TIMEOUT);
    assert!(
        run.status.is_some_and(|s| !s.success()),
        "s_client {extra:?}: the handshake should have failed\n{}",
        run.report()
    );
    assert!(
        !run.stderr.contains("CONNECTION ESTABLISHED"),
        "s_client {extra:?}: connection established\n{}",
        run.report()
    );
    run
}

#[test]
fn openssl_s_client_tls13_and_tls12_raw_name_and_frame_in_one_write() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let pongd = w.rust_pongd("pong");
    let mut tlsd = start_tlsd(&w, "tlsd", &pki.server, &[]);

    for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let run = s_client_echo(
            &w,
            &format!("s_client{flag}"),
            tlsd.addr,
            &pki.ca.cert,
            &[flag],
        );
        assert!(
            run.stderr.contains(&format!("Protocol version: {version}")),
            "s_client {flag} did not negotiate {version}\n{}",
            run.report()
        );
    }
    tlsd.assert_running("after the s_client sessions");
    // Each was a connection to pong, counted there.
    assert_eq!(pongd_clients(&pongd), 2, "{}", tlsd.log());
}

#[test]
fn session_resumption_tls12_and_tls13() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let _pongd = w.rust_pongd("pong");
    let tlsd = start_tlsd(&w, "tlsd", &pki.server, &[]);

    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let session = w.path().join(format!("session{flag}.pem"));
        let session = session.to_str().expect("UTF-8 path");
        // Without -brief: s_client prints `New, ...` or `Reused, ...` on stdout,
        // before the data.
        let converse = |label: &str, sess: [&str; 2]| -> Run {
            let marker = frame(format!("resumption check {label}").as_bytes());
            let mut c = SClient::start(
                &w,
                label,
                tlsd.addr,
                &pki.ca.cert,
                &[&[flag][..], &sess].concat(),
            );
            c.send(&[&b"pong\n"[..], &marker].concat());
            // The echo comes after the session ticket (TLS 1.3 sends it right
            // after the handshake): once it is here, the session is complete.
            c.wait_for(&[&b"ok"[..], &marker].concat());
            let run = c.finish();
            run.assert_success("s_client");
            run
        };
        let first = converse(&format!("s_client{flag}-first"), ["-sess_out", session]);
        assert!(
            first.stdout.contains(&format!("New, {version}")),
            "first {version} session not new\n{}",
            first.report()
        );
        assert!(
            Path::new(session).is_file(),
            "no session written\n{}",
            first.report()
        );
        let second = converse(&format!("s_client{flag}-second"), ["-sess_in", session]);
        assert!(
            second.stdout.contains(&format!("Reused, {version}")),
            "{version} session not resumed\n{}",
            second.report()
        );
    }
}

// ---------------------------------------------------------------------------
// Python's ssl module.

/// Runs the Python client `tests/py/<script>` (a `tlsd_*.py`) with tlsd's
/// port, `ca` and `args`; it must exit 0 and print `ok_line`.
fn run_python(
    w: &World,
    label: &str,
    script: &str,
    tlsd: &Tlsd,
    ca: &Path,
    args: &[&str],
    ok_line: &str,
) {
    let mut cmd = python(script);
    cmd.arg(tlsd.addr.port().to_string()).arg(ca).args(args);
    let run = run_cmd(cmd, w.path(), label, CHILD_TIMEOUT);
    run.assert_success(&format!("python client {label}"));
    run.assert_lines(&[ok_line]);
}

#[test]
fn python_ssl_client() {
    let w = World::new();
    let pki = certs::generate(w.path(), true);
    let _pongd = w.rust_pongd("pong");
    let mut tlsd = start_tlsd(&w, "tlsd", &pki.server, &[]);
    let wrong_ca = pki.second_ca.as_ref().unwrap().cert.to_str().unwrap();
    run_python(
        &w,
        "python",
        "tlsd_client.py",
        &tlsd,
        &pki.ca.cert,
        &[wrong_ca, "100000"],
        "python-ssl: ok",
    );
    tlsd.assert_running("after the python client");
}

/// Runs the Python client `script`, which must print `LABEL: ok`, against a
/// tlsd in front of pongd `pong`; returns the world (pongd runs until it is
/// dropped), the tlsd, still running, and the address of its metrics.
fn python_against_pong(label: &str, script: &str) -> (World, Proc, Tlsd, SocketAddr) {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let pongd = w.rust_pongd("pong");
    let mut tlsd = start_tlsd(&w, "tlsd", &pki.server, &["--metrics", "127.0.0.1:0"]);
    let metrics = tlsd.logged_address("metrics at http://");
    let ok = format!("{label}: ok");
    run_python(&w, label, script, &tlsd, &pki.ca.cert, &[], &ok);
    tlsd.assert_running(&format!("after {label}"));
    (w, pongd, tlsd, metrics)
}

/// Inside TLS as on plain TCP: what follows a raw name never decides the
/// answer (see tests/py/routed_refusals.py).
#[test]
fn the_answer_is_the_names_whatever_follows_it() {
    python_against_pong("routed-refusals", "routed_refusals.py");
}

#[test]
fn python_ssl_client_messages_of_64k_and_more() {
    python_against_pong("python-large", "tlsd_large.py");
}

#[test]
fn close_notify_with_the_tcp_connection_still_open_ends_the_conversation() {
    // The client waits 10 s at most for each answer, tlsd's idle timeout is
    // 300 s: had tlsd not ended a conversation on close_notify, the script
    // would have failed. Each of the four reached pong, said its messages
    // and closed, and none failed a handshake (a timeout there is counted).
    let (_w, _pongd, _tlsd, metrics) = python_against_pong("close-notify", "tlsd_close_notify.py");
    let body = scrape_until(
        metrics,
        &[
            "ipc_connections_open{daemon=\"tlsd\"} 0",
            "ipc_connections_accepted_total{daemon=\"tlsd\"} 4",
            "ipc_service_connections_total{daemon=\"tlsd\",service=\"pong\"} 4",
            "ipc_service_messages_total{daemon=\"tlsd\",service=\"pong\",direction=\"in\"} 6",
            "ipc_service_messages_total{daemon=\"tlsd\",service=\"pong\",direction=\"out\"} 6",
        ],
    );
    let failures = series(&body, "ipc_handshake_failures_total");
    assert!(failures.is_empty(), "{body}");
}

#[test]
fn clients_that_reset_while_their_service_is_attached_are_not_blamed_on_it() {
    let (_w, _pongd, _tlsd, metrics) = python_against_pong("resets", "tlsd_resets.py");
    // Found by the soak: a client gone before its service was attached was
    // counted (and logged) as "service down", though the service was fine.
    // Each of the 100 either reached pong or is counted as the client's
    // doing: gone during its TLS handshake or before it named the service.
    let body = scrape_until(
        metrics,
        &[
            "ipc_connections_open{daemon=\"tlsd\"} 0",
            "ipc_connections_accepted_total{daemon=\"tlsd\"} 100",
        ],
    );
    let failures = series(&body, "ipc_handshake_failures_total");
    let reached = series(&body, "ipc_service_connections_total");
    for (labels, _) in &failures {
        let reason = labels.split_once(",reason=").map(|(_, r)| r);
        assert!(
            matches!(
                reason,
                Some("\"closed during the handshake\"" | "\"TLS handshake failed\"")
            ),
            "a client's reset blamed on something else: {labels}\n{body}"
        );
    }
    let counted: u64 = failures.iter().chain(&reached).map(|(_, n)| n).sum();
    assert_eq!(counted, 100, "{body}");
}

// ---------------------------------------------------------------------------
// Refusals.

#[test]
fn tls10_and_tls11_clients_are_refused() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let pongd = w.rust_pongd("pong");
    let mut tlsd = start_tlsd(&w, "tlsd", &pki.server, &[]);

    for flag in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0: s_client would complete a TLS 1.0/1.1 handshake (OpenSSL 3
        // rules them out at its default security level), so the refusal is tlsd's.
        let run = s_client_refused(
            &w,
            &format!("s_client{flag}"),
            tlsd.addr,
            &pki.ca.cert,
            &[flag, "-cipher", "DEFAULT@SECLEVEL=0"],
        );
        // An alert from tlsd, not "no protocols available" from s_client itself.
        assert!(
            run.stderr.contains("alert"),
            "s_client {flag} was not refused by tlsd (no alert)\n{}",
            run.report()
        );
    }
    tlsd.assert_running("after old TLS versions");
    s_client_echo(&w, "s_client-after", tlsd.addr, &pki.ca.cert, &[]);
    // Only that last client reached pong (it was echoed: pong had accepted
    // every earlier connection).
    assert_eq!(pongd_clients(&pongd), 1, "{}", tlsd.log());
}

#[test]
fn tls_min_version_13_refuses_a_tls12_client() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let _pongd = w.rust_pongd("pong");
    let tlsd = start_tlsd(&w, "tlsd", &pki.server, &["--tls-min-version", "1.3"]);

    let run = s_client_refused(&w, "s_client-tls1_2", tlsd.addr, &pki.ca.cert, &["-tls1_2"]);
    assert!(
        run.stderr.contains("protocol version"),
        "s_client -tls1_2 should get a protocol_version alert\n{}",
        run.report()
    );
    let run = s_client_echo(&w, "s_client-tls1_3", tlsd.addr, &pki.ca.cert, &["-tls1_3"]);
    assert!(
        run.stderr.contains("Protocol version: TLSv1.3"),
        "{}",
        run.report()
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn plain_tcp_client_naming_a_service_is_closed_without_ok() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let pongd = w.rust_pongd("pong");
    let mut tlsd = start_tlsd(&w, "tlsd", &pki.server, &[]);

    for hello in [&b"pong\n"[..], &[&b"pong\n"[..], &frame(b"hello")].concat()] {
        let mut s = tcp(tlsd.addr);
        let started = Instant::now();
        s.write_all(hello).unwrap();
        let got = until_closed(&mut s);
        assert!(
            !contains(&got, b"ok") && !contains(&got, b"hello"),
            "a plain TCP client got an answer: {got:?}"
        );
        // At most a TLS alert record (content type 21).
        assert!(got.is_empty() || got[0] == 21, "not a TLS alert: {got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "closed after {:?}",
            started.elapsed()
        );
    }
    tlsd.assert_running("after plain TCP clients");
    s_client_echo(&w, "s_client-after", tlsd.addr, &pki.ca.cert, &[]);
    // Only that last client reached pong (it was echoed: pong had accepted
    // every earlier connection).
    assert_eq!(pongd_clients(&pongd), 1, "{}", tlsd.log());
}

/// Connects, says nothing, and expects tlsd to close within `[min, max)`.
fn assert_silent_client_closed(tlsd: &Tlsd, min: Duration, max: Duration) {
    let started = Instant::now();
    let mut s = tcp(tlsd.addr);
    let got = until_closed(&mut s);
    let took = started.elapsed();
    assert!(
        took >= min && took < max,
        "a silent client was closed after {took:?}, expected between {min:?} and {max:?}"
    );
    assert!(!contains(&got, b"ok"), "{got:?}");
    assert!(got.is_empty() || got[0] == 21, "not a TLS alert: {got:?}");
}

#[test]
fn client_that_never_speaks_tls_is_closed_at_the_handshake_timeout() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let _pongd = w.rust_pongd("pong");

    // --handshake-timeout bounds the whole (TLS's default of 5 s is longer).
    let args = ["--handshake-timeout", "1s", "--metrics", "127.0.0.1:0"];
    let mut tlsd = start_tlsd(&w, "tlsd", &pki.server, &args);
    let metrics = tlsd.logged_address("metrics at http://");
    assert_silent_client_closed(&tlsd, Duration::from_millis(900), Duration::from_secs(4));
    scrape_until(
        metrics,
        &["ipc_handshake_failures_total{daemon=\"tlsd\",reason=\"TLS handshake timeout\"} 1"],
    );
    // A client that finished TLS but names nothing gets the answer inside TLS.
    let mut c = SClient::start(&w, "s_client-silent", tlsd.addr, &pki.ca.cert, &["-brief"]);
    c.wait_for(b"no: handshake timeout\n");
    c.proc.wait(CHILD_TIMEOUT);
    s_client_echo(&w, "s_client-after", tlsd.addr, &pki.ca.cert, &[]);
    drop(tlsd);

    // --tls-handshake-timeout alone.
    let tlsd = start_tlsd(
        &w,
        "tlsd-tls-timeout",
        &pki.server,
        &["--tls-handshake-timeout", "1s"],
    );
    assert_silent_client_closed(&tlsd, Duration::from_millis(900), Duration::from_secs(4));
}

// ---------------------------------------------------------------------------
// Startup errors.

/// tlsd with `cert` and `key` must exit non-zero at once, saying each of `says`.
fn assert_startup_error(w: &World, label: &str, cert: &Path, key: &Path, says: &[&str]) {
    let pair = ServerPair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    let run = run_cmd(
        Daemon::command(w, "tlsd", &tlsd_args(&pair, &[])),
        w.path(),
        label,
        CHILD_TIMEOUT,
    );
    assert!(
        run.status.is_some_and(|s| !s.success()),
        "{label}: tlsd should have failed\n{}",
        run.report()
    );
    assert!(
        !run.stderr.contains("listening"),
        "{label}: tlsd listened\n{}",
        run.report()
    );
    for s in says {
        assert!(
            run.stderr.contains(s),
            "{label}: no {s:?} in the error\n{}",
            run.report()
        );
    }
}

#[test]
fn startup_errors_are_clear() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let other = pki.ca.server(w.path(), "other");
    let missing = w.path().join("missing.pem");
    let no_pem = w.path().join("no-pem.txt");
    std::fs::write(&no_pem, "this is not PEM\n").unwrap();
    let (cert, key) = (&pki.server.cert, &pki.server.key);
    let shown = |p: &Path| p.display().to_string();

    assert_startup_error(
        &w,
        "missing-cert",
        &missing,
        key,
        &[&shown(&missing), "No such file or directory"],
    );
    assert_startup_error(
        &w,
        "missing-key",
        cert,
        &missing,
        &[&shown(&missing), "No such file or directory"],
    );
    assert_startup_error(
        &w,
        "mismatched-key",
        cert,
        &other.key,
        &[&shown(cert), &shown(&other.key), "do not go together"],
    );
    assert_startup_error(
        &w,
        "cert-without-pem",
        &no_pem,
        key,
        &[&shown(&no_pem), "no CERTIFICATE"],
    );
    assert_startup_error(
        &w,
        "key-without-pem",
        cert,
        &no_pem,
        &[&shown(&no_pem), "private key"],
    );
    // A key where the certificate should be, and the other way round.
    assert_startup_error(
        &w,
        "key-as-cert",
        key,
        key,
        &[&shown(key), "no CERTIFICATE"],
    );
    assert_startup_error(
        &w,
        "cert-as-key",
        cert,
        cert,
        &[&shown(cert), "private key"],
    );
}

// ---------------------------------------------------------------------------
// Key formats.

/// Runs `openssl args...` in the world's directory; it must succeed.
fn openssl(w: &World, label: &str, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(w.path()).args(args);
    run_cmd(cmd, w.path(), label, CHILD_TIMEOUT).assert_success(&format!("openssl {args:?}"));
}

fn assert_pem_label(path: &Path, label: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with(&format!("-----BEGIN {label}-----")),
        "{} is not a {label}:\n{text}",
        path.display()
    );
}

/// tlsd with `pair` serves s_client over TLS 1.3 and 1.2, signing with `sig`.
fn assert_serves_with(w: &World, label: &str, ca: &Ca, pair: &ServerPair, sig: &str) {
    let _pongd = w.rust_pongd("pong");
    let tlsd = start_tlsd(w, label, pair, &[]);
    for flag in ["-tls1_3", "-tls1_2"] {
        let run = s_client_echo(
            w,
            &format!("{label}-s_client{flag}"),
            tlsd.addr,
            &ca.cert,
            &[flag],
        );
        assert!(
            run.stderr.contains(&format!("Signature type: {sig}")),
            "{label}: not signed with {sig}\n{}",
            run.report()
        );
    }
}

#[test]
fn pkcs1_rsa_key_loads() {
    let w = World::new();
    let ca = Ca::new(w.path(), "ca", "libipc test CA");
    // rcgen cannot make RSA keys (ring backend): openssl makes one (PKCS#8),
    // rcgen certifies it, and openssl writes it again as PKCS#1.
    openssl(
        &w,
        "genpkey",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.p8.key",
        ],
    );
    let pkcs8 = w.path().join("rsa.p8.key");
    assert_pem_label(&pkcs8, "PRIVATE KEY");
    let pair = ca.server_with_key(w.path(), "rsa", &pkcs8);
    openssl(
        &w,
        "pkey-traditional",
        &[
            "pkey",
            "-in",
            "rsa.p8.key",
            "-traditional",
            "-out",
            "rsa.pkcs1.key",
        ],
    );
    let pkcs1 = w.path().join("rsa.pkcs1.key");
    assert_pem_label(&pkcs1, "RSA PRIVATE KEY");
    let pair = ServerPair {
        cert: pair.cert,
        key: pkcs1,
    };
    assert_serves_with(&w, "tlsd-rsa", &ca, &pair, "RSA");
}

#[test]
fn sec1_ec_key_loads() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    assert_pem_label(&pki.server.key, "PRIVATE KEY");
    openssl(
        &w,
        "ec",
        &["ec", "-in", "server.key", "-out", "server.sec1.key"],
    );
    let sec1 = w.path().join("server.sec1.key");
    assert_pem_label(&sec1, "EC PRIVATE KEY");
    let pair = ServerPair {
        cert: pki.server.cert.clone(),
        key: sec1,
    };
    assert_serves_with(&w, "tlsd-sec1", &pki.ca, &pair, "ECDSA");
}

// ---------------------------------------------------------------------------
// SIGHUP.

/// The last `count N` the long client printed (0 if none yet).
fn last_count(out: &[u8]) -> usize {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.strip_prefix("count ")?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// `dir/live.pem` and `dir/live.key`, copies of `pair`: what tlsd is given, to
/// be replaced before a SIGHUP.
fn live_pair(dir: &Path, pair: &ServerPair) -> ServerPair {
    let live = ServerPair {
        cert: dir.join("live.pem"),
        key: dir.join("live.key"),
    };
    replace_file(&pair.cert, &live.cert);
    replace_file(&pair.key, &live.key);
    live
}

/// What the SIGHUP tests start from: pongd, and tlsd serving `live`, a copy of
/// CA 1's pair (`pki.server`); CA 2 and a pair of its, `pair2`, to replace it.
/// (Fields drop in this order: the processes, then their directory.)
struct Reload {
    tlsd: Tlsd,
    _pongd: Proc,
    pair2: ServerPair,
    live: ServerPair,
    pki: certs::Pki,
    w: World,
}

impl Reload {
    /// Starts pongd, then tlsd with `args`.
    fn start(args: &[&str]) -> Reload {
        let w = World::new();
        let pki = certs::generate(w.path(), true);
        let pair2 = pki.second_ca.as_ref().unwrap().server(w.path(), "server2");
        let live = live_pair(w.path(), &pki.server);
        let pongd = w.rust_pongd("pong");
        let tlsd = start_tlsd(&w, "tlsd", &live, args);
        Reload {
            tlsd,
            _pongd: pongd,
            pair2,
            live,
            pki,
            w,
        }
    }

    /// CA 2.
    fn ca2(&self) -> &Ca {
        self.pki.second_ca.as_ref().expect("CA 2")
    }

    /// Puts `pair2` in place of `live` and sends the first SIGHUP: tlsd must log
    /// the reload.
    fn reload(&mut self) {
        replace_file(&self.pair2.cert, &self.live.cert);
        replace_file(&self.pair2.key, &self.live.key);
        let line = sighup(&mut self.tlsd, 1);
        assert!(
            line.contains("reloaded"),
            "reload failed: {line}\n{}",
            self.tlsd.log()
        );
    }
}

/// s_client verifying against `ca` completes a handshake and an echo.
fn assert_trusted_by(w: &World, label: &str, tlsd: &Tlsd, ca: &Ca) {
    s_client_echo(w, label, tlsd.addr, &ca.cert, &[]);
}

/// s_client verifying against `ca` refuses tlsd's certificate.
fn assert_not_trusted_by(w: &World, label: &str, tlsd: &Tlsd, ca: &Ca) {
    let run = s_client_refused(w, label, tlsd.addr, &ca.cert, &[]);
    assert!(
        run.stderr.contains("certificate verify failed"),
        "{label}: not a verification failure\n{}",
        run.report()
    );
}

#[test]
fn sighup_reloads_the_pair_and_open_connections_carry_on() {
    let mut r = Reload::start(&[]);
    let (w, ca1) = (&r.w, &r.pki.ca);
    assert_trusted_by(w, "before-ca1", &r.tlsd, ca1);
    assert_not_trusted_by(w, "before-ca2", &r.tlsd, r.ca2());

    let mut cmd = python("tlsd_long_client.py");
    cmd.arg(r.tlsd.addr.port().to_string()).arg(&ca1.cert);
    let mut long = spawn_with_stdin(cmd, w.path(), "long-client", Stdio::piped());
    let mut long_stdin = long.take_stdin().expect("piped stdin");
    long.wait_for_stdout("started", READY_TIMEOUT, |out| contains(out, b"started\n"));

    r.reload();
    // What the long client had counted when the reload was done, then 30 more
    // exchanges on the same connection, with the new pair in place.
    let reloaded_at = last_count(&long.stdout_bytes());
    long.wait_for_stdout("30 more exchanges", CHILD_TIMEOUT, |out| {
        last_count(out) >= reloaded_at + 30
    });

    let (w, ca1) = (&r.w, &r.pki.ca);
    assert_trusted_by(w, "after-ca2", &r.tlsd, r.ca2());
    assert_not_trusted_by(w, "after-ca1", &r.tlsd, ca1);

    // The connection opened before the reload is still going, nothing lost.
    assert!(long.running(), "{}", long.output(None).report());
    long_stdin.write_all(b"stop\n").unwrap();
    drop(long_stdin);
    let run = long.wait(CHILD_TIMEOUT);
    run.assert_success("long client across the reload");
    run.assert_lines(&["long client: ok"]);
    r.tlsd.assert_running("after the reload");
}

#[test]
fn failed_sighup_reload_keeps_the_old_pair() {
    let mut r = Reload::start(&[]);
    let (w, ca1, live) = (&r.w, &r.pki.ca, &r.live);
    let mut open = SClient::start(w, "open", r.tlsd.addr, &ca1.cert, &["-brief"]);
    open.send(&[&b"pong\n"[..], &frame(b"before")].concat());
    open.wait_for(&[&b"ok"[..], &frame(b"before")].concat());

    // A key file with no key in it.
    std::fs::write(&live.key, "not a key\n").unwrap();
    let line = sighup(&mut r.tlsd, 1);
    assert!(
        line.contains("reload failed") && line.contains(&live.key.display().to_string()),
        "a broken key file: {line}"
    );
    assert_trusted_by(w, "after-broken-key", &r.tlsd, ca1);

    // A valid pair's certificate with the old key: they do not match.
    replace_file(&r.pair2.cert, &live.cert);
    replace_file(&r.pki.server.key, &live.key);
    let line = sighup(&mut r.tlsd, 2);
    assert!(
        line.contains("reload failed") && line.contains("do not go together"),
        "a mismatched pair: {line}"
    );
    assert_trusted_by(w, "after-mismatch-ca1", &r.tlsd, ca1);
    assert_not_trusted_by(w, "after-mismatch-ca2", &r.tlsd, r.ca2());

    // Then a good pair is taken.
    replace_file(&r.pair2.key, &live.key);
    let line = sighup(&mut r.tlsd, 3);
    assert!(
        line.contains("reloaded"),
        "a good pair: {line}\n{}",
        r.tlsd.log()
    );
    assert_trusted_by(w, "after-fix-ca2", &r.tlsd, r.ca2());

    // The connection opened first was never disturbed.
    open.send(&frame(b"after"));
    open.wait_for(&[&b"ok"[..], &frame(b"before"), &frame(b"after")].concat());
    open.finish()
        .assert_success("s_client open across the reloads");
    r.tlsd.assert_running("after three reloads");
}

/// How many TLS connections are busy when tlsd reloads under load.
const LOAD_CONNECTIONS: usize = 500;
/// How many more echoes each of them checks once the reload is done.
const LOAD_AFTER: usize = 40;
/// Longest the load client may run (it stops itself then, failing): about 10 s
/// on a 2-core machine that other tests share.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn sighup_under_load_of_500_connections_loses_no_message() {
    // tlsd holds two descriptors a connection (TLS and the service's socket).
    raise_nofile_limit(4096);
    let mut r = Reload::start(&["--service", "pong", "--metrics", "127.0.0.1:0"]);
    let metrics = r.tlsd.logged_address("metrics at http://");
    let mut cmd = python("tlsd_load.py");
    cmd.arg(r.tlsd.addr.port().to_string())
        .arg(&r.pki.ca.cert)
        .arg(&r.ca2().cert)
        .arg(LOAD_CONNECTIONS.to_string())
        .arg(LOAD_AFTER.to_string())
        .arg(LOAD_LIMIT.as_secs().to_string());
    let mut load = spawn_with_stdin(cmd, r.w.path(), "load-client", Stdio::piped());
    let mut load_stdin = load.take_stdin().expect("piped stdin");
    load.wait_for_stdout("busy", LOAD_LIMIT, |out| contains(out, b"busy: "));

    // While every connection is exchanging messages.
    r.reload();
    load_stdin.write_all(b"reloaded\n").unwrap();
    drop(load_stdin);

    // A margin over the client's own limit, for it to say why it stopped.
    let run = load.wait(LOAD_LIMIT + Duration::from_secs(15));
    run.assert_success("load client across the reload");
    run.assert_lines(&["load client: ok"]);
    println!("{}", run.stdout);
    r.tlsd.assert_running("after the reload under load");
    // Every connection (and the new one after the reload) reached pong and
    // is closed; the only failure is the client refusing the old certificate.
    let reached = LOAD_CONNECTIONS + 1;
    let body = scrape_until(
        metrics,
        &[
            "ipc_connections_open{daemon=\"tlsd\"} 0",
            &format!(
                "ipc_connections_accepted_total{{daemon=\"tlsd\"}} {}",
                reached + 1
            ),
            &format!("ipc_service_connections_total{{daemon=\"tlsd\",service=\"pong\"}} {reached}"),
        ],
    );
    let failures = series(&body, "ipc_handshake_failures_total");
    let refused_old_ca = [(
        r#"daemon="tlsd",reason="TLS handshake failed""#.to_owned(),
        1,
    )];
    assert_eq!(failures, refused_old_ca, "{body}");
}

// ---------------------------------------------------------------------------
// Outbound: libipc clients through IPC_NETWORK, through one tlsd to another.

/// Two worlds: B runs pongd and tlsd B; A runs tlsd A (its `tls` service, which
/// verifies remote tlsd against `ca_a`) and the clients.
struct Chain {
    a: World,
    b: World,
    tlsd_a: Tlsd,
    tlsd_b: Tlsd,
    /// B's pong, which counts the connections tlsd B made to it.
    pongd: Proc,
}

impl Chain {
    fn new(b: World, pair_b: &ServerPair, pair_a: &ServerPair, ca_a: &Path) -> Chain {
        let pongd = b.rust_pongd("pong");
        let tlsd_b = start_tlsd(&b, "tlsd-b", pair_b, &["--no-outbound"]);
        let a = World::new();
        let ca = ca_a.to_str().expect("UTF-8 path");
        let mut tlsd_a = start_tlsd(&a, "tlsd-a", pair_a, &["--ca", ca]);
        tlsd_a.proc.wait_for_socket(&a.outbound_socket("tls"));
        Chain {
            a,
            b,
            tlsd_a,
            tlsd_b,
            pongd,
        }
    }

    fn network(&self, service: &str) -> String {
        format!("{service} {}", tls_uri(&self.tlsd_b, service))
    }
}

#[test]
fn rust_and_c_pong_through_two_chained_tlsd() {
    let b = World::new();
    let pki = certs::generate(b.path(), false);
    let chain = Chain::new(b, &pki.server, &pki.server, &pki.ca.cert);

    let mut cmd = chain.a.example("pong");
    cmd.env("IPC_NETWORK", chain.network("pong")).args([
        "-s",
        "pong",
        "hello through two tlsd",
        "",
        "third",
    ]);
    let run = run_cmd(cmd, chain.a.path(), "rust-pong", CHILD_TIMEOUT);
    run.assert_success("Rust pong through tlsd A and B");
    assert_eq!(
        run.stdout,
        "hello through two tlsd\n\nthird\n",
        "{}",
        run.report()
    );

    let pong = chain.a.compile("pong");
    let msg = "C through two tlsd";
    let mut cmd = chain.a.command(&pong);
    cmd.env("IPC_NETWORK", chain.network("pong"))
        .args(["pong", msg, "20"]);
    let run = run_cmd(cmd, chain.a.path(), "c-pong", CHILD_TIMEOUT);
    run.assert_success("C pong through tlsd A and B");
    assert_eq!(run.stdout, echoes(msg, 20), "{}", run.report());

    // It went over TLS: A has no local pong, so B's pong counts the two
    // clients of A (below).
    assert!(
        !chain.a.rundir.join("pong").exists(),
        "A's RUNDIR has a pong socket"
    );

    // A refusal from B reaches the client through A.
    let mut cmd = chain.a.example("pong");
    cmd.env("IPC_NETWORK", chain.network("nope"))
        .args(["-s", "nope", "anyone?"]);
    let run = run_cmd(cmd, chain.a.path(), "rust-pong-nope", CHILD_TIMEOUT);
    assert!(
        run.status.is_some_and(|s| !s.success()) && run.stderr.contains("no: unknown service"),
        "pong to an unknown remote service should fail with B's answer\n{}",
        run.report()
    );
    let log_b = chain.tlsd_b.log();
    let reached = pongd_clients_in_all(&chain.b, chain.pongd, "pong");
    assert_eq!(reached, 2, "tlsd B\n{log_b}");
}

#[test]
fn outbound_to_a_tlsd_of_another_ca_is_refused() {
    let b = World::new();
    let pki = certs::generate(b.path(), true);
    let wrong = pki.second_ca.as_ref().unwrap();
    let mut chain = Chain::new(b, &pki.server, &pki.server, &wrong.cert);

    let mut cmd = chain.a.example("pong");
    cmd.env("IPC_NETWORK", chain.network("pong"))
        .args(["-s", "pong", "should not arrive"]);
    let run = run_cmd(cmd, chain.a.path(), "rust-pong", CHILD_TIMEOUT);
    assert!(
        run.status.is_some_and(|s| !s.success()) && run.stderr.contains("certificate"),
        "pong through a tlsd that does not trust B's CA should fail, naming the certificate\n{}",
        run.report()
    );
    assert!(
        !run.stdout.contains("should not arrive"),
        "{}",
        run.report()
    );
    chain
        .tlsd_a
        .assert_running("after a refused outbound connection");
    // Not even a late connection: every one made so far is counted.
    let log_b = chain.tlsd_b.log();
    let reached = pongd_clients_in_all(&chain.b, chain.pongd, "pong");
    assert_eq!(reached, 0, "tlsd B\n{log_b}");
}

#[test]
fn generated_certificates_verify_with_openssl() {
    let w = World::new();
    let pki = certs::generate(w.path(), true);
    let ca2 = pki.second_ca.as_ref().unwrap();
    let verify = |label: &str, ca: &Path, cert: &Path| -> Run {
        let mut cmd = Command::new("openssl");
        cmd.arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .args(["-verify_hostname", "localhost", "-verify_ip", "127.0.0.1"])
            .arg(cert);
        run_cmd(cmd, w.path(), label, CHILD_TIMEOUT)
    };
    verify("verify", &pki.ca.cert, &pki.server.cert).assert_success("openssl verify");
    let pair2 = ca2.server(w.path(), "server2");
    verify("verify2", &ca2.cert, &pair2.cert).assert_success("openssl verify (CA 2)");
    let run = verify("verify-wrong", &pki.ca.cert, &pair2.cert);
    assert!(run.status.is_some_and(|s| !s.success()), "{}", run.report());
}

// ---------------------------------------------------------------------------
// Mutual TLS, SNI, ALPN.

/// The `&str`s of `v`.
fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// openssl s_client with a client certificate: admitted by `--allow-cn` or
/// `--allow-san`, and named in tlsd's log. The refusals (no certificate,
/// another CA, names not allowed) are tests/tests/mtls.rs's, with clients
/// that wait for the answer or the close and say which.
#[test]
fn openssl_s_client_with_an_allowed_client_certificate_is_served() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let pongd = w.rust_pongd("pong");
    let alice = pki
        .ca
        .client(w.path(), "alice", "alice", &["alice.example"]);
    let bob = pki.ca.client(w.path(), "bob", "bob", &["bob.example"]);
    let client_ca = pki.ca.cert.to_str().unwrap();
    let with = |pair: &ServerPair| {
        vec![
            "-cert".to_owned(),
            pair.cert.to_str().unwrap().to_owned(),
            "-key".to_owned(),
            pair.key.to_str().unwrap().to_owned(),
        ]
    };

    // Allowed by its common name: served, and its names logged.
    let tlsd = start_tlsd(
        &w,
        "tlsd",
        &pki.server,
        &["--client-ca", client_ca, "--allow-cn", "alice"],
    );
    s_client_echo(&w, "alice", tlsd.addr, &pki.ca.cert, &as_str(&with(&alice)));
    assert!(
        tlsd.log()
            .contains(r#"TLS peer identity identity=CN=["alice"] SAN=["dns:alice.example"]"#),
        "{}",
        tlsd.log()
    );
    // Allowed by a subject alternative name.
    let tlsd2 = start_tlsd(
        &w,
        "tlsd-san",
        &pki.server,
        // Same RUNDIR as the first: only one may serve the outbound `tls`.
        &[
            "--client-ca",
            client_ca,
            "--allow-san",
            "bob.example",
            "--no-outbound",
        ],
    );
    s_client_echo(
        &w,
        "bob-by-san",
        tlsd2.addr,
        &pki.ca.cert,
        &as_str(&with(&bob)),
    );
    assert_eq!(pongd_clients_in_all(&w, pongd, "pong"), 2);
}

#[test]
fn sni_picks_the_certificate_and_strict_sni_refuses_unknown_names() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let _pongd = w.rust_pongd("pong");
    let other = pki.ca.server_for(w.path(), "other", &["other.example"]);
    let pairs = [
        "--cert",
        other.cert.to_str().unwrap(),
        "--key",
        other.key.to_str().unwrap(),
    ];
    for strict in [false, true] {
        let mut args = pairs.to_vec();
        if strict {
            args.push("--strict-sni");
        }
        // Both runs share a RUNDIR: only the first serves the outbound `tls`.
        if strict {
            args.push("--no-outbound");
        }
        let tlsd = start_tlsd(&w, &format!("tlsd-strict-{strict}"), &pki.server, &args);
        // Each name gets its own certificate (verified for that name).
        for name in ["localhost", "other.example"] {
            let mut cmd = Command::new("openssl");
            cmd.args(["s_client", "-brief", "-connect", &tlsd.addr.to_string()])
                .args(["-servername", name, "-verify_hostname", name])
                .arg("-CAfile")
                .arg(&pki.ca.cert)
                .arg("-verify_return_error")
                .stdin(Stdio::null());
            let run = run_cmd(
                cmd,
                w.path(),
                &format!("sni-{name}-{strict}"),
                CHILD_TIMEOUT,
            );
            run.assert_success(&format!("SNI {name}"));
            assert!(run.stderr.contains("Verification: OK"), "{}", run.report());
        }
        // An unknown name: the default (first) certificate, or a refusal.
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-brief", "-connect", &tlsd.addr.to_string()])
            .args(["-servername", "unknown.example"])
            .stdin(Stdio::null());
        let run = run_cmd(
            cmd,
            w.path(),
            &format!("sni-unknown-{strict}"),
            CHILD_TIMEOUT,
        );
        if strict {
            assert!(
                !run.stderr.contains("CONNECTION ESTABLISHED"),
                "{}",
                run.report()
            );
        } else {
            assert!(
                run.stderr.contains("CONNECTION ESTABLISHED"),
                "{}",
                run.report()
            );
            assert!(
                run.stderr.contains("CN=localhost") || run.stderr.contains("CN = localhost"),
                "{}",
                run.report()
            );
        }
    }
}

#[test]
fn alpn_is_negotiated_when_asked() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let _pongd = w.rust_pongd("pong");
    let tlsd = start_tlsd(&w, "tlsd", &pki.server, &["--alpn", "libipc"]);
    let mut cmd = s_client_cmd(tlsd.addr, &pki.ca.cert, &["-alpn", "other,libipc"]);
    cmd.stdin(Stdio::null());
    let run = run_cmd(cmd, w.path(), "alpn", CHILD_TIMEOUT);
    assert!(
        run.stdout.contains("ALPN protocol: libipc"),
        "{}",
        run.report()
    );
    // A client that offers none is served all the same.
    s_client_echo(&w, "no-alpn", tlsd.addr, &pki.ca.cert, &[]).assert_success("no ALPN");
}

// ---------------------------------------------------------------------------
// A TLS scanner: testssl.sh.

/// Longest the scan may take. testssl.sh opens a few hundred connections, each
/// through `openssl s_client` or bash's sockets: under a minute on a 2-core
/// machine, two when other work shares it (`.config/nextest.toml` gives this
/// test the time).
const SCAN_TIMEOUT: Duration = Duration::from_secs(240);

/// The severities of testssl.sh findings that fail the scan.
const FAILING_SEVERITIES: [&str; 3] = ["MEDIUM", "HIGH", "CRITICAL"];

/// One finding of the scan.
struct Finding {
    severity: String,
    id: String,
    finding: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.id, self.finding)
    }
}

/// The findings in testssl.sh's JSON file `json`.
fn scan_findings(w: &World, json: &Path) -> Vec<Finding> {
    let mut cmd = python("testssl_findings.py");
    cmd.arg(json);
    let run = run_cmd(cmd, w.path(), "findings", CHILD_TIMEOUT);
    run.assert_success("reading testssl's JSON findings");
    run.stdout
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t').map(str::to_owned);
            let mut next = || parts.next().unwrap_or_default();
            Finding {
                severity: next(),
                id: next(),
                finding: next(),
            }
        })
        .collect()
}

/// Whether `program` is a file in one of the directories of `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

#[test]
fn testssl_scan_finds_nothing_of_medium_severity_or_above() {
    assert!(
        on_path("testssl"),
        "testssl (Debian package testssl.sh) is not installed: tests/run installs it"
    );
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    // tlsd as it starts with nothing but a certificate and its key.
    let tlsd = start_tlsd(&w, "tlsd", &pki.server, &[]);

    let json = w.path().join("testssl.json");
    let mut cmd = Command::new("testssl");
    cmd.current_dir(w.path())
        // No banner, colours or questions; no DNS (the address is given).
        .args(["--quiet", "--warnings", "off"])
        .args(["--color", "0"])
        .args(["--nodns", "none", "--ip", "127.0.0.1"])
        // The test CA, so that the chain of trust is judged as a client that
        // trusts it would (testssl.sh trusts the public roots only).
        .arg("--add-ca")
        .arg(&pki.ca.cert)
        .arg("--jsonfile")
        .arg(&json)
        // Every check that rates what it finds: protocols, cipher categories,
        // forward secrecy, server preferences (with the suites offered, in
        // order), server defaults (the certificate) and vulnerabilities: what
        // testssl.sh runs by default but for each cipher alone and 35 client
        // simulations, which rate nothing (INFO only) and took half the time.
        .args(["--protocols", "--std", "--pfs", "--server-preference"])
        .args(["--server-defaults", "--vulnerable"])
        // The name the certificate is for (SNI), at tlsd's address.
        .arg(format!("localhost:{}", tlsd.addr.port()));
    let started = Instant::now();
    let run = run_cmd(cmd, w.path(), "testssl", SCAN_TIMEOUT);
    let took = started.elapsed();

    // The summary, kept where it outlives the test's directory.
    let reports = libipc_tests::profile_dir().join("testssl");
    std::fs::create_dir_all(&reports).unwrap();
    let report = reports.join("tlsd-scan.txt");
    std::fs::write(&report, &run.stdout).unwrap();
    if json.is_file() {
        std::fs::copy(&json, reports.join("tlsd-scan.json")).unwrap();
    }
    println!(
        "testssl.sh scan of tlsd ({took:.0?}), also in {}:\n{}",
        report.display(),
        run.stdout
    );

    // testssl's exit status counts the checks it could not decide (0 to 241);
    // above that, the scan itself failed.
    assert!(
        run.status.and_then(|s| s.code()).is_some_and(|c| c < 242),
        "testssl.sh did not complete its scan\n{}",
        run.report()
    );
    let findings = scan_findings(&w, &json);
    let has = |id: &str, severity: &str, finding: &str| {
        findings
            .iter()
            .any(|f| f.id == id && f.severity == severity && f.finding.starts_with(finding))
    };
    // It reached tlsd, read its certificate and trusted it through the CA.
    assert!(
        has("TLS1_3", "OK", "offered") && has("cert_chain_of_trust", "OK", "passed"),
        "the scan did not see tlsd's TLS 1.3 and trusted certificate (report: {})",
        report.display()
    );
    let of = |severities: &[&str]| -> Vec<String> {
        findings
            .iter()
            .filter(|f| severities.contains(&f.severity.as_str()))
            .map(Finding::to_string)
            .collect()
    };
    // Worth a look, not a failure: low severity, and checks it could not make.
    let notable = of(&["LOW", "WARN"]);
    println!("LOW and WARN findings: {}", notable.len());
    for f in &notable {
        println!("  {f}");
    }
    let failing = of(&FAILING_SEVERITIES);
    assert!(
        failing.is_empty(),
        "testssl.sh found {} issue(s) of severity MEDIUM or above:\n  {}\n(report: {})",
        failing.len(),
        failing.join("\n  "),
        report.display()
    );
}
