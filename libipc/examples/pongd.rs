//! pongd: an echo service. Every message a client sends comes back to it.
//!
//!     cargo run -p libipc --example pongd [NAME [WORKERS]]   # default: pong, 1
//!
//! Listens on `$RUNDIR/NAME` (default `/tmp/.libipc-run/pong`). WORKERS event
//! loops, one thread each, share its clients. `RUST_LOG=debug` shows every
//! event.

mod common;

use std::time::Duration;

use libipc::{Context, Event};

fn main() -> std::process::ExitCode {
    let workers = match std::env::args().nth(2).map(|w| w.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("pongd: WORKERS must be a number above 0");
            return std::process::ExitCode::from(2);
        }
    };
    common::run_service_on("pongd", "pong", workers, serve)
}

fn serve(ctx: &mut Context) -> Result<(), libipc::Error> {
    ctx.set_timer(Some(Duration::from_secs(10)));
    loop {
        match ctx.wait_event()? {
            Event::Connection { id, .. } => tracing::info!(%id, "client connected"),
            Event::Disconnection { id, reason: None } => tracing::info!(%id, "client left"),
            Event::Disconnection {
                id,
                reason: Some(e),
            } => tracing::warn!(%id, error = %e, "client dropped"),
            Event::Message { id, payload } => {
                tracing::debug!(%id, bytes = payload.len(), "echo");
                match ctx.schedule_vec(id, payload) {
                    Ok(()) => {}
                    // The client sends faster than it reads: it gets no more echoes
                    // until its queue drains (the loop stops reading it meanwhile).
                    Err(e @ libipc::Error::Backpressure { .. }) => {
                        tracing::warn!(%id, error = %e, "dropping client that does not read");
                        ctx.close(id)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Event::Timer => tracing::debug!(clients = ctx.len() - 1, "idle"),
            other => tracing::debug!(?other, "event"),
        }
    }
}
