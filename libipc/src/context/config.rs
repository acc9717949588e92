//! [`Config`]: the limits of a context.

use std::time::Duration;

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;

/// Limits of a context. All have safe defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload accepted from a peer (default 1 MiB). A peer announcing more
    /// is disconnected with [`Error::MessageTooLarge`](crate::Error::MessageTooLarge);
    /// other connections carry on.
    pub max_message_size: usize,
    /// Outgoing bytes queued for one connection past which `schedule` refuses with
    /// [`Error::Backpressure`](crate::Error::Backpressure) (default 1 MiB; see
    /// [`Config::schedule_backpressure`]). Half of it stops reading from a
    /// client of our services (or, for a switched pair, from the side feeding
    /// it); a service we connected to is always read.
    pub high_water: usize,
    /// Reading resumes when the queue falls below this (default 128 KiB).
    pub low_water: usize,
    /// Bytes read from one connection per round, and the size of the context's one
    /// read buffer (default 256 KiB).
    pub read_chunk: usize,
    /// How long `connect_service` waits for a protocol daemon's answer (default 10 s).
    pub connect_timeout: Duration,
    /// Whether `schedule` refuses past [`Config::high_water`] (default true).
    /// Off, it queues whatever it is given, bounded only by memory and the
    /// message size, as the original did: the C library's default, so that
    /// programs written for the original, which never expect a refusal, keep
    /// working. Either way, a client of our services stops being read while
    /// half the high-water mark waits for it.
    pub schedule_backpressure: bool,
    /// Whether relaying on switched pairs is reported as [`Event::SwitchRx`]
    /// and [`Event::SwitchTx`] (default true, as the original). A protocol
    /// daemon that does nothing with them turns them off: two events fewer
    /// per relayed read, and the timer still fires on schedule under load.
    ///
    /// [`Event::SwitchRx`]: crate::Event::SwitchRx
    /// [`Event::SwitchTx`]: crate::Event::SwitchTx
    pub switch_events: bool,
    /// Before `wait_event` sleeps, how long it polls without sleeping
    /// (default `None`: it sleeps at once). A sleeping thread is woken by the
    /// kernel, which costs more than the message; a short busy poll catches
    /// an answer that comes within it. It wins only where the loop has a core
    /// of its own: on a core shared with its peers it takes the time they
    /// need to answer (see BENCHMARKS.md, issue 16, "One connection").
    pub busy_poll: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            high_water: 1 << 20,
            low_water: 128 << 10,
            read_chunk: 256 << 10,
            connect_timeout: Duration::from_secs(10),
            schedule_backpressure: true,
            switch_events: true,
            busy_poll: None,
        }
    }
}

impl Config {
    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::schedule_backpressure`].
    pub fn schedule_backpressure(mut self, refuse: bool) -> Self {
        self.schedule_backpressure = refuse;
        self
    }

    /// Sets [`Config::switch_events`].
    pub fn switch_events(mut self, report: bool) -> Self {
        self.switch_events = report;
        self
    }

    /// Sets [`Config::busy_poll`].
    pub fn busy_poll(mut self, spin: Option<Duration>) -> Self {
        self.busy_poll = spin;
        self
    }

    /// Sets [`Config::high_water`] and [`Config::low_water`].
    pub fn water_marks(mut self, high: usize, low: usize) -> Self {
        self.high_water = high.max(1);
        self.low_water = low.min(self.high_water / 2);
        self
    }

    pub(super) fn pause_at(&self) -> usize {
        self.high_water / 2
    }
}
