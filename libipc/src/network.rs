//! `IPC_NETWORK`: routes that send a connection to a service through a protocol daemon.
//!
//! The variable holds entries separated by `;`, each a service name, one space, and
//! a target URI: `IPC_NETWORK="pong tcp://10.0.0.2:9000/pong;db unix://db2"`. When
//! a program connects to a service named in it (the last matching entry wins):
//!
//! - `unix://NAME` connects to local service `NAME` instead;
//! - `SCHEME://REST` connects to the outbound service named `SCHEME` (the protocol
//!   daemon's: `tcp`, `tls`, ..., at `$RUNDIR/.outbound/SCHEME`, see
//!   [`crate::service::OUTBOUND_DIR`]), sends it the URI as one message, and waits for a
//!   one-message answer: `ok` means the connection now leads to the remote
//!   service; anything else is the daemon's error, reported to the caller.
//!   The request offers to take the daemon's connection to the remote itself
//!   (`URI`, a newline, `handoff`): a daemon that can (tcpd `--handoff`)
//!   answers with a handoff frame carrying that socket ([`crate::handoff`]),
//!   and the program then talks to the remote service with no process in
//!   between; others answer `ok` and relay.
//!
//! Without a matching entry the connection is direct. No separate ipcd is needed.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame;
use crate::handoff::{Handoff, MAX_HANDOFF, recv_with_fds_waiting};
use crate::service::validate_name;

/// Longest answer accepted from a daemon.
const MAX_ANSWER: usize = 4096;

/// Name of the environment variable.
pub const IPC_NETWORK: &str = "IPC_NETWORK";

/// Where a connection to a service should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// Connect directly to the local service of this name.
    Local(&'a str),
    /// Connect to the outbound service `daemon` (a protocol daemon's) and ask it
    /// for `uri`.
    Daemon {
        /// The daemon's service name (the URI scheme).
        daemon: &'a str,
        /// The whole URI, sent as is.
        uri: &'a str,
    },
}

/// A parsed URI `SCHEME://AUTHORITY/PATH` (path may be empty or hold `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// Before `://`.
    pub scheme: &'a str,
    /// From `://` to the next `/`, e.g. `host:9000` or `[::1]:9000`.
    pub authority: &'a str,
    /// After that `/`.
    pub path: &'a str,
}

/// Splits a URI; fails on a missing `://` or an empty scheme.
pub fn parse_uri(uri: &str) -> Result<Uri<'_>> {
    let bad = |rule| Error::Route {
        entry: uri.chars().take(200).collect(),
        rule,
    };
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| bad("a target needs '://'"))?;
    if scheme.is_empty() {
        return Err(bad("a target needs a scheme before '://'"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok(Uri {
        scheme,
        authority,
        path,
    })
}

/// A URI component with its `%XX` escapes decoded (RFC 3986); `None` for a
/// broken escape. Used for a proxy URL's user information and websocketd's
/// request paths.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Finds the route for `service` in an `IPC_NETWORK` value (the last match wins).
///
/// Entries that are malformed are errors only if they name `service`, so one bad
/// entry does not break every other service.
pub fn route<'a>(network: &'a str, service: &'a str) -> Result<Route<'a>> {
    let mut found = Route::Local(service);
    for entry in network.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, target) = entry.split_once(' ').unwrap_or((entry, ""));
        if name != service {
            continue;
        }
        let target = target.trim();
        let bad = |rule| Error::Route {
            entry: entry.chars().take(200).collect(),
            rule,
        };
        let uri = parse_uri(target).map_err(|_| bad("expected 'NAME SCHEME://TARGET'"))?;
        found = if uri.scheme == "unix" {
            let local = validate_name(uri.authority.as_bytes())?;
            Route::Local(local)
        } else {
            validate_name(uri.scheme.as_bytes()).map_err(|_| {
                bad("the scheme names a local daemon: letters, digits, '.', '_', '-'")
            })?;
            Route::Daemon {
                daemon: uri.scheme,
                uri: target,
            }
        };
    }
    Ok(found)
}

/// What the option line of a request to a daemon's outbound service says:
/// the client takes the remote connection itself if the daemon can give it.
pub const HANDOFF_OPTION: &str = "handoff";

/// How a daemon connected a client to a remote service.
#[derive(Debug)]
pub enum Connected {
    /// The daemon relays: this stream leads to the remote service.
    Relayed(UnixStream),
    /// The daemon gave up its connection to the remote: talk on `socket`,
    /// after the remote's frames the daemon had already read (`rest`).
    HandedOff {
        /// The connection to the remote daemon, past its handshake.
        socket: OwnedFd,
        /// LibIPC frames from the remote service, to read first.
        rest: Vec<u8>,
    },
}

