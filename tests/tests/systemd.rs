//! Black-box tests of the systemd integration: the units in `systemd/` and the
//! daemons' side of it (sd_notify, socket activation).
//!
//!     cargo test -p libipc-tests --test systemd
//!
//! systemd need not run as init (CI's Debian 12 machine has systemd 252 installed
//! but not running): these tests use only what works without it.
//!
//! - `systemd-analyze verify` and `systemd-analyze security --offline=true` on
//!   copies of the units whose `ExecStart=/usr/local/bin/<daemon>` points at the
//!   binaries the tests built (verify wants the binary to exist), with nothing else
//!   changed. Every service must score 2.0 ("OK") or lower.
//! - `systemd-sysusers --root` and `systemd-tmpfiles --root --create` on a temporary
//!   root, then (as root only) processes running as those users (`setpriv`, no
//!   account is added to this machine) to check the permission model: a service
//!   of one user reached by tcpd running as another, and refused to a third.
//! - `systemd-socket-activate` as the service manager: it listens, starts the
//!   daemon (with the command line of its unit) at the first connection and
//!   passes the socket on (LISTEN_FDS, LISTEN_FDNAMES), while the test plays
//!   systemd's notify socket and checks READY=1, RELOADING=1 with MONOTONIC_USEC
//!   then READY=1 around SIGHUP, STOPPING=1 on SIGTERM and exit status 0.
//!
//! systemd-socket-activate refuses port 0, so the test binds port 0 itself,
//! reads the port, closes the socket and passes the port on: another program may
//! take the port in between, in which case systemd-socket-activate fails with
//! "Address already in use" and the test tries again with another port (a few
//! times at most).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use libipc_tests::certs;
use libipc_tests::clients::tcp;
use libipc_tests::frame;
use libipc_tests::limits::POLL;
use libipc_tests::{
    CHILD_TIMEOUT, Proc, READY_TIMEOUT, World, artifacts, python, run_cmd, spawn, workspace,
};
use nix::sys::signal::Signal;

/// The daemons that have a unit each.
const DAEMONS: [&str; 3] = ["tcpd", "tlsd", "websocketd"];

/// Where the units expect the binaries (`make install` with PREFIX=/usr/local).
const INSTALLED_BIN: &str = "/usr/local/bin/";

/// Highest `systemd-analyze security` exposure a daemon's service may have.
const MAX_EXPOSURE: &str = "2.0";

