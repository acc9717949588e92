//! Service sockets: the run directory, service names, locks, listening and connecting.
//!
//! A service called `pong` listens on `$RUNDIR/pong` (default run directory
//! [`DEFAULT_RUNDIR`]). The directory is created with mode 0770 and the socket gets
//! mode 0660, so that a group shared by services and their clients controls access.
//! Neither is done by changing the process umask, which other threads share: the
//! socket is bound under a temporary name, given its mode, then renamed into place,
//! so no client ever sees it with other permissions.
//!
//! `$RUNDIR/<name>.lock`, held with an exclusive `flock`, stops a second instance of
//! the same service; a socket left behind by a crashed instance is replaced.
//!
//! A protocol daemon's outbound service (`tcp`, `tls`: the one that dials remote
//! daemons for `IPC_NETWORK`) listens in a directory of its own, `$RUNDIR/.outbound/`
//! ([`OUTBOUND_DIR`]). No service name starts with `.`, so no name a network client
//! sends to a daemon can lead there: only local programs, through `IPC_NETWORK`
//! ([`connect_outbound`]), reach an outbound service.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Run directory used when `RUNDIR` is not set.
pub const DEFAULT_RUNDIR: &str = "/tmp/.libipc-run";

/// Longest service name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The directory under the run directory that holds the protocol daemons'
/// outbound services. It starts with `.`, so it is not a valid service name:
/// nothing a network client names can reach it.
pub const OUTBOUND_DIR: &str = ".outbound";

const DIR_MODE: u32 = 0o770;
const SOCKET_MODE: u32 = 0o660;
/// A directory's set-group-ID bit: files created in it take its group.
const SETGID: u32 = 0o2000;

/// What a listener does when `accept` fails for want of descriptors or
/// memory (EMFILE, ENFILE, ENOMEM): the client waits in the backlog, the
/// listener is tried again after [`AcceptBackoff::RETRY`] rather than at
/// once (it stays readable: trying at once would spin), and the failures are
/// reported at most once per [`AcceptBackoff::REPORT_EVERY`], counted. A
/// context's service listeners and the daemons' network listeners share it.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u64,
    next_report: Option<std::time::Instant>,
}

impl AcceptBackoff {
    /// Pause before a listener whose accept failed is tried again.
    pub const RETRY: std::time::Duration = std::time::Duration::from_millis(100);
    /// Shortest time between two reports of failed accepts.
    pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    /// Counts a failed accept at `now`. When a report is due, returns how
    /// many accepts failed since the last one (this one included).
    pub fn failed(&mut self, now: std::time::Instant) -> Option<u64> {
        self.failures += 1;
        if self.next_report.is_some_and(|at| now < at) {
            return None;
        }
        self.next_report = Some(now + Self::REPORT_EVERY);
        Some(std::mem::take(&mut self.failures))
    }
}

/// Checks a service name before it is used to build a path.
///
/// The rule: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`, not starting
/// with `.`. So a name can never leave the run directory (`../x`, `/abs`), be
/// empty, or hold a NUL. Returns the name as `&str`, or [`Error::InvalidName`]
/// naming the part of the rule that was broken.
pub fn validate_name(name: &[u8]) -> Result<&str> {
    let refuse = |rule| Error::InvalidName {
        name: String::from_utf8_lossy(&name[..name.len().min(2 * MAX_NAME_LEN)]).into_owned(),
        rule,
    };
    if name.is_empty() {
        return Err(refuse("a service name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(refuse("a service name is at most 64 bytes"));
    }
    if name[0] == b'.' {
        return Err(refuse("a service name must not start with '.'"));
    }
    if !name
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(refuse(
            "a service name may only hold letters, digits, '.', '_' and '-'",
        ));
    }
    // Checked above: every byte is ASCII.
    std::str::from_utf8(name).map_err(|_| refuse("a service name must be ASCII"))
}

/// The run directory: `$RUNDIR` if set and not empty, else [`DEFAULT_RUNDIR`].
pub fn rundir_from_env() -> PathBuf {
    match std::env::var_os("RUNDIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_RUNDIR),
    }
}

/// Creates the run directory (one level, mode 0770) if it does not exist.
///
/// An existing directory is left as the operator made it.
pub fn ensure_rundir(dir: &Path) -> Result<()> {
    ensure_dir(dir, DIR_MODE)
}

/// Creates `dir` (one level) with exactly `mode`, or accepts it as it is.
fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    let rundir_err = |source| Error::RunDir {
        path: dir.to_path_buf(),
        source,
    };
    match DirBuilder::new().mode(mode).create(dir) {
        // mkdir's mode is filtered by the umask: set it exactly.
        Ok(()) => fs::set_permissions(dir, Permissions::from_mode(mode)).map_err(rundir_err),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if dir.is_dir() {
                Ok(())
            } else {
                Err(rundir_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                )))
            }
        }
        Err(e) => Err(rundir_err(e)),
    }
}

