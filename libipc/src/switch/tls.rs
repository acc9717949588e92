//! TLS as a transport layer (rustls, sans-I/O): decrypts what the network sends
//! and hands the plaintext to the transport it wraps, and encrypts what that one
//! produces. So `Tls<Routed<Frames>>` is tlsd, and a WebSocket transport inside
//! `Tls` is wss: TLS is written once.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::error::{Error, Result};
use crate::queue::OutQueue;
use crate::switch::{PeerInfo, Refusal, Relay, TlsInfo, Transport};

/// Plaintext rustls may hold before it is encrypted: what a service sends before
/// the handshake is done waits there (bounded), later writes drain at once.
const PLAINTEXT_LIMIT: usize = 1 << 20;

/// Judges the peer's certificate chain once the handshake is done: `Ok` with the
/// identity to log, or `Err` with the reason it is refused.
pub type PeerCheck =
    Arc<dyn Fn(&[CertificateDer<'_>]) -> std::result::Result<String, String> + Send + Sync>;

/// TLS around `inner`.
pub struct Tls<T> {
    conn: Connection,
    inner: T,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// Run once, when the handshake completes.
    check: Option<PeerCheck>,
    /// What the check said about the peer's certificate.
    identity: Option<String>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Tls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("conn", &self.conn)
            .field("inner", &self.inner)
            .field("peer_closed", &self.peer_closed)
            .field("check", &self.check.is_some())
            .field("identity", &self.identity)
            .finish()
    }
}

impl<T: Transport> Tls<T> {
    /// The server side (an accepted client) with `config`.
    pub fn server(config: Arc<ServerConfig>, inner: T) -> Result<Self> {
        let conn = ServerConnection::new(config).map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self::wrap(conn.into(), inner))
    }

    /// The client side (dialling a remote daemon called `server_name`).
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        inner: T,
    ) -> Result<Self> {
        let conn =
            ClientConnection::new(config, server_name).map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self::wrap(conn.into(), inner))
    }

    fn wrap(mut conn: Connection, inner: T) -> Self {
        conn.set_buffer_limit(Some(PLAINTEXT_LIMIT));
        Tls {
            conn,
            inner,
            peer_closed: false,
            check: None,
            identity: None,
        }
    }

    /// Checks the peer's identity when the handshake completes (mutual TLS allow
    /// lists): a refused peer gets close_notify and the connection fails with the
    /// reason.
    pub fn with_peer_check(mut self, check: PeerCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// The TLS connection (for the peer's certificates, SNI, ALPN, version).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Queues the TLS records rustls has ready for the network.
    fn flush_tls(&mut self, relay: &mut Relay<'_>) {
        let mut records = Vec::new();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut records).is_err() {
                break;
            }
        }
        relay.to_network(&records);
    }

    /// Runs the inner transport with the plaintext side of this connection as its
    /// network, then encrypts what it wrote.
    fn with_inner<R>(
        &mut self,
        relay: &mut Relay<'_>,
        f: impl FnOnce(&mut T, &mut Relay<'_>) -> R,
    ) -> (R, Result<()>) {
        let mut plain_out = OutQueue::default();
        let finished;
        let backlog = relay.network_backlog();
        let result = {
            let mut inner = Relay::new(relay.to_service, &mut plain_out);
            // Plaintext for the service may go straight to it; plaintext for the
            // network is ours to encrypt.
            inner.service_fd = relay.service_fd;
            inner.traffic = relay.traffic.as_deref_mut();
            inner.backlog_below = backlog;
            let r = f(&mut self.inner, &mut inner);
            if let Some(name) = inner.request.take() {
                relay.request = Some(name);
            }
            if let Some(e) = inner.failed.take() {
                relay.failed.get_or_insert(e);
            }
            finished = inner.finished.take();
            relay.more |= inner.more;
            r
        };
        let plain = plain_out.take_bytes();
        let written = self.encrypt(&plain, relay);
        if let Some(reason) = finished {
            // The inner transport ended the conversation: so does TLS.
            self.conn.send_close_notify();
            relay.finish(reason);
        }
        self.flush_tls(relay);
        (result, written)
    }

    /// [`Tls::with_inner`] for hooks that cannot fail: a write that cannot be
    /// encrypted (only possible before the handshake) is logged.
    fn quietly(&mut self, relay: &mut Relay<'_>, f: impl FnOnce(&mut T, &mut Relay<'_>)) {
        if let ((), Err(e)) = self.with_inner(relay, f) {
            tracing::warn!(error = %e, "TLS: output dropped");
        }
    }

    /// Encrypts `plain` into records for the network. rustls takes at most its
    /// buffer limit at a time: records are drained between writes. Before the
    /// handshake is done nothing drains, so more than the limit is an error
    /// rather than a silent loss.
    fn encrypt(&mut self, mut plain: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        while !plain.is_empty() {
            let n = self.conn.writer().write(plain).unwrap_or(0);
            plain = &plain[n..];
            if n == 0 {
                if !self.conn.wants_write() {
                    return Err(Error::Tls(format!(
                        "{} bytes from the service before the TLS handshake finished",
                        PLAINTEXT_LIMIT
                    )));
                }
                self.flush_tls(relay);
            }
        }
        Ok(())
    }
}

