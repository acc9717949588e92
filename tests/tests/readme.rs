//! README.md works as written: its programs are built from the README itself
//! and run, its commands are run, and what it quotes (log lines, refusals,
//! flags, paths) is checked against the daemons and the tree.
//!
//!     cargo test -p libipc-tests --test readme
//!
//! The code blocks run here follow a `<!-- tested: NAME -->` marker in the
//! README ([`libipc_tests::readme`]); the Rust ones are the binaries
//! `readme-service` and `readme-client` of this crate, which `build.rs`
//! copies out of the README. Needs cc, openssl and python3.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use libipc::switch::Refusal;
use libipc_tests::readme::tested_block;
use libipc_tests::{
    CHILD_TIMEOUT, Daemon, IO_TIMEOUT, Proc, READY_TIMEOUT, Run, World, artifacts, echoes, frame,
    run_cmd, spawn, workspace,
};
use nix::sys::signal::{Signal, killpg};

fn readme() -> String {
    fs::read_to_string(workspace().join("README.md")).expect("README.md")
}

fn block(name: &str) -> String {
    tested_block(&readme(), name).unwrap_or_else(|e| panic!("{e}"))
}

/// The README's Rust programs, built by cargo with this test.
fn readme_program(w: &World, name: &str) -> Command {
    let exe = match name {
        "service" => env!("CARGO_BIN_EXE_readme-service"),
        _ => env!("CARGO_BIN_EXE_readme-client"),
    };
    w.command(Path::new(exe))
}

/// The README's Rust client, run against the service "pong" of `w`: it
/// prints the echo of "hello".
fn assert_readme_client_gets_its_echo(w: &World) {
    let run = run_cmd(
        readme_program(w, "client"),
        w.path(),
        "readme-client",
        CHILD_TIMEOUT,
    );
    run.assert_success("the README's Rust client");
    assert_eq!(run.stdout, "hello\n", "{}", run.report());
}

/// The example pong sends `messages` to the service "pong" of `w` and gets
/// each back.
fn assert_pong_gets_echoes(w: &World, messages: &[&str]) {
    let mut cmd = w.example("pong");
    cmd.args(messages);
    let run = run_cmd(cmd, w.path(), "pong", CHILD_TIMEOUT);
    run.assert_success("pong");
    let want: String = messages.iter().map(|m| echoes(m, 1)).collect();
    assert_eq!(run.stdout, want, "{}", run.report());
}

#[test]
fn rust_service_and_client_run_as_written() {
    let w = World::new();
    let mut service = w.start_service(readme_program(&w, "service"), "pong", "readme-service");
    assert_readme_client_gets_its_echo(&w);
    assert_pong_gets_echoes(&w, &["one", "", "three"]);
    // Readiness probe, client, pong: each logged as it comes and goes.
    service.wait_for_stderr_lines(" left", 3, READY_TIMEOUT);
    let log = service.output(None).stderr;
    assert_eq!(log.matches(" connected\n").count(), 3, "{log}");
    assert!(service.running(), "{}", service.output(None).report());
}

#[test]
fn c_service_compiles_and_runs_as_written() {
    let w = World::new();
    let src = w.path().join("pongd.c");
    fs::write(&src, block("c-service")).unwrap();
    let pongd = w.compile_source(&src, "pongd");
    let service = w.start_service(w.command(&pongd), "pong", "readme-c-service");
    assert_readme_client_gets_its_echo(&w);
    assert_pong_gets_echoes(&w, &["one", "", "three"]);

    // As its comment says: a message over 10000 bytes ends it, cleanly.
    let mut cmd = w.example("pong");
    cmd.arg("x".repeat(10_001));
    let pong = run_cmd(cmd, w.path(), "pong-big", CHILD_TIMEOUT);
    assert!(!pong.status.unwrap().success(), "{}", pong.report());
    service
        .wait(CHILD_TIMEOUT)
        .assert_success("the README's C service");
}

/// A command line of the README, run by `sh` in the world's directory.
fn sh(w: &World, line: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(line).current_dir(w.path());
    cmd
}

/// A process started in a process group of its own (`sh -c 'a | b'` leaves
/// `a` and `b` behind when killed alone), killed with its group when dropped.
struct Group(Proc);

