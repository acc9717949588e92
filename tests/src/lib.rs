//! Helpers shared by the black-box tests and the benchmark harness.
//!
//! The black-box tests (`tests/tests/*.rs`) run real programs: the Rust examples
//! (`pongd`, `pong`), the daemons (`tcpd`, `tlsd`), C programs from `tests/c/`
//! compiled against `libipc.h`, and third-party tools. What they have in common
//! lives here:
//!
//! - [`artifacts`]: the workspace binaries and examples, built once per test
//!   process into a target directory of their own, and the C library cargo built
//!   for the test;
//! - [`spawn`] / [`Proc`] / [`Run`]: child processes whose output goes to files,
//!   killed after a timeout or when the test fails, their output shown on failure;
//! - [`World`]: a test's private temporary directory and `RUNDIR`, with
//!   [`World::start_service`] (ready when its socket accepts, never after a fixed
//!   sleep) and [`World::compile`] for the C programs;
//! - [`certs`]: CAs, certificates and keys for the tlsd tests, generated with
//!   rcgen;
//! - [`clients`]: network clients of the daemons (TCP, TLS);
//! - [`limits`]: the time limits every test shares, and raising the limit on
//!   open descriptors;
//! - [`metrics`]: a daemon's Prometheus metrics, scraped;
//! - [`python`]: the Python programs of `tests/py/`, run with the venv's Python;
//! - [`readme`]: the code blocks of README.md that the tests build and run;
//! - [`wire`]: LibIPC frames and test payloads.
//!
//! Readiness is always observed (a socket that accepts, a log line), never assumed
//! after a sleep; every wait is bounded.

pub mod certs;
pub mod clients;
pub mod limits;
pub mod metrics;
pub mod process;
pub mod python;
pub mod readme;
pub mod wire;

pub use limits::{BUILD_TIMEOUT, CHILD_TIMEOUT, IO_TIMEOUT, READY_TIMEOUT, raise_nofile_limit};
pub use process::{Proc, Run, run_cmd, spawn, spawn_with_stdin};
pub use python::{python, venv_bin};
pub use wire::{frame, pattern};

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::unistd::Pid;
use tempfile::TempDir;

/// Flags for linking `libipc.a` statically: `--print native-static-libs`.
pub const STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"];

/// The root of the workspace.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `target/<profile>` (or `target/<triple>/<profile>`): a test runs from
/// `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// What the black-box tests run, found or built once per test process.
#[derive(Debug)]
pub struct Artifacts {
    /// The directory of the C library (`libipc.so`, `libipc.a`) this test was
    /// built with.
    pub libdir: PathBuf,
    /// The directory of the Rust examples (`pongd`, `pong`).
    pub examples: PathBuf,
    /// The directory of the workspace binaries (`tcpd`, `tlsd`).
    pub bins: PathBuf,
}

impl Artifacts {
    /// The Rust example `name` (`libipc/examples/NAME.rs`).
    pub fn example(&self, name: &str) -> PathBuf {
        self.examples.join(name)
    }

    /// The workspace binary `name` (`tcpd`, `tlsd`, `websocketd`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }
}

/// The artifacts, built on first use (see [`build_binaries`]).
///
/// Panics if the test was not run through cargo (the C library is found next to
/// the test binary, where cargo built it as a dependency of this crate).
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let profile_dir = profile_dir();
        // Built as a dependency, libipc's cdylib and staticlib stay in `deps/`
        // (only `cargo build -p libipc` copies them up to `target/<profile>/`,
        // and that copy can be stale): use the ones cargo built for this test.
        let libdir = profile_dir.join("deps");
        for lib in ["libipc.so", "libipc.a"] {
            assert!(
                libdir.join(lib).is_file(),
                "{} not found: cargo builds it (crate-type cdylib and staticlib of \
                 libipc) as a dependency of libipc-tests; run this through `cargo test`",
                libdir.join(lib).display()
            );
        }
        let out = build_binaries(&profile_dir);
        Artifacts {
            libdir,
            examples: out.join("examples"),
            bins: out,
        }
    })
}

