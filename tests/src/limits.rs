//! The limits every black-box test shares: how long a child process, a
//! daemon's readiness and a socket operation may take, and how many
//! descriptors the test process may open.

use std::time::Duration;

/// Longest any child process may run.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a service (or daemon) may take to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the build of the workspace binaries and examples may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest any single blocking socket operation of a test client may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How often waits poll (a process's exit, a socket, a log file).
pub const POLL: Duration = Duration::from_millis(10);

/// Raises this process's soft limit on open descriptors to `want`, or to the
/// hard limit if that is lower, for the test itself and the daemons and
/// clients it starts (they inherit it); returns the soft limit now in force.
/// A test that cannot run with less checks the answer.
pub fn raise_nofile_limit(want: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return soft;
    }
    let raised = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, raised, hard).expect("setrlimit");
    raised
}
