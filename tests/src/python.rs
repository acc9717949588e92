//! The tests' Python programs: real files in `tests/py/`, run by the Python of
//! the venv `tests/run` makes, with their parameters as arguments.
//!
//! Each one runs by hand the same way:
//! `target/test-venv/bin/python tests/py/NAME.py ARGS` (its docstring says
//! which arguments). The modules they share (`ipc_frames.py`, `ws_client.py`,
//! `tls_client.py`, `daemon_conns.py`, `proxy_headers.py`) sit beside them,
//! found because Python looks for imports in the script's own directory.

use std::path::PathBuf;
use std::process::Command;

use crate::workspace;

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

/// `tests/py/<script>`; panics if there is no such file.
pub fn script(script: &str) -> PathBuf {
    let path = workspace().join("tests/py").join(script);
    assert!(path.is_file(), "no Python program {}", path.display());
    path
}

/// A command running `tests/py/<script>` with the venv's Python: unbuffered
/// (`-u`: the test sees each line as soon as it is printed, `ready` and the
/// like), and writing no bytecode (`-B`: nothing is left in the source tree).
/// The caller adds the arguments.
pub fn python(script: &str) -> Command {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(["-u", "-B"]).arg(self::script(script));
    cmd
}
