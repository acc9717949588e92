//! TLS as a transport layer (rustls, sans-I/O): decrypts what the network sends
//! and hands the plaintext to the transport it wraps, and encrypts what that one
//! produces. So `Tls<Routed<Frames>>` is tlsd, and a WebSocket transport inside
//! `Tls` is wss: TLS is written once.
//!
//! On rustls' unbuffered API: the records a read brings are decrypted where
//! they lie, in a buffer of ours that exists only while a record is cut short
//! by the read (taken from and given back to the thread's pool). rustls'
//! buffered connection keeps a 4 KiB read buffer for as long as the connection
//! lives, which was most of an idle TLS connection's cost.

use std::cell::RefCell;
use std::mem;
use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerConnectionData, UnbufferedServerConnection,
};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::{ClientConfig, CommonState, ServerConfig};

use crate::error::{Error, Result};
use crate::pool;
use crate::queue::OutQueue;
use crate::switch::{PeerInfo, Refusal, Relay, TlsInfo, Transport};

/// Plaintext waiting for the handshake to finish before it can be encrypted:
/// what a service sends before then waits (bounded), later writes go at once.
const PLAINTEXT_LIMIT: usize = 1 << 20;

/// Most bytes of a record (or of records making one handshake message, at most
/// 64 KiB in rustls) left waiting for the rest of it. rustls refuses anything
/// larger before this is reached; this bounds what a peer can make us hold
/// should it not.
const INCOMPLETE_LIMIT: usize = 80 << 10;

/// Judges the peer's certificate chain once the handshake is done: `Ok` with the
/// identity to log, or `Err` with the reason it is refused.
pub type PeerCheck =
    Arc<dyn Fn(&[CertificateDer<'_>]) -> std::result::Result<String, String> + Send + Sync>;

thread_local! {
    /// The server name the last ClientHello on this thread asked for, from
    /// [`ReportSni`]; taken by the server connection whose records were
    /// being processed (rustls resolves the certificate synchronously, on
    /// the thread processing them).
    static ASKED_SNI: RefCell<Option<Box<str>>> = const { RefCell::new(None) };
}

/// A certificate resolver that also tells the connection the server name its
/// client asked for (SNI, as rustls validated and lowercased it), for the
/// peer info. rustls' unbuffered server connection does not expose it: a
/// server configuration for [`Tls::server`] resolves through this, or its
/// connections report no server name.
#[derive(Debug)]
pub struct ReportSni(pub Arc<dyn ResolvesServerCert>);

impl ResolvesServerCert for ReportSni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        ASKED_SNI.set(hello.server_name().map(Box::from));
        self.0.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.0.only_raw_public_keys()
    }
}

/// Either side of a TLS connection.
enum Side {
    Server(Box<UnbufferedServerConnection>),
    Client(Box<UnbufferedClientConnection>),
}

/// What [`pump`] needs of either side's connection.
trait Records {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

/// `process_tls_records` is the same call on each side, defined per side.
macro_rules! records {
    ($conn:ty, $data:ty) => {
        impl Records for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
        }
    };
}

records!(UnbufferedServerConnection, ServerConnectionData);
records!(UnbufferedClientConnection, ClientConnectionData);

/// Whether close_notify is to be sent, or was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    No,
    Wanted,
    Sent,
}

/// The byte buffers of a connection, apart from rustls' state.
#[derive(Debug)]
struct Buffers {
    /// Records read and not yet processed: empty (and without an allocation)
    /// unless a read ended inside a record.
    incoming: Vec<u8>,
    /// Plaintext to encrypt once the handshake allows.
    pending: Vec<u8>,
    close: Close,
    /// The peer sent close_notify.
    peer_closed: bool,
}

/// TLS around `inner`.
pub struct Tls<T> {
    side: Side,
    io: Buffers,
    inner: T,
    /// The server name the client asked for (server side).
    sni: Option<Box<str>>,
    /// Run once, when the handshake completes.
    check: Option<PeerCheck>,
    /// What the check said about the peer's certificate.
    identity: Option<String>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Tls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let common = self.common();
        f.debug_struct("Tls")
            .field("server", &matches!(self.side, Side::Server(_)))
            .field("handshaking", &common.is_handshaking())
            .field("version", &common.protocol_version())
            .field("io", &self.io)
            .field("inner", &self.inner)
            .field("check", &self.check.is_some())
            .field("identity", &self.identity)
            .finish()
    }
}

