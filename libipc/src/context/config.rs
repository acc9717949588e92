//! [`Config`]: the limits of a context.

use std::time::Duration;

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;

/// Limits of a context. All have safe defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload accepted from a peer (default 1 MiB). A peer announcing more
    /// is disconnected with [`Error::MessageTooLarge`]; other connections carry on.
    pub max_message_size: usize,
    /// Outgoing bytes queued for one connection past which `schedule` refuses with
    /// [`Error::Backpressure`] (default 1 MiB). Half of it stops reading from the
    /// connection (or, for a switched pair, from the side feeding it).
    pub high_water: usize,
    /// Reading resumes when the queue falls below this (default 128 KiB).
    pub low_water: usize,
    /// Bytes read from one connection per round, and the size of the context's one
    /// read buffer (default 256 KiB).
    pub read_chunk: usize,
    /// How long `connect_service` waits for a protocol daemon's answer (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            high_water: 1 << 20,
            low_water: 128 << 10,
            read_chunk: 256 << 10,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
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