/// The socket path of service `name` in `rundir`, after validating the name.
pub fn socket_path(rundir: &Path, name: &[u8]) -> Result<PathBuf> {
    Ok(rundir.join(validate_name(name)?))
}

/// `$RUNDIR/.outbound`: where protocol daemons' outbound services listen.
pub fn outbound_dir(rundir: &Path) -> PathBuf {
    rundir.join(OUTBOUND_DIR)
}

/// Creates the run directory and its outbound directory if they do not exist.
///
/// The outbound directory gets mode 0770 and keeps the run directory's
/// set-group-ID bit (an explicit chmod would drop the one it inherits), so that
/// outbound sockets belong to the run directory's group as services' do.
pub fn ensure_outbound_dir(rundir: &Path) -> Result<PathBuf> {
    ensure_rundir(rundir)?;
    let dir = outbound_dir(rundir);
    let setgid = fs::metadata(rundir)
        .map(|m| m.permissions().mode() & SETGID)
        .unwrap_or(0);
    ensure_dir(&dir, DIR_MODE | setgid)?;
    Ok(dir)
}

/// A listening service socket. Dropping it removes the socket file and releases the
/// lock, once every clone of it ([`ServiceListener::try_clone`]) is dropped.
#[derive(Debug)]
pub struct ServiceListener {
    listener: UnixListener,
    /// Where protocol daemons hand this service their clients' sockets
    /// (`$RUNDIR/.handoff/NAME`, see [`crate::handoff`]), if it could be made.
    handoff: Option<UnixListener>,
    share: Arc<Share>,
    /// Clients this handle accepted (see [`ServiceListener::take_turn`]).
    accepted: u64,
    /// This handle let a client wait for a less busy one once: it takes
    /// the next whatever the count.
    deferred: bool,
}

/// What the handles on one listening socket share: the name and lock, given
/// up with the last handle, and how many clients they accepted in all.
#[derive(Debug)]
struct Share {
    path: PathBuf,
    handoff_path: Option<PathBuf>,
    // Held for the lifetime of the service; closing it releases the flock.
    _lock: File,
    handles: AtomicUsize,
    accepted: AtomicU64,
}

impl Drop for Share {
    fn drop(&mut self) {
        // Still ours: the lock kept any other instance from replacing it.
        let _ = fs::remove_file(&self.path);
        if let Some(p) = &self.handoff_path {
            let _ = fs::remove_file(p);
        }
    }
}

