//! Black-box tests of tlsd's mutual TLS allow lists (`--allow-san`,
//! `--allow-cn`): which client certificates, every one of them signed by the
//! trusted CA, reach the service. A SAN's type is part of the name (a bare
//! `--allow-san` is a DNS name), and a subject with two common names matches
//! `--allow-cn` on neither.
//!
//!     cargo test -p libipc-tests --test mtls
//!
//! The clients are Python's `ssl` module with a client certificate (or none).
//! Each waits for its echo or for the end of the connection, and says how it
//! ended (tlsd's close_notify, a TLS alert), so a refusal is observed, not
//! inferred from a client that gave up. The service is the Rust pongd, which
//! logs every connection it gets: a refused client must never reach it.
//! Needs only the Python venv (`tests/py/mtls_clients.py` is the client); the
//! certificates come from [`libipc_tests::certs`].

use std::path::Path;

use libipc_tests::certs::{self, Ca, Pki, ServerPair};
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, Proc, READY_TIMEOUT, World, python, replace_file, run_cmd, sighup,
};

/// A client of the test, its certificate (if any), and what it must get:
/// [`ADMITTED`], [`REFUSED`], or the TLS alert of a refused chain.
struct Client {
    name: &'static str,
    pair: Option<ServerPair>,
    verdict: &'static str,
}

/// The echo came back.
const ADMITTED: &str = "ok";
/// The allow lists' refusal: tlsd's close_notify, nothing from the service.
const REFUSED: &str = "refused (close_notify)";

/// A test's world: its certificates and the service, pongd `pong`.
struct Bench {
    w: World,
    pki: Pki,
    pongd: Proc,
}

impl Bench {
    fn new() -> Bench {
        let w = World::new();
        let pki = certs::generate(w.path(), true);
        let mut pongd = w.rust_pongd("pong");
        // The readiness probe's connection: logged once pongd got to it, which
        // may be after the probe returned; counted from here on.
        pongd.wait_for_stderr_line("client connected", READY_TIMEOUT);
        Bench { w, pki, pongd }
    }

    /// tlsd with the CA's server pair, the CA as its `--client-ca`, and `args`.
    fn tlsd(&self, label: &str, args: &[&str]) -> Daemon {
        self.tlsd_trusting(label, &self.pki.ca.cert, args)
    }

    /// tlsd with the CA's server pair, `client_ca` as its `--client-ca`, and
    /// `args`.
    fn tlsd_trusting(&self, label: &str, client_ca: &Path, args: &[&str]) -> Daemon {
        let common = mtls_args(&self.pki.server, client_ca);
        let common: Vec<&str> = common.iter().map(String::as_str).collect();
        let args = [&common[..], &["--no-outbound"], args].concat();
        Daemon::start(&self.w, "tlsd", label, &args)
    }

    /// A certificate from the CA with common names `cns` and typed `sans`.
    fn client(&self, name: &'static str, cns: &[&str], sans: &[&str], admitted: bool) -> Client {
        Client {
            name,
            pair: Some(self.pki.ca.client_named(self.w.path(), name, cns, sans)),
            verdict: if admitted { ADMITTED } else { REFUSED },
        }
    }

    /// How many connections the service was given (its readiness probe
    /// included).
    fn service_connections(&self) -> usize {
        let log = self.pongd.output(None).stderr;
        log.lines()
            .filter(|l| l.contains("client connected"))
            .count()
    }

    /// Runs `clients` against `tlsd` (`mode`: `routed` or `fixed`), one after
    /// the other, and checks each got in or was refused as it should: the
    /// Python client's verdict (how its connection ended), tlsd's refusal
    /// lines, and the connections the service saw. An admitted client has its echo, so the service has logged
    /// its connection: with the refused clients first, a service connection
    /// made for one of them would be logged by then too.
    fn assert_admissions(&self, label: &str, tlsd: &mut Daemon, mode: &str, clients: &[Client]) {
        self.assert_refused_as(label, tlsd, mode, clients, "peer identity refused");
    }

