//! The benchmark's TLS client (rustls, ring): its configuration, a blocking
//! connect-and-handshake, a non-blocking stream for the mio load generator, and
//! the handshake workload (a new connection per echo, from several threads).
//!
//! Every TLS client offers TLS 1.3 only, one cipher suite
//! (TLS13_AES_128_GCM_SHA256) and rustls' default key exchange (X25519 first),
//! so that every relay does the same cryptography. The client checks the
//! server's handshake signature (the server has the key) but not its
//! certificate's chain: path building would cost the client one more ECDSA
//! verification per full handshake, CPU the relay under test shares on these
//! 2-core machines, and it says nothing about the relay.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, Tls12Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind};

use crate::hist::Histogram;
use crate::procs;
use crate::server::process_cpu;

/// Longest wait for a connect, a handshake or an echo.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Ciphertext read from the socket at once (rustls takes at most about 16 KiB a call).
const RAW_READ: usize = 64 << 10;

/// A client configuration: TLS 1.3, AES-128-GCM; with `resume`, TLS 1.3
/// tickets are kept (in memory) and offered, otherwise every handshake is full.
pub fn client_config(resume: bool) -> Result<Arc<ClientConfig>> {
    let provider = CryptoProvider {
        cipher_suites: vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..ring::default_provider()
    };
    let algs = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SignatureOnly(algs)))
        .with_no_client_auth();
    config.resumption = if resume {
        Resumption::in_memory_sessions(64).tls12_resumption(Tls12Resumption::Disabled)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate, checks the handshake signature with its key.
#[derive(Debug)]
struct SignatureOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A blocking TCP connection (TCP_NODELAY, timeouts) to `addr`.
pub fn tcp(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Connects to `addr` and completes a TLS handshake (blocking).
pub fn handshake(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<TlsStream<TcpStream>> {
    let mut sock = tcp(addr)?;
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut conn = ClientConnection::new(config.clone(), name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).context("TLS handshake")?;
    }
    Ok(TlsStream::new(sock, conn))
}

/// One 64 B frame to `addr` and back on a new connection (TLS with `config`),
/// then close. Returns how the TLS handshake went (`None` without TLS).
pub fn echo_once(
    addr: SocketAddr,
    config: Option<&Arc<ClientConfig>>,
    payload: &[u8],
) -> Result<Option<HandshakeKind>> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    let mut back = vec![0u8; frame.len()];
    let kind = match config {
        None => {
            let mut s = tcp(addr)?;
            s.write_all(&frame)?;
            s.read_exact(&mut back).context("no echo")?;
            None
        }
        Some(config) => {
            let mut s = handshake(addr, config)?;
            s.write_all(&frame)?;
            s.flush()?;
            s.read_exact(&mut back).context("no echo")?;
            let kind = s.conn.handshake_kind();
            s.conn.send_close_notify();
            // Best effort: the peer may already be gone.
            let _ = s.flush();
            kind
        }
    };
    if back != frame {
        bail!("wrong echo");
    }
    Ok(kind)
}

/// A TLS client connection over a socket, blocking or not: `read` and `write`
/// pass the socket's `WouldBlock` on; `flush` sends the TLS records still
/// queued (and says `WouldBlock` while the socket will not take them).
#[derive(Debug)]
pub struct TlsStream<S> {
    pub sock: S,
    conn: ClientConnection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    raw: Vec<u8>,
    raw_pos: usize,
}

impl<S: Read + Write> TlsStream<S> {
    pub fn new(sock: S, conn: ClientConnection) -> Self {
        TlsStream {
            sock,
            conn,
            raw: Vec::new(),
            raw_pos: 0,
        }
    }

    /// The same connection over another socket (the same one made non-blocking).
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> TlsStream<T> {
        TlsStream {
            sock: f(self.sock),
            conn: self.conn,
            raw: self.raw,
            raw_pos: self.raw_pos,
        }
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                // 0: the server sent close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.raw_pos < self.raw.len() {
                self.raw_pos += self.conn.read_tls(&mut &self.raw[self.raw_pos..])?;
                self.conn.process_new_packets().map_err(io::Error::other)?;
                // Records rustls answers (a key update): sent when the socket allows.
                let _ = self.flush();
                continue;
            }
            self.raw.resize(RAW_READ, 0);
            self.raw_pos = 0;
            let n = match self.sock.read(&mut self.raw) {
                Ok(n) => n,
                Err(e) => {
                    self.raw.clear();
                    return Err(e);
                }
            };
            self.raw.truncate(n);
            if n == 0 {
                // End of stream: rustls tells a clean close (Ok(0)) from a cut one.
                self.conn.read_tls(&mut &[][..])?;
                self.conn.process_new_packets().map_err(io::Error::other)?;
                return self.conn.reader().read(buf);
            }
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush()?;
        let n = self.conn.writer().write(buf)?;
        match self.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

/// The handshake workload: `threads` threads each open a connection, handshake,
/// echo one 64 B message and close, over and over, for `warmup + seconds` or
/// until `max` connections in all.
#[derive(Debug, Clone)]
pub struct Cycles {
    pub addr: SocketAddr,
    /// TLS (`Some(resume)`) or plain TCP (`None`).
    pub tls: Option<bool>,
    pub threads: usize,
    pub warmup: Duration,
    pub seconds: Duration,
    pub max: u64,
    pub server_pid: u32,
    pub relay_pid: Option<u32>,
}

#[derive(Debug, Default)]
pub struct CycleOutcome {
    /// Connections completed inside the measured interval, and its length.
    pub count: u64,
    pub interval: Duration,
    /// Connection to echo received, per connection.
    pub latency: Histogram,
    /// Connections whose handshake resumed a session, of all made.
    pub resumed: u64,
    pub total: u64,
    pub errors: Vec<String>,
    pub server_cpu: Option<Duration>,
    pub relay_cpu: Option<Duration>,
}

/// Runs the handshake workload. With resumption, every connection of a thread
/// but its first must resume (a full handshake is an error: the figure would
/// not be what it says).
pub fn cycles(w: &Cycles) -> Result<CycleOutcome> {
    let start = Instant::now();
    let measure_from = start + w.warmup;
    let stop_at = measure_from + w.seconds;
    let made = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..w.threads.max(1) {
        let config = w.tls.map(client_config).transpose()?;
        let (made, stop, w) = (made.clone(), stop.clone(), w.clone());
        handles.push(std::thread::spawn(move || {
            cycle_thread(t, &w, config, measure_from, stop_at, &made, &stop)
        }));
    }
    let sample = || {
        (
            process_cpu(w.server_pid),
            w.relay_pid.and_then(procs::tree_cpu),
        )
    };
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let from = sample();
    // The threads stop at `stop_at` (or at the cap, or on an error).
    while Instant::now() < stop_at && !stop.load(Ordering::Relaxed) {
        let left = stop_at.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
    let to = sample();
    let interval_end = Instant::now().min(stop_at);
    let mut out = CycleOutcome {
        interval: interval_end.saturating_duration_since(measure_from),
        ..Default::default()
    };
    let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    out.server_cpu = diff(from.0, to.0);
    out.relay_cpu = diff(from.1, to.1);
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        out.count += t.count;
        out.resumed += t.resumed;
        out.total += t.total;
        out.latency.merge(&t.latency);
        out.errors.extend(t.error);
    }
    Ok(out)
}

#[derive(Default)]
struct ThreadOutcome {
    count: u64,
    resumed: u64,
    total: u64,
    latency: Histogram,
    error: Option<String>,
}

fn cycle_thread(
    t: usize,
    w: &Cycles,
    config: Option<Arc<ClientConfig>>,
    measure_from: Instant,
    stop_at: Instant,
    made: &AtomicU64,
    stop: &AtomicBool,
) -> ThreadOutcome {
    let mut out = ThreadOutcome::default();
    let mut payload = [0u8; 64];
    payload[..4].copy_from_slice(&(t as u32).to_le_bytes());
    loop {
        let begin = Instant::now();
        if begin >= stop_at || stop.load(Ordering::Relaxed) {
            break;
        }
        if made.fetch_add(1, Ordering::Relaxed) >= w.max {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        payload[4..12].copy_from_slice(&out.total.to_le_bytes());
        let kind = match echo_once(w.addr, config.as_ref(), &payload) {
            Ok(k) => k,
            Err(e) => {
                out.error = Some(format!("thread {t}, connection {}: {e:#}", out.total));
                stop.store(true, Ordering::Relaxed);
                break;
            }
        };
        let resumed = kind == Some(HandshakeKind::Resumed);
        let expected = match w.tls {
            None => kind.is_none(),
            Some(false) => kind == Some(HandshakeKind::Full),
            // The first connection of a thread has no ticket yet.
            Some(true) => resumed || out.total == 0,
        };
        if !expected {
            out.error = Some(format!(
                "thread {t}, connection {}: handshake {kind:?}, expected {}",
                out.total,
                if w.tls == Some(true) {
                    "Resumed"
                } else {
                    "Full"
                }
            ));
            stop.store(true, Ordering::Relaxed);
            break;
        }
        out.total += 1;
        out.resumed += u64::from(resumed);
        let end = Instant::now();
        if end >= measure_from && end < stop_at {
            out.latency.record(end - begin);
            out.count += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Target, assert_echoes};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    /// A rustls echo server (TLS 1.3, tickets) on 127.0.0.1, a thread per client.
    fn echo_server(dir: &std::path::Path) -> SocketAddr {
        let pki = libipc_tests::certs::generate(dir, false);
        let chain = CertificateDer::pem_file_iter(&pki.server.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.server.key).unwrap();
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.ticketer = ring::Ticketer::new().unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let conn = ServerConnection::new(config.clone()).unwrap();
                let mut tls = StreamOwned::new(conn, s.unwrap());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n @ 1..) = tls.read(&mut buf) {
                        if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// The mio client through TLS: small and large (multi-record) messages
    /// echoed and checked on several connections.
    #[test]
    fn load_through_tls() {
        let dir = tempfile::tempdir().unwrap();
        let addr = echo_server(dir.path());
        let config = client_config(false).unwrap();
        for (size, max) in [(100, 300), (70_000, 60)] {
            assert_echoes(Target::Tls(addr, &config), size, max);
        }
    }

    /// Full handshakes stay full; with resumption every connection but a
    /// thread's first resumes.
    #[test]
    fn handshakes_full_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let addr = echo_server(dir.path());
        for resume in [false, true] {
            let w = Cycles {
                addr,
                tls: Some(resume),
                threads: 2,
                warmup: Duration::ZERO,
                seconds: Duration::from_secs(10),
                max: 20,
                server_pid: std::process::id(),
                relay_pid: None,
            };
            let o = cycles(&w).unwrap();
            assert!(o.errors.is_empty(), "{:?}", o.errors);
            assert_eq!(o.total, 20);
            assert_eq!(o.resumed, if resume { 18 } else { 0 });
        }
    }
}
