//! The loop inside [`Context::wait_event`]: write what is queued, poll,
//! read what is ready, and hand out events one at a time.

use std::cmp::Reverse;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::Context;
use super::conn::Role;
use crate::error::Result;
use crate::event::Event;

impl Context {
    pub(super) fn next_event(&mut self) -> Result<Event> {
        self.last_gone = None;
        // When the timer fires: set once this call has to poll (an event
        // already waiting is handed out without reading the clock).
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            // Write a connection's replies as soon as the application moves on to
            // another connection's events: its socket is still warm in the cache,
            // and all the replies to one read still leave in one write.
            if !self.dirty.is_empty()
                && self.pending.front().and_then(Event::id) != self.last_delivered
            {
                self.flush_dirty();
            }
            if let Some(ev) = self.next_pending() {
                self.last_delivered = ev.id();
                return Ok(ev);
            }
            self.flush_dirty();
            self.recheck_externals();
            self.run_ready();
            if !self.pending.is_empty() {
                continue;
            }
            if self.pending.capacity() > 1024 {
                // A burst grew it; do not keep that memory while idle.
                self.pending.shrink_to(64);
            }
            let deadline = *deadline.get_or_insert_with(|| self.start_timer());
            let now = self.now;
            let mut timeout = deadline.map(|d| d.saturating_duration_since(now));
            if !self.ready.is_empty() {
                timeout = Some(Duration::ZERO);
            } else if timeout == Some(Duration::ZERO) {
                return Ok(Event::Timer);
            } else if !self.dirty.is_empty() {
                // An answer's next part (`give_more`), due next turn: not
                // a wait, but no reason to hold up the timer either.
                timeout = Some(Duration::ZERO);
            }
            let retry_at = self.accept_retry.as_ref().map(|(at, _)| *at);
            let timer_at = self.timers.peek().map(|Reverse((at, _))| *at);
            for at in [retry_at, timer_at].into_iter().flatten() {
                let wait = at.saturating_duration_since(now);
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
            let spun = timeout != Some(Duration::ZERO) && self.busy_poll(&mut timeout);
            let polled = if spun {
                Ok(())
            } else {
                self.poll.poll(&mut self.events, timeout)
            };
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in self.events.iter() {
                let Some(id) = self.conns.id_at(ev.token().0) else {
                    continue;
                };
                let Some(c) = self.conns.get_mut(id) else {
                    continue;
                };
                if c.dead {
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.readable = true;
                    c.hup |= ev.is_read_closed() || ev.is_error();
                    if !c.in_ready {
                        c.in_ready = true;
                        self.ready.push_back(id);
                    }
                }
                if (ev.is_writable() || ev.is_write_closed() || ev.is_error()) && !c.in_dirty {
                    c.in_dirty = true;
                    self.dirty.push(id);
                }
            }
            let now = Instant::now();
            self.now = now;
            self.expire_timers(now);
            self.retry_accepts();
            self.round_left = self.ready.len();
            self.run_ready();
            // On schedule even under load: relaying and reading that made no
            // event is not activity the application sees (what is still ready
            // or unwritten waits for the next call).
            if self.pending.is_empty() && deadline.is_some_and(|d| now >= d) {
                return Ok(Event::Timer);
            }
        }
    }

    /// [`Config::busy_poll`](crate::Config::busy_poll): polls without
    /// sleeping for up to that long (or `timeout`, if shorter); true if that
    /// found events (in `self.events`). Otherwise `timeout` is what is left
    /// of it for the poll that sleeps.
    fn busy_poll(&mut self, timeout: &mut Option<Duration>) -> bool {
        let Some(spin) = self.config.busy_poll else {
            return false;
        };
        let spin = timeout.map_or(spin, |t| t.min(spin));
        let started = Instant::now();
        loop {
            if self
                .poll
                .poll(&mut self.events, Some(Duration::ZERO))
                .is_ok()
                && !self.events.is_empty()
            {
                return true;
            }
            let spun = started.elapsed();
            if spun >= spin {
                *timeout = timeout.map(|t| t.saturating_sub(spun));
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// The deadline of the application's timer, counted from now. The clock
    /// is read after each poll; before one only if something is timed: in
    /// between, `self.now` is older only by the time spent handling events.
    fn start_timer(&mut self) -> Option<Instant> {
        if self.timer.is_some() || !self.timers.is_empty() || self.accept_retry.is_some() {
            self.now = Instant::now();
        }
        self.timer.map(|t| self.now + t)
    }

    fn next_pending(&mut self) -> Option<Event> {
        let ev = self.pending.pop_front()?;
        if let Event::Disconnection { id, .. } = &ev {
            // The connection stayed so that replies to its last messages could be
            // written; now its id goes away (its descriptor number stays readable
            // through `fd()` until the next call).
            if let Some(c) = self.conns.get_mut(*id) {
                let _ = c.out.flush(c.io.fd());
                let traffic = match &c.role {
                    Role::Switched(s) => s.counter.as_ref().map(|c| c.traffic),
                    _ => None,
                };
                self.last_gone = Some((*id, c.io.fd().as_raw_fd(), traffic));
                self.remove(*id);
            }
        }
        Some(ev)
    }

    /// Reads the connections of this round (those ready at the last poll) in
    /// turn until one makes events: they are handed out, and that
    /// connection's replies written, before the next one is read, while its
    /// socket is still warm in the cache. Connections re-queued here wait for
    /// the next round, after a poll.
    fn run_ready(&mut self) {
        while self.round_left > 0 && self.pending.is_empty() {
            self.round_left -= 1;
            let Some(id) = self.ready.pop_front() else {
                self.round_left = 0;
                break;
            };
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            c.in_ready = false;
            if c.dead || !c.readable || c.paused {
                continue;
            }
            if c.lingering {
                self.read_lingering(id);
                continue;
            }
            match c.role {
                Role::Listener => self.accept(id),
                Role::HandoffListener { .. } => self.accept_handoff(id),
                Role::Handoff(_) => self.read_handoff(id),
                Role::Ipc => self.read_ipc(id),
                Role::External => {
                    c.readable = false;
                    self.recheck.push(id);
                    self.pending.push_back(Event::External { id });
                }
                Role::Switched(_) => self.read_switched(id),
                Role::Pending(_) => self.read_pending(id),
            }
        }
    }
}