/// The repository's `systemd/` directory.
fn units_dir() -> PathBuf {
    workspace().join("systemd")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The values of every `Key=` line of a unit (comments skipped).
fn directives(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// The instance the templated units (`tcpd@.service`...) are checked as:
/// `systemd-analyze` wants an instance (a port, here) to expand `%i`.
const INSTANCE: &str = "9001";

/// Each daemon's units as checked: `tcpd`, and its template as `tcpd@9001`.
fn unit_names() -> Vec<(&'static str, String)> {
    DAEMONS
        .iter()
        .flat_map(|&d| [(d, d.to_owned()), (d, format!("{d}@{INSTANCE}"))])
        .collect()
}

/// The file in `systemd/` of unit `name.suffix`: for an instance
/// (`tcpd@9001`), its template (`tcpd@.service`).
fn unit_file(name: &str, suffix: &str) -> PathBuf {
    let file = match name.split_once('@') {
        Some((daemon, _)) => format!("{daemon}@.{suffix}"),
        None => format!("{name}.{suffix}"),
    };
    units_dir().join(file)
}

/// Copies of the units in `dir` (templates as [`INSTANCE`]), each
/// `/usr/local/bin/<daemon>` replaced by the binary the tests built. Returns
/// their paths.
fn units_with_built_binaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("units directory");
    let bins = format!("{}/", artifacts().bins.display());
    let mut out = Vec::new();
    for (daemon, name) in unit_names() {
        for suffix in ["service", "socket"] {
            let file = format!("{name}.{suffix}");
            // An instance's copy is its template unchanged: systemd expands %i.
            let text = read(&unit_file(&name, suffix));
            if suffix == "service" {
                let exec = directives(&text, "ExecStart");
                assert!(
                    exec.len() == 1 && exec[0].starts_with(&format!("{INSTALLED_BIN}{daemon} ")),
                    "{file}: expected one ExecStart={INSTALLED_BIN}{daemon} ..., found {exec:?}"
                );
            }
            let path = dir.join(&file);
            std::fs::write(&path, text.replace(INSTALLED_BIN, &bins)).expect("writing a unit");
            out.push(path);
        }
    }
    out
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let w = World::new();
    let units = units_with_built_binaries(&w.path().join("units"));
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").args(&units);
    let run = run_cmd(cmd, w.path(), "verify", CHILD_TIMEOUT);
    // verify exits 0 even for an unknown key or a bad value: it only warns. Clean
    // means it said nothing at all.
    run.assert_success("systemd-analyze verify");
    assert!(
        run.stdout.trim().is_empty() && run.stderr.trim().is_empty(),
        "systemd-analyze verify is not clean\n{}",
        run.report()
    );
}

/// "1.3" as 13: exposures have one decimal.
fn tenths(s: &str) -> Option<u32> {
    let (int, frac) = s.split_once('.')?;
    if frac.len() != 1 {
        return None;
    }
    Some(int.parse::<u32>().ok()? * 10 + frac.parse::<u32>().ok()?)
}

#[test]
fn services_score_2_0_or_lower_in_systemd_analyze_security() {
    let w = World::new();
    units_with_built_binaries(&w.path().join("units"));
    let max = tenths(MAX_EXPOSURE).unwrap();
    let mut summary = Vec::new();
    for (_, name) in unit_names() {
        let unit = w.path().join("units").join(format!("{name}.service"));
        let mut cmd = Command::new("systemd-analyze");
        cmd.args(["security", "--offline=true", "--no-pager"])
            .arg(&unit);
        let run = run_cmd(cmd, w.path(), &format!("security-{name}"), CHILD_TIMEOUT);
        run.assert_success("systemd-analyze security");
        // "→ Overall exposure level for tcpd.service: 1.3 OK 🙂"
        let line = run
            .stdout
            .lines()
            .find(|l| l.contains("Overall exposure level for"))
            .unwrap_or_else(|| panic!("no overall exposure level\n{}", run.report()))
            .trim_start_matches('→')
            .trim()
            .to_owned();
        let level = line
            .rsplit_once(": ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(tenths)
            .unwrap_or_else(|| panic!("cannot read the level in {line:?}"));
        // The settings that cost something, for the summary.
        let costs: Vec<String> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with('✗'))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect();
        summary.push((level, format!("{line}  (exposed: {})", costs.join(", "))));
    }
    let report: Vec<&str> = summary.iter().map(|(_, s)| s.as_str()).collect();
    println!("{}", report.join("\n"));
    assert!(
        summary.iter().all(|(level, _)| *level <= max),
        "exposure above {MAX_EXPOSURE}:\n{}",
        report.join("\n")
    );
}

/// Every variable `systemd/libipc.env` sets (or shows, commented out) is one a
/// unit expands or a daemon reads.
#[test]
fn environment_file_names_only_what_units_and_daemons_read() {
    let w = World::new();
    let env = read(&units_dir().join("libipc.env"));
    let mut used = String::new();
    for (daemon, name) in unit_names() {
        used += &read(&unit_file(&name, "service"));
        if name.contains('@') {
            continue;
        }
        let mut help = w.bin(daemon);
        help.arg("--help");
        let run = run_cmd(help, w.path(), &format!("{daemon}-help"), CHILD_TIMEOUT);
        run.assert_success("--help");
        used += &run.stdout;
    }
    let names: Vec<&str> = env
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
        .collect();
    assert!(names.contains(&"RUNDIR"), "libipc.env sets no RUNDIR");
    for name in names {
        let read_by = [
            format!("${{{name}}}"),
            format!("${name} "),
            format!("${name}\n"),
            format!("[env: {name}="),
        ];
        assert!(
            read_by.iter().any(|r| used.contains(r.as_str())),
            "libipc.env names {name}, which no unit expands and no daemon reads"
        );
    }
}

/// A temporary root with the users, groups and directories of `systemd/`'s
/// sysusers.d and tmpfiles.d files, made by systemd's own tools.
struct Root {
    path: PathBuf,
    /// Group libipc (run directory and sockets).
    libipc_gid: u32,
    /// User libipcd (the daemons) and its own group.
    libipcd_uid: u32,
    libipcd_gid: u32,
}

fn id_of(file: &str, name: &str) -> Option<(u32, String)> {
    file.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(':').collect();
        (fields.first() == Some(&name)).then(|| (fields[2].parse().unwrap(), l.to_owned()))
    })
}