/// Builds libipc's examples and the daemons' binaries (tcpd, tlsd), with the
/// profile of this test, in a target directory of their own
/// (`<target>/black-box-bins`), and returns their profile directory (binaries in
/// it, examples in its `examples/`).
///
/// Always building makes them never stale (it is a no-op when they are up to
/// date). Their own target directory keeps that build from touching the
/// libraries this test uses: libipc's cdylib has no hash in its file name, so a
/// build of libipc with other features (the examples' dev-dependencies) in the
/// same directory would overwrite them, and rebuild libipc on every run. Every
/// test binary runs the same command, so they share that build.
pub fn build_binaries(profile_dir: &Path) -> PathBuf {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("unexpected profile directory {}", profile_dir.display()),
    };
    let mut target = profile_dir.parent().expect("target directory");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace()).args([
        "build",
        "-p",
        "libipc",
        "--examples",
        "-p",
        "tcpd",
        "-p",
        "tlsd",
        "-p",
        "websocketd",
        "--bins",
        "--profile",
        profile,
    ]);
    // The target directory's root holds cargo's CACHEDIR.TAG and
    // .rustc_info.json; CACHEDIR.TAG alone is not enough: cargo writes it only
    // when it creates the directory, and tests/run may have made target/ first
    // (the Python venv, playwright-core).
    let is_root =
        |d: &Path| d.join("CACHEDIR.TAG").is_file() || d.join(".rustc_info.json").is_file();
    if !is_root(target) {
        // target/<triple>/<profile>, from `cargo test --target <triple>`.
        cmd.arg("--target")
            .arg(target.file_name().expect("target triple"));
        target = target.parent().expect("target directory");
    }
    let own = target.join("black-box-bins");
    cmd.arg("--target-dir").arg(&own);
    // Cargo and nextest give a running test its package's variables
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts that watch them
    // (ring's does) would find them changed since the same build in tests/run,
    // and everything above ring would be built again, here, on the tests' time.
    for (name, _) in std::env::vars_os() {
        let Some(n) = name.to_str() else { continue };
        let per_package = n.starts_with("CARGO_PKG_")
            || n.starts_with("CARGO_BIN_EXE_")
            || matches!(
                n,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if per_package {
            cmd.env_remove(&name);
        }
    }
    let dir = TempDir::new().expect("tempdir");
    let run = run_cmd(cmd, dir.path(), "cargo-build", BUILD_TIMEOUT);
    run.assert_success("cargo build -p libipc --examples -p tcpd -p tlsd -p websocketd --bins");
    let rel = profile_dir.strip_prefix(target).expect("profile directory");
    own.join(rel)
}

/// `tests/c/<prog>.c`.
fn c_program(prog: &str) -> PathBuf {
    workspace().join("tests/c").join(format!("{prog}.c"))
}

