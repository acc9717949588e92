//! Why a daemon turns a network client away before it reaches a service.

use std::borrow::Cow;
use std::fmt;

/// A refusal: one value that knows its wire answer (`no: TEXT` in the routed
/// handshake), its HTTP status (websocketd's answer to the upgrade) and the
/// label it is counted under in metrics, so that none of them is made from or
/// parsed back out of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// No service of that name in the run directory.
    UnknownService,
    /// The name breaks the naming rule (see [`crate::service::validate_name`]).
    InvalidName,
    /// The name is not on the daemon's allow list.
    NotAllowed,
    /// The service's socket exists but nobody accepts on it.
    ServiceDown,
    /// The service's listen backlog is full.
    ServiceBusy,
    /// The daemon is at its connection limit (or out of descriptors).
    TooManyConnections,
    /// The client did not finish a handshake in time: the transport's own
    /// (`Some("TLS handshake")`, `Some("HTTP request")`, `Some("PROXY
    /// header")`), or naming its service (`None`).
    Timeout(Option<&'static str>),
    /// A bug or a resource failure of the daemon itself.
    Internal,
}

impl Refusal {
    /// The text of the answer (`no: TEXT`) and of the log line.
    pub fn text(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Refusal::UnknownService => "unknown service",
            Refusal::InvalidName => "invalid service name",
            Refusal::NotAllowed => "service not allowed",
            Refusal::ServiceDown => "service down",
            Refusal::ServiceBusy => "service busy",
            Refusal::TooManyConnections => "too many connections",
            Refusal::Timeout(None) => "handshake timeout",
            Refusal::Timeout(Some(phase)) => return Cow::Owned(format!("{phase} timeout")),
            Refusal::Internal => "internal error",
        })
    }

    /// The HTTP status that says the same (websocketd answers the upgrade
    /// with it): 404 for a name that leads nowhere, 403 for one not allowed,
    /// 408 for a timeout, 503 (worth trying again soon) for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::UnknownService | Refusal::InvalidName => 404,
            Refusal::NotAllowed => 403,
            Refusal::Timeout(_) => 408,
            Refusal::ServiceDown
            | Refusal::ServiceBusy
            | Refusal::TooManyConnections
            | Refusal::Internal => 503,
        }
    }

    /// The label it is counted under (`reason` in metrics): the text.
    pub fn label(&self) -> Cow<'static, str> {
        self.text()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_text_status_and_label() {
        for (r, text, status) in [
            (Refusal::UnknownService, "unknown service", 404),
            (Refusal::InvalidName, "invalid service name", 404),
            (Refusal::NotAllowed, "service not allowed", 403),
            (Refusal::ServiceDown, "service down", 503),
            (Refusal::ServiceBusy, "service busy", 503),
            (Refusal::TooManyConnections, "too many connections", 503),
            (Refusal::Timeout(None), "handshake timeout", 408),
            (
                Refusal::Timeout(Some("TLS handshake")),
                "TLS handshake timeout",
                408,
            ),
            (Refusal::Internal, "internal error", 503),
        ] {
            assert_eq!(r.to_string(), text);
            assert_eq!(r.label(), text);
            assert_eq!(r.http_status(), status, "{text}");
        }
    }
}