fn make_root(w: &World) -> Root {
    let path = w.path().join("root");
    std::fs::create_dir_all(path.join("etc")).unwrap();
    for f in ["passwd", "group"] {
        std::fs::write(path.join("etc").join(f), "").unwrap();
    }
    let sysusers = units_dir().join("sysusers.d/libipc.conf");
    let mut cmd = Command::new("systemd-sysusers");
    cmd.arg(format!("--root={}", path.display())).arg(&sysusers);
    run_cmd(cmd, w.path(), "sysusers", CHILD_TIMEOUT).assert_success("systemd-sysusers");
    let passwd = read(&path.join("etc/passwd"));
    let group = read(&path.join("etc/group"));
    let (libipc_gid, libipc) = id_of(&group, "libipc").expect("group libipc");
    assert!(
        libipc.ends_with(":libipcd"),
        "libipcd is not (the only) member of libipc: {libipc:?}"
    );
    let (libipcd_uid, user) = id_of(&passwd, "libipcd").expect("user libipcd");
    let libipcd_gid = user.split(':').nth(3).unwrap().parse().unwrap();
    assert_eq!(
        id_of(&group, "libipcd").map(|(gid, _)| gid),
        Some(libipcd_gid),
        "libipcd's primary group is not its own group: {user:?}"
    );
    assert!(user.ends_with(":/usr/sbin/nologin"), "{user:?}");
    assert!(libipc_gid < 1000 && libipcd_uid < 1000, "not system ids");

    let tmpfiles = units_dir().join("tmpfiles.d/libipc.conf");
    let mut cmd = Command::new("systemd-tmpfiles");
    cmd.arg(format!("--root={}", path.display()))
        .arg("--create")
        .arg(&tmpfiles);
    run_cmd(cmd, w.path(), "tmpfiles", CHILD_TIMEOUT).assert_success("systemd-tmpfiles");
    Root {
        path,
        libipc_gid,
        libipcd_uid,
        libipcd_gid,
    }
}

/// Mode (permission bits, setgid included, in octal), owner and group of `path`.
fn owner_and_mode(path: &Path) -> (String, u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (format!("{:04o}", m.mode() & 0o7777), m.uid(), m.gid())
}

#[test]
fn sysusers_and_tmpfiles_make_the_group_and_the_setgid_run_directory() {
    let w = World::new();
    let root = make_root(&w);
    let rundir = root.path.join("run/libipc");
    assert!(rundir.is_dir());
    assert_eq!(
        owner_and_mode(&rundir),
        ("2770".into(), 0, root.libipc_gid),
        "/run/libipc: want mode 2770, root:libipc"
    );
    assert_eq!(
        owner_and_mode(&root.path.join("etc/libipc/tls")),
        ("0750".into(), 0, root.libipcd_gid),
        "/etc/libipc/tls: want mode 0750, root:libipcd"
    );
    // The run directory the units let the daemons write to, and give them.
    for (_, name) in unit_names() {
        let unit = read(&unit_file(&name, "service"));
        assert_eq!(directives(&unit, "ReadWritePaths"), ["/run/libipc"]);
        assert_eq!(directives(&unit, "SupplementaryGroups"), ["libipc"]);
        assert_eq!(directives(&unit, "User"), ["libipcd"]);
    }
    let env = read(&units_dir().join("libipc.env"));
    assert!(env.lines().any(|l| l == "RUNDIR=/run/libipc"));
}