impl Group {
    fn start(mut cmd: Command, w: &World, label: &str) -> Group {
        cmd.process_group(0);
        Group(spawn(cmd, w.path(), label))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(self.0.pid(), Signal::SIGKILL);
    }
}

/// The commands of a shell block: continuation lines joined, comments and
/// blank lines dropped.
fn commands(block: &str) -> Vec<String> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn tlsd_tour_runs_as_written() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let tour = commands(&block("tlsd-tour"));
    let [make_cert, run_tlsd, client] = &tour[..] else {
        panic!("the tlsd tour is a certificate, tlsd and a client: {tour:#?}");
    };

    // The certificate, as the README makes it.
    assert!(make_cert.starts_with("openssl req "), "{make_cert}");
    run_cmd(sh(&w, make_cert), w.path(), "openssl-req", CHILD_TIMEOUT).assert_success(make_cert);

    // tlsd as the README starts it, on a free port instead of 9443.
    let args = run_tlsd
        .strip_prefix("cargo run -p tlsd -- ")
        .and_then(|a| a.strip_suffix(" &"))
        .unwrap_or_else(|| panic!("not `cargo run -p tlsd -- ... &`: {run_tlsd}"));
    let mut words = args.split_whitespace();
    let mut args = Vec::new();
    while let Some(word) = words.next() {
        match word {
            "--listen" => assert_eq!(words.next(), Some("127.0.0.1:9443"), "{run_tlsd}"),
            pem if pem.ends_with(".pem") => args.push(w.path().join(pem).display().to_string()),
            other => args.push(other.to_owned()),
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tlsd = Daemon::start(&w, "tlsd", "tlsd", &args);

    // The client verifies tlsd's certificate against it, and gets `ok`.
    let client = client.replace("127.0.0.1:9443", &tlsd.addr.to_string());
    assert!(client.contains("-verify_return_error"), "{client}");
    let mut s_client = Group::start(sh(&w, &client), &w, "s_client");
    s_client
        .0
        .wait_for_stdout("ok", IO_TIMEOUT, |out| out.starts_with(b"ok"));
}

/// A log line with its timestamp removed, every number made `N` and runs of
/// spaces made one, so that an example compares with a real line.
fn log_shape(line: &str) -> String {
    let mut out = String::new();
    let mut digits = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
            continue;
        }
        digits = false;
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// The log lines the README shows (indented `INFO conn{...` lines and their
/// deeper-indented continuations), each as one line.
fn readme_log_lines(readme: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut open = false;
    for line in readme.lines() {
        if line.starts_with("    INFO conn{") {
            lines.push(line.trim().to_owned());
            open = true;
        } else if open && line.starts_with("     ") {
            let last = lines.last_mut().expect("a line to continue");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            open = false;
        }
    }
    lines
}

/// Names `pong` (after `header`, if any), exchanges a message and closes.
fn pong_through(daemon: &Daemon, header: &[u8]) {
    let mut tcp = TcpStream::connect(daemon.addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let sent = frame(b"hello");
    tcp.write_all(&[header, b"pong\n", &sent].concat()).unwrap();
    let mut got = vec![0; 2 + sent.len()];
    tcp.read_exact(&mut got).unwrap();
    assert_eq!(got, [&b"ok"[..], &sent].concat());
}

const PROXY_V1: &[u8] = b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 9000\r\n";

#[test]
fn log_lines_and_refusals_quoted_are_what_tcpd_says() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut plain = Daemon::start(&w, "tcpd", "tcpd", &["--no-outbound"]);
    let proxied_args = [
        "--no-outbound",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1",
    ];
    let mut proxied = Daemon::start(&w, "tcpd", "tcpd-proxy", &proxied_args);
    pong_through(&plain, b"");
    pong_through(&proxied, PROXY_V1);
    plain
        .proc
        .wait_for_stderr_line("connection closed", READY_TIMEOUT);
    proxied
        .proc
        .wait_for_stderr_line("connection closed", READY_TIMEOUT);

    let logged: BTreeSet<String> = [plain.log(), proxied.log()]
        .iter()
        .flat_map(|log| {
            let lines = log.lines().filter_map(|l| l.split_once(' '));
            lines
                .map(|(_time, rest)| log_shape(rest))
                .collect::<Vec<_>>()
        })
        .collect();
    let readme = readme();
    let examples = readme_log_lines(&readme);
    assert!(examples.len() >= 2, "{examples:#?}");
    for example in examples {
        assert!(
            logged.contains(&log_shape(&example)),
            "README.md shows {example:?}; tcpd logs, in that form:\n{logged:#?}"
        );
    }

    // The refusal of a PROXY header from an untrusted client, as quoted.
    let mut tcp = TcpStream::connect(plain.addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.write_all(PROXY_V1).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let flowing: String = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let quoted = format!("`{}`", answer.trim_end());
    assert!(
        flowing.contains(&quoted),
        "README.md does not quote {quoted}"
    );

    // The refusals the tcpd tour lists are the wire's.
    let wire: BTreeSet<String> = [
        Refusal::UnknownService,
        Refusal::NotAllowed,
        Refusal::InvalidName,
        Refusal::ServiceDown,
        Refusal::ServiceBusy,
        Refusal::Timeout(None),
        Refusal::TooManyConnections,
    ]
    .iter()
    .map(|r| r.text().into_owned())
    .collect();
    let list = flowing
        .split_once("A refusal is answered `no: REASON` (")
        .and_then(|(_, rest)| rest.split_once(" before the close"))
        .expect("the tcpd tour's list of refusals")
        .0;
    let listed: BTreeSet<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|q| !q.starts_with('-'))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, wire, "the tcpd tour's refusals");
}

