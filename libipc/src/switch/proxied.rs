//! The PROXY protocol as a transport layer: for a client that comes through a
//! trusted load balancer, the header the balancer puts first is read and
//! believed (the client's real address goes to the logs and the peer info),
//! then everything after it goes to the transport it wraps, which never sees
//! the header.

use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::proxy::{self, Header};
use crate::switch::{PeerInfo, Refusal, Relay, Transport};

/// A PROXY header (v1 or v2), then `inner`.
#[derive(Debug)]
pub struct Proxied<T> {
    /// What came so far while the header is incomplete; `None` once read.
    head: Option<Vec<u8>>,
    header: Option<Header>,
    /// The balancer: the connection's own peer.
    balancer: SocketAddr,
    /// Bytes after the header reached `inner`.
    fed: bool,
    inner: T,
}

impl<T: Transport> Proxied<T> {
    /// `inner` behind a PROXY header from `balancer`.
    pub fn new(inner: T, balancer: SocketAddr) -> Self {
        Proxied {
            head: Some(Vec::new()),
            header: None,
            balancer,
            fed: false,
            inner,
        }
    }

    /// A LOCAL header and nothing after it so far: the balancer probing.
    fn health_check(&self) -> bool {
        !self.fed && self.header.is_some_and(|h| h.local)
    }

    /// The client's address: the one the header gave, or the balancer's for
    /// a connection it made on its own behalf (a health check).
    fn client(&self) -> SocketAddr {
        self.header
            .and_then(|h| h.source())
            .unwrap_or(self.balancer)
    }
}

impl<T: Transport> Transport for Proxied<T> {
    fn can_hand_off(&self) -> bool {
        self.inner.can_hand_off()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn start(&mut self, relay: &mut Relay<'_>) {
        self.inner.start(relay);
    }

    fn on_network_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        let Some(head) = &mut self.head else {
            self.fed = true;
            return self.inner.on_network_data(data, relay);
        };
        // Bounded: parse decides within a v2 header's 64 KiB, plus one read.
        head.extend_from_slice(data);
        match proxy::parse(head) {
            Ok(None) => Ok(()),
            Ok(Some((header, len))) => {
                let head = self.head.take().unwrap_or_default();
                self.header = Some(header);
                let client = self.client();
                // The connection's span (the daemon's) carries it from now on.
                tracing::Span::current().record("peer", tracing::field::display(client));
                tracing::debug!(version = header.version, %client, "PROXY header");
                match &head[len..] {
                    [] => Ok(()),
                    rest => {
                        self.fed = true;
                        self.inner.on_network_data(rest, relay)
                    }
                }
            }
            Err(e) => {
                self.head = None;
                Err(Error::Proxy(e))
            }
        }
    }

    fn on_service_data(&mut self, data: &[u8], relay: &mut Relay<'_>) -> Result<()> {
        self.inner.on_service_data(data, relay)
    }

    fn network_drained(&mut self, relay: &mut Relay<'_>) {
        self.inner.network_drained(relay);
    }

    fn accepted(&mut self, relay: &mut Relay<'_>) {
        self.inner.accepted(relay);
    }

    fn refused(&mut self, refusal: Refusal, relay: &mut Relay<'_>) {
        // Before the header, the peer is a balancer, not a client of the inner
        // protocol: there is no one to answer.
        if self.header.is_some() {
            self.inner.refused(refusal, relay);
        }
    }

    fn handshake_phase(&self) -> Option<&'static str> {
        if self.head.is_some() {
            Some("PROXY header")
        } else if self.health_check() {
            // Not a client (yet): in fixed mode the service is not connected
            // for the balancer's own probes.
            Some("balancer health check")
        } else {
            self.inner.handshake_phase()
        }
    }

    fn keepalive(&mut self, relay: &mut Relay<'_>) -> Result<bool> {
        self.inner.keepalive(relay)
    }

    fn going_away(&mut self, relay: &mut Relay<'_>) -> bool {
        self.inner.going_away(relay)
    }

    fn can_go_away(&self) -> bool {
        self.inner.can_go_away()
    }

    fn network_closed(&mut self) -> Result<()> {
        if self.head.is_some() {
            return Err(Error::Handshake(
                "closed before the end of the PROXY header".into(),
            ));
        }
        if self.health_check() {
            // The balancer's health check (a LOCAL header, then a close):
            // not a client that broke its handshake.
            return Ok(());
        }
        self.inner.network_closed()
    }

    fn service_closed(&mut self, relay: &mut Relay<'_>, clean: bool) {
        self.inner.service_closed(relay, clean);
    }

    fn describe(&self, info: &mut PeerInfo) {
        info.address = Some(self.client());
        info.via = Some(self.balancer);
        self.inner.describe(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::OutQueue;
    use crate::switch::{Frames, Routed};

    fn balancer() -> SocketAddr {
        "10.0.0.2:41000".parse().unwrap()
    }

    /// Feeds `chunks` to a proxied tcpd transport; returns what it asked for
    /// and the first error.
    fn feed(chunks: &[&[u8]]) -> (Proxied<Routed<Frames>>, Option<Vec<u8>>, Result<()>) {
        let mut t = Proxied::new(Routed::new(Frames::new(1024)), balancer());
        let (mut to_svc, mut to_net) = (OutQueue::default(), OutQueue::default());
        let mut request = None;
        for c in chunks {
            let mut relay = Relay::new(&mut to_svc, &mut to_net);
            let r = t.on_network_data(c, &mut relay);
            request = request.or(relay.request.take());
            if r.is_err() {
                return (t, request, r);
            }
        }
        (t, request, Ok(()))
    }

    #[test]
    fn header_then_name_in_one_read_or_byte_by_byte() {
        let wire = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 9000\r\necho\n";
        let (t, request, r) = feed(&[wire]);
        r.unwrap();
        assert_eq!(request.as_deref(), Some(&b"echo"[..]));
        let mut info = PeerInfo::default();
        t.describe(&mut info);
        assert_eq!(info.address, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(info.via, Some(balancer()));
        // The header byte by byte (a raw name ends with its read, so it
        // comes whole).
        let (header, name) = wire.split_at(wire.len() - 5);
        let mut bytes: Vec<&[u8]> = header.chunks(1).collect();
        bytes.push(name);
        let (t, request, r) = feed(&bytes);
        r.unwrap();
        assert_eq!(request.as_deref(), Some(&b"echo"[..]));
        assert_eq!(t.handshake_phase(), None);
    }

    #[test]
    fn a_health_check_is_the_balancer_itself() {
        let local = Header {
            version: 2,
            addresses: None,
            local: true,
        }
        .encode();
        let (mut t, request, r) = feed(&[&local]);
        r.unwrap();
        assert_eq!(request, None);
        // Not a client: a fixed service waits (and the timeout names it).
        assert_eq!(t.handshake_phase(), Some("balancer health check"));
        // Then it closes: a clean end, not a bad handshake.
        assert!(t.network_closed().is_ok());
        let mut info = PeerInfo::default();
        t.describe(&mut info);
        assert_eq!(info.address, Some(balancer()));
    }

    #[test]
    fn no_header_is_a_bad_handshake() {
        let (_, request, r) = feed(&[b"echo\n"]);
        assert!(matches!(r, Err(Error::Proxy(_))), "{r:?}");
        assert_eq!(request, None);
        // Incomplete header, then the balancer closes.
        let (mut t2, _, r2) = feed(&[b"PROXY TCP4 192.0"]);
        r2.unwrap();
        assert_eq!(t2.handshake_phase(), Some("PROXY header"));
        assert!(t2.network_closed().is_err());
    }
}