/// A test's private world: a run directory (`RUNDIR`) and a place for binaries
/// and logs, removed when dropped.
#[derive(Debug)]
pub struct World {
    dir: TempDir,
    /// `<temp dir>/run`, the `RUNDIR` of every command made by [`World::command`].
    pub rundir: PathBuf,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A fresh temporary directory with an empty `run/` in it.
    pub fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let rundir = dir.path().join("run");
        std::fs::create_dir(&rundir).expect("rundir");
        World { dir, rundir }
    }

    /// Where a protocol daemon's outbound service `name` (`tcp`, `tls`) listens:
    /// `$RUNDIR/.outbound/<name>`, out of reach of network clients.
    pub fn outbound_socket(&self, name: &str) -> PathBuf {
        libipc::service::outbound_dir(&self.rundir).join(name)
    }

    /// The temporary directory (binaries, logs, files of the test).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Compiles `tests/c/<prog>.c` against `libipc.so`.
    pub fn compile(&self, prog: &str) -> PathBuf {
        self.compile_source(&c_program(prog), prog)
    }

    /// Compiles the C program `src` against `libipc.so`, into `<world>/<exe>`.
    pub fn compile_source(&self, src: &Path, exe: &str) -> PathBuf {
        let link = [
            "-L".into(),
            artifacts().libdir.clone().into(),
            "-lipc".into(),
        ];
        self.cc(src, exe, link)
    }

    /// Compiles `tests/c/<prog>.c` against `libipc.a`.
    pub fn compile_static(&self, prog: &str) -> PathBuf {
        let archive = artifacts().libdir.join("libipc.a").into();
        let link = std::iter::once(archive).chain(STATIC_LIBS.iter().map(OsString::from));
        self.cc(&c_program(prog), &format!("{prog}-static"), link)
    }

    fn cc(&self, src: &Path, exe: &str, link: impl IntoIterator<Item = OsString>) -> PathBuf {
        let out = self.path().join(exe);
        let mut cmd = Command::new("cc");
        cmd.current_dir(workspace())
            .args([
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-I",
                "libipc-c/include",
            ])
            .arg(src)
            .args(link)
            .arg("-o")
            .arg(&out);
        run_cmd(cmd, self.path(), &format!("cc-{exe}"), CHILD_TIMEOUT)
            .assert_success(&format!("compiling {}", src.display()));
        out
    }

    /// A command for a program (linked with `libipc.so`, or not), in this world:
    /// its `RUNDIR`, no `RUST_LOG`, no `IPC_NETWORK` from the caller's environment.
    pub fn command(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env("RUNDIR", &self.rundir)
            .env("LD_LIBRARY_PATH", &artifacts().libdir)
            .env_remove("RUST_LOG")
            .env_remove("IPC_NETWORK");
        cmd
    }

    /// The Rust example `name`, in this world.
    pub fn example(&self, name: &str) -> Command {
        self.command(&artifacts().example(name))
    }

    /// The workspace binary `name` (`tcpd`, `tlsd`, `websocketd`), in this world.
    pub fn bin(&self, name: &str) -> Command {
        self.command(&artifacts().bin(name))
    }

    /// Starts a service and waits until `$RUNDIR/<name>` accepts a connection.
    /// That probe is a client too: a C pongd given a client count must include it.
    pub fn start_service(&self, cmd: Command, name: &str, label: &str) -> Proc {
        let mut service = spawn(cmd, self.path(), label);
        service.wait_for_socket(&self.rundir.join(name));
        service
    }

    /// Starts the Rust example pongd as service `name`, ready.
    pub fn rust_pongd(&self, name: &str) -> Proc {
        let mut cmd = self.example("pongd");
        cmd.arg(name);
        self.start_service(cmd, name, &format!("pongd-{name}"))
    }

    /// Starts `socat` as service `name`: each connection runs `exec` (socat's
    /// EXEC address: a program and its arguments, split at spaces) with the
    /// connection as its stdin and stdout. `cat` makes an echo service nobody
    /// here wrote, for messages of any size (echoing the bytes echoes the frames).
    ///
    /// With a listen backlog of 128: socat's default of 5 fills up whenever its
    /// accept-and-fork loop falls behind a burst of connections (on a loaded
    /// machine), and a daemon's connection to it is then refused ("service
    /// busy") instead of waiting.
    pub fn socat_service(&self, name: &str, exec: &str) -> Proc {
        let mut cmd = Command::new("socat");
        cmd.arg(format!(
            "UNIX-LISTEN:{},fork,backlog=128",
            self.rundir.join(name).display()
        ))
        .arg(format!("EXEC:{exec}"));
        self.start_service(cmd, name, &format!("socat-{name}"))
    }

    /// Starts C pongd (`exe`, from [`World::compile`]) for `clients` clients: it
    /// exits once they and the readiness probe are gone (see [`assert_pongd_done`]).
    pub fn c_pongd(&self, exe: &Path, name: &str, clients: usize) -> Proc {
        let mut cmd = self.command(exe);
        cmd.arg(name).arg((clients + 1).to_string());
        self.start_service(cmd, name, "pongd")
    }
}

/// How many clients a Rust pongd from [`World::rust_pongd`] has accepted so
/// far: its own count, from its "client connected" lines, less the
/// readiness probe. A daemon's connections counted at the service, not by
/// the daemon's word.
pub fn pongd_clients(pongd: &Proc) -> usize {
    let lines = pongd.output(None).stderr;
    let accepted = lines
        .lines()
        .filter(|l| l.contains("client connected"))
        .count();
    accepted.saturating_sub(1)
}

/// How many clients the Rust pongd `pongd`, serving `name` in `world`, was
/// given in all: every connection made to it before this call counts, also
/// one it has not got to yet. A probe of this function's own is echoed first
/// (a listener accepts in order), so pongd has logged the earlier ones by
/// then; neither probe is counted. Takes the pongd: a second look would
/// count this probe.
pub fn pongd_clients_in_all(world: &World, pongd: Proc, name: &str) -> usize {
    let mut probe = UnixStream::connect(world.rundir.join(name))
        .unwrap_or_else(|e| panic!("probe of {name}: connect: {e}"));
    probe.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let sent = frame(b"anyone before me?");
    probe.write_all(&sent).expect("probe: write");
    let mut got = vec![0; sent.len()];
    probe.read_exact(&mut got).expect("probe: the echo");
    assert_eq!(got, sent, "probe of {name}");
    pongd_clients(&pongd) - 1
}

/// The lines a pong client prints for `message` sent `count` times.
pub fn echoes(message: &str, count: usize) -> String {
    format!("{message}\n").repeat(count)
}

