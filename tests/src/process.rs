//! Child processes whose output goes to files: [`spawn`] / [`Proc`] / [`Run`].
//! A process is killed after a timeout or when the test fails (its output then
//! shown); every wait on one is bounded and fails saying what it waited for.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::limits::{POLL, READY_TIMEOUT};

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
