//! The library's error type.
//!
//! A variant's message says what failed; the error it wraps, if any, is its
//! [`source`](std::error::Error::source) and says why, and is not repeated in
//! the message. Print the whole chain, each cause once, with [`Chain`] (or
//! anyhow's `{:#}`).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::ConnId;
use crate::proxy::BadHeader;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in libipc.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A service name broke the naming rule (see [`crate::service::validate_name`]).
    #[error("invalid service name {name:?}: {rule}")]
    InvalidName {
        /// The name as given, lossily decoded.
        name: String,
        /// Which part of the rule it broke.
        rule: &'static str,
    },

    /// The run directory could not be created or used.
    #[error("run directory {path}")]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },

    /// Another process already serves this name (it holds `<name>.lock`).
    #[error("service {name:?} is already running (lock {lock} is held by {})", holder_text(.holder))]
    AlreadyRunning {
        /// The service name.
        name: String,
        /// The lock file.
        lock: PathBuf,
        /// The process holding the lock, as it wrote its pid there (`None`:
        /// not written yet, or by a version of libipc that did not).
        holder: Option<u32>,
    },

    /// Creating the service socket failed.
    #[error("cannot create service socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },

    /// Connecting to a service failed.
    #[error("cannot connect to service at {path}")]
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },

    /// A peer announced a message larger than the context accepts.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Announced (or attempted) length.
        len: u64,
        /// The limit in force.
        max: usize,
    },

    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a message ({missing} bytes missing)")]
    Truncated {
        /// Bytes still expected when the stream ended.
        missing: usize,
    },

    /// The connection is closed or the id was never valid.
    #[error("no such connection: {0}")]
    NoSuchConnection(ConnId),

    /// No connection uses this file descriptor.
    #[error("no connection uses file descriptor {0}")]
    NoSuchFd(i32),

    /// The peer does not read fast enough: its outgoing queue is past the high-water mark.
    /// The message was not queued; try again after a `MessageTx` event for this peer.
    #[error("connection {id}: {queued} bytes already queued, past the high-water mark")]
    Backpressure {
        /// The connection.
        id: ConnId,
        /// Bytes waiting to be written.
        queued: usize,
    },

    /// The operation does not apply to this kind of connection.
    #[error("connection {id}: {what}")]
    WrongKind {
        /// The connection.
        id: ConnId,
        /// What was wrong.
        what: &'static str,
    },

    /// An `IPC_NETWORK` entry for the service is malformed.
    #[error("IPC_NETWORK entry {entry:?}: {rule}")]
    Route {
        /// The entry (cut to 200 characters).
        entry: String,
        /// What is wrong with it.
        rule: &'static str,
    },

    /// A protocol daemon could not connect us to the remote service.
    #[error("{daemon} daemon refused {uri}: {answer}")]
    Refused {
        /// The daemon's service name.
        daemon: String,
        /// The URI asked for.
        uri: String,
        /// The daemon's answer (cut to 200 characters) or what went wrong.
        answer: String,
    },

    /// TLS failed (handshake, certificate, protocol).
    #[error("TLS: {0}")]
    Tls(String),

    /// A network client broke the service handshake.
    #[error("bad handshake: {0}")]
    Handshake(String),

    /// A trusted load balancer's PROXY protocol header was missing or
    /// malformed (see [`crate::switch::Proxied`]).
    #[error(transparent)]
    Proxy(#[from] BadHeader),

    /// A daemon turned a network connection away (unknown service, not allowed...).
    #[error("denied: {0}")]
    Denied(String),

    /// A switched connection's transport refused the data.
    #[error("transport: {0}")]
    Transport(String),

    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,

    /// A system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io(io::Error::from(e))
    }
}

/// Who holds a service's lock, for [`Error::AlreadyRunning`].
fn holder_text(holder: &Option<u32>) -> String {
    match holder {
        Some(pid) => format!("pid {pid}"),
        None => "another process".to_owned(),
    }
}

/// An error and its causes on one line, `what failed: why: why...`, each
/// once: how a log line, or an answer to a peer, says why.
///
/// ```
/// use libipc::error::{Chain, Error};
/// let e = Error::RunDir {
///     path: "/run/libipc".into(),
///     source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
/// };
/// assert_eq!(Chain(&e).to_string(), "run directory /run/libipc: permission denied");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    /// Every variant that wraps an error, as the library makes them.
    fn wrapping() -> Vec<Error> {
        vec![
            Error::RunDir {
                path: "/run/x".into(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ),
            },
            Error::Bind {
                path: "/run/x/svc".into(),
                source: io(io::ErrorKind::PermissionDenied),
            },
            Error::Connect {
                path: "/run/x/svc".into(),
                source: io::Error::from_raw_os_error(2),
            },
            Error::Io(io::Error::from_raw_os_error(98)),
            Error::Proxy(BadHeader("expected a PROXY header first")),
        ]
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        for e in wrapping() {
            let line = Chain(&e).to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                let why = c.to_string();
                assert_eq!(line.matches(&why).count(), 1, "{why:?} in {line:?}");
                cause = c.source();
            }
            // The message itself, then the causes: nothing lost.
            assert!(line.starts_with(&e.to_string()), "{line:?}");
        }
    }

    #[test]
    fn a_message_says_what_failed_and_the_source_why() {
        let e = &wrapping()[2];
        assert_eq!(e.to_string(), "cannot connect to service at /run/x/svc");
        assert_eq!(
            Chain(e).to_string(),
            "cannot connect to service at /run/x/svc: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_bad_proxy_header_is_its_own_variant() {
        let e = Error::from(BadHeader("v1 header too short"));
        assert!(matches!(e, Error::Proxy(BadHeader(_))));
        assert_eq!(
            Chain(&e).to_string(),
            "bad PROXY protocol header: v1 header too short"
        );
    }
}