/// Whether `path` (relative to the workspace) exists, a component in
/// capitals (`TARGET`) or with a `*` standing for any.
fn exists(root: &Path, path: &str) -> bool {
    let mut dir = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let placeholder = part.contains('*') || part.chars().all(|c| c.is_ascii_uppercase());
        if placeholder {
            return dir.is_dir();
        }
        dir.push(part);
    }
    dir.exists()
}

/// Whether a file or directory `name` is somewhere under `dir`.
fn under(dir: &Path, name: &str) -> bool {
    fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let path = e.path();
        e.file_name().to_str() == Some(name) || (path.is_dir() && under(&path, name))
    })
}

#[test]
fn every_path_the_readme_names_exists() {
    let root = workspace();
    let readme = readme();
    let tops: BTreeSet<String> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && n != "target")
        .collect();
    let in_path = |c: char| c.is_ascii_alphanumeric() || "_./*@-".contains(c);
    let mut missing = Vec::new();
    let mut checked = 0;
    for word in readme.split(|c| !in_path(c)) {
        let word = word.trim_end_matches('.');
        // Not `$RUNDIR/...`, `/etc/...` or `target/...`.
        let Some((top, _)) = word.split_once('/') else {
            continue;
        };
        if tops.contains(top) {
            checked += 1;
            if !exists(&root, word) {
                missing.push(word.to_owned());
            }
        }
    }
    // The architecture map: each entry's path, and the bare file and
    // directory names its text gives, under it.
    let map = readme
        .split_once("## Architecture\n\n")
        .and_then(|(_, rest)| rest.split_once("\n\n"))
        .expect("the architecture map")
        .0;
    let mut entry = PathBuf::new();
    for line in map.lines() {
        let mut words = line.split(|c| !in_path(c)).filter(|w| !w.is_empty());
        if !line.starts_with("     ") {
            let first = words.next().expect("an entry's path");
            entry = root.join(first);
            if entry.is_file() {
                entry.pop();
            }
        }
        for name in words.filter(|w| !w.contains('/') || w.ends_with('/')) {
            let bare = name.trim_end_matches('/');
            if (name.ends_with(".rs") || name.ends_with('/')) && !bare.contains('/') {
                checked += 1;
                if !under(&entry, bare) {
                    missing.push(format!("{name} (under {})", entry.display()));
                }
            }
        }
    }
    assert!(checked > 40, "only {checked} paths found in README.md");
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "named by README.md, not there"
    );
}

/// The flags a `--help` defines (the first long flag of each option line).
fn defined_flags(w: &World, daemon: &str) -> BTreeSet<String> {
    let mut cmd = w.bin(daemon);
    cmd.arg("--help");
    let run: Run = run_cmd(cmd, w.path(), &format!("{daemon}-help"), CHILD_TIMEOUT);
    run.assert_success("--help");
    run.stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split([' ', ',', '=']).find(|word| word.starts_with("--")))
        .map(str::to_owned)
        .collect()
}