impl<T> Tls<T> {
    /// The connection's state (peer certificates, version, ALPN).
    pub fn common(&self) -> &CommonState {
        match &self.side {
            Side::Server(c) => c,
            Side::Client(c) => c,
        }
    }
}

impl<T: Transport> Tls<T> {
    /// The server side (an accepted client) with `config`. Its resolver is
    /// to be a [`ReportSni`] for the client's server name to be reported.
    pub fn server(config: Arc<ServerConfig>, inner: T) -> Result<Self> {
        let conn =
            UnbufferedServerConnection::new(config).map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self::wrap(Side::Server(Box::new(conn)), inner))
    }

    /// The client side (dialling a remote daemon called `server_name`).
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        inner: T,
    ) -> Result<Self> {
        let conn = UnbufferedClientConnection::new(config, server_name)
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self::wrap(Side::Client(Box::new(conn)), inner))
    }

    fn wrap(side: Side, inner: T) -> Self {
        Tls {
            side,
            io: Buffers {
                incoming: Vec::new(),
                pending: Vec::new(),
                close: Close::No,
                peer_closed: false,
            },
            inner,
            sni: None,
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

    /// Runs rustls over what is buffered: decrypted data is added to `plain`,
    /// records for the network to `out`, and `extra` (plaintext) is encrypted
    /// after what waits, or waits too while the handshake does.
    fn pump(
        &mut self,
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        extra: &[u8],
    ) -> std::result::Result<(), rustls::Error> {
        let mut extra = extra;
        let asking = matches!(self.side, Side::Server(_)) && self.common().is_handshaking();
        if asking {
            // Only what is set during this call is this connection's.
            ASKED_SNI.take();
        }
        let r = self.drive(plain, out, &mut extra, false);
        if asking && let Some(name) = ASKED_SNI.take() {
            // Its ClientHello was processed (again, after a HelloRetryRequest:
            // the same name, rustls checks).
            self.sni = Some(name);
        }
        let (left, room) = (self.io.incoming.len(), self.io.incoming.capacity());
        if left == 0 {
            pool::give(mem::take(&mut self.io.incoming));
        } else if room > 2 * left.max(pool::SMALL) {
            // A record cut by a large read: what waits for the rest of it
            // moves to a buffer of its size, so that a peer that stops there
            // keeps at most that, not the read's buffer.
            let mut fit = if left <= pool::SMALL {
                pool::take(left)
            } else {
                Vec::with_capacity(left)
            };
            fit.extend_from_slice(&self.io.incoming);
            pool::give(mem::replace(&mut self.io.incoming, fit));
        }
        r?;
        if !extra.is_empty() {
            if self.io.pending.len() + extra.len() > PLAINTEXT_LIMIT {
                return Err(rustls::Error::General(format!(
                    "more than {PLAINTEXT_LIMIT} bytes from the service before the TLS handshake finished"
                )));
            }
            self.io.pending.extend_from_slice(extra);
        }
        if self.io.incoming.len() > INCOMPLETE_LIMIT {
            return Err(rustls::Error::General(format!(
                "{} bytes of an unfinished TLS record or handshake message",
                self.io.incoming.len()
            )));
        }
        Ok(())
    }

    /// [`pump`] on this connection's side.
    fn drive(
        &mut self,
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        extra: &mut &[u8],
        failed: bool,
    ) -> std::result::Result<(), rustls::Error> {
        match &mut self.side {
            Side::Server(c) => pump(&mut **c, &mut self.io, plain, out, extra, failed),
            Side::Client(c) => pump(&mut **c, &mut self.io, plain, out, extra, failed),
        }
    }

    /// After a failure: the alert rustls prepared, and nothing else. (What
    /// is left of the input stays: rustls may still point into it.)
    fn alert(&mut self, relay: &mut Relay<'_>) {
        let (mut plain, mut out, mut extra) = (Vec::new(), Vec::new(), &[][..]);
        let _ = self.drive(&mut plain, &mut out, &mut extra, true);
        relay.to_network(&out);
    }

    /// Sends close_notify once the handshake allows, after what waits.
    fn close_notify(&mut self, relay: &mut Relay<'_>) {
        if self.io.close == Close::No {
            self.io.close = Close::Wanted;
        }
        if let Err(e) = self.flush(relay, &[]) {
            tracing::debug!(error = %e, "TLS: close_notify not sent");
        }
    }

    /// Encrypts `plain` for the network (or keeps it until the handshake is
    /// done), with whatever else rustls has to send.
    fn flush(&mut self, relay: &mut Relay<'_>, plain: &[u8]) -> Result<()> {
        if plain.is_empty() && self.io.close != Close::Wanted && !self.common().is_handshaking() {
            // Once the handshake is done rustls has something to send only
            // after input, and that was sent where the input was processed.
            return Ok(());
        }
        let mut out = Vec::new();
        let r = self.pump(&mut Vec::new(), &mut out, plain);
        relay.to_network(&out);
        r.map_err(|e| Error::Tls(e.to_string()))
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
        if finished.is_some() {
            // The inner transport ended the conversation: so does TLS.
            self.io.close = Close::Wanted;
        }
        let written = self.flush(relay, &plain);
        if let Some(reason) = finished {
            relay.finish(reason);
        }
        (result, written)
    }

    /// [`Tls::with_inner`] for hooks that cannot fail: a write that cannot be
    /// encrypted (only possible before the handshake) is logged.
    fn quietly(&mut self, relay: &mut Relay<'_>, f: impl FnOnce(&mut T, &mut Relay<'_>)) {
        if let ((), Err(e)) = self.with_inner(relay, f) {
            tracing::warn!(error = %e, "TLS: output dropped");
        }
    }

    /// Once the handshake is done: the peer check, if any.
    fn check_peer(&mut self, relay: &mut Relay<'_>) -> Result<()> {
        if self.common().is_handshaking() {
            return Ok(());
        }
        let Some(check) = self.check.take() else {
            return Ok(());
        };
        let chain = self.common().peer_certificates().unwrap_or(&[]);
        match check(chain) {
            Ok(identity) => {
                // The connection's span (the daemon's) carries it from now on.
                tracing::Span::current().record("identity", tracing::field::display(&identity));
                tracing::info!(%identity, "TLS peer identity");
                self.identity = Some(identity);
                Ok(())
            }
            Err(reason) => {
                self.close_notify(relay);
                Err(Error::Tls(format!("peer identity refused: {reason}")))
            }
        }
    }
}