    /// [`Bench::assert_admissions`], where tlsd logs each refusal with a line
    /// containing `refusal`.
    fn assert_refused_as(
        &self,
        label: &str,
        tlsd: &mut Daemon,
        mode: &str,
        clients: &[Client],
        refusal: &str,
    ) {
        let before = self.service_connections();
        let refused_before = tlsd.log().matches(refusal).count();
        // For each client: `NAME: ok` if its echo came back, `NAME: refused
        // (...)` if the connection ended or failed before.
        let mut cmd = python("mtls_clients.py");
        cmd.arg(tlsd.addr.port().to_string())
            .arg(&self.pki.ca.cert)
            .arg(mode);
        for c in clients {
            match &c.pair {
                Some(pair) => cmd.arg(c.name).arg(&pair.cert).arg(&pair.key),
                None => cmd.args([c.name, "-", "-"]),
            };
        }
        let run = run_cmd(cmd, self.w.path(), label, CHILD_TIMEOUT);
        run.assert_success(label);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), clients.len(), "{}", run.report());
        for (c, line) in clients.iter().zip(&lines) {
            assert!(
                *line == format!("{}: {}", c.name, c.verdict),
                "{label}: {} should be {:?}\n{}\ntlsd:\n{}",
                c.name,
                c.verdict,
                run.report(),
                tlsd.log()
            );
        }
        let refused = clients.iter().filter(|c| c.verdict == REFUSED).count();
        if refused > 0 {
            tlsd.proc
                .wait_for_stderr_lines(refusal, refused_before + refused, READY_TIMEOUT);
        }
        let admitted = clients.iter().filter(|c| c.verdict == ADMITTED).count();
        assert_eq!(
            self.service_connections() - before,
            admitted,
            "{label}: the service saw other connections than the {admitted} admitted clients'\n{}",
            self.pongd.output(None).stderr
        );
        tlsd.assert_running(label);
    }
}