/// A C pongd told to expect `clients` clients (plus the readiness probe) exits
/// 0 once they are gone, saying so. Its CONNECTION events reported the new
/// clients' descriptors, not the listening socket's.
pub fn assert_pongd_done(pongd: Proc, clients: usize) {
    let run = pongd.wait(CHILD_TIMEOUT);
    run.assert_success("C pongd");
    run.assert_lines(&[&format!("pongd: {} clients served, bye", clients + 1)]);
    // "pongd: service NAME ready (fd N)", "pongd: client I connected (fd N)"
    let fds = |what: &str| -> Vec<&str> {
        run.stdout
            .lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| l.rsplit_once("(fd ")?.1.strip_suffix(')'))
            .collect()
    };
    let (service, clients_fds) = (fds(" ready (fd "), fds(" connected (fd "));
    assert_eq!(service.len(), 1, "{}", run.report());
    assert_eq!(clients_fds.len(), clients + 1, "{}", run.report());
    assert!(
        !clients_fds.contains(&service[0]),
        "CONNECTION reported the listening socket\n{}",
        run.report()
    );
}

/// Waits for `proc` to log `needle` and parses the address that follows it (up
/// to whitespace, a `/` or a `"`).
fn logged_address(proc: &mut Proc, needle: &str) -> std::net::SocketAddr {
    let line = proc.wait_for_stderr_line(needle, READY_TIMEOUT);
    line.split(needle)
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == '/' || c == '"')
                .next()
        })
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| proc.fail(&format!("cannot parse the address in {line:?}")))
}

/// A daemon (tcpd, tlsd, websocketd) listening on a port it picked (`--listen 127.0.0.1:0`),
/// and that port, read back from its `listening address=...` log line.
#[allow(missing_debug_implementations)] // Proc holds a child process
pub struct Daemon {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    name: &'static str,
}

impl Daemon {
    /// Starts daemon `name` (`tcpd`, `tlsd`, `websocketd`) in `world` (its RUNDIR) with `args`,
    /// its output in `<label>.stdout` / `.stderr`, and waits until it listens.
    pub fn start(world: &World, name: &'static str, label: &str, args: &[&str]) -> Daemon {
        let cmd = Self::command(world, name, args);
        Self::start_command(world, name, label, cmd, "listening address=")
    }

    /// [`Daemon::start`] with `cmd`, a [`Daemon::command`] given more (an
    /// environment variable, say); the address it listens on is read after
    /// `needle` in its log (`--log-format json` writes it otherwise).
    pub fn start_command(
        world: &World,
        name: &'static str,
        label: &str,
        cmd: Command,
        needle: &str,
    ) -> Daemon {
        let mut proc = spawn(cmd, world.path(), label);
        let addr = logged_address(&mut proc, needle);
        Daemon { proc, addr, name }
    }

    /// The address the daemon logged right after `needle` (e.g. `metrics at
    /// http://`), once it has.
    pub fn logged_address(&mut self, needle: &str) -> std::net::SocketAddr {
        logged_address(&mut self.proc, needle)
    }

    /// The command [`Daemon::start`] runs (for tests that expect it to fail).
    pub fn command(world: &World, name: &str, args: &[&str]) -> Command {
        let mut cmd = world.bin(name);
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("ADDRESS")
            .env_remove("IPC_SERVICE_NAME");
        // The machine's proxy is not the test's: a test that wants one sets it.
        for var in ["https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Fails (with the daemon's output) unless it is still running.
    pub fn assert_running(&mut self, when: &str) {
        if !self.proc.running() {
            let what = format!("{} exited {when}", self.name);
            self.proc.fail(&what);
        }
    }

    /// The daemon's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.proc.pid())
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.proc.output(None).stderr
    }
}

/// Replaces `dst` with a copy of `src`, atomically (a reader sees one or the
/// other): what an operator does to a certificate before a SIGHUP.
pub fn replace_file(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("tmp");
    std::fs::copy(src, &tmp).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
    std::fs::rename(&tmp, dst).unwrap_or_else(|e| panic!("renaming to {}: {e}", dst.display()));
}

/// Sends `d` (tlsd, or websocketd with `--cert`) SIGHUP and waits for its
/// outcome, the `n`th since it started ("SIGHUP: certificates and keys
/// reloaded" or "SIGHUP: reload failed, ..."); returns that log line.
pub fn sighup(d: &mut Daemon, n: usize) -> String {
    d.proc.signal(nix::sys::signal::Signal::SIGHUP);
    d.proc.wait_for_stderr_lines("SIGHUP: ", n, READY_TIMEOUT)
}

/// The resident memory of process `pid`, in KiB (`VmRSS` in /proc).
pub fn rss_kib(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
    let kib = line.and_then(|l| l.split_whitespace().next()?.parse().ok());
    kib.unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}