/// Runs `conn` until it needs more input or has nothing more to do. In
/// `failed` mode (after an error), only the record it has queued (its alert)
/// is encoded.
fn pump<C: Records>(
    conn: &mut C,
    io: &mut Buffers,
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
    extra: &mut &[u8],
    failed: bool,
) -> std::result::Result<(), rustls::Error> {
    // What rustls is done with is skipped, and removed once at the end: to
    // rustls, the buffer it is given next starts after it, which is what
    // removing it means (and removing it after each record would move what
    // follows once per record).
    let mut start = 0;
    // In a closure so that `?` still leaves through the removal below.
    let mut rounds = || -> std::result::Result<(), rustls::Error> {
        // Each round consumes input, produces output or stops; the bound only
        // guards against a state rustls would repeat.
        for _ in 0..100_000 {
            let UnbufferedStatus { mut discard, state } = conn.process(&mut io.incoming[start..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    start += discard;
                    return Err(e);
                }
            };
            let mut done = false;
            match state {
                ConnectionState::ReadTraffic(mut records) if !failed => {
                    while let Some(record) = records.next_record() {
                        let AppDataRecord {
                            discard: taken,
                            payload,
                        } = record?;
                        discard += taken;
                        plain.extend_from_slice(payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut record) => {
                    append(out, 4096, |buf| match record.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(e)) => Err(Ok(e.required_size)),
                        Err(e) => Err(Err(rustls::Error::General(e.to_string()))),
                    })?;
                }
                ConnectionState::TransmitTlsData(mut sent) => {
                    // `out` goes to the network in order: as good as sent.
                    if !failed && let Some(mut traffic) = sent.may_encrypt_app_data() {
                        write_traffic(&mut traffic, &mut io.pending, &mut io.close, out, extra)?;
                    }
                    sent.done();
                }
                ConnectionState::WriteTraffic(mut traffic) if !failed => {
                    done =
                        !write_traffic(&mut traffic, &mut io.pending, &mut io.close, out, extra)?;
                }
                ConnectionState::PeerClosed if !failed => io.peer_closed = true,
                // BlockedHandshake (more input needed), Closed, and ReadEarlyData,
                // which never comes: no configuration of ours accepts early data.
                _ => done = true,
            }
            start += discard;
            // After a failure rustls has queued one record, its alert, and
            // handed it out first: calling it again would process input again.
            if done || failed {
                return Ok(());
            }
        }
        Err(rustls::Error::General(
            "TLS state machine did not settle".into(),
        ))
    };
    let r = rounds();
    io.incoming.drain(..start);
    r
}

