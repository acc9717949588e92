//! Time in the event loop: per-connection deadlines and idle timeouts (a heap
//! of expiries, re-armed lazily), and listeners waiting to retry an accept.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::{ConnId, Event};

use super::Context;
use super::conn::{Conn, Role};

impl Context {
    /// Stops reporting external `id` for `delay` (or until it becomes readable
    /// anew), for a descriptor the application cannot serve now: a listener
    /// out of descriptors (EMFILE) stays readable, and the level-triggered
    /// check would report it again at once, making the loop spin.
    pub fn retry_external_in(&mut self, id: ConnId, delay: Duration) -> Result<()> {
        let c = self.live_mut(id)?;
        if !matches!(c.role, Role::External) {
            return Err(Error::WrongKind {
                id,
                what: "not an external descriptor",
            });
        }
        // Still readable as far as anyone knows: reported again at the retry.
        c.readable = true;
        self.recheck.retain(|&r| r != id);
        let at = Instant::now() + delay;
        let retry = self.accept_retry.get_or_insert_with(|| (at, Vec::new()));
        if !retry.1.contains(&id) {
            retry.1.push(id);
        }
        Ok(())
    }

    /// When the loop last woke up (read once per wake-up; cheaper than the clock
    /// for callers that only need it to the event).
    pub fn last_wake(&self) -> Instant {
        self.now
    }

    /// Sets (or clears) an absolute deadline for connection `id`: when it passes,
    /// [`Event::Timeout`] is reported once. Daemons use it for handshake timeouts.
    pub fn set_deadline(&mut self, id: ConnId, at: Option<Instant>) -> Result<()> {
        self.live_mut(id)?.deadline = at;
        self.arm(id);
        Ok(())
    }

    /// Sets (or clears) an idle timeout for connection `id`: [`Event::Timeout`] is
    /// reported once when no byte has moved on it, either way, for `idle`.
    pub fn set_idle_timeout(&mut self, id: ConnId, idle: Option<Duration>) -> Result<()> {
        let c = self.live_mut(id)?;
        c.idle = idle;
        c.last_active = Instant::now();
        self.arm(id);
        Ok(())
    }

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
                // Let go, and its peer did not read the last words in time.
                Some(due) if due <= now && c.closing => self.remove(id),
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
