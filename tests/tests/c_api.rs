//! Black-box tests of the C API: the C programs in `tests/c/` are compiled against
//! `libipc.h` and the library cargo built (`libipc.so`, once `libipc.a`), then run
//! against each other and against the Rust examples `pongd` and `pong`.
//!
//!     cargo test -p libipc-tests --test c_api
//!
//! Needs a C compiler (`cc`). The library is the one cargo built for this test
//! (`target/<profile>/deps/libipc.{so,a}`); the Rust examples are built by the test
//! itself (see [`build_examples`]), so the command above is all it takes. Every
//! child process is killed after [`CHILD_TIMEOUT`]; a service is ready when its
//! socket accepts a connection, never after a fixed sleep.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

/// Longest any child process may run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a service may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the build of the Rust examples may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Flags for linking `libipc.a` statically: `--print native-static-libs`.
const STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `target/<profile>`: this test runs from `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// Everything a test needs, set up once per test binary: the directory of the
/// C library this test was built with, and the Rust examples, built.
struct Env {
    libdir: PathBuf,
    examples: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
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
        Env {
            examples: build_examples(&profile_dir),
            libdir,
        }
    })
}

/// Builds the Rust examples, with the profile of this test, in a target directory
/// of their own (`<target>/c-api-examples`), and returns their directory.
///
/// Always building makes them never stale (it is a no-op when they are up to
/// date). Their own target directory keeps that build from touching the
/// libraries this test uses: libipc's cdylib has no hash in its file name, so a
/// build of libipc with other features (the examples' dev-dependencies) in the
/// same directory would overwrite them, and rebuild libipc on every run.
fn build_examples(profile_dir: &Path) -> PathBuf {
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
        "--profile",
        profile,
    ]);
    if !target.join("CACHEDIR.TAG").is_file() {
        // target/<triple>/<profile>, from `cargo test --target <triple>`.
        cmd.arg("--target")
            .arg(target.file_name().expect("target triple"));
        target = target.parent().expect("target directory");
    }
    let own = target.join("c-api-examples");
    cmd.arg("--target-dir").arg(&own);
    let dir = TempDir::new().expect("tempdir");
    let run = run_cmd(cmd, dir.path(), "cargo-build-examples", BUILD_TIMEOUT);
    run.assert_success("cargo build -p libipc --examples");
    let rel = profile_dir.strip_prefix(target).expect("profile directory");
    own.join(rel).join("examples")
}

/// The outcome of a child process, with what it printed.
struct Run {
    what: String,
    /// None while it runs (or if it had to be killed).
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn report(&self) -> String {
        let status = self.status.map_or_else(
            || "no exit status (still running, or killed by the test)".to_string(),
            |s| s.to_string(),
        );
        format!(
            "{}: {status}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.stdout, self.stderr
        )
    }

    fn assert_success(&self, why: &str) {
        let status = self.status.expect("a finished process");
        if status.signal() == Some(Signal::SIGPIPE as i32) {
            panic!("{why}: killed by SIGPIPE\n{}", self.report());
        }
        assert!(status.success(), "{why}: failed\n{}", self.report());
    }

    /// Each of `lines` is a line of stdout.
    fn assert_lines(&self, lines: &[&str]) {
        for line in lines {
            assert!(
                self.stdout.lines().any(|l| l == *line),
                "missing line {line:?}\n{}",
                self.report()
            );
        }
    }
}

/// A child whose stdout and stderr go to files (no pipe can fill up and block it).
struct Proc {
    what: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
    /// Its output is already in a panic message: Drop need not show it again.
    reported: bool,
}

fn spawn(mut cmd: Command, dir: &Path, label: &str) -> Proc {
    let out = dir.join(format!("{label}.stdout"));
    let err = dir.join(format!("{label}.stderr"));
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
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

impl Proc {
    /// Waits for the process to end; kills it (and fails) after `timeout`.
    fn wait(mut self, timeout: Duration) -> Run {
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
            sleep(Duration::from_millis(10));
        };
        self.output(Some(status))
    }

    fn output(&self, status: Option<ExitStatus>) -> Run {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Run {
            what: self.what.clone(),
            status,
            stdout: read(&self.out),
            stderr: read(&self.err),
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

/// Runs a command to completion (or kills it after `timeout`).
fn run_cmd(cmd: Command, dir: &Path, label: &str, timeout: Duration) -> Run {
    spawn(cmd, dir, label).wait(timeout)
}

/// A test's private world: a run directory and a place for binaries and logs.
struct World {
    dir: TempDir,
    rundir: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let rundir = dir.path().join("run");
        std::fs::create_dir(&rundir).expect("rundir");
        World { dir, rundir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Compiles `tests/c/<prog>.c` against `libipc.so`.
    fn compile(&self, prog: &str) -> PathBuf {
        let link = ["-L".into(), env().libdir.clone().into(), "-lipc".into()];
        self.cc(prog, prog, link)
    }

    /// Compiles `tests/c/<prog>.c` against `libipc.a`.
    fn compile_static(&self, prog: &str) -> PathBuf {
        let archive = env().libdir.join("libipc.a").into();
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
                "libipc/include",
            ])
            .arg(root.join("tests/c").join(format!("{prog}.c")))
            .args(link)
            .arg("-o")
            .arg(&out);
        run_cmd(cmd, self.path(), &format!("cc-{exe}"), CHILD_TIMEOUT)
            .assert_success(&format!("compiling tests/c/{prog}.c"));
        out
    }

    /// A command for a program linked with `libipc.so`, in this world.
    fn command(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env("RUNDIR", &self.rundir)
            .env("LD_LIBRARY_PATH", &env().libdir)
            .env_remove("RUST_LOG");
        cmd
    }

    /// The Rust example `name`.
    fn example(&self, name: &str) -> Command {
        self.command(&env().examples.join(name))
    }

    /// Starts a service and waits until `$RUNDIR/<name>` accepts a connection.
    /// That probe is a client too: a C pongd given a client count must include it.
    fn start_service(&self, cmd: Command, name: &str, label: &str) -> Proc {
        let mut service = spawn(cmd, self.path(), label);
        let socket = self.rundir.join(name);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if UnixStream::connect(&socket).is_ok() {
                return service;
            }
            if !service.running() {
                let status = service.child.try_wait().ok().flatten();
                let run = service.output(status);
                service.reported = true;
                panic!("service {name} exited before being ready\n{}", run.report());
            }
            assert!(
                Instant::now() < deadline,
                "service {name} not ready after {READY_TIMEOUT:?}"
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// Starts C pongd for `clients` clients: it exits once they and the
    /// readiness probe are gone (see [`assert_pongd_done`]).
    fn c_pongd(&self, exe: &Path, name: &str, clients: usize) -> Proc {
        let mut cmd = self.command(exe);
        cmd.arg(name).arg((clients + 1).to_string());
        self.start_service(cmd, name, "pongd")
    }
}

/// The lines a pong client prints for `message` sent `count` times.
fn echoes(message: &str, count: usize) -> String {
    format!("{message}\n").repeat(count)
}

/// A C pongd told to expect `clients` clients (plus the readiness probe) exits
/// 0 once they are gone, saying so. Its CONNECTION events reported the new
/// clients' descriptors, not the listening socket's.
fn assert_pongd_done(pongd: Proc, clients: usize) {
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

#[test]
fn header_compiles_without_warnings() {
    let w = World::new();
    let src = w.path().join("header.c");
    std::fs::write(&src, "#include <libipc.h>\nint main(void) { return 0; }\n").unwrap();
    let mut cmd = Command::new("cc");
    cmd.current_dir(workspace())
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(["-I", "libipc/include", "-fsyntax-only"])
        .arg(&src);
    run_cmd(cmd, w.path(), "cc-header", CHILD_TIMEOUT).assert_success("libipc.h alone");
}

#[test]
fn c_pong_against_c_pongd() {
    let w = World::new();
    let (pongd, pong) = (w.compile("pongd"), w.compile("pong"));
    let service = w.c_pongd(&pongd, "pong", 2);

    let msg = "hello, plz bounce me";
    let mut cmd = w.command(&pong);
    cmd.args(["pong", msg, "3"]);
    let run = run_cmd(cmd, w.path(), "pong", CHILD_TIMEOUT);
    run.assert_success("C pong");
    assert_eq!(run.stdout, echoes(msg, 3), "{}", run.report());

    // Empty messages are messages.
    let mut cmd = w.command(&pong);
    cmd.args(["pong", "", "2"]);
    let run = run_cmd(cmd, w.path(), "pong-empty", CHILD_TIMEOUT);
    run.assert_success("C pong with empty messages");
    assert_eq!(run.stdout, "\n\n", "{}", run.report());

    assert_pongd_done(service, 2);
}

#[test]
fn rust_pong_against_c_pongd() {
    let w = World::new();
    let pongd = w.compile("pongd");
    let service = w.c_pongd(&pongd, "pong", 1);

    let mut cmd = w.example("pong");
    cmd.args(["-s", "pong", "hello from Rust", "", "second"]);
    let run = run_cmd(cmd, w.path(), "rust-pong", CHILD_TIMEOUT);
    run.assert_success("Rust pong");
    assert_eq!(
        run.stdout,
        "hello from Rust\n\nsecond\n",
        "{}",
        run.report()
    );

    assert_pongd_done(service, 1);
}

#[test]
fn c_pong_against_rust_pongd() {
    let w = World::new();
    let pong = w.compile("pong");
    let mut cmd = w.example("pongd");
    cmd.arg("rpong");
    let mut service = w.start_service(cmd, "rpong", "rust-pongd");

    let msg = "ping from C";
    let mut cmd = w.command(&pong);
    cmd.args(["rpong", msg, "5"]);
    let run = run_cmd(cmd, w.path(), "pong", CHILD_TIMEOUT);
    run.assert_success("C pong");
    assert_eq!(run.stdout, echoes(msg, 5), "{}", run.report());

    // The Rust pongd never exits by itself: Drop kills it. It must still be up.
    assert!(service.running(), "{}", service.output(None).report());
}

#[test]
fn static_c_pongd_serves_concurrent_c_clients() {
    let w = World::new();
    let (pongd, pong) = (w.compile_static("pongd"), w.compile("pong"));
    // Without LD_LIBRARY_PATH: proof that it does not need libipc.so.
    let mut cmd = w.command(&pongd);
    cmd.env_remove("LD_LIBRARY_PATH").args(["pong", "5"]); // 4 clients, 1 probe
    let service = w.start_service(cmd, "pong", "pongd-static");

    let clients: Vec<(String, Proc)> = (0..4)
        .map(|i| {
            let msg = format!("client {i} says hi");
            let mut cmd = w.command(&pong);
            cmd.args(["pong", &msg, "50"]);
            let p = spawn(cmd, w.path(), &format!("pong-{i}"));
            (msg, p)
        })
        .collect();
    for (msg, p) in clients {
        let run = p.wait(CHILD_TIMEOUT);
        run.assert_success("C pong");
        assert_eq!(run.stdout, echoes(&msg, 50), "{}", run.report());
    }

    assert_pongd_done(service, 4);
}

#[test]
fn message_larger_than_buffer_is_not_truncated() {
    let w = World::new();
    let (pongd, toosmall) = (w.compile("pongd"), w.compile("toosmall"));
    let service = w.c_pongd(&pongd, "pong", 1);

    let mut cmd = w.command(&toosmall);
    cmd.arg("pong");
    let run = run_cmd(cmd, w.path(), "toosmall", CHILD_TIMEOUT);
    run.assert_success("toosmall");
    run.assert_lines(&[
        "ipc_wait_event: 5000 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "ipc_read_fd: 5000 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "ipc_wait_event: 1048576 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "ipc_read_fd: 1048576 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "toosmall: ok",
    ]);

    assert_pongd_done(service, 1);
}

#[test]
fn writing_to_a_gone_peer_fails_without_sigpipe() {
    let w = World::new();
    let nosigpipe = w.compile("nosigpipe");
    let run = run_cmd(w.command(&nosigpipe), w.path(), "nosigpipe", CHILD_TIMEOUT);
    run.assert_success("nosigpipe");
    run.assert_lines(&[
        "ipc_write to a closed peer: -1",
        "ipc_schedule to an fd unknown to the context: -1",
        "ipc_write to a connection whose service is gone: -1",
        "nosigpipe: ok, still alive",
    ]);
}

#[test]
fn switch_callbacks_relay_frames_in_order() {
    let w = World::new();
    let (pongd, switch) = (w.compile("pongd"), w.compile("switch"));
    let service = w.c_pongd(&pongd, "pong", 1);

    let mut cmd = w.command(&switch);
    cmd.arg("pong");
    let run = run_cmd(cmd, w.path(), "switch", CHILD_TIMEOUT);
    run.assert_success("switch");
    let frames: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("frame "))
        .collect();
    assert_eq!(
        frames,
        [
            "frame 0 back: \"one\"",
            "frame 1 back: \"two\"",
            "frame 2 back: \"\"",
            "frame 3 back: \"four, a longer one\"",
            "frame 4 back: \"five\"",
        ],
        "{}",
        run.report()
    );
    run.assert_lines(&["callbacks: in 5, out 5", "switch: ok"]);

    assert_pongd_done(service, 1);
}
