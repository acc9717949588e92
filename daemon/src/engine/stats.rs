//! What a daemon counts for its operators: connections open and accepted,
//! refusals and failed handshakes by reason, and per service the connections and
//! the traffic each way. Shared by the workers; read by a metrics endpoint (the
//! binaries serve it: the library binds no port).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libipc::switch::Refusal;
use libipc::traffic::Traffic;

/// A daemon's counters. Connection counts are atomics; the rest is updated
/// under a lock when a connection is routed or closed, and once a second per
/// worker for the traffic of open connections.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) open: AtomicUsize,
    accepted: AtomicU64,
    outbound_handed_off: AtomicU64,
    totals: Mutex<Totals>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Network connections open now (in their handshake or relayed).
    pub open: u64,
    /// Network connections accepted since start.
    pub accepted: u64,
    /// Outbound connections given to the local clients that asked for them
    /// (`--handoff`), since start.
    pub outbound_handed_off: u64,
    /// Clients turned away or failed before reaching a service, by reason
    /// ("unknown service", "TLS handshake failed", "too many connections", ...).
    pub refused: BTreeMap<String, u64>,
    /// Per service reached.
    pub services: BTreeMap<String, ServiceStats>,
}

/// One service's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Connections relayed to it now.
    pub open: u64,
    /// Connections relayed to it since start.
    pub connections: u64,
    /// What crossed them (open connections: as of the last second).
    pub traffic: Traffic,
    /// Clients handed to it (`--handoff`): the service's since, not counted
    /// in `open`, `connections` nor `traffic`.
    pub handed_off: u64,
}

#[derive(Debug, Default)]
struct Totals {
    refused: BTreeMap<String, u64>,
    services: BTreeMap<String, ServiceStats>,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            open: self.open.load(Ordering::Relaxed) as u64,
            accepted: self.accepted.load(Ordering::Relaxed),
            outbound_handed_off: self.outbound_handed_off.load(Ordering::Relaxed),
            refused: totals.refused.clone(),
            services: totals.services.clone(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Totals) -> R) -> R {
        f(&mut self.totals.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was refused (counted under the refusal's label).
    pub(crate) fn refused(&self, refusal: Refusal) {
        self.count_failure(&refusal.label());
    }

    /// A client failed its handshake.
    pub(crate) fn failed(&self, failure: Failure) {
        self.count_failure(failure.label());
    }

    fn count_failure(&self, label: &str) {
        self.with(|t| *t.refused.entry(label.to_owned()).or_default() += 1);
    }

    /// A connection was relayed to `service`.
    pub(crate) fn routed(&self, service: &str) {
        self.with(|t| {
            let s = t.services.entry(service.to_owned()).or_default();
            s.open += 1;
            s.connections += 1;
        });
    }

    /// An outbound connection was given to its local client.
    pub(crate) fn outbound_handed_off(&self) {
        self.outbound_handed_off.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was handed to `service` itself.
    pub(crate) fn handed_off(&self, service: &str) {
        self.with(|t| t.services.entry(service.to_owned()).or_default().handed_off += 1);
    }

    /// Traffic on connections to `service` since it was last added.
    pub(crate) fn add_traffic(&self, service: &str, delta: Traffic, closed: bool) {
        self.with(|t| {
            let s = t.services.entry(service.to_owned()).or_default();
            let tr = &mut s.traffic;
            tr.bytes_in += delta.bytes_in;
            tr.bytes_out += delta.bytes_out;
            tr.messages_in += delta.messages_in;
            tr.messages_out += delta.messages_out;
            if closed {
                s.open = s.open.saturating_sub(1);
            }
        });
    }
}

/// How a client failed before reaching a service, when it was not refused:
/// the label it is counted under with the refusals (`reason` in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Its TLS handshake failed.
    Tls,
    /// A balancer's PROXY protocol header was bad.
    ProxyHeader,
    /// It broke the handshake (a bad name frame, a bad HTTP request).
    BadHandshake,
    /// It left before naming a service.
    ClosedEarly,
    /// Its socket was lost on the way to its service (the service went away
    /// between the daemon's connect and send).
    Handoff,
}

impl Failure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Tls => "TLS handshake failed",
            Failure::ProxyHeader => "bad PROXY header",
            Failure::BadHandshake => "bad handshake",
            Failure::ClosedEarly => "closed during the handshake",
            Failure::Handoff => "handoff failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let s = Stats::default();
        s.accepted();
        s.accepted();
        s.refused(Refusal::UnknownService);
        s.failed(Failure::Tls);
        s.routed("pong");
        let t = Traffic {
            bytes_in: 9,
            bytes_out: 9,
            messages_in: 1,
            messages_out: 1,
        };
        s.add_traffic("pong", t, false);
        s.add_traffic("pong", t, true);
        let snap = s.snapshot();
        assert_eq!(snap.accepted, 2);
        assert_eq!(snap.refused["unknown service"], 1);
        assert_eq!(snap.refused["TLS handshake failed"], 1);
        let pong = snap.services["pong"];
        assert_eq!((pong.open, pong.connections), (0, 1));
        assert_eq!(pong.traffic.bytes_in, 18);
        assert_eq!(pong.traffic.messages_out, 2);
    }
}