/// A command run as `uid`, primary group `gid`, supplementary `groups` (none:
/// no supplementary group), through `setpriv`.
fn as_user(uid: u32, gid: u32, groups: &[u32], exe: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg("--").arg(exe).env_remove("RUST_LOG");
    cmd
}

/// The address in a daemon's first `listening address=...` log line.
fn logged_address(log: &str) -> Option<SocketAddr> {
    log.split("listening address=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits for the daemon's `listening address=...` line; returns the address.
fn listening_address(proc: &mut Proc) -> SocketAddr {
    let line = proc.wait_for_stderr_line("listening address=", READY_TIMEOUT);
    logged_address(&line)
        .unwrap_or_else(|| proc.fail(&format!("cannot parse the address in {line:?}")))
}

/// Two service users and an outsider: made-up ids no account on this machine
/// has (setpriv needs none).
const ALICE: u32 = 61_001;
const OUTSIDER: u32 = 61_002;

#[test]
fn a_service_of_one_user_reaches_the_daemons_user_and_nobody_outside_the_group() {
    // The owner of /proc/self is this process's effective user.
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        eprintln!("skipped: only root can run processes as other users (CI runs as root)");
        return;
    }
    let w = World::new();
    // Other users must be able to reach into the temporary root.
    std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = make_root(&w);
    let rundir = root.path.join("run/libipc");

    // alice, a member of libipc, runs the echo service.
    let mut pongd = as_user(
        ALICE,
        ALICE,
        &[root.libipc_gid],
        &artifacts().example("pongd"),
    );
    pongd.arg("pong").env("RUNDIR", &rundir);
    let mut pongd = spawn(pongd, w.path(), "pongd-alice");
    let socket = rundir.join("pong");
    pongd.wait_for_socket(&socket);
    assert_eq!(
        owner_and_mode(&socket),
        ("0660".into(), ALICE, root.libipc_gid),
        "alice's socket: want mode 0660, group libipc (from the setgid directory)"
    );

    // tcpd as the units run it: user libipcd, group libipcd, plus libipc.
    let daemon = |label: &str, groups: &[u32], args: &[&str]| {
        let mut cmd = as_user(
            root.libipcd_uid,
            root.libipcd_gid,
            groups,
            &artifacts().bin("tcpd"),
        );
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUNDIR", &rundir)
            .env_remove("ADDRESS")
            .env_remove("IPC_SERVICE_NAME");
        let mut proc = spawn(cmd, w.path(), label);
        let addr = listening_address(&mut proc);
        (proc, addr)
    };
    let (mut tcpd, addr) = daemon("tcpd-libipcd", &[root.libipc_gid], &["--service", "pong"]);
    let mut client = WsOrTcp::connect(addr);
    client.send(&frame(b"from the network"));
    assert_eq!(client.recv_frame(), b"from the network");
    // tcpd's own service (`tcp`, in .outbound/) is in the group too, whatever
    // its umask; so is the directory it made for it, setgid like the run directory.
    let outbound = libipc::service::outbound_dir(&rundir);
    tcpd.wait_for_socket(&outbound.join("tcp"));
    assert_eq!(
        owner_and_mode(&outbound.join("tcp")),
        ("0660".into(), root.libipcd_uid, root.libipc_gid)
    );
    assert_eq!(
        owner_and_mode(&outbound),
        ("2770".into(), root.libipcd_uid, root.libipc_gid)
    );

    // A local client in the group gets through; one outside it does not.
    let pong = |uid: u32, groups: &[u32], label: &str| {
        let mut cmd = as_user(uid, uid, groups, &artifacts().example("pong"));
        cmd.arg("hi").env("RUNDIR", &rundir);
        run_cmd(cmd, w.path(), label, CHILD_TIMEOUT)
    };
    let member = pong(OUTSIDER, &[root.libipc_gid], "pong-member");
    member.assert_success("pong as a member of libipc");
    member.assert_lines(&["hi"]);
    let outsider = pong(OUTSIDER, &[], "pong-outsider");
    assert!(
        !outsider.status.unwrap().success() && outsider.stderr.contains("ermission denied"),
        "an outsider reached alice's service\n{}",
        outsider.report()
    );

    // The same tcpd without the group libipc cannot reach the service (nor make
    // its own: hence --no-outbound). Routed, it says why.
    let (_tcpd2, addr2) = daemon("tcpd-no-group", &[], &["--no-outbound"]);
    let mut refused = WsOrTcp::connect(addr2);
    refused.send(b"pong\n");
    assert_eq!(
        String::from_utf8_lossy(&refused.until_closed()),
        "no: service down\n",
        "tcpd outside the group libipc"
    );
    drop(client);
    tcpd.signal(Signal::SIGTERM);
    tcpd.wait(CHILD_TIMEOUT)
        .assert_success("tcpd after SIGTERM");
}

// --- sd_notify and socket activation. ---

/// The test's side of `$NOTIFY_SOCKET`: what systemd would receive.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn bind(w: &World) -> Notify {
        let path = w.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Notify { sock, path }
    }

    /// The next message, or None if none is waiting.
    fn try_next(&self) -> Option<String> {
        let mut buf = [0; 4096];
        self.sock.set_nonblocking(true).unwrap();
        let got = match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("notify socket: {e}"),
        };
        self.sock.set_nonblocking(false).unwrap();
        got
    }

    /// The next message `proc` sends; fails if it exits first or sends none
    /// within [`READY_TIMEOUT`].
    fn next(&self, proc: &mut Proc, waiting_for: &str) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if !proc.running() {
                proc.fail(&format!("exited before sending {waiting_for:?}"));
            }
            if Instant::now() > deadline {
                proc.fail(&format!(
                    "did not send {waiting_for:?} within {READY_TIMEOUT:?}"
                ));
            }
        }
    }

    /// Expects exactly `want` as the next message.
    fn expect(&self, proc: &mut Proc, want: &str) {
        let got = self.next(proc, want);
        if got != want {
            proc.fail(&format!("notify: want {want:?}, got {got:?}"));
        }
    }

    /// SIGHUP, then `RELOADING=1` with a `MONOTONIC_USEC` taken during the reload,
    /// then `READY=1`.
    fn expect_reload(&self, proc: &mut Proc) {
        let before = monotonic_usec();
        proc.signal(Signal::SIGHUP);
        let got = self.next(proc, "RELOADING=1");
        let after = monotonic_usec();
        let usec = got
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| {
                proc.fail(&format!(
                    "want RELOADING=1 and MONOTONIC_USEC=N, got {got:?}"
                ))
            });
        if !(before..=after).contains(&usec) {
            proc.fail(&format!(
                "MONOTONIC_USEC={usec} is not between {before} and {after}, the \
                 CLOCK_MONOTONIC before SIGHUP and after the message"
            ));
        }
        self.expect(proc, "READY=1");
    }

    /// SIGTERM, `STOPPING=1`, exit status 0; nothing else was sent.
    fn expect_stop(&self, mut proc: Proc) -> String {
        proc.signal(Signal::SIGTERM);
        self.expect(&mut proc, "STOPPING=1");
        let run = proc.wait(CHILD_TIMEOUT);
        run.assert_success("the daemon after SIGTERM");
        if let Some(more) = self.try_next() {
            panic!(
                "notify: unexpected {more:?} after STOPPING=1\n{}",
                run.report()
            );
        }
        run.stderr
    }
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

