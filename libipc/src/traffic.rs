//! What crossed a switched pair: bytes and messages each way, counted on the
//! service side, where both directions are LibIPC frames whatever the network
//! transport (so the figures mean the same for tcpd, tlsd and websocketd).

use crate::frame::Scanner;

/// Bytes and messages that crossed a switched pair, as LibIPC frames (headers
/// included; not TLS or WebSocket bytes on the wire). `in`: from the network
/// client to the service; `out`: from the service to the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes from the client to the service.
    pub bytes_in: u64,
    /// Bytes from the service to the client.
    pub bytes_out: u64,
    /// Whole messages from the client to the service.
    pub messages_in: u64,
    /// Whole messages from the service to the client.
    pub messages_out: u64,
}

impl Traffic {
    /// What was added since `before` (both counted on the same pair).
    pub fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            bytes_in: self.bytes_in - before.bytes_in,
            bytes_out: self.bytes_out - before.bytes_out,
            messages_in: self.messages_in - before.messages_in,
            messages_out: self.messages_out - before.messages_out,
        }
    }
}

/// Counts a pair's traffic, following frame boundaries in each direction.
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    pub(crate) traffic: Traffic,
    to_service: Scanner,
    from_service: Scanner,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            traffic: Traffic::default(),
            // Only counting: the limits are checked elsewhere.
            to_service: Scanner::new(u32::MAX as usize),
            from_service: Scanner::new(u32::MAX as usize),
        }
    }
}

impl Counter {
    /// Frames (possibly cut anywhere) on their way to the service.
    pub(crate) fn count_in(&mut self, frames: &[u8]) {
        self.traffic.bytes_in += frames.len() as u64;
        self.traffic.messages_in += self.to_service.scan(frames).unwrap_or(0) as u64;
    }

    /// Frames (possibly cut anywhere) read from the service.
    pub(crate) fn count_out(&mut self, frames: &[u8]) {
        self.traffic.bytes_out += frames.len() as u64;
        self.traffic.messages_out += self.from_service.scan(frames).unwrap_or(0) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_frames_cut_anywhere() {
        let mut wire = Vec::new();
        for p in [&b"hello"[..], b"", b"world!"] {
            crate::frame::encode(p, &mut wire).unwrap();
        }
        let mut c = Counter::default();
        for chunk in wire.chunks(3) {
            c.count_in(chunk);
        }
        c.count_out(&wire[..9]);
        assert_eq!(
            c.traffic,
            Traffic {
                bytes_in: wire.len() as u64,
                bytes_out: 9,
                messages_in: 3,
                messages_out: 1,
            }
        );
        let before = c.traffic;
        c.count_out(&wire[9..]);
        let d = c.traffic.since(&before);
        assert_eq!(
            (d.bytes_out, d.messages_out, d.messages_in),
            (wire.len() as u64 - 9, 2, 0)
        );
    }
}