/// Sends `uri` to a protocol daemon on `stream` and waits for its answer.
///
/// Returns how the daemon connected the client to the remote service (it
/// offers to take the connection itself, see [`Connected`]), or
/// [`Error::Refused`] with the daemon's answer. Reads exactly the answer, so a
/// message the remote service sends right away is not lost.
pub fn ask_daemon(
    mut stream: UnixStream,
    daemon: &str,
    uri: &str,
    timeout: Duration,
) -> Result<Connected> {
    let refused = |answer: String| Error::Refused {
        daemon: daemon.to_owned(),
        uri: uri.chars().take(200).collect(),
        answer,
    };
    let mut request = Vec::with_capacity(uri.len() + frame::HEADER_LEN + 8);
    frame::encode(format!("{uri}\n{HANDOFF_OPTION}").as_bytes(), &mut request)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            refused(format!("no answer within {timeout:?}"))
        }
        std::io::ErrorKind::UnexpectedEof => refused("closed the connection".into()),
        _ => Error::Io(e),
    };
    stream.write_all(&request).map_err(io)?;
    // The header alone: a handed-off socket comes with its first byte, and
    // what follows a relayed `ok` is the remote service's, not ours to read.
    let mut hdr = [0; frame::HEADER_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < hdr.len() {
        let (n, more) = recv_with_fds_waiting(stream.as_fd(), &mut hdr[got..]).map_err(io)?;
        if n == 0 {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
        fds.extend(more);
    }
    let len = u32::from_be_bytes(hdr) as usize;
    if let Ok([socket]) = <[OwnedFd; 1]>::try_from(fds) {
        if len > MAX_HANDOFF {
            return Err(refused(format!("a handoff of {len} bytes")));
        }
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).map_err(io)?;
        let h = Handoff::decode(&payload).map_err(|e| refused(e.to_string()))?;
        // What the client would have sent the remote first, if anything
        // (a write to the socket through a File: its descriptor's write(2)).
        let mut remote = std::fs::File::from(socket);
        remote.write_all(&h.answer)?;
        return Ok(Connected::HandedOff {
            socket: remote.into(),
            rest: h.rest,
        });
    }
    if len > MAX_ANSWER {
        return Err(refused(format!(
            "answer of {len} bytes is not a daemon's answer"
        )));
    }
    let mut answer = vec![0; len];
    stream.read_exact(&mut answer).map_err(io)?;
    if answer != b"ok" {
        return Err(refused(
            String::from_utf8_lossy(&answer).chars().take(200).collect(),
        ));
    }
    stream.set_write_timeout(None)?;
    stream.set_read_timeout(None)?;
    Ok(Connected::Relayed(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_decoded_and_broken_ones_refused() {
        assert_eq!(percent_decode("a%2Fb%20c").unwrap(), b"a/b c");
        assert_eq!(percent_decode("%2e%2E/x").unwrap(), b"../x");
        assert_eq!(percent_decode("").unwrap(), b"");
        for broken in ["%", "%2", "%zz", "a%g1"] {
            assert_eq!(percent_decode(broken), None, "{broken}");
        }
    }

    #[test]
    fn routes_follow_the_last_matching_entry() {
        let net = "pong tcp://10.0.0.2:9000/pong;db unix://db2;pong tls://h:9443/pong";
        assert_eq!(
            route(net, "pong").unwrap(),
            Route::Daemon {
                daemon: "tls",
                uri: "tls://h:9443/pong"
            }
        );
        assert_eq!(route(net, "db").unwrap(), Route::Local("db2"));
        assert_eq!(route(net, "other").unwrap(), Route::Local("other"));
        assert_eq!(route("", "x").unwrap(), Route::Local("x"));
    }

    #[test]
    fn bad_entries_fail_only_their_service() {
        let net = "a nothing;b unix://../etc;c tcp://ok:1/c;d ://x";
        assert!(
            route(net, "a")
                .unwrap_err()
                .to_string()
                .contains("SCHEME://")
        );
        assert!(matches!(route(net, "b"), Err(Error::InvalidName { .. })));
        assert!(route(net, "d").is_err());
        assert_eq!(
            route(net, "c").unwrap(),
            Route::Daemon {
                daemon: "tcp",
                uri: "tcp://ok:1/c"
            }
        );
        assert!(route("x ../evil://h/p", "x").is_err());
    }

    #[test]
    fn uris_split_like_the_original() {
        let u = parse_uri("tcp://[::1]:9000/a/b").unwrap();
        assert_eq!(
            (u.scheme, u.authority, u.path),
            ("tcp", "[::1]:9000", "a/b")
        );
        let u = parse_uri("tcp://h:1").unwrap();
        assert_eq!((u.authority, u.path), ("h:1", ""));
        assert!(parse_uri("h:1/x").is_err());
        assert!(parse_uri("://h").is_err());
    }
}