/// A plain TCP client (of tcpd, or of websocketd, speaking WebSocket by hand).
struct WsOrTcp {
    s: TcpStream,
}

impl WsOrTcp {
    fn connect(addr: SocketAddr) -> WsOrTcp {
        WsOrTcp { s: tcp(addr) }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("client write");
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.s
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("client read of {n} bytes: {e}"));
        buf
    }

    fn recv_frame(&mut self) -> Vec<u8> {
        let len = u32::from_be_bytes(self.read_exact(4).try_into().unwrap());
        self.read_exact(len as usize)
    }

    /// Everything until the peer closes (a reset counts as closed).
    fn until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        match self.s.read_to_end(&mut all) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("not closed ({e}); got {:?}", String::from_utf8_lossy(&all)),
        }
        all
    }

    /// Sends the HTTP upgrade for `path`; expects `101 Switching Protocols`.
    fn ws_upgrade(&mut self, path: &str) {
        self.send(
            format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        );
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.extend(self.read_exact(1));
            assert!(head.len() < 8192, "no end of the response head");
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101 "),
            "want 101 Switching Protocols, got:\n{head}"
        );
        // RFC 6455's example key and its accept value.
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept:\n{head}"
        );
    }

    /// Sends `payload` as one masked binary WebSocket message (under 126 bytes).
    fn ws_send(&mut self, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut msg = vec![0x82, 0x80 | payload.len() as u8];
        msg.extend(mask);
        msg.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.send(&msg);
    }

    /// Reads one unmasked binary message from the server (under 126 bytes).
    fn ws_recv(&mut self) -> Vec<u8> {
        let head = self.read_exact(2);
        assert_eq!(head[0], 0x82, "want a final binary frame, got {head:?}");
        assert!(head[1] < 126, "want an unmasked short frame, got {head:?}");
        self.read_exact(head[1] as usize)
    }
}