/// `--cert`, `--key` (`server`) and `--client-ca` (`ca`).
fn mtls_args(server: &ServerPair, ca: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    [
        "--cert",
        &path(&server.cert),
        "--key",
        &path(&server.key),
        "--client-ca",
        &path(ca),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn tlsd_logged(tlsd: &Daemon, needle: &str) {
    let log = tlsd.log();
    assert!(log.contains(needle), "tlsd did not log {needle:?}\n{log}");
}

#[test]
fn allow_san_matches_dns_names_and_allow_cn_a_single_common_name() {
    let b = Bench::new();
    let allow = ["--allow-cn", "alice", "--allow-san", "alice.example"];
    let mut routed = b.tlsd("tlsd", &allow);
    let clients = [
        // The issue's three: other SAN types spelling the name, and the name
        // as a second common name (either one).
        b.client("san-email", &["mallory"], &["email:alice.example"], false),
        b.client("san-uri", &["mallory"], &["uri:alice.example"], false),
        b.client("two-cns", &["mallory", "alice"], &[], false),
        b.client("two-cns-alice-first", &["alice", "mallory"], &[], false),
        // Common names compare exactly; DNS names without regard to case.
        b.client("cn-other-case", &["Alice"], &[], false),
        b.client("san-dns", &["mallory"], &["dns:alice.example"], true),
        b.client("san-dns-upper", &["mallory"], &["dns:ALICE.Example"], true),
        b.client("cn", &["alice"], &[], true),
    ];
    b.assert_admissions("routed", &mut routed, "routed", &clients);
    tlsd_logged(
        &routed,
        r#"CN=[\"mallory\", \"alice\"] SAN=[] is not on the allow list (its subject has 2 common names: --allow-cn matches none of them)"#,
    );
    tlsd_logged(
        &routed,
        r#"CN=[\"mallory\"] SAN=[\"email:alice.example\"] is not on the allow list"#,
    );

    // Fixed mode connects the service once the handshake is done: never for
    // a client the allow lists refuse.
    let mut fixed = b.tlsd("tlsd-fixed", &[&["--service", "pong"], &allow[..]].concat());
    let [_, _, two_cns, _, _, _, _, cn] = clients;
    b.assert_admissions("fixed", &mut fixed, "fixed", &[two_cns, cn]);
}

#[test]
fn a_client_certificate_must_chain_to_the_client_ca_before_the_allow_lists_apply() {
    let b = Bench::new();
    let mut tlsd = b.tlsd("tlsd", &["--allow-cn", "alice"]);
    let other_ca = b.pki.second_ca.as_ref().expect("a second CA");
    let mallory = other_ca.client_named(b.w.path(), "mallory", &["alice"], &["dns:alice.example"]);
    let clients = [
        // No certificate: TLS 1.3's certificate_required alert (the client
        // may think itself connected: TLS 1.3 authenticates it last).
        Client {
            name: "anonymous",
            pair: None,
            verdict: "refused (SSLError: TLSV13_ALERT_CERTIFICATE_REQUIRED)",
        },
        // The allowed name, from another CA: unknown_ca.
        Client {
            name: "mallory",
            pair: Some(mallory),
            verdict: "refused (SSLError: TLSV1_ALERT_UNKNOWN_CA)",
        },
        // From the CA, but not allowed: the allow lists' close_notify.
        b.client("bob", &["bob"], &["dns:bob.example"], false),
        b.client("alice", &["alice"], &["dns:alice.example"], true),
    ];
    b.assert_admissions("chain", &mut tlsd, "routed", &clients);
    tlsd_logged(&tlsd, "peer sent no certificates");
    tlsd_logged(&tlsd, "invalid peer certificate: UnknownIssuer");
    tlsd_logged(
        &tlsd,
        r#"peer identity refused: CN=[\"bob\"] SAN=[\"dns:bob.example\"] is not on the allow list"#,
    );
}

#[test]
fn allow_san_with_a_type_matches_that_type_only() {
    let b = Bench::new();
    let mut tlsd = b.tlsd(
        "tlsd",
        &[
            "--allow-san",
            "email:alice@Example.ORG",
            // OpenSSL's spelling of the type works too.
            "--allow-san",
            "URI:alice.example",
            "--allow-san",
            "ip:2001:db8::7",
        ],
    );
    // Each with the common name "mallory" and one SAN.
    let by = |name, san, admitted| b.client(name, &["mallory"], &[san], admitted);
    let clients = [
        // The same strings as other types, or near misses: refused.
        by("email-local-case", "email:Alice@example.org", false),
        by("email-as-dns", "dns:alice@example.org", false),
        by("uri-as-dns", "dns:alice.example", false),
        by("uri-as-email", "email:alice.example", false),
        by("ip-as-dns", "dns:2001:db8::7", false),
        by("ip-other", "ip:2001:db8::8", false),
        by("email", "email:alice@example.org", true),
        by("uri", "uri:alice.example", true),
        by("ip", "ip:2001:db8:0:0:0:0:0:7", true),
    ];
    b.assert_admissions("typed", &mut tlsd, "routed", &clients);
    tlsd_logged(
        &tlsd,
        r#"TLS peer identity identity=CN=["mallory"] SAN=["ip:2001:db8::7"]"#,
    );
}

#[test]
fn bad_allow_san_entries_stop_tlsd_at_startup_with_the_reason() {
    let w = World::new();
    let pki = certs::generate(w.path(), false);
    let common = mtls_args(&pki.server, &pki.ca.cert);
    let bad = [
        (
            "spiffe://example.org/alice",
            r#"unknown name type "spiffe" (dns:, ip:, email: or uri:)"#,
        ),
        ("192.0.2.7", "is an IP address: write ip:192.0.2.7"),
        ("ip:alice.example", "is not an IP address"),
        ("email:alice.example", "not an e-mail address"),
    ];
    for (i, (entry, says)) in bad.into_iter().enumerate() {
        let mut args: Vec<&str> = common.iter().map(String::as_str).collect();
        args.extend(["--allow-san", entry]);
        let cmd = Daemon::command(&w, "tlsd", &args);
        let run = run_cmd(cmd, w.path(), &format!("bad-{i}"), CHILD_TIMEOUT);
        assert!(
            run.status.is_some_and(|s| !s.success()) && !run.stderr.contains("listening"),
            "--allow-san {entry}: tlsd should have refused to start\n{}",
            run.report()
        );
        assert!(
            run.stderr.contains(says),
            "--allow-san {entry}: no {says:?}\n{}",
            run.report()
        );
    }
}

#[test]
fn sighup_reloads_the_client_ca() {
    let b = Bench::new();
    let ca2 = Ca::new(b.w.path(), "ca2", "libipc test CA 2");
    let live = b.w.path().join("live-client-ca.pem");
    replace_file(&b.pki.ca.cert, &live);
    let mut tlsd = b.tlsd_trusting("tlsd", &live, &[]);
    let of_ca1 = b.pki.ca.client(b.w.path(), "of-ca1", "alice", &[]);
    let of_ca2 = ca2.client(b.w.path(), "of-ca2", "bob", &[]);
    // A certificate that chains to no client CA: unknown_ca.
    let unknown_ca = "refused (SSLError: TLSV1_ALERT_UNKNOWN_CA)";
    let clients = |ca1_admitted: bool| {
        let verdict = |admitted| if admitted { ADMITTED } else { unknown_ca };
        [
            Client {
                name: "of-ca1",
                pair: Some(of_ca1.clone()),
                verdict: verdict(ca1_admitted),
            },
            Client {
                name: "of-ca2",
                pair: Some(of_ca2.clone()),
                verdict: verdict(!ca1_admitted),
            },
        ]
    };
    // A certificate that chains to no client CA fails the TLS handshake.
    let unknown = "invalid peer certificate: UnknownIssuer";
    b.assert_refused_as("before", &mut tlsd, "routed", &clients(true), unknown);

    replace_file(&ca2.cert, &live);
    let line = sighup(&mut tlsd, 1);
    assert!(line.contains("reloaded"), "{line}\n{}", tlsd.log());
    b.assert_refused_as("after", &mut tlsd, "routed", &clients(false), unknown);
}

#[test]
fn outbound_tlsd_presents_its_client_certificate_to_a_tlsd_that_requires_one() {
    let b = Bench::new();
    let tlsd_b = b.tlsd("tlsd-b", &["--allow-cn", "tlsd-a"]);
    let identity = b.pki.ca.client(b.w.path(), "tlsd-a", "tlsd-a", &[]);
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let outbound = [
        "--ca".to_owned(),
        path(&b.pki.ca.cert),
        "--client-cert".to_owned(),
        path(&identity.cert),
        "--client-key".to_owned(),
        path(&identity.key),
    ];
    let network = format!("pong tls://localhost:{}/pong", tlsd_b.addr.port());
    // A local client of tlsd A's `tls` service, reaching pong behind B.
    let pong = |label: &str, args: &[String]| {
        let a = World::new();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut tlsd_a = Daemon::start(&a, "tlsd", &format!("tlsd-a-{label}"), &args);
        tlsd_a.proc.wait_for_socket(&a.outbound_socket("tls"));
        let mut cmd = a.example("pong");
        cmd.env("IPC_NETWORK", &network).args(["-s", "pong", label]);
        let run = run_cmd(cmd, a.path(), &format!("pong-{label}"), CHILD_TIMEOUT);
        tlsd_a.assert_running("after its client");
        run
    };
    let server = mtls_args(&b.pki.server, &b.pki.ca.cert)[..4].to_vec();

    let before = b.service_connections();
    let run = pong("with-cert", &[&server[..], &outbound[..]].concat());
    run.assert_success("pong through tlsd A, with its client certificate, to B");
    assert_eq!(run.stdout, "with-cert\n", "{}", run.report());
    assert_eq!(b.service_connections(), before + 1);

    let run = pong("without-cert", &[&server[..], &outbound[..2]].concat());
    assert!(
        run.status.is_some_and(|s| !s.success())
            && !run.stdout.contains("without-cert")
            && run.stderr.contains("CertificateRequired"),
        "B requires a client certificate: pong through a tlsd A without one should fail\n{}",
        run.report()
    );
    assert_eq!(
        b.service_connections(),
        before + 1,
        "a client of tlsd A without a certificate reached B's service"
    );
}