impl<T: Transport> Transport for Tls<T> {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn start(&mut self, relay: &mut Relay<'_>) {
        // A client speaks first (ClientHello).
        self.quietly(relay, |inner, r| inner.start(r));
    }

    fn on_network_data(&mut self, mut data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let mut plain = Vec::new();
        while !data.is_empty() {
            self.conn.read_tls(&mut data)?;
            match self.conn.process_new_packets() {
                Ok(_) => {}
                // A close_notify rustls did not take as the end of the data
                // (sent as a fatal-level alert by some peers): still the peer's
                // clean end, not a failure to report.
                Err(rustls::Error::AlertReceived(rustls::AlertDescription::CloseNotify)) => {
                    self.peer_closed = true;
                    break;
                }
                Err(e) => {
                    // Send the alert rustls prepared, then fail.
                    self.flush_tls(relay);
                    return Err(Error::Tls(e.to_string()));
                }
            }
            if !self.conn.is_handshaking()
                && let Some(check) = self.check.take()
            {
                let chain = self.conn.peer_certificates().unwrap_or(&[]);
                match check(chain) {
                    Ok(identity) => {
                        // The connection's span (the daemon's) carries it from now on.
                        tracing::Span::current()
                            .record("identity", tracing::field::display(&identity));
                        tracing::info!(%identity, "TLS peer identity");
                        self.identity = Some(identity);
                    }
                    Err(reason) => {
                        self.conn.send_close_notify();
                        self.flush_tls(relay);
                        return Err(Error::Tls(format!("peer identity refused: {reason}")));
                    }
                }
            }
            // Plaintext straight from rustls' buffer (no zeroed scratch, one copy).
            let mut reader = self.conn.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => {
                        self.peer_closed = true;
                        break;
                    }
                    Ok(chunk) => {
                        let n = chunk.len();
                        plain.extend_from_slice(chunk);
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(Error::Tls(e.to_string())),
                }
            }
        }
        let (result, written) = self.with_inner(relay, |inner, r| {
            if plain.is_empty() {
                Ok(())
            } else {
                inner.on_network_data(&plain, r)
            }
        });
        if result.is_err() {
            // The inner transport ended the conversation (a bad handshake, after
            // its answer): close_notify tells the client that answer is whole,
            // not cut short by an attacker.
            self.conn.send_close_notify();
            self.flush_tls(relay);
        }
        if self.peer_closed {
            // close_notify: the client's end of the conversation, even if it
            // keeps the TCP connection open for our answer.
            relay.network_ended();
        }
        result.and(written)
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let (result, written) = self.with_inner(relay, |inner, r| inner.on_service_data(data, r));
        result.and(written)
    }

    fn network_drained(&mut self, relay: &mut Relay<'_>) {
        self.quietly(relay, |inner, r| inner.network_drained(r));
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        self.quietly(relay, |inner, r| inner.accepted(r));
    }

    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        self.quietly(relay, |inner, r| inner.refused(refusal, r));
        self.conn.send_close_notify();
        self.flush_tls(relay);
    }

    fn handshake_phase(&self) -> Option<&'static str> {
        if self.conn.is_handshaking() {
            Some("TLS handshake")
        } else {
            self.inner.handshake_phase()
        }
    }

    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        let (probed, written) = self.with_inner(relay, |inner, r| inner.keepalive(r));
        written?;
        probed
    }

    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        let (asked, written) = self.with_inner(relay, |inner, r| inner.going_away(r));
        asked && written.is_ok()
    }

    fn can_go_away(&self) -> bool {
        self.inner.can_go_away()
    }

    fn network_closed(&mut self) -> Result<()> {
        if self.conn.is_handshaking() {
            return Err(Error::Handshake("closed during the TLS handshake".into()));
        }
        self.inner.network_closed()?;
        if !self.peer_closed {
            // Not fatal for what was already delivered, but worth a log line:
            // a truncation attack looks like this.
            tracing::debug!("TLS peer closed without close_notify");
        }
        Ok(())
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        self.quietly(relay, |inner, r| inner.service_closed(r, clean));
        self.conn.send_close_notify();
        self.flush_tls(relay);
    }

    fn describe(&self, info: &mut PeerInfo) {
        let server_name = match &self.conn {
            Connection::Server(s) => s.server_name().map(str::to_owned),
            Connection::Client(_) => None,
        };
        info.tls = Some(TlsInfo {
            version: self.conn.protocol_version().map(|v| format!("{v:?}")),
            server_name,
            alpn: self
                .conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            identity: self.identity.clone(),
        });
        self.inner.describe(info);
    }
}