/// The command line of unit `<name>.service`'s ExecStart= (`tcpd`, or an
/// instance `tcpd@9001` of `tcpd@.service`), as systemd would run it: `%i` is
/// the instance, `${NAME}` is one word, `$NAME` alone splits at spaces, the
/// values from its Environment= lines overridden by `env` (what an operator
/// would put in /etc/libipc/libipc.env, or the instance's own file), and
/// /usr/local/bin/ the binaries the tests built.
fn exec_start(name: &str, env: &[(&str, &str)]) -> Vec<String> {
    let mut unit = read(&unit_file(name, "service"));
    if let Some((_, instance)) = name.split_once('@') {
        unit = unit.replace("%i", instance);
    }
    let mut vars: HashMap<String, String> = directives(&unit, "Environment")
        .iter()
        .flat_map(|line| line.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let exec = directives(&unit, "ExecStart");
    let mut words = Vec::new();
    for word in exec[0].split_whitespace() {
        if let Some(var) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            words.extend(
                vars.get(var)
                    .map(String::as_str)
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_owned),
            );
            continue;
        }
        let mut out = String::new();
        let mut rest = word;
        while let Some(start) = rest.find("${") {
            let end = rest[start..].find('}').expect("unterminated ${") + start;
            let var = &rest[start + 2..end];
            out += &rest[..start];
            out += vars
                .get(var)
                .unwrap_or_else(|| panic!("{name}.service: ${{{var}}} has no value"));
            rest = &rest[end + 1..];
        }
        out += rest;
        words.push(out);
    }
    let bin = words[0]
        .strip_prefix(INSTALLED_BIN)
        .unwrap_or_else(|| panic!("ExecStart= not in {INSTALLED_BIN}: {words:?}"));
    words[0] = artifacts().bin(bin).display().to_string();
    words
}

/// A daemon behind `systemd-socket-activate`, not started yet.
struct Activated {
    proc: Proc,
    addr: SocketAddr,
    notify: Notify,
}

/// A port that was free a moment ago (see the module's documentation).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Runs `systemd-socket-activate --fdname=<daemon>` on 127.0.0.1 with the
/// command line of `unit` (`tcpd`, `tcpd@9001`; `env`: see [`exec_start`]),
/// passing RUNDIR and NOTIFY_SOCKET on; returns once it listens.
fn activate(w: &World, unit: &str, env: &[(&str, &str)]) -> Activated {
    let notify = Notify::bind(w);
    let argv = exec_start(unit, env);
    let daemon = unit.split('@').next().unwrap_or(unit);
    for attempt in 1..=5 {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg("-l")
            .arg(addr.to_string())
            .args(["-E", "RUNDIR", "-E", "NOTIFY_SOCKET", "-E", "LOG_FORMAT"])
            .arg(format!("--fdname={daemon}"))
            .args(&argv)
            .env("RUNDIR", &w.rundir)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("LOG_FORMAT", "text");
        let label = format!("{unit}-{attempt}");
        let mut proc = spawn(cmd, w.path(), &label);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = proc.output(None).stderr;
            if log.contains(&format!("Listening on {addr} as 3.")) {
                return Activated { proc, addr, notify };
            }
            if !proc.running() {
                if log.contains("Address already in use") {
                    break; // Taken since free_port: another one.
                }
                proc.fail("systemd-socket-activate exited");
            }
            if Instant::now() > deadline {
                proc.fail("systemd-socket-activate did not listen");
            }
            sleep(POLL);
        }
    }
    panic!("5 ports in a row were taken before systemd-socket-activate bound them");
}