impl Drop for ServiceListener {
    fn drop(&mut self) {
        self.share.handles.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServiceListener {
    /// Creates service `name` in `rundir`: validates the name, creates the directory,
    /// takes the lock, replaces a stale socket and listens. The socket is non-blocking.
    pub fn bind(rundir: &Path, name: &[u8]) -> Result<Self> {
        let name = validate_name(name)?;
        ensure_rundir(rundir)?;
        let mut service = Self::bind_in(rundir, name)?;
        // Handed-off clients are a bonus: a service that cannot listen for
        // them is still a service (daemons relay its clients).
        match bind_handoff(rundir, name) {
            Ok((listener, path)) => {
                service.handoff = Some(listener);
                if let Some(share) = Arc::get_mut(&mut service.share) {
                    share.handoff_path = Some(path);
                }
            }
            Err(e) => tracing::debug!(service = name, error = %e, "no handoff endpoint"),
        }
        Ok(service)
    }

    /// Creates a protocol daemon's outbound service `name`, in
    /// `$RUNDIR/.outbound/` (see [`OUTBOUND_DIR`]); otherwise as [`ServiceListener::bind`].
    pub fn bind_outbound(rundir: &Path, name: &[u8]) -> Result<Self> {
        let name = validate_name(name)?;
        Self::bind_in(&ensure_outbound_dir(rundir)?, name)
    }

    /// Binds validated `name` in the existing directory `dir`.
    fn bind_in(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(SOCKET_MODE)
            .open(&lock_path)
            .map_err(|source| Error::RunDir {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => record_holder(&lock),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::AlreadyRunning {
                    name: name.to_owned(),
                    holder: read_holder(&lock),
                    lock: lock_path,
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(Error::RunDir {
                    path: lock_path,
                    source,
                });
            }
        }
        let bind_err = |source| Error::Bind {
            path: path.clone(),
            source,
        };
        // We hold the lock, so a socket already there belongs to a dead instance.
        match fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "replaced stale service socket"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        // Temporary names start with '.', which no service name may, so they never clash.
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
        let placed = fs::set_permissions(&tmp, Permissions::from_mode(SOCKET_MODE))
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| listener.set_nonblocking(true));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(bind_err(e));
        }
        Ok(ServiceListener {
            listener,
            handoff: None,
            share: Arc::new(Share {
                path,
                handoff_path: None,
                _lock: lock,
                handles: AtomicUsize::new(1),
                accepted: AtomicU64::new(0),
            }),
            accepted: 0,
            deferred: false,
        })
    }

    /// Another handle on the same listening socket (a duplicated descriptor),
    /// for another context, usually on another thread: each context accepts
    /// clients from it, so a service runs one event loop per core. The socket
    /// file and the lock go when the last handle does.
    pub fn try_clone(&self) -> Result<Self> {
        let listener = self.listener.try_clone()?;
        let handoff = self
            .handoff
            .as_ref()
            .map(UnixListener::try_clone)
            .transpose()?;
        self.share.handles.fetch_add(1, Ordering::Relaxed);
        Ok(ServiceListener {
            listener,
            handoff,
            share: self.share.clone(),
            accepted: 0,
            deferred: false,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.share.path
    }

    /// Whether other handles on this listening socket exist
    /// ([`ServiceListener::try_clone`]): its clients are then shared between
    /// contexts.
    pub fn is_shared(&self) -> bool {
        self.share.handles.load(Ordering::Relaxed) > 1
    }

    /// Whether this handle should take the next client. Every handle's loop
    /// is woken by a new client, and the first awake would take them all: a
    /// handle that accepted more than its share lets one wait, once, for the
    /// others (its loop tries again shortly, and takes it if nobody did).
    pub(crate) fn take_turn(&mut self) -> bool {
        let handles = self.share.handles.load(Ordering::Relaxed) as u64;
        if handles <= 1 || std::mem::take(&mut self.deferred) {
            return true;
        }
        let total = self.share.accepted.load(Ordering::Relaxed);
        if self.accepted * handles <= total {
            return true;
        }
        self.deferred = true;
        false
    }

    /// Counts a client accepted by this handle.
    pub(crate) fn accepted_one(&mut self) {
        self.accepted += 1;
        self.share.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Another handle on the listener where daemons hand this service their
    /// clients (see [`crate::handoff`]), if it has one.
    pub fn handoff_listener(&self) -> Option<io::Result<UnixListener>> {
        self.handoff.as_ref().map(UnixListener::try_clone)
    }

    /// The underlying listener.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }
}

/// `$RUNDIR/.handoff`: where services take handed-off clients.
pub fn handoff_dir(rundir: &Path) -> PathBuf {
    rundir.join(crate::handoff::HANDOFF_DIR)
}

/// Listens on `$RUNDIR/.handoff/NAME` (non-blocking) for service `name`,
/// whose lock the caller holds: a socket already there is a dead instance's.
fn bind_handoff(rundir: &Path, name: &str) -> Result<(UnixListener, PathBuf)> {
    let dir = handoff_dir(rundir);
    let setgid = fs::metadata(rundir)
        .map(|m| m.permissions().mode() & SETGID)
        .unwrap_or(0);
    ensure_dir(&dir, DIR_MODE | setgid)?;
    let path = dir.join(name);
    let bind_err = |source| Error::Bind {
        path: path.clone(),
        source,
    };
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(&path).map_err(bind_err)?;
    fs::set_permissions(&path, Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| listener.set_nonblocking(true))
        .map_err(bind_err)?;
    Ok((listener, path))
}

/// Writes this process's pid in the lock it has just taken, so that a second
/// instance can say who has the name. Best effort: a lock file that cannot be
/// written still locks, and only the message of a second instance is poorer.
fn record_holder(lock: &File) {
    use std::os::unix::fs::FileExt;
    let pid = format!("{}\n", std::process::id());
    // Overwritten in place, then cut: a reader never finds the file empty
    // because of us, and the first line is always a whole pid.
    let _ = lock
        .write_all_at(pid.as_bytes(), 0)
        .and_then(|()| lock.set_len(pid.len() as u64));
}

/// The pid [`record_holder`] wrote in a lock held by another process, if any.
fn read_holder(lock: &File) -> Option<u32> {
    use std::io::Read;
    let mut text = String::new();
    // A pid is at most 10 digits: a larger file is not one of ours.
    lock.take(32).read_to_string(&mut text).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Connects (blocking) to service `name` in `rundir`.
///
/// Fails with [`Error::InvalidName`] or with [`Error::Connect`] naming the path tried.
pub fn connect(rundir: &Path, name: &[u8]) -> Result<UnixStream> {
    let path = socket_path(rundir, name)?;
    UnixStream::connect(&path).map_err(|source| Error::Connect { path, source })
}

/// Connects (blocking) to the outbound service `name` of a protocol daemon, in
/// `$RUNDIR/.outbound/` (what `IPC_NETWORK` routes through).
pub fn connect_outbound(rundir: &Path, name: &[u8]) -> Result<UnixStream> {
    connect(&outbound_dir(rundir), name)
}

/// Connects to service `name` in `rundir` without blocking (for event loops).
///
/// A unix connect either succeeds at once or fails; `EAGAIN` (the service's
/// backlog is full) is reported as [`Error::Connect`] with `WouldBlock`.
pub fn connect_nonblocking(rundir: &Path, name: &[u8]) -> Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let path = socket_path(rundir, name)?;
    let err = |e: nix::Error| Error::Connect {
        path: path.clone(),
        source: e.into(),
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    let addr = UnixAddr::new(&path).map_err(err)?;
    connect(fd.as_raw_fd(), &addr).map_err(err)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn accept_failures_are_reported_once_a_second_counted() {
        let mut backoff = AcceptBackoff::default();
        let t0 = std::time::Instant::now();
        assert_eq!(backoff.failed(t0), Some(1));
        let within = |ms| t0 + std::time::Duration::from_millis(ms);
        for ms in (100..1000).step_by(100) {
            assert_eq!(backoff.failed(within(ms)), None, "at {ms} ms");
        }
        assert_eq!(backoff.failed(within(1000)), Some(10));
        assert_eq!(backoff.failed(within(1100)), None);
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["pong", "a", "tcp", "my-service_2.sock", &"x".repeat(64)] {
            assert_eq!(validate_name(ok.as_bytes()).unwrap(), ok);
        }
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"../x", "start with '.'"),
            (b".hidden", "start with '.'"),
            (b"/abs", "letters, digits"),
            (b"a/b", "letters, digits"),
            (b"nul\0byte", "letters, digits"),
            (b"sp ace", "letters, digits"),
            ("é".as_bytes(), "letters, digits"),
            (&[b'y'; 65], "at most 64 bytes"),
        ];
        for (name, rule) in cases {
            let err = validate_name(name).unwrap_err().to_string();
            assert!(err.contains(rule), "{name:?}: {err}");
        }
    }

    #[test]
    fn service_socket_modes_lock_and_cleanup() {
        let tmp = tempfile::tempdir().unwrap();
        let rundir = tmp.path().join("run");
        let svc = ServiceListener::bind(&rundir, b"svc").unwrap();
        let meta = fs::metadata(&rundir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o770);
        let meta = fs::metadata(svc.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);

        let err = ServiceListener::bind(&rundir, b"svc").unwrap_err();
        let me = std::process::id();
        assert!(
            matches!(err, Error::AlreadyRunning { holder: Some(pid), .. } if pid == me),
            "{err}"
        );
        assert!(err.to_string().contains("already running (lock"));
        assert!(err.to_string().contains(&format!("held by pid {me})")));

        let path = svc.path().to_path_buf();
        connect(&rundir, b"svc").unwrap();
        drop(svc);
        assert!(!path.exists());
        let err = connect(&rundir, b"svc").unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn outbound_services_are_out_of_reach_of_names() {
        let tmp = tempfile::tempdir().unwrap();
        let rundir = tmp.path().join("run");
        fs::create_dir(&rundir).unwrap();
        // As tmpfiles.d makes /run/libipc: sockets take the directory's group.
        fs::set_permissions(&rundir, Permissions::from_mode(0o2770)).unwrap();
        let out = ServiceListener::bind_outbound(&rundir, b"tcp").unwrap();
        assert_eq!(out.path(), rundir.join(".outbound/tcp"));
        let meta = fs::metadata(rundir.join(".outbound")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2770);
        assert_eq!(fs::metadata(out.path()).unwrap().mode() & 0o777, 0o660);
        connect_outbound(&rundir, b"tcp").unwrap();
        // No name leads there, and the ordinary namespace does not have it.
        assert!(matches!(
            connect(&rundir, b".outbound/tcp"),
            Err(Error::InvalidName { .. })
        ));
        assert!(connect(&rundir, b"tcp").is_err());
        // The plain service of the same name is another socket.
        let plain = ServiceListener::bind(&rundir, b"tcp").unwrap();
        assert_eq!(plain.path(), rundir.join("tcp"));
        let again = ServiceListener::bind_outbound(&rundir, b"tcp").unwrap_err();
        assert!(matches!(again, Error::AlreadyRunning { .. }), "{again}");
    }

    #[test]
    fn stale_socket_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = UnixListener::bind(tmp.path().join("svc")).unwrap();
        drop(stale); // the file stays, as after a crash
        assert!(tmp.path().join("svc").exists());
        let svc = ServiceListener::bind(tmp.path(), b"svc").unwrap();
        connect(tmp.path(), b"svc").unwrap();
        drop(svc);
    }
}
