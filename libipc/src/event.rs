//! Connection ids and the events `wait_event` yields.

use std::fmt;

use crate::error::Error;

/// A stable connection id. Ids are never reused within a context, so a stale id
/// (after DISCONNECTION) is refused rather than reaching a newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The id as a number (what the C API calls `index`).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from a number previously returned by [`ConnId::as_u64`].
    pub fn from_u64(v: u64) -> Self {
        ConnId(v)
    }

    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        ConnId((u64::from(generation) << 32) | u64::from(slot))
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Slot and generation: short in logs, unique within the context.
        write!(f, "#{}.{}", self.slot(), self.generation())
    }
}

/// Event kinds with the original LibIPC numbering (used as is by the C API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// Something failed; see [`Event::Error`].
    Error = 0,
    /// A client connected to one of our services.
    Connection = 1,
    /// A connection went away.
    Disconnection = 2,
    /// A message arrived.
    MessageRx = 3,
    /// A scheduled message was completely written.
    MessageTx = 4,
    /// The timer expired with no other event.
    Timer = 5,
    /// A foreign descriptor is readable.
    External = 6,
    /// Data was relayed from a switched connection to its peer.
    SwitchRx = 7,
    /// Relayed data was written to a switched connection.
    SwitchTx = 8,
    /// A network connection named the service it wants (Rust API only: C
    /// programs cannot create network connections, so never see it).
    ServiceRequest = 9,
}

/// One thing that happened, as returned by [`crate::Context::wait_event`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A client connected to the service `listener`; `id` is the new connection.
    Connection {
        /// The new connection.
        id: ConnId,
        /// The service it connected to.
        listener: ConnId,
    },
    /// Connection `id` is gone (peer closed, error, or protocol violation in `reason`).
    /// Its id is no longer valid after this event.
    Disconnection {
        /// The connection that went away.
        id: ConnId,
        /// Why, if it was not an orderly close by the peer.
        reason: Option<Error>,
    },
    /// A whole message arrived on `id`.
    Message {
        /// The sender.
        id: ConnId,
        /// The payload (may be empty).
        payload: Vec<u8>,
    },
    /// A message scheduled on `id` has been completely written.
    MessageTx {
        /// The connection written to.
        id: ConnId,
    },
    /// The timer expired: no event for the configured time since `wait_event` was called.
    Timer,
    /// Connection `id`'s deadline or idle timeout expired (see
    /// [`DaemonExt::set_deadline`](crate::switch::DaemonExt::set_deadline)). Reported once; the connection stays open.
    /// Its kind is TIMER (the C API reports it as TIMER with the connection's index).
    Timeout {
        /// The connection.
        id: ConnId,
    },
    /// The foreign descriptor `id` (see `add_external`) is readable. Reported again
    /// on every call while it stays readable, as with poll(2).
    External {
        /// The external connection.
        id: ConnId,
    },
    /// Data read from switched connection `id` was passed to its peer.
    SwitchRx {
        /// The connection read from.
        id: ConnId,
    },
    /// Relayed data was written to switched connection `id`.
    SwitchTx {
        /// The connection written to.
        id: ConnId,
    },
    /// Network connection `id` (see [`DaemonExt::add_network`](crate::switch::DaemonExt::add_network)) named the service it
    /// wants. Answer with `DaemonExt::attach_service` or `DaemonExt::refuse`; until
    /// then nothing more is read from it.
    ServiceRequest {
        /// The network connection.
        id: ConnId,
        /// The name as the client sent it: not yet validated.
        name: Vec<u8>,
    },
    /// A failure not tied to one message (for example `accept` out of descriptors).
    Error {
        /// The connection concerned, if any.
        id: Option<ConnId>,
        /// What happened.
        error: Error,
    },
}

impl Event {
    /// The event's kind, numbered as in the original libipc.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Connection { .. } => EventKind::Connection,
            Event::Disconnection { .. } => EventKind::Disconnection,
            Event::Message { .. } => EventKind::MessageRx,
            Event::MessageTx { .. } => EventKind::MessageTx,
            Event::Timer | Event::Timeout { .. } => EventKind::Timer,
            Event::External { .. } => EventKind::External,
            Event::SwitchRx { .. } => EventKind::SwitchRx,
            Event::SwitchTx { .. } => EventKind::SwitchTx,
            Event::ServiceRequest { .. } => EventKind::ServiceRequest,
            Event::Error { .. } => EventKind::Error,
        }
    }

    /// The connection the event is about, if any.
    pub fn id(&self) -> Option<ConnId> {
        match self {
            Event::Connection { id, .. }
            | Event::Disconnection { id, .. }
            | Event::Message { id, .. }
            | Event::MessageTx { id }
            | Event::Timeout { id }
            | Event::External { id }
            | Event::SwitchRx { id }
            | Event::SwitchTx { id }
            | Event::ServiceRequest { id, .. } => Some(*id),
            Event::Error { id, .. } => *id,
            Event::Timer => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_slot_and_generation() {
        let id = ConnId::new(7, 3);
        assert_eq!(id.slot(), 7);
        assert_eq!(id.generation(), 3);
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
    }

    /// Every kind of the original (its event.zig enum, in order: C programs
    /// compare `type` with these numbers), and the Rust-only kind after them.
    #[test]
    fn kinds_keep_original_numbers() {
        let kinds = [
            (EventKind::Error, 0),
            (EventKind::Connection, 1),
            (EventKind::Disconnection, 2),
            (EventKind::MessageRx, 3),
            (EventKind::MessageTx, 4),
            (EventKind::Timer, 5),
            (EventKind::External, 6),
            (EventKind::SwitchRx, 7),
            (EventKind::SwitchTx, 8),
            (EventKind::ServiceRequest, 9),
        ];
        for (kind, number) in kinds {
            assert_eq!(kind as u8, number, "{kind:?}");
        }
    }
}
