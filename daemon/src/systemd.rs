//! systemd integration without libsystemd: readiness notifications (`sd_notify`
//! over `$NOTIFY_SOCKET`) and socket activation (`$LISTEN_FDS`). Both are no-ops
//! when the daemon is not run by systemd.

use std::net::TcpListener;

use anyhow::{Result, bail};

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to the service manager, if
/// there is one (`$NOTIFY_SOCKET`). Failures are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(error = %e, socket = ?path, "cannot notify the service manager");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        // An abstract socket (Linux).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd wants alongside it.
pub fn reloading() -> String {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={now}")
}

/// Listening TCP sockets systemd passed (socket activation), with their names
/// (`FileDescriptorName=`; "unknown" when not named). `None` when the daemon was
/// not socket-activated (no `$LISTEN_FDS` for this process).
pub fn listen_fds() -> Result<Option<Vec<(String, TcpListener)>>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    let mut out = Vec::new();
    for idx in 0..fds.len() {
        let name = names.next().filter(|n| !n.is_empty()).unwrap_or("unknown");
        match fds.take_tcp_listener(idx) {
            Ok(Some(l)) => out.push((name.to_owned(), l)),
            Ok(None) => {}
            Err(e) => bail!(
                "socket activation: descriptor {} ({name}) is not a listening TCP socket: {e}",
                idx + 3
            ),
        }
    }
    Ok(Some(out))
}
