//! The client's sockets: a unix-socket or TCP stream behind one type, so that the
//! same load generator drives the service directly and every relay.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use nix::sys::time::TimeVal;

/// Longest wait for one connect(2) (the service's backlog may be full while it accepts).
const CONNECT_TIMEOUT_S: i64 = 10;

/// Where the client connects: the service's socket, or a relay's TCP port.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Unix(&'a Path),
    Tcp(SocketAddr),
}

/// One client connection's socket, either kind; mio registers both alike.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.register(r, t, i),
            Stream::Tcp(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.reregister(r, t, i),
            Stream::Tcp(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.deregister(r),
            Stream::Tcp(s) => s.deregister(r),
        }
    }
}

pub fn connect(target: Target<'_>) -> Result<Stream> {
    match target {
        Target::Unix(path) => connect_unix(path).map(Stream::Unix),
        Target::Tcp(addr) => {
            let timeout = Duration::from_secs(CONNECT_TIMEOUT_S as u64);
            let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            // Small requests leave at once, as over a unix socket; the relays set
            // it on their side too (tcpd, nginx and HAProxy do by default).
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Ok(Stream::Tcp(TcpStream::from_std(s)))
        }
    }
}

/// connect(2) with a timeout (SO_SNDTIMEO bounds a blocking unix connect).
fn connect_unix(path: &Path) -> Result<UnixStream> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(
        &fd,
        sockopt::SendTimeout,
        &TimeVal::new(CONNECT_TIMEOUT_S, 0),
    )?;
    socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    Ok(UnixStream::from_std(std))
}