/// Encrypts what waits, then `extra`, then close_notify if wanted; false if
/// there was nothing to write.
fn write_traffic<D>(
    traffic: &mut WriteTraffic<'_, D>,
    pending: &mut Vec<u8>,
    close: &mut Close,
    out: &mut Vec<u8>,
    extra: &mut &[u8],
) -> std::result::Result<bool, rustls::Error> {
    let mut wrote = false;
    for plain in [mem::take(pending).as_slice(), mem::take(extra)] {
        if !plain.is_empty() {
            // Records of at most 16 KiB, each with a header, a tag and
            // (TLS 1.3) a content type or (TLS 1.2) a nonce: under 64 B.
            let room = plain.len() + (plain.len() / (16 << 10) + 1) * 64;
            append(out, room, |buf| {
                traffic.encrypt(plain, buf).map_err(encrypt_error)
            })?;
            wrote = true;
        }
    }
    if *close == Close::Wanted {
        append(out, 64, |buf| {
            traffic.queue_close_notify(buf).map_err(encrypt_error)
        })?;
        *close = Close::Sent;
        wrote = true;
    }
    Ok(wrote)
}

fn encrypt_error(e: EncryptError) -> std::result::Result<usize, rustls::Error> {
    match e {
        EncryptError::InsufficientSize(e) => Ok(e.required_size),
        e => Err(rustls::Error::General(e.to_string())),
    }
}

/// Appends what `write` puts in a buffer to `out`: `room` bytes are offered,
/// then what it says it needs (`Err(Ok(size))`).
fn append(
    out: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(
        &mut [u8],
    ) -> std::result::Result<usize, std::result::Result<usize, rustls::Error>>,
) -> std::result::Result<(), rustls::Error> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Ok(needed)) if needed > room => room = needed,
            Err(Ok(_)) => {
                out.truncate(start);
                return Err(rustls::Error::General("TLS record did not fit".into()));
            }
            Err(Err(e)) => {
                out.truncate(start);
                return Err(e);
            }
        }
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

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let need = self.io.incoming.len() + data.len();
        if self.io.incoming.capacity() < need {
            // From the pool rather than grown: what waits is short, the read
            // may be long.
            let mut room = pool::take(need);
            room.extend_from_slice(&self.io.incoming);
            pool::give(mem::replace(&mut self.io.incoming, room));
        }
        self.io.incoming.extend_from_slice(data);
        let mut plain = Vec::new();
        let mut out = Vec::new();
        match self.pump(&mut plain, &mut out, &[]) {
            Ok(()) => {}
            // A close_notify rustls did not take as the end of the data
            // (sent as a fatal-level alert by some peers): still the peer's
            // clean end, not a failure to report.
            Err(rustls::Error::AlertReceived(rustls::AlertDescription::CloseNotify)) => {
                self.io.peer_closed = true;
            }
            Err(e) => {
                // What went out before, then the alert rustls prepared.
                relay.to_network(&out);
                self.alert(relay);
                return Err(Error::Tls(e.to_string()));
            }
        }
        relay.to_network(&out);
        self.check_peer(relay)?;
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
            self.close_notify(relay);
        }
        if self.io.peer_closed {
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
        self.close_notify(relay);
    }

    fn handshake_phase(&self) -> Option<&'static str> {
        if self.common().is_handshaking() {
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
        if self.common().is_handshaking() {
            return Err(Error::Handshake("closed during the TLS handshake".into()));
        }
        self.inner.network_closed()?;
        if !self.io.peer_closed {
            // Not fatal for what was already delivered, but worth a log line:
            // a truncation attack looks like this.
            tracing::debug!("TLS peer closed without close_notify");
        }
        Ok(())
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        self.quietly(relay, |inner, r| inner.service_closed(r, clean));
        self.close_notify(relay);
    }

    fn describe(&self, info: &mut PeerInfo) {
        let common = self.common();
        info.tls = Some(TlsInfo {
            version: common.protocol_version().map(|v| format!("{v:?}")),
            server_name: self.sni.as_deref().map(str::to_owned),
            alpn: common
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            identity: self.identity.clone(),
        });
        self.inner.describe(info);
    }
}