/// The `--flags` quoted in `text`.
fn quoted_flags(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|q| q.split('/'))
        .filter(|q| q.starts_with("--"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn wss_flags_the_readme_names_are_websocketd_s() {
    let w = World::new();
    let (tcpd, tlsd, websocketd) = (
        defined_flags(&w, "tcpd"),
        defined_flags(&w, "tlsd"),
        defined_flags(&w, "websocketd"),
    );
    // tlsd is tcpd behind TLS: its TLS flags are those tcpd lacks.
    let tls: BTreeSet<String> = tlsd.difference(&tcpd).cloned().collect();
    assert!(tls.contains("--cert") && tls.contains("--ca"), "{tls:?}");

    let readme = readme();
    let wss = readme
        .split_once("- **wss**:")
        .and_then(|(_, rest)| rest.split_once("\n\n"))
        .expect("websocketd's wss paragraph")
        .0;
    // Every one of them, server side and outbound (`wss://`), is websocketd's.
    let named = quoted_flags(wss);
    assert_eq!(named, tls, "tlsd's TLS flags, as the README names them");
    for flag in &named {
        assert!(websocketd.contains(flag), "websocketd has no {flag}");
    }
}

#[test]
fn demo_prints_commands_that_work_here() {
    let w = World::new();
    let mut cmd = Command::new(workspace().join("demo"));
    // The daemons this test was given, not a release build; free ports.
    cmd.env("BUILT_BINS", &artifacts().bins)
        .envs([("TCP_PORT", "0"), ("TLS_PORT", "0"), ("WS_PORT", "0")])
        .env("TMPDIR", w.path())
        .env_remove("RUNDIR")
        .env_remove("IPC_NETWORK")
        .env_remove("RUST_LOG");
    let mut demo = Group::start(cmd, &w, "demo");
    let banner = b"Ctrl-C stops everything";
    let out = demo
        .0
        .wait_for_stdout("its commands", CHILD_TIMEOUT, |out| {
            out.windows(banner.len()).any(|w| w == banner)
        });
    let out = String::from_utf8_lossy(&out).into_owned();
    let line = |needle: &str| -> String {
        let found = out.lines().map(str::trim).find(|l| l.contains(needle));
        found
            .unwrap_or_else(|| panic!("no {needle:?} in the demo's output:\n{out}"))
            .to_owned()
    };

    // Over TCP, with nothing but python3 (no nc on a fresh Debian).
    let tcp = line("127.0.0.1\", ");
    let run = run_cmd(sh(&w, &tcp), w.path(), "tcp-client", CHILD_TIMEOUT);
    run.assert_success(&tcp);
    assert_eq!(run.stdout, "ok\n", "{}", run.report());
    let remote = line("IPC_NETWORK=");
    let run = run_cmd(sh(&w, &remote), w.path(), "ipc-network", CHILD_TIMEOUT);
    run.assert_success(&remote);
    assert_eq!(run.stdout, "hello\n", "{}", run.report());
    // Over TLS, the certificate verified.
    let tls = line("openssl s_client");
    let mut s_client = Group::start(sh(&w, &tls), &w, "s_client");
    s_client
        .0
        .wait_for_stdout("ok", IO_TIMEOUT, |out| out.starts_with(b"ok"));
    drop(s_client);
    // The chat page.
    let page = line("http://");
    let addr = page.trim_start_matches("http://").trim_end_matches('/');
    let mut http = TcpStream::connect(addr).unwrap();
    http.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        http,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    http.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Ctrl-C stops everything, and removes what the demo made.
    let work = line("logs in ");
    let work = work
        .split("logs in ")
        .nth(1)
        .unwrap()
        .trim_end_matches("/*.log");
    demo.0.signal(Signal::SIGINT);
    let deadline = std::time::Instant::now() + CHILD_TIMEOUT;
    while demo.0.running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!Path::new(work).exists(), "{work} left behind");
    assert!(TcpStream::connect(addr).is_err(), "websocketd still up");
}
