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
//!   rcgen.
//!
//! Readiness is always observed (a socket that accepts, a log line), never assumed
//! after a sleep; every wait is bounded.

pub mod certs;
pub mod clients;

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tempfile::TempDir;

/// Longest any child process may run.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a service (or daemon) may take to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the build of the workspace binaries and examples may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Flags for linking `libipc.a` statically: `--print native-static-libs`.
pub const STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"];

/// How often waits poll (a process's exit, a socket, a log file).
const POLL: Duration = Duration::from_millis(10);

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

/// The outcome of a child process, with what it printed.
#[derive(Debug)]
pub struct Run {
    /// The command, as shown in reports.
    pub what: String,
    /// None while it runs (or if it had to be killed).
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout (invalid UTF-8 replaced: see
    /// [`Run::stdout_bytes`]).
    pub stdout: String,
    /// Everything it wrote to stdout, as written (binary output).
    pub stdout_bytes: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Run {
    /// The command, its status and its output, for a failure message.
    pub fn report(&self) -> String {
        let status = self.status.map_or_else(
            || "no exit status (still running, or killed by the test)".to_string(),
            |s| s.to_string(),
        );
        format!(
            "{}: {status}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.stdout, self.stderr
        )
    }

    /// Panics (with the report) unless the process exited 0.
    pub fn assert_success(&self, why: &str) {
        let status = self.status.expect("a finished process");
        if status.signal() == Some(Signal::SIGPIPE as i32) {
            panic!("{why}: killed by SIGPIPE\n{}", self.report());
        }
        assert!(status.success(), "{why}: failed\n{}", self.report());
    }

    /// Each of `lines` is a line of stdout.
    pub fn assert_lines(&self, lines: &[&str]) {
        for line in lines {
            assert!(
                self.stdout.lines().any(|l| l == *line),
                "missing line {line:?}\n{}",
                self.report()
            );
        }
    }
}

/// A child whose stdout and stderr go to files (no pipe can fill up and block
/// it). Dropping it kills it; if the test is failing, its output is shown.
#[derive(Debug)]
pub struct Proc {
    what: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
    /// Its output is already in a panic message: Drop need not show it again.
    reported: bool,
}

/// Starts `cmd` with stdin from `/dev/null`, stdout and stderr to
/// `dir/<label>.stdout` and `dir/<label>.stderr`.
pub fn spawn(cmd: Command, dir: &Path, label: &str) -> Proc {
    spawn_with_stdin(cmd, dir, label, Stdio::null())
}

/// [`spawn`], with stdin from `stdin` (a file, say).
pub fn spawn_with_stdin(mut cmd: Command, dir: &Path, label: &str, stdin: Stdio) -> Proc {
    let out = dir.join(format!("{label}.stdout"));
    let err = dir.join(format!("{label}.stderr"));
    let what = format!("{cmd:?}");
    cmd.stdin(stdin)
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Proc {
        what,
        child,
        out,
        err,
        started: Instant::now(),
        reported: false,
    }
}

/// Runs a command to completion (or kills it, and fails, after `timeout`).
pub fn run_cmd(cmd: Command, dir: &Path, label: &str, timeout: Duration) -> Run {
    spawn(cmd, dir, label).wait(timeout)
}

impl Proc {
    /// Waits for the process to end; kills it (and fails) once it has run for
    /// `timeout` in all.
    pub fn wait(mut self, timeout: Duration) -> Run {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.reported = true;
                panic!("killed after {timeout:?}\n{}", self.output(None).report());
            }
            sleep(POLL);
        };
        self.output(Some(status))
    }

    /// What it printed so far, with `status` if known.
    pub fn output(&self, status: Option<ExitStatus>) -> Run {
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let stdout_bytes = self.stdout_bytes();
        Run {
            what: self.what.clone(),
            status,
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stdout_bytes,
            stderr: read(&self.err),
        }
    }

    /// Everything it wrote to stdout so far, as bytes (binary output included).
    pub fn stdout_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap_or_default()
    }

    /// Its stdin, when started with [`spawn_with_stdin`] and `Stdio::piped()`
    /// (once: dropping it closes the pipe).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Waits until its stdout satisfies `done` (given all of it so far), and
    /// returns it. Fails if the process exits first (and its output does not
    /// satisfy `done`), or after `timeout`.
    pub fn wait_for_stdout(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[u8]) -> bool,
    ) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.running();
            let out = self.stdout_bytes();
            if done(&out) {
                return out;
            }
            if !running {
                self.fail(&format!("exited before printing {what}"));
            }
            if Instant::now() > deadline {
                self.fail(&format!("did not print {what} within {timeout:?}"));
            }
            sleep(POLL);
        }
    }

    /// Waits until `count` (at least 1) whole lines of its stderr contain
    /// `needle`, and returns the `count`th. Fails if the process exits first, or
    /// after `timeout`.
    pub fn wait_for_stderr_lines(
        &mut self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> String {
        assert!(count > 0, "wait_for_stderr_lines: count must be at least 1");
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.err).unwrap_or_default();
            // Only whole lines: the last one may still be being written.
            let whole = text.rfind('\n').map_or("", |end| &text[..end]);
            let found: Vec<&str> = whole.lines().filter(|l| l.contains(needle)).collect();
            if found.len() >= count {
                return found[count - 1].to_string();
            }
            if !self.running() {
                self.fail(&format!("exited before logging {needle:?} {count} times"));
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "did not log {needle:?} {count} times within {timeout:?} ({} so far)",
                    found.len()
                ));
            }
            sleep(POLL);
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends it `signal` (if it is still there).
    pub fn signal(&self, signal: Signal) {
        let _ = nix::sys::signal::kill(self.pid(), signal);
    }

    /// Kills it (SIGKILL) and reaps it; returns what it printed.
    pub fn kill(mut self) -> Run {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.output(status)
    }

    /// Panics with its output; marks it reported so Drop does not repeat it.
    pub fn fail(&mut self, why: &str) -> ! {
        let status = self.child.try_wait().ok().flatten();
        let run = self.output(status);
        self.reported = true;
        panic!("{why}\n{}", run.report());
    }

    /// Waits until a line of its stderr contains `needle`, and returns that line.
    /// Fails if the process exits first, or after `timeout`.
    pub fn wait_for_stderr_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_stderr_lines(needle, 1, timeout)
    }

    /// Waits until `socket` accepts a connection (the probe connection is closed
    /// at once). Fails if the process exits first, or after [`READY_TIMEOUT`].
    pub fn wait_for_socket(&mut self, socket: &Path) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if UnixStream::connect(socket).is_ok() {
                return;
            }
            if !self.running() {
                self.fail(&format!(
                    "exited before {} accepted connections",
                    socket.display()
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{} did not accept connections within {READY_TIMEOUT:?}",
                    socket.display()
                ));
            }
            sleep(POLL);
        }
    }
}

