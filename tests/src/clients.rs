//! Network clients of the daemons, from libraries nobody here wrote (std's TCP,
//! rustls), each operation bounded by [`IO_TIMEOUT`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

pub use crate::limits::IO_TIMEOUT;
use crate::wire::frame;

/// A TCP connection to `addr` whose reads and writes time out.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the peer closes the connection (a reset, as after an answer
/// with our later bytes unread, counts); returns what came.
pub fn until_closed(mut s: impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("not closed by the daemon ({e}); got {all:?}"),
        }
    }
}

/// An ordinary client of routed tcpd (or tlsd, inside TLS) over `s`: names
/// `service` in a frame, gets the framed `ok`, and has `message` echoed.
pub fn routed_echo(mut s: impl Read + Write, service: &str, message: &str) {
    s.write_all(&[frame(service.as_bytes()), frame(message.as_bytes())].concat())
        .unwrap_or_else(|e| panic!("{message}: write: {e}"));
    let want = [frame(b"ok"), frame(message.as_bytes())].concat();
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{message}: read: {e}"));
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(shown(&got), shown(&want), "{message}");
}

/// The client side of TLS, trusting only the test CA in `ca` (PEM).
pub fn tls_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA's PEM file") {
        roots.add(cert.expect("a PEM certificate")).expect("a CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to tlsd at `addr` (verified for `localhost`), handshake
/// done.
pub fn tls(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").expect("a server name");
    let conn = ClientConnection::new(config.clone(), name).expect("a TLS client");
    let mut s = StreamOwned::new(conn, tcp(addr));
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    }
    s
}
