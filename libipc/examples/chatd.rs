//! chatd: a chat room. Every message a client sends goes to every client
//! connected, the sender included, as text.
//!
//!     cargo run -p libipc --example chatd [NAME]      # default name: chat
//!
//! Listens on `$RUNDIR/NAME` (default `/tmp/.libipc-run/chat`). Put it on the web
//! with websocketd, whose `websocketd/www/` page is a client of it:
//!
//!     websocketd --static-dir websocketd/www      # then open http://127.0.0.1:8080/
//!
//! The sender gets its own message back, in its place among the others: that is
//! how a client knows the room has it (and, for its first message, that it is in
//! the room), and every client sees the same order. Payloads that are not UTF-8
//! go out with U+FFFD in place of the bad bytes, so every client gets text;
//! empty messages are ignored.
//!
//! A client that does not read while others talk (its queue reaches the
//! high-water mark, [`libipc::Error::Backpressure`]) is disconnected, with a
//! warning, rather than letting its queue grow without bound. `RUST_LOG=debug`
//! shows every message.

mod common;

use std::collections::BTreeSet;

use libipc::{ConnId, Context, Event};

fn main() -> std::process::ExitCode {
    common::run_service("chatd", "chat", serve)
}

fn serve(ctx: &mut Context) -> Result<(), libipc::Error> {
    // Everyone in the room.
    let mut clients = BTreeSet::new();
    loop {
        match ctx.wait_event()? {
            Event::Connection { id, .. } => {
                clients.insert(id);
                tracing::info!(%id, clients = clients.len(), "client joined");
            }
            Event::Disconnection { id, reason } => {
                clients.remove(&id);
                match reason {
                    None => tracing::info!(%id, clients = clients.len(), "client left"),
                    Some(e) => tracing::warn!(%id, error = %e, "client dropped"),
                }
            }
            Event::Message { id, payload } if payload.is_empty() => {
                tracing::debug!(%id, "empty message ignored");
            }
            Event::Message { id, payload } => {
                let text = String::from_utf8_lossy(&payload);
                tracing::debug!(from = %id, bytes = text.len(), clients = clients.len(), "broadcast");
                broadcast(ctx, &mut clients, text.as_bytes())?;
            }
            other => tracing::debug!(?other, "event"),
        }
    }
}

/// Queues `text` for every client; drops those it cannot queue it for (their
/// queue is full).
fn broadcast(
    ctx: &mut Context,
    clients: &mut BTreeSet<ConnId>,
    text: &[u8],
) -> Result<(), libipc::Error> {
    let mut gone = Vec::new();
    for &id in clients.iter() {
        match ctx.schedule(id, text) {
            Ok(()) => {}
            // It has a high-water mark of messages waiting already: it reads
            // slower than the room talks. Waiting for it would let its queue
            // (our memory) grow with every message; it goes instead.
            Err(e @ libipc::Error::Backpressure { .. }) => {
                tracing::warn!(%id, error = %e, "dropping client that does not keep up");
                gone.push(id);
            }
            // Whatever else went wrong concerns that client alone too.
            Err(e) => {
                tracing::warn!(%id, error = %e, "dropping client");
                gone.push(id);
            }
        }
    }
    for id in gone {
        // No Disconnection event comes for a connection we close ourselves.
        clients.remove(&id);
        ctx.close(id)?;
    }
    Ok(())
}