impl Activated {
    /// Before any connection: the daemon is not started (nothing notified).
    fn assert_not_started(&self) {
        if let Some(msg) = self.notify.try_next() {
            panic!("notified {msg:?} before the first connection");
        }
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.proc.pid())).unwrap();
        assert!(
            exe.ends_with("systemd-socket-activate"),
            "started before the first connection: {}",
            exe.display()
        );
    }

    /// After the first connection: READY=1, and the daemon logged the socket it
    /// was given, with its name.
    fn expect_started(&mut self, daemon: &str) {
        self.notify.expect(&mut self.proc, "READY=1");
        let line = self
            .proc
            .wait_for_stderr_line("(socket activation)", READY_TIMEOUT);
        assert!(
            line.contains(&format!("address={}", self.addr)) && line.contains(daemon),
            "want the socket {} named {daemon} in {line:?}",
            self.addr
        );
    }
}

#[test]
fn tcpd_socket_activated_serves_the_queued_client_reloads_and_stops() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut d = activate(&w, "tcpd", &[("TCPD_OPTS", "--service pong")]);
    d.assert_not_started();

    // The connection that starts tcpd waits in the socket's queue, and is served.
    let mut client = WsOrTcp::connect(d.addr);
    d.expect_started("tcpd");
    client.send(&frame(b"first"));
    assert_eq!(client.recv_frame(), b"first");

    d.notify.expect_reload(&mut d.proc);
    client.send(&frame(b"after the reload"));
    assert_eq!(client.recv_frame(), b"after the reload");
    drop(client);
    let log = d.notify.expect_stop(d.proc);
    // The unit's --listen 127.0.0.1:9000 gave way to the socket systemd passed.
    assert!(
        !log.contains("listening address="),
        "tcpd bound --listen too:\n{log}"
    );
}

/// A Python TLS client of a fixed-mode tlsd: one message and its echo.
fn tls_echo(w: &World, label: &str, addr: SocketAddr, ca: &Path, message: &str) {
    let mut cmd = python("tls_echo.py");
    cmd.arg(addr.port().to_string()).arg(ca).arg(message);
    let run = run_cmd(cmd, w.path(), label, CHILD_TIMEOUT);
    run.assert_success(label);
    run.assert_lines(&["tls echo: ok"]);
}

#[test]
fn tlsd_socket_activated_serves_tls_reloads_its_certificate_and_stops() {
    let w = World::new();
    let pki = certs::generate(w.path(), true);
    let second = pki.second_ca.as_ref().unwrap();
    let rotated = second.server(w.path(), "rotated");
    // The files the unit names (TLSD_CERT, TLSD_KEY), replaced before SIGHUP.
    let (cert, key) = (w.path().join("live.pem"), w.path().join("live.key"));
    let install = |pair: &certs::ServerPair| {
        std::fs::copy(&pair.cert, &cert).unwrap();
        std::fs::copy(&pair.key, &key).unwrap();
    };
    install(&pki.server);
    let _pongd = w.rust_pongd("pong");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let env = [
        ("TLSD_CERT", cert_s.as_str()),
        ("TLSD_KEY", key_s.as_str()),
        ("TLSD_OPTS", "--service pong"),
    ];
    let mut d = activate(&w, "tlsd", &env);
    d.assert_not_started();

    // The first client starts tlsd; its handshake waits in the queue meanwhile.
    tls_echo(&w, "python-first", d.addr, &pki.ca.cert, "first");
    d.expect_started("tlsd");

    install(&rotated);
    d.notify.expect_reload(&mut d.proc);
    d.proc
        .wait_for_stderr_line("certificates and keys reloaded", READY_TIMEOUT);
    tls_echo(
        &w,
        "python-rotated",
        d.addr,
        &second.cert,
        "after the reload",
    );
    d.notify.expect_stop(d.proc);
}