#[cfg(test)]
mod tests {
    //! Both ends of a TLS connection in one process: records go from one
    //! end's network queue to the other's `on_network_data`.

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::RootCertStore;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::ResolvesServerCertUsingSni;

    use super::*;
    use crate::switch::Frames;

    /// A CA, and a server configuration with a certificate of it for
    /// `localhost` (resolved through [`ReportSni`]).
    fn server_of_a_new_ca() -> (Arc<ServerConfig>, CertificateDer<'static>) {
        static CAS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("test CA {n}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        let mut by_sni = ResolvesServerCertUsingSni::new();
        let certified = CertifiedKey::new(vec![leaf.der().clone()], signing);
        by_sni.add("localhost", certified).unwrap();
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ReportSni(Arc::new(by_sni))));
        (Arc::new(config), ca.der().clone())
    }

    fn client_trusting(ca: CertificateDer<'static>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(ca).unwrap();
        let config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// One end: its transport and what it queued each way.
    struct End {
        tls: Tls<Frames>,
        to_service: OutQueue,
        to_network: OutQueue,
        failed: Option<Error>,
    }

    impl End {
        fn new(tls: Tls<Frames>) -> End {
            End {
                tls,
                to_service: OutQueue::default(),
                to_network: OutQueue::default(),
                failed: None,
            }
        }

        fn with(&mut self, f: impl FnOnce(&mut Tls<Frames>, &mut Relay<'_>) -> Result<()>) {
            let mut relay = Relay::new(&mut self.to_service, &mut self.to_network);
            let r = f(&mut self.tls, &mut relay);
            if let Err(e) = r.and(relay.failed.take().map_or(Ok(()), |e| Err(e.into()))) {
                self.failed.get_or_insert(e);
            }
        }

        /// Gives this end what `from` sent, `cut` bytes at a time.
        fn receive(&mut self, from: &mut End, cut: usize) {
            let bytes = from.to_network.take_bytes();
            for piece in bytes.chunks(cut.max(1)) {
                self.with(|t, r| t.on_network_data(piece, r));
            }
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    /// A client for `localhost` and a server, the client's ClientHello
    /// queued for the server.
    fn started(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> (End, End) {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = End::new(Tls::client(client, name, Frames::new(1 << 20)).unwrap());
        let s = End::new(Tls::server(server, Frames::new(1 << 20)).unwrap());
        c.with(|t, r| {
            t.start(r);
            Ok(())
        });
        (c, s)
    }

    /// A client and a server through their handshake, records cut in
    /// pieces of `cut` bytes.
    fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, cut: usize) -> (End, End) {
        let (mut c, mut s) = started(server, client);
        for _ in 0..10 {
            s.receive(&mut c, cut);
            c.receive(&mut s, cut);
        }
        (c, s)
    }

    #[test]
    fn data_crosses_both_ways_and_idle_ends_hold_no_buffers() {
        let (server, ca) = server_of_a_new_ca();
        for cut in [1, 7, 100, 1 << 20] {
            let (mut c, mut s) = handshake(server.clone(), client_trusting(ca.clone()), cut);
            assert!(c.failed.is_none() && s.failed.is_none(), "{:?}", s.failed);
            assert!(!s.tls.common().is_handshaking());
            // Data each way, with records cut anywhere.
            let big: Vec<u8> = (0..100_000).map(|i| i as u8).collect();
            let sent = [frame(b"hello"), frame(&big)].concat();
            c.with(|t, r| t.on_service_data(&sent, r));
            s.receive(&mut c, cut);
            assert_eq!(s.to_service.take_bytes(), sent, "cut {cut}");
            s.with(|t, r| t.on_service_data(&sent, r));
            c.receive(&mut s, cut);
            assert_eq!(c.to_service.take_bytes(), sent, "cut {cut}");
            // Nothing kept once nothing is in flight.
            for end in [&c, &s] {
                assert_eq!(end.tls.io.incoming.capacity(), 0, "cut {cut}");
                assert_eq!(end.tls.io.pending.capacity(), 0, "cut {cut}");
            }
            let mut info = PeerInfo::default();
            s.tls.describe(&mut info);
            let tls = info.tls.unwrap();
            assert_eq!(tls.server_name.as_deref(), Some("localhost"));
            assert_eq!(tls.version.as_deref(), Some("TLSv1_3"));
            // close_notify from the service's end reaches the other.
            s.with(|t, r| {
                t.service_closed(r, true);
                Ok(())
            });
            c.receive(&mut s, cut);
            assert!(c.tls.io.peer_closed, "cut {cut}");
        }
    }

    #[test]
    fn a_record_cut_by_a_large_read_keeps_a_buffer_of_its_size() {
        let (server, ca) = server_of_a_new_ca();
        let (mut c, mut s) = handshake(server, client_trusting(ca), 1 << 20);
        let sent = frame(&vec![5; 200_000]);
        c.with(|t, r| t.on_service_data(&sent, r));
        let bytes = c.to_network.take_bytes();
        // All but the end of the last record, in one read.
        let (most, end) = bytes.split_at(bytes.len() - 100);
        s.with(|t, r| t.on_network_data(most, r));
        let (left, room) = (s.tls.io.incoming.len(), s.tls.io.incoming.capacity());
        assert!(left > 0 && left < 17 << 10, "{left} bytes wait");
        assert!(
            room <= 2 * pool::SMALL.max(left),
            "{room} bytes held for the {left} of a cut record"
        );
        s.with(|t, r| t.on_network_data(end, r));
        assert!(s.failed.is_none(), "{:?}", s.failed);
        assert_eq!(s.to_service.take_bytes(), sent);
        assert_eq!(s.tls.io.incoming.capacity(), 0);
    }

    #[test]
    fn the_server_name_reported_is_the_one_this_client_asked_for() {
        let (server, ca) = server_of_a_new_ca();
        // Left on the thread by another connection (a resolver call no
        // connection took), and not what this one asked for.
        ASKED_SNI.set(Some("elsewhere.example".into()));
        let (_, s) = handshake(server, client_trusting(ca), 1);
        assert!(s.failed.is_none(), "{:?}", s.failed);
        let mut info = PeerInfo::default();
        s.tls.describe(&mut info);
        assert_eq!(info.tls.unwrap().server_name.as_deref(), Some("localhost"));
    }

    #[test]
    fn what_the_service_sends_during_the_handshake_waits_for_it() {
        let (server, ca) = server_of_a_new_ca();
        let (mut c, mut s) = started(server, client_trusting(ca));
        let early = frame(b"before the handshake");
        c.with(|t, r| t.on_service_data(&early, r));
        for _ in 0..5 {
            s.receive(&mut c, 1 << 20);
            c.receive(&mut s, 1 << 20);
        }
        assert!(c.failed.is_none() && s.failed.is_none());
        assert_eq!(s.to_service.take_bytes(), early);
        // Past the limit, before the handshake, is an error, not a loss.
        let mut c = End::new(
            Tls::client(
                client_trusting(server_of_a_new_ca().1),
                ServerName::try_from("localhost").unwrap(),
                Frames::new(4 << 20),
            )
            .unwrap(),
        );
        let too_much = frame(&vec![0; PLAINTEXT_LIMIT + 1]);
        c.with(|t, r| t.on_service_data(&too_much, r));
        assert!(matches!(c.failed, Some(Error::Tls(_))), "{:?}", c.failed);
    }

    #[test]
    fn a_server_of_another_ca_is_refused_with_an_alert() {
        let (server, _) = server_of_a_new_ca();
        let (_, other_ca) = server_of_a_new_ca();
        let (c, mut s) = handshake(server, client_trusting(other_ca), 1 << 20);
        let Some(Error::Tls(why)) = &c.failed else {
            panic!("the client did not fail: {:?}", c.failed);
        };
        assert!(why.contains("UnknownIssuer"), "{why}");
        // The server was told why, as an alert, and fails with it.
        let mut c = c;
        s.receive(&mut c, 1 << 20);
        let Some(Error::Tls(why)) = &s.failed else {
            panic!("the server did not fail: {:?}", s.failed);
        };
        assert!(why.contains("UnknownCA"), "{why}");
    }

    #[test]
    fn garbage_gets_an_alert_and_an_error() {
        let (server, _) = server_of_a_new_ca();
        let mut s = End::new(Tls::server(server, Frames::new(1 << 20)).unwrap());
        s.with(|t, r| t.on_network_data(b"GET / HTTP/1.1\r\n\r\n", r));
        assert!(matches!(s.failed, Some(Error::Tls(_))), "{:?}", s.failed);
        let alert = s.to_network.take_bytes();
        assert_eq!(alert.first(), Some(&21), "an alert record: {alert:?}");
    }

    /// The CA and server of the property test, made once.
    fn shared_server() -> &'static (Arc<ServerConfig>, CertificateDer<'static>) {
        static SERVER: std::sync::OnceLock<(Arc<ServerConfig>, CertificateDer<'static>)> =
            std::sync::OnceLock::new();
        SERVER.get_or_init(server_of_a_new_ca)
    }

    /// A session whose client-to-server bytes are cut by `cuts` (in turn)
    /// and, with `garbage`, have bytes inserted at an offset: what the server
    /// gives its service.
    fn session(cuts: &[usize], garbage: Option<(usize, Vec<u8>)>) -> (Vec<u8>, Vec<u8>, End) {
        let (server, ca) = shared_server().clone();
        let (mut c, mut s) = started(server, client_trusting(ca));
        let sent = [frame(b"first"), frame(&[7; 40_000]), frame(b"last")].concat();
        c.with(|t, r| t.on_service_data(&sent, r));
        let (mut offset, mut garbage, mut turn) = (0, garbage, 0);
        for _ in 0..8 {
            let mut bytes = c.to_network.take_bytes();
            if let Some((at, junk)) = garbage.take_if(|(at, _)| *at <= offset + bytes.len()) {
                let at = at.saturating_sub(offset);
                bytes.splice(at..at, junk);
            }
            offset += bytes.len();
            let mut rest = &bytes[..];
            while !rest.is_empty() && s.failed.is_none() {
                let n = cuts[turn % cuts.len()].clamp(1, rest.len());
                turn += 1;
                s.with(|t, r| t.on_network_data(&rest[..n], r));
                rest = &rest[n..];
            }
            c.receive(&mut s, 1 << 20);
        }
        (sent, s.to_service.take_bytes(), s)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Records cut anywhere arrive whole; bytes inserted anywhere never
        /// reach the service (what does is a prefix of what was sent) and
        /// never panic.
        #[test]
        fn cut_records_arrive_whole_and_inserted_bytes_never_pass(
            cuts in proptest::collection::vec(1usize..3000, 1..8),
            garbage in proptest::option::of((
                // In the handshake (the client's first flights) or anywhere.
                proptest::prop_oneof![0usize..2_000, 0usize..50_000], proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40))),
        ) {
            let with_garbage = garbage.is_some();
            let (sent, got, s) = session(&cuts, garbage);
            if with_garbage {
                proptest::prop_assert!(sent.starts_with(&got), "{} bytes not sent reached the service", got.len());
            } else {
                proptest::prop_assert!(s.failed.is_none(), "{:?}", s.failed);
                proptest::prop_assert_eq!(got, sent);
            }
        }
    }
}
