//! A worker's shutdown: stop accepting, ask clients whose transport can say
//! goodbye (a WebSocket close 1001) to leave once their service is quiet, and
//! let the rest finish within the drain timeout.

use std::io::Read;
use std::time::{Duration, Instant};

use libipc::ConnId;
use libipc::switch::DaemonExt;

use super::{TARGET, Worker};

/// On shutdown, how long a client held for its goodbye (a WebSocket close
/// 1001) waits with its service quiet before the goodbye is sent: time for
/// the service's answers to what it was given.
const QUIET_BEFORE_GOODBYE: Duration = Duration::from_millis(250);

impl Worker {
    pub(super) fn start_drain(&mut self) {
        if let Some((_, w)) = &self.wake {
            let mut buf = [0; 16];
            let _ = (&*w).read(&mut buf);
        }
        if self.draining.is_some() {
            return;
        }
        tracing::info!(target: TARGET, worker = self.n, open = self.conns.len(), "draining");
        for id in self.listeners.keys().copied().collect::<Vec<_>>() {
            let _ = self.ctx.close(id);
        }
        self.listeners.clear();
        for id in std::mem::take(&mut self.local_service) {
            let _ = self.ctx.close(id);
        }
        self.refuse_lookups();
        // Transports that can ask their peer to leave (WebSocket: close 1001)
        // do, once the service has answered what it was given: their clients
        // are no longer read, and the goodbye follows a quiet moment of the
        // service (at the latest half way through the drain time).
        let now = Instant::now();
        self.draining = Some(now + self.config.drain_timeout);
        let attached: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.service_id.is_some() && c.local.is_none())
            .map(|(&id, _)| id)
            .collect();
        let held = attached
            .into_iter()
            .filter(|&id| self.leave_when_quiet(id))
            .count();
        if held > 0 {
            tracing::info!(target: TARGET,
                worker = self.n,
                clients = held,
                "asking clients to leave once their services are quiet"
            );
        }
    }

    /// Draining: holds client `id` for its goodbye if its transport has one
    /// (see `DaemonExt::hold_for_goodbye`), sent once its service has been quiet
    /// for QUIET_BEFORE_GOODBYE, or half way through the drain time.
    pub(super) fn leave_when_quiet(&mut self, id: ConnId) -> bool {
        let (Some(drained), Some(conn)) = (self.draining, self.conns.get_mut(&id)) else {
            return false;
        };
        if !self.ctx.hold_for_goodbye(id) {
            return false;
        }
        conn.leaving = true;
        let _ = self.ctx.set_idle_timeout(id, Some(QUIET_BEFORE_GOODBYE));
        let halfway = drained - self.config.drain_timeout / 2;
        let _ = self.ctx.set_deadline(id, Some(halfway));
        true
    }
}