#[test]
fn websocketd_socket_activated_upgrades_reloads_and_stops() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let mut d = activate(&w, "websocketd", &[]);
    d.assert_not_started();

    let mut client = WsOrTcp::connect(d.addr);
    d.expect_started("websocketd");
    client.ws_upgrade("/pong");
    client.ws_send(b"first");
    assert_eq!(client.ws_recv(), b"first");

    d.notify.expect_reload(&mut d.proc);
    client.ws_send(b"after the reload");
    assert_eq!(client.ws_recv(), b"after the reload");
    drop(client);
    d.notify.expect_stop(d.proc);
}

/// Without socket activation, READY=1 means the port it bound takes clients;
/// STOPPING=1 comes as the drain starts, and open connections may finish.
#[test]
fn tcpd_alone_notifies_ready_once_listening_and_stopping_while_draining() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let notify = Notify::bind(&w);
    let mut cmd = w.bin("tcpd");
    cmd.args(["--listen", "127.0.0.1:0", "--service", "pong"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("ADDRESS")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    let mut tcpd = spawn(cmd, w.path(), "tcpd");
    notify.expect(&mut tcpd, "READY=1");
    // Logged before READY=1: no waiting here.
    let addr = logged_address(&tcpd.output(None).stderr)
        .unwrap_or_else(|| tcpd.fail("READY=1 before the listening address was logged"));
    let mut client = WsOrTcp::connect(addr);
    client.send(&frame(b"ready"));
    assert_eq!(client.recv_frame(), b"ready");

    notify.expect_reload(&mut tcpd);
    tcpd.signal(Signal::SIGTERM);
    notify.expect(&mut tcpd, "STOPPING=1");
    // Draining: the open conversation carries on.
    client.send(&frame(b"while stopping"));
    assert_eq!(client.recv_frame(), b"while stopping");
    drop(client);
    let run = tcpd.wait(CHILD_TIMEOUT);
    run.assert_success("tcpd after SIGTERM");
    assert!(notify.try_next().is_none());
}

/// An instance of the template (`tcpd@PORT`, fixed mode) and tcpd.service on
/// one run directory: the instance, started first, leaves the outbound
/// service `tcp` to tcpd.service (the template's OUTBOUND=--no-outbound), and
/// both serve their clients.
#[test]
fn a_tcpd_instance_started_first_leaves_the_outbound_service_to_tcpd_service() {
    let w = World::new();
    let _pongd = w.rust_pongd("pong");
    let unit = format!("tcpd@{INSTANCE}");
    let mut instance = activate(&w, &unit, &[("OPTS", "--service pong")]);
    let mut client = WsOrTcp::connect(instance.addr);
    instance.expect_started("tcpd");
    client.send(&frame(b"to the instance"));
    assert_eq!(client.recv_frame(), b"to the instance");

    // Then tcpd.service's command line, on a port of its own.
    let argv = exec_start("tcpd", &[("TCPD_ADDRESS", "127.0.0.1:0")]);
    let mut cmd = w.command(Path::new(&argv[0]));
    cmd.args(&argv[1..])
        .env_remove("ADDRESS")
        .env_remove("IPC_SERVICE_NAME")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    let mut tcpd = spawn(cmd, w.path(), "tcpd-service");
    tcpd.wait_for_stderr_line("tcpd ready", READY_TIMEOUT);
    let log = tcpd.output(None).stderr;
    assert!(
        log.contains("outbound service ready"),
        "tcpd.service does not have `tcp`:\n{log}"
    );
    let mut routed = WsOrTcp::connect(listening_address(&mut tcpd));
    routed.send(&[frame(b"pong"), frame(b"to tcpd.service")].concat());
    assert_eq!(routed.recv_frame(), b"ok");
    assert_eq!(routed.recv_frame(), b"to tcpd.service");
    drop((client, routed));
    let log = instance.notify.expect_stop(instance.proc);
    assert!(
        !log.contains("outbound service"),
        "the instance offered `tcp`:\n{log}"
    );
}
