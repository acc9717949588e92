//! Time in the event loop: per-connection deadlines and idle timeouts (a heap
//! of expiries, re-armed lazily), and listeners waiting to retry an accept.

use std::cmp::Reverse;
use std::time::Instant;

use crate::event::{ConnId, Event};

use super::Context;
use super::conn::{Conn, Role};

impl Context {
    pub(super) fn arm(&mut self, id: ConnId) {
        if let Some(at) = self.conns.get(id).and_then(Conn::expiry) {
            self.timers.push(Reverse((at, id.as_u64())));
        }
    }

    /// Reports the connections whose timeouts have passed.
    pub(super) fn expire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, raw))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = ConnId::from_u64(raw);
            let Some(c) = self.conns.get_mut(id).filter(|c| !c.dead) else {
                continue;
            };
            match c.expiry() {
                Some(due) if due <= now && c.lingering => {
                    self.end_linger(id);
                }
                // Let go, and its peer did not read the last words in time;
                // or a daemon's handoff that never finished.
                Some(due) if due <= now && (c.closing || matches!(c.role, Role::Handoff(_))) => {
                    self.remove(id)
                }
                Some(due) if due <= now && c.answering() => {
                    self.abandon_answer(id);
                }
                Some(due) if due <= now => {
                    c.deadline = None;
                    c.idle = None;
                    self.pending.push_back(Event::Timeout { id });
                }
                // Moved later since this entry was made (activity, a new deadline).
                Some(due) => self.timers.push(Reverse((due, raw))),
                None => {}
            }
        }
    }
}
