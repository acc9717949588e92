//! The client's sockets: a unix-socket, TCP or TLS stream behind one type, so that
//! the same load generator drives the service directly and every relay.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use libipc::network::Connected;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use nix::sys::time::TimeVal;
use rustls::ClientConfig;

use crate::tls::{self, TlsStream};
use crate::ws::{self, WsMode, WsStream};

/// Longest wait for one connect(2) (the service's backlog may be full while it accepts).
const CONNECT_TIMEOUT_S: i64 = 10;

/// Where the client connects: the service's socket, or a relay's TCP port (in
/// plain, with TLS, or WebSocket).
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Unix(&'a Path),
    Tcp(SocketAddr),
    Tls(SocketAddr, &'a Arc<ClientConfig>),
    Ws(SocketAddr, WsMode),
    /// Through IPC_NETWORK: a daemon's outbound service socket and the URI.
    Network(&'a Path, &'a str),
}

/// One client connection's socket, any kind; mio registers them alike.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsStream<TcpStream>>),
}

impl Stream {
    /// Whether a read shorter than the buffer means the socket is drained (not
    /// through TLS: rustls hands out what it decrypted a record at a time; nor
    /// through WebSocket, which hands out a frame's payload at a time).
    pub fn short_read_drains(&self) -> bool {
        !matches!(self, Stream::Tls(_) | Stream::Ws(_))
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &mut s.sock,
            Stream::Ws(s) => &mut s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Ws(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Ws(s) => s.write(buf),
        }
    }

    /// TLS, WebSocket: sends the records or frames still queued (`WouldBlock`
    /// while the socket is full).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Ws(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().register(r, t, i)
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().reregister(r, t, i)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.source().deregister(r)
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
        Target::Tls(addr, config) => {
            // Handshake blocking, then hand the socket to mio.
            let s = tls::handshake(addr, config)?;
            s.sock.set_nonblocking(true)?;
            Ok(Stream::Tls(Box::new(s.map(TcpStream::from_std))))
        }
        Target::Network(socket, uri) => match ask(socket, uri)? {
            Connected::Relayed(s) => {
                s.set_nonblocking(true)?;
                Ok(Stream::Unix(UnixStream::from_std(s)))
            }
            Connected::HandedOff { socket, rest } => {
                anyhow::ensure!(rest.is_empty(), "the remote spoke first");
                let s = std::net::TcpStream::from(socket);
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(Stream::Tcp(TcpStream::from_std(s)))
            }
        },
        Target::Ws(addr, mode) => {
            // Upgrade blocking, then hand the socket to mio.
            let (s, early) = ws::handshake(addr)?;
            s.set_nonblocking(true)?;
            let s = WsStream::new(TcpStream::from_std(s), mode, early);
            Ok(Stream::Ws(Box::new(s)))
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

/// Asks the outbound service at `socket` for `uri`, as a libipc client does.
fn ask(socket: &Path, uri: &str) -> Result<Connected> {
    let s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect {}", socket.display()))?;
    let scheme = uri.split("://").next().unwrap_or_default();
    let timeout = Duration::from_secs(CONNECT_TIMEOUT_S as u64);
    Ok(libipc::network::ask_daemon(s, scheme, uri, timeout)?)
}

/// One echo through IPC_NETWORK (`socket`, `uri`), blocking: a relay's
/// readiness probe.
pub fn network_echo_once(socket: &Path, uri: &str) -> Result<()> {
    let mut s: Box<dyn ReadWrite> = match ask(socket, uri)? {
        Connected::Relayed(s) => Box::new(s),
        Connected::HandedOff { socket, .. } => Box::new(std::net::TcpStream::from(socket)),
    };
    let frame = [&4u32.to_be_bytes()[..], b"ping"].concat();
    s.write_all(&frame)?;
    let mut back = [0; 8];
    s.read_exact(&mut back)?;
    anyhow::ensure!(back[..] == frame[..], "echo differs: {back:?}");
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
