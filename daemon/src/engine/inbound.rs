//! A worker's network clients: accepting them (within --max-connections, and
//! without spinning when out of descriptors), routing each to the service it
//! names or refusing it, and its timeouts (handshakes, keepalive, idle).

use std::io;
use std::time::{Duration, Instant};

use libipc::service::{AcceptBackoff, validate_name};
use libipc::switch::{DaemonExt, PeerInfo, Proxied, Refusal};
use libipc::{ConnId, Error};
use std::sync::atomic::Ordering;

use super::{Failure, NetConn, TARGET, Worker};

/// Clients past --max-connections a worker reads until it can refuse them in
/// their own form (see `Worker::accept`).
const MAX_OVERFLOW: usize = 64;

/// A service whose listen backlog is full (its accept loop fell behind a
/// burst) is tried again after each of these delays, then every last one,
/// until `DaemonConfig::busy_wait` is used up; only then is the client told
/// `service busy`. Timers of the loop, never a sleep: the worker serves
/// others meanwhile.
const BUSY_RETRIES: [Duration; 4] = [
    Duration::from_millis(5),
    Duration::from_millis(15),
    Duration::from_millis(30),
    Duration::from_millis(50),
];

impl Worker {
    pub(super) fn accept(&mut self, listener: ConnId) {
        for _ in 0..64 {
            let Some(l) = self.listeners.get(&listener) else {
                return;
            };
            let (stream, peer) = match l.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: the client
                    // waits in the backlog, served at the retry with no new
                    // connection needed to wake us.
                    if let Some(failures) = self.accept_backoff.failed(self.ctx.last_wake()) {
                        tracing::warn!(target: TARGET,
                            error = %e,
                            failures,
                            "accept failed; retrying in 100 ms"
                        );
                    }
                    let _ = self.ctx.retry_external_in(listener, AcceptBackoff::RETRY);
                    return;
                }
            };
            // Past the limit, a client is still read until it names its service
            // (or sends its HTTP request), so that it is refused in its own form
            // (a framed `no:`, an HTTP 503) rather than cut off mid-request. Only
            // MAX_OVERFLOW of those at a time; past that, closed at once.
            let overflow = self.stats.open.load(Ordering::Relaxed) >= self.config.max_connections;
            if overflow && self.overflow >= MAX_OVERFLOW {
                tracing::warn!(target: TARGET, %peer, limit = self.config.max_connections, "refused: too many connections");
                self.stats.refused(Refusal::TooManyConnections);
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.stats.accepted();
            let proxied = self
                .config
                .proxy_from
                .iter()
                .any(|net| net.contains(peer.ip()));
            let mut transport = (self.inbound)();
            if proxied {
                transport = Box::new(Proxied::new(transport, peer));
            }
            // Fixed mode: the service is asked for once the transport's own
            // handshake (TLS, the PROXY header) is done, so it never sees a
            // client that does not finish one.
            let added = match &self.config.fixed_service {
                Some(name) => self.ctx.add_network_for(stream.into(), transport, name),
                None => self.ctx.add_network(stream.into(), transport),
            };
            let id = match added {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(target: TARGET, %peer, error = %e, "cannot add connection");
                    continue;
                }
            };
            if overflow {
                self.overflow += 1;
            } else {
                self.stats.open.fetch_add(1, Ordering::Relaxed);
            }
            let mut conn = NetConn::new(peer, None, proxied);
            conn.overflow = overflow;
            self.ctx.set_span(id, conn.span.clone());
            self.conns.insert(id, Box::new(conn));
            tracing::debug!(target: TARGET, conn = %id, "accepted");
            // The first deadline: the transport's own handshake, or naming the
            // service, whichever is due first (see `timeout`).
            let first = self
                .config
                .transport_handshake_timeout
                .map_or(self.config.handshake_timeout, |t| {
                    t.min(self.config.handshake_timeout)
                });
            let _ = self.ctx.set_deadline(id, Some(Instant::now() + first));
        }
    }

    /// A client named its service (or the fixed one applies): connect or refuse.
    pub(super) fn route(&mut self, id: ConnId, name: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(local) = conn.local {
            // Outbound: the remote daemon said ok; join the waiting local
            // client, or give it the connection if it offered to take it.
            let offered = matches!(
                self.dialing.remove(&local),
                Some(super::dial::Dialing::Connecting { req, .. }) if req.handoff
            );
            if offered && self.config.handoff {
                let handed = self.ctx.hand_back(id, local);
                if !matches!(handed, Ok(Err(_))) {
                    if let Err(e) = &handed {
                        tracing::warn!(target: TARGET, conn = %id, error = %e, "handoff to the local client failed");
                        self.stats.failed(Failure::Handoff);
                    } else {
                        tracing::info!(target: TARGET, parent: &conn.span, "outbound handed off");
                        self.stats.outbound_handed_off();
                    }
                    self.forget(id, Some("handed off"));
                    return;
                }
            }
            // Keepalive probes (WebSocket pings) keep NATs and proxies on
            // the way from dropping a quiet outbound connection too.
            let quiet = self.quiet_timeout();
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if let Err(e) = self.ctx.attach(id, local) {
                tracing::warn!(target: TARGET, conn = %id, error = %e, "cannot join local client");
                let _ = self.ctx.refuse(id, Refusal::Internal);
            }
            conn.service_id = Some(local);
            let _ = self.ctx.set_deadline(id, None);
            let _ = self.ctx.set_idle_timeout(id, quiet);
            tracing::info!(target: TARGET, parent: &conn.span, "outbound connected");
            return;
        }
        let shown = String::from_utf8_lossy(&name[..name.len().min(80)]).into_owned();
        let refusal = match validate_name(name) {
            _ if conn.overflow => Some(Refusal::TooManyConnections),
            Err(_) => Some(Refusal::InvalidName),
            Ok(n) if !self.config.allow.is_empty() && !self.config.allow.iter().any(|a| a == n) => {
                Some(Refusal::NotAllowed)
            }
            Ok(_) => None,
        };
        conn.service = Some(shown.clone());
        conn.span.record("service", tracing::field::display(&shown));
        let span = conn.span.clone();
        let _in_conn = span.enter();
        let peer_info = self.config.peer_info.then(|| {
            let mut info = PeerInfo {
                address: Some(conn.peer),
                ..PeerInfo::default()
            };
            self.ctx.describe(id, &mut info);
            info.to_json()
        });
        if refusal.is_none() && self.config.handoff && !self.config.expose_outbound.contains(&shown)
        {
            let first = peer_info.as_deref().map(str::as_bytes);
            match self.ctx.hand_off(id, &shown, first) {
                Ok(Ok(())) => {
                    // Its line says so: "connection closed reason=handed off".
                    self.stats.handed_off(&shown);
                    self.forget(id, Some("handed off"));
                    return;
                }
                // Not a service that takes them (or not a plain client):
                // relayed as usual.
                Ok(Err(_)) => {}
                Err(e) => {
                    tracing::warn!(target: TARGET, conn = %id, error = %e, "handoff failed");
                    self.stats.failed(Failure::Handoff);
                    self.forget(id, Some("handoff failed"));
                    return;
                }
            }
        }
        let result = match refusal {
            Some(r) => Err(Some(r)),
            None => {
                let first = peer_info.as_deref().map(str::as_bytes);
                if self.config.expose_outbound.contains(&shown) {
                    self.ctx.attach_outbound_service_with(id, &shown, first)
                } else {
                    self.ctx.attach_service_with(id, &shown, first)
                }
            }
            .map_err(|e| match e {
                Error::Connect { source, .. } => Some(match source.kind() {
                    io::ErrorKind::NotFound => Refusal::UnknownService,
                    io::ErrorKind::WouldBlock => Refusal::ServiceBusy,
                    // Out of descriptors: the daemon is full, not the service.
                    _ if matches!(
                        source.raw_os_error().map(nix::errno::Errno::from_raw),
                        Some(nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE)
                    ) =>
                    {
                        Refusal::TooManyConnections
                    }
                    _ => Refusal::ServiceDown,
                }),
                // The client is gone already (it reset the connection
                // while the request waited): its DISCONNECTION, queued,
                // says so. Not the service's fault.
                Error::NoSuchConnection(_) | Error::WrongKind { .. } => None,
                _ => Some(Refusal::ServiceDown),
            }),
        };
        match result {
            Ok(svc) => {
                tracing::info!(target: TARGET, conn = %id, "connected");
                self.stats.routed(&shown);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.service_id = Some(svc);
                }
                let _ = self.ctx.set_deadline(id, None);
                let _ = self.ctx.set_idle_timeout(id, self.quiet_timeout());
                // Attached while draining (its upgrade was under way): it
                // gets its goodbye too, rather than waiting for the timeout.
                if self.draining.is_some() {
                    self.leave_when_quiet(id);
                }
            }
            Err(None) => {
                tracing::debug!(target: TARGET, "the client left before its service was attached")
            }
            Err(Some(Refusal::ServiceBusy)) if self.retry_busy(id, name) => {}
            Err(Some(refusal)) => {
                tracing::warn!(target: TARGET, reason = &*refusal.text(), "refused");
                self.stats.refused(refusal);
                if self.ctx.refuse(id, refusal).is_err() {
                    self.close_net(id, &refusal.text());
                }
            }
        }
    }

    /// Client `id`'s service was busy: tries it again after the next delay
    /// of BUSY_RETRIES, at the connection's deadline. False once
    /// `busy_wait` is used up (the client is refused then).
    fn retry_busy(&mut self, id: ConnId, name: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        let now = Instant::now();
        let busy = conn.busy.get_or_insert_with(Box::default);
        let first = *busy.since.get_or_insert(now);
        let left = self.config.busy_wait.saturating_sub(now - first);
        if left.is_zero() {
            return false;
        }
        let delay = BUSY_RETRIES[busy.tries.min(BUSY_RETRIES.len() - 1)].min(left);
        busy.tries += 1;
        busy.retry = Some(name.to_vec());
        tracing::debug!(target: TARGET, conn = %id, attempt = busy.tries, "service busy; trying again");
        let _ = self.ctx.set_deadline(id, Some(now + delay));
        true
    }

    pub(super) fn timeout(&mut self, id: ConnId) {
        if self.lookup_timed_out(id) {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(name) = conn.busy.as_mut().and_then(|b| b.retry.take()) {
            return self.route(id, &name);
        }
        if std::mem::take(&mut conn.leaving) {
            // Its service was quiet long enough (or half the drain time is
            // gone): the goodbye; the drain deadline covers the rest.
            let _ = self.ctx.set_deadline(id, None);
            let _ = self.ctx.set_idle_timeout(id, None);
            if self.ctx.going_away(id) {
                tracing::debug!(target: TARGET, parent: &conn.span, "asked to leave");
            }
            return;
        }
        if conn.service_id.is_none() && conn.local.is_none() {
            let in_transport = self.ctx.transport_handshake(id);
            let service_deadline = conn.since + self.config.handshake_timeout;
            if in_transport.is_none() && service_deadline > Instant::now() {
                // The transport's handshake finished in time: the client now has
                // the rest of the service handshake timeout to name its service.
                let _ = self.ctx.set_deadline(id, Some(service_deadline));
                return;
            }
            let refusal = Refusal::Timeout(in_transport);
            tracing::warn!(target: TARGET, parent: &conn.span, "refused: {refusal}");
            self.stats.refused(refusal);
            if self.ctx.refuse(id, refusal).is_err() {
                self.close_net(id, &refusal.text());
            }
            return;
        }
        if self.config.keepalive.is_some() {
            match self.ctx.keepalive(id) {
                Ok(true) => {
                    let _ = self.ctx.set_idle_timeout(id, self.config.keepalive);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    // The pair is already closing; its DISCONNECTION says why.
                    tracing::info!(target: TARGET, parent: &conn.span, error = %e, "keepalive failed");
                    return;
                }
            }
        }
        tracing::info!(target: TARGET, parent: &conn.span, "idle timeout");
        self.close_net(id, "idle timeout");
    }

    /// How long a connection past its handshakes may be quiet before the next
    /// step: a keepalive probe, or the idle timeout.
    pub(super) fn quiet_timeout(&self) -> Option<Duration> {
        self.config.keepalive.or(self.config.idle_timeout)
    }
}