impl Drop for Proc {
    /// A test that fails midway leaves no process behind, and shows what it printed.
    fn drop(&mut self) {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        };
        if std::thread::panicking() && !self.reported {
            eprintln!("{}", self.output(status).report());
        }
    }
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
        let link = [
            "-L".into(),
            artifacts().libdir.clone().into(),
            "-lipc".into(),
        ];
        self.cc(prog, prog, link)
    }

    /// Compiles `tests/c/<prog>.c` against `libipc.a`.
    pub fn compile_static(&self, prog: &str) -> PathBuf {
        let archive = artifacts().libdir.join("libipc.a").into();
        let link = std::iter::once(archive).chain(STATIC_LIBS.iter().map(OsString::from));
        self.cc(prog, &format!("{prog}-static"), link)
    }

    fn cc(&self, prog: &str, exe: &str, link: impl IntoIterator<Item = OsString>) -> PathBuf {
        let root = workspace();
        let out = self.path().join(exe);
        let mut cmd = Command::new("cc");
        cmd.current_dir(&root)
            .args([
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-I",
                "libipc-c/include",
            ])
            .arg(root.join("tests/c").join(format!("{prog}.c")))
            .args(link)
            .arg("-o")
            .arg(&out);
        run_cmd(cmd, self.path(), &format!("cc-{exe}"), CHILD_TIMEOUT)
            .assert_success(&format!("compiling tests/c/{prog}.c"));
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
/// to whitespace or a `/`).
fn logged_address(proc: &mut Proc, needle: &str) -> std::net::SocketAddr {
    let line = proc.wait_for_stderr_line(needle, READY_TIMEOUT);
    line.split(needle)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '/').next())
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
        let mut proc = spawn(Self::command(world, name, args), world.path(), label);
        let addr = logged_address(&mut proc, "listening address=");
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

    /// How many clients the daemon connected to a service so far (to `service`
    /// only, if given): its "connected" lines, in the client's span.
    pub fn connected(&self, service: Option<&str>) -> usize {
        let in_span = service.map(|s| format!(" service={s}}}"));
        self.log()
            .lines()
            .filter(|l| l.contains("daemon::engine: connected "))
            .filter(|l| in_span.as_ref().is_none_or(|s| l.contains(s.as_str())))
            .count()
    }
}

/// One LibIPC frame: 4-byte big-endian length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload under 4 GiB");
    [&len.to_be_bytes()[..], payload].concat()
}

/// The resident memory of process `pid`, in KiB (`VmRSS` in /proc).
pub fn rss_kib(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
    let kib = line.and_then(|l| l.split_whitespace().next()?.parse().ok());
    kib.unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The program `name` (`python`, `kosoku`) of the Python virtual environment
/// that `tests/run` makes, `target/test-venv`: the WebSocket clients of the
/// websocketd tests (`websockets`, `kosoku`) are installed there, not in the
/// system's Python.
///
/// Panics, saying to run `tests/run`, when the venv or its packages are missing.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = workspace().join("target/test-venv");
    // tests/run writes this stamp once the packages are installed.
    let stamp = venv.join(".installed");
    let exe = venv.join("bin").join(name);
    assert!(
        stamp.is_file() && exe.is_file(),
        "{} not found, or its packages not installed: the websocketd tests need \
         the Python venv {} with websockets and kosoku, which tests/run creates \
         (run tests/run once, or its venv block)",
        exe.display(),
        venv.display()
    );
    exe
}

/// Python helpers the tests' Python clients start with: LibIPC frames over a
/// socket (`frame`, `recv_exact`, `recv_frame`), reading until EOF (`recv_all`)
/// and `check(what, got, want)`, which exits non-zero with a readable message.
pub const PYTHON_FRAMES: &str = r#"
import socket, struct, sys

def frame(b):
    return struct.pack(">I", len(b)) + b

def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(min(n - len(buf), 65536))
        except OSError as e:
            sys.exit(f"{e!r} after {len(buf)} of {n} bytes")
        if not chunk:
            sys.exit(f"EOF after {len(buf)} of {n} bytes: {bytes(buf[:100])!r}")
        buf += chunk
    return bytes(buf)

def recv_frame(s):
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    return recv_exact(s, n)

def recv_all(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk

def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got[:100]!r} ({len(got)} bytes), want {want[:100]!r} ({len(want)} bytes)")
"#;
